"""The GIC model through its register interface, GICv3 and GICv2."""

import random
import threading

import pytest

from pyned.devices.gic import ICC_REGISTERS, Gic, GiccReg, GicdReg, GicrReg
from pyned.devices.gic import regs

SPI = 40  # an SPI used throughout
PPI = 30  # the EL1 physical timer's PPI


class Harness:
    """What the tests need from either GIC version, spelled through real registers."""

    version: int

    def __init__(self, num_cpus=2, num_spis=64, **kw):
        self.calls = []
        self.gic = Gic(self.version, num_cpus, num_spis, self._signal, **kw)
        self.num_cpus = num_cpus

    def _signal(self, cpu):
        assert not self.gic._lock.locked(), "signal() called with the GIC lock held"
        self.calls.append(cpu)

    # distributor
    def d_read(self, off, size=4, cpu=0):
        return self.gic.distributor.read(off, size, cpu)

    def d_write(self, off, value, size=4, cpu=0):
        self.gic.distributor.write(off, size, value, cpu)

    # per-INTID registers: SPIs in GICD, SGIs/PPIs in GICR (v3) or banked GICD (v2)
    def reg_write(self, base, intid, value, cpu=0, size=4):
        raise NotImplementedError

    def reg_read(self, base, intid, cpu=0, size=4):
        raise NotImplementedError

    def bit_set(self, base, intid, cpu=0):
        self.reg_write(base + (intid % 1024) // 32 * 4, intid, 1 << (intid % 32), cpu)

    def bit(self, base, intid, cpu=0):
        return bool(self.reg_read(base + (intid % 1024) // 32 * 4, intid, cpu) >> (intid % 32) & 1)

    def pending(self, intid, cpu=0):
        return self.bit(GicdReg.GICD_ISPENDR, intid, cpu)

    def active(self, intid, cpu=0):
        return self.bit(GicdReg.GICD_ISACTIVER, intid, cpu)

    def config(self, intid, prio=0x80, group=1, edge=False, cpu=0, enable=True):
        """Configure ``intid`` (for SGIs/PPIs: CPU ``cpu``'s copy) and route SPIs to ``cpu``."""
        self.reg_write(GicdReg.GICD_IPRIORITYR + intid, intid, prio, cpu, size=1)
        word = GicdReg.GICD_IGROUPR + intid // 32 * 4
        grp = self.reg_read(word, intid, cpu)
        grp = grp | (1 << intid % 32) if group else grp & ~(1 << intid % 32)
        self.reg_write(word, intid, grp, cpu)
        if intid >= 16:
            word = GicdReg.GICD_ICFGR + intid // 16 * 4
            cfg = self.reg_read(word, intid, cpu) & ~(3 << (intid % 16 * 2))
            self.reg_write(word, intid, cfg | (2 if edge else 0) << (intid % 16 * 2), cpu)
        if intid >= 32:
            self.route(intid, cpu)
        if enable:
            self.bit_set(GicdReg.GICD_ISENABLER, intid, cpu)


class V3(Harness):
    version = 3

    def setup(self):
        self.d_write(GicdReg.GICD_CTLR, 3)
        for cpu in range(self.num_cpus):
            self.gic.redistributors.write(self.rd(cpu) + GicrReg.GICR_WAKER, 4, 0, cpu)
            self.icc_w(cpu, "ICC_PMR_EL1", 0xF8)
            self.icc_w(cpu, "ICC_IGRPEN0_EL1", 1)
            self.icc_w(cpu, "ICC_IGRPEN1_EL1", 1)
        return self

    @staticmethod
    def rd(cpu):
        return cpu * 0x20000

    def r_read(self, off, size=4, cpu=0):
        return self.gic.redistributors.read(off, size, cpu)

    def r_write(self, off, value, size=4, cpu=0):
        self.gic.redistributors.write(off, size, value, cpu)

    def icc_r(self, cpu, name):
        return self.gic.icc_read(cpu, name)

    def icc_w(self, cpu, name, value):
        self.gic.icc_write(cpu, name, value)

    def reg_write(self, off, intid, value, cpu=0, size=4):
        if intid < 32:
            self.r_write(self.rd(cpu) + 0x10000 + off, value, size)
        else:
            self.d_write(off, value, size)

    def reg_read(self, off, intid, cpu=0, size=4):
        if intid < 32:
            return self.r_read(self.rd(cpu) + 0x10000 + off, size)
        return self.d_read(off, size)

    def route(self, intid, cpu):
        self.d_write(GicdReg.GICD_IROUTER + 8 * intid, cpu, size=8)

    def ack(self, cpu=0, group=1):
        return self.icc_r(cpu, f"ICC_IAR{group}_EL1")

    def eoi(self, intid, cpu=0, group=1):
        self.icc_w(cpu, f"ICC_EOIR{group}_EL1", intid)

    def deactivate(self, intid, cpu=0):
        self.icc_w(cpu, "ICC_DIR_EL1", intid)

    def hppir(self, cpu=0, group=1):
        return self.icc_r(cpu, f"ICC_HPPIR{group}_EL1")

    def rpr(self, cpu=0):
        return self.icc_r(cpu, "ICC_RPR_EL1")

    def set_pmr(self, value, cpu=0):
        self.icc_w(cpu, "ICC_PMR_EL1", value)

    def set_bpr1(self, value, cpu=0):
        self.icc_w(cpu, "ICC_BPR1_EL1", value)

    def set_eoimode(self, on, cpu=0):
        self.icc_w(cpu, "ICC_CTLR_EL1", regs.ICC_CTLR_EOIMODE if on else 0)

    def send_sgi(self, intid, source, target):
        self.icc_w(source, "ICC_SGI1R_EL1", intid << 24 | 1 << target)


class V2(Harness):
    version = 2
    CTLR = regs.GICC_CTLR_ENABLE_GRP0 | regs.GICC_CTLR_ENABLE_GRP1 | regs.GICC_CTLR_ACKCTL

    def setup(self):
        self.d_write(GicdReg.GICD_CTLR, 3)
        for cpu in range(self.num_cpus):
            self.c_write(GiccReg.GICC_CTLR, self.CTLR, cpu)
            self.c_write(GiccReg.GICC_PMR, 0xF8, cpu)
        return self

    def c_read(self, off, cpu=0, size=4):
        return self.gic.cpu_interface_mmio.read(off, size, cpu)

    def c_write(self, off, value, cpu=0, size=4):
        self.gic.cpu_interface_mmio.write(off, size, value, cpu)

    def reg_write(self, off, intid, value, cpu=0, size=4):
        self.d_write(off, value, size, cpu)

    def reg_read(self, off, intid, cpu=0, size=4):
        return self.d_read(off, size, cpu)

    def route(self, intid, cpu):
        self.d_write(GicdReg.GICD_ITARGETSR + intid, 1 << cpu, size=1)

    def ack(self, cpu=0, group=1):
        return self.c_read(GiccReg.GICC_IAR, cpu)

    def eoi(self, intid, cpu=0, group=1):
        self.c_write(GiccReg.GICC_EOIR, intid, cpu)

    def deactivate(self, intid, cpu=0):
        self.c_write(GiccReg.GICC_DIR, intid, cpu)

    def hppir(self, cpu=0, group=1):
        return self.c_read(GiccReg.GICC_HPPIR, cpu)

    def rpr(self, cpu=0):
        return self.c_read(GiccReg.GICC_RPR, cpu)

    def set_pmr(self, value, cpu=0):
        self.c_write(GiccReg.GICC_PMR, value, cpu)

    def set_bpr1(self, value, cpu=0):
        # With CBPR=0 GICC_ABPR is the Group 1 binary point.
        self.c_write(GiccReg.GICC_ABPR, value, cpu)

    def set_eoimode(self, on, cpu=0):
        self.c_write(GiccReg.GICC_CTLR, self.CTLR | (regs.GICC_CTLR_EOIMODE if on else 0), cpu)

    def send_sgi(self, intid, source, target):
        self.d_write(GicdReg.GICD_SGIR, (1 << target) << 16 | intid, cpu=source)


@pytest.fixture(params=[V3, V2], ids=["v3", "v2"])
def h(request):
    return request.param().setup()


@pytest.fixture
def v3():
    return V3().setup()


@pytest.fixture
def v2():
    return V2().setup()


# -- both versions: the interrupt life cycle ----------------------------------------------


def test_nothing_pending_reads_spurious(h):
    assert h.ack() == 1023
    assert h.hppir() == 1023
    assert h.rpr() == 0xFF
    assert not h.gic.irq_pending(0)


def test_spi_lifecycle_level(h):
    h.config(SPI, prio=0x80)
    line = h.gic.irq_line(SPI)
    line.set_level(True)
    assert h.pending(SPI) and h.gic.irq_pending(0) and not h.gic.irq_pending(1)
    assert h.hppir() == SPI
    assert h.ack() == SPI
    assert h.active(SPI) and h.pending(SPI)  # level, input still high: active and pending
    assert h.rpr() == 0x80
    assert not h.gic.irq_pending(0)  # active interrupts are not signalled again
    line.set_level(False)
    assert not h.pending(SPI)
    h.eoi(SPI)
    assert not h.active(SPI) and h.rpr() == 0xFF
    assert h.ack() == 1023


def test_level_redelivered_if_still_high_after_eoi(h):
    h.config(SPI)
    h.gic.irq_line(SPI).set_level(True)
    assert h.ack() == SPI
    h.eoi(SPI)
    assert h.gic.irq_pending(0)
    assert h.ack() == SPI


def test_edge_latches_on_rising_edge_only(h):
    h.config(SPI, edge=True)
    line = h.gic.irq_line(SPI)
    line.set_level(True)
    line.set_level(False)  # lowering does not clear an edge
    assert h.pending(SPI)
    assert h.ack() == SPI
    assert not h.pending(SPI)  # acknowledge consumes the edge
    line.set_level(True)
    assert h.pending(SPI)  # a new edge while active: active and pending
    line.set_level(True)  # no edge
    h.eoi(SPI)
    assert h.ack() == SPI
    h.eoi(SPI)
    assert h.ack() == 1023


def test_ispendr_icpendr_and_level_input(h):
    h.config(SPI)
    h.bit_set(GicdReg.GICD_ISPENDR, SPI)
    assert h.pending(SPI)
    h.bit_set(GicdReg.GICD_ICPENDR, SPI)
    assert not h.pending(SPI)
    h.gic.set_level(SPI, True)
    h.bit_set(GicdReg.GICD_ICPENDR, SPI)
    assert h.pending(SPI)  # the input is still high
    h.gic.set_level(SPI, False)
    assert not h.pending(SPI)


def test_software_pending_level_cleared_by_acknowledge(h):
    h.config(SPI)
    h.bit_set(GicdReg.GICD_ISPENDR, SPI)
    assert h.ack() == SPI
    assert not h.pending(SPI) and h.active(SPI)


def test_disabled_interrupt_is_pending_but_not_signalled(h):
    h.config(SPI, enable=False)
    h.gic.set_level(SPI, True)
    assert h.pending(SPI) and not h.gic.irq_pending(0)
    assert h.ack() == 1023
    h.bit_set(GicdReg.GICD_ISENABLER, SPI)
    assert h.bit(GicdReg.GICD_ICENABLER, SPI)
    assert h.gic.irq_pending(0)
    h.bit_set(GicdReg.GICD_ICENABLER, SPI)
    assert not h.gic.irq_pending(0)


def test_isactiver_icactiver(h):
    h.config(SPI)
    h.bit_set(GicdReg.GICD_ISACTIVER, SPI)
    assert h.active(SPI) and h.bit(GicdReg.GICD_ICACTIVER, SPI)
    h.bit_set(GicdReg.GICD_ISPENDR, SPI)
    assert not h.gic.irq_pending(0)  # active and pending: held back
    h.bit_set(GicdReg.GICD_ICACTIVER, SPI)
    assert h.gic.irq_pending(0)


def test_distributor_group_enable_gates_delivery(h):
    h.config(SPI)
    h.gic.set_level(SPI, True)
    h.d_write(GicdReg.GICD_CTLR, 1)  # Group 0 only
    assert not h.gic.irq_pending(0)
    h.d_write(GicdReg.GICD_CTLR, 3)
    assert h.gic.irq_pending(0)


# -- priorities ----------------------------------------------------------------------------


def test_priority_low_bits_raz(h):
    h.config(SPI, prio=0xA7)
    assert h.d_read(GicdReg.GICD_IPRIORITYR + SPI, 1) == 0xA0


def test_priority_mask(h):
    h.config(SPI, prio=0x80)
    h.gic.set_level(SPI, True)
    h.set_pmr(0x80)  # equal priority is masked
    assert not h.gic.irq_pending(0)
    assert h.ack() == 1023
    assert h.hppir() == SPI  # HPPIR ignores the mask
    h.set_pmr(0x88)
    assert h.gic.irq_pending(0)
    h.set_pmr(0)
    assert not h.gic.irq_pending(0)


def test_highest_priority_wins_then_lowest_intid(h):
    h.config(SPI, prio=0x80)
    h.config(SPI + 1, prio=0x40)
    h.config(SPI + 2, prio=0x40)
    for i in range(3):
        h.gic.set_level(SPI + i, True)
    assert h.hppir() == SPI + 1
    assert h.ack() == SPI + 1


def test_preemption_higher_interrupts_lower_not_vice_versa(h):
    low, high = SPI, SPI + 1
    h.config(low, prio=0x80)
    h.config(high, prio=0x40)
    h.gic.set_level(low, True)
    assert h.ack() == low
    assert h.rpr() == 0x80
    h.gic.set_level(high, True)
    assert h.gic.irq_pending(0)  # preempts
    assert h.ack() == high
    assert h.rpr() == 0x40
    h.gic.set_level(high, False)
    h.eoi(high)
    assert h.rpr() == 0x80  # back to the preempted one
    h.eoi(low)
    assert h.rpr() == 0xFF


def test_lower_priority_waits_for_running_one(h):
    low, high = SPI, SPI + 1
    h.config(low, prio=0x80)
    h.config(high, prio=0x40)
    h.gic.set_level(high, True)
    assert h.ack() == high
    h.gic.set_level(low, True)
    assert not h.gic.irq_pending(0)
    assert h.ack() == 1023
    h.config(SPI + 2, prio=0x40)  # same priority does not preempt either
    h.gic.set_level(SPI + 2, True)
    assert h.ack() == 1023
    h.gic.set_level(high, False)
    h.eoi(high)
    assert h.ack() == SPI + 2


def test_binary_point_groups_priorities(h):
    a, b = SPI, SPI + 1
    h.config(a, prio=0x50)
    h.config(b, prio=0x40)
    h.set_bpr1(5)  # Group 1: group priority bits [7:5]; 0x40 and 0x50 share group 0x40
    h.gic.set_level(a, True)
    assert h.ack() == a
    assert h.rpr() == 0x40
    h.gic.set_level(b, True)
    assert not h.gic.irq_pending(0)
    h.eoi(a)
    assert h.ack() == b


def test_minimum_binary_point(h):
    h.set_bpr1(0)
    if h.version == 3:
        assert h.icc_r(0, "ICC_BPR1_EL1") == 3
        h.icc_w(0, "ICC_BPR0_EL1", 0)
        assert h.icc_r(0, "ICC_BPR0_EL1") == 2
    else:
        assert h.c_read(GiccReg.GICC_ABPR) == 3
        h.c_write(GiccReg.GICC_BPR, 0)
        assert h.c_read(GiccReg.GICC_BPR) == 2


def test_eoimode_split_priority_drop_and_deactivate(h):
    h.set_eoimode(True)
    h.config(SPI, prio=0x80, edge=True)
    h.gic.set_level(SPI, True)
    assert h.ack() == SPI
    h.eoi(SPI)
    assert h.rpr() == 0xFF  # priority dropped
    assert h.active(SPI)  # not deactivated
    h.gic.set_level(SPI, False)
    h.gic.set_level(SPI, True)
    assert not h.gic.irq_pending(0)  # still active
    h.deactivate(SPI)
    assert not h.active(SPI)
    assert h.ack() == SPI


def test_eoi_of_special_intid_ignored(h):
    h.config(SPI)
    h.gic.set_level(SPI, True)
    h.ack()
    h.eoi(1023)
    assert h.rpr() == 0x80 and h.active(SPI)


# -- signalling --------------------------------------------------------------------------


def test_signal_goes_to_the_routed_cpu(h):
    h.config(SPI, cpu=1)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert h.calls == [1]
    assert h.gic.irq_pending(1) and not h.gic.irq_pending(0)
    assert h.ack(cpu=0) == 1023
    assert h.ack(cpu=1) == SPI


def test_no_signal_while_masked_then_signal_on_unmask(h):
    h.config(SPI, prio=0x80)
    h.set_pmr(0x40)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert h.calls == []
    h.set_pmr(0xF8)
    assert h.calls == [0]


def test_signal_when_eoi_uncovers_a_pending_interrupt(h):
    h.config(SPI, prio=0x40)
    h.config(SPI + 1, prio=0x80)
    h.gic.set_level(SPI, True)
    h.ack()
    h.gic.set_level(SPI, False)
    h.gic.set_level(SPI + 1, True)
    h.calls.clear()
    h.eoi(SPI)
    assert h.calls == [0]


def test_no_signal_when_level_unchanged(h):
    h.config(SPI)
    h.gic.set_level(SPI, True)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert h.calls == []


def test_signal_on_sgi_to_target(h):
    h.config(5, cpu=1)
    h.calls.clear()
    h.send_sgi(5, source=0, target=1)
    assert h.calls == [1]
    assert h.gic.irq_pending(1) and not h.gic.irq_pending(0)
    got = h.ack(cpu=1)
    assert got & 0x3FF == 5
    h.eoi(got, cpu=1)
    assert not h.active(5, cpu=1)


def test_ppi_line_is_per_cpu(h):
    for cpu in range(2):
        h.config(PPI, cpu=cpu)
    line = h.gic.ppi_line(1, PPI)
    h.calls.clear()
    line.set_level(True)
    assert line.level
    assert h.calls == [1]
    assert h.pending(PPI, cpu=1) and not h.pending(PPI, cpu=0)
    assert h.ack(cpu=1) == PPI
    assert h.ack(cpu=0) == 1023


def test_signal_from_another_thread(h):
    h.config(SPI, cpu=1)
    h.calls.clear()
    t = threading.Thread(target=h.gic.set_level, args=(SPI, True))
    t.start()
    t.join()
    assert h.calls == [1]


def test_signal_callback_may_reenter_the_gic():
    seen = []
    gic = None

    def signal(cpu):
        seen.append(gic.irq_pending(cpu))

    gic = Gic(3, 1, 32, signal)
    h = V3(num_cpus=1, num_spis=32)
    h.gic = gic
    h.setup()
    h.config(SPI)
    gic.set_level(SPI, True)
    assert seen == [True]


def test_concurrent_lines_and_registers_do_not_corrupt():
    h = V3(num_cpus=2, num_spis=64).setup()
    for i in range(8):
        h.config(SPI + i, cpu=i % 2, edge=True)

    def device():
        for n in range(300):
            h.gic.set_level(SPI + n % 8, n % 2 == 0)

    def cpu(c):
        for _ in range(300):
            got = h.ack(cpu=c)
            if got != 1023:
                h.eoi(got, cpu=c)

    threads = [threading.Thread(target=device)] + [threading.Thread(target=cpu, args=(c,))
                                                   for c in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in range(2):
        while (got := h.ack(cpu=c)) != 1023:
            h.eoi(got, cpu=c)
        assert h.rpr(c) == 0xFF


# -- GICv3 specifics ------------------------------------------------------------------------


def test_v3_identification(v3):
    assert v3.d_read(GicdReg.GICD_PIDR2) >> 4 & 0xF == 3
    assert v3.r_read(GicrReg.GICR_PIDR2) >> 4 & 0xF == 3
    assert v3.r_read(V3.rd(1) + GicrReg.GICR_PIDR2) >> 4 & 0xF == 3
    ctlr = v3.d_read(GicdReg.GICD_CTLR)
    assert ctlr == 3 | regs.GICD_CTLR_ARE | regs.GICD_CTLR_DS
    typer = v3.d_read(GicdReg.GICD_TYPER)
    assert typer & 0x1F == 2  # 96 INTIDs
    assert (typer >> 5) & 7 == 1  # 2 CPUs
    assert (typer >> 19) & 0x1F == 9  # 10 INTID bits
    assert not typer & (1 << 17)  # no LPIs
    assert v3.d_read(GicdReg.GICD_IIDR) & 0xFFF == 0x43B
    assert v3.gic.num_irqs == 96


def test_v3_gicd_ctlr_are_and_ds_stick(v3):
    v3.d_write(GicdReg.GICD_CTLR, 0)
    assert v3.d_read(GicdReg.GICD_CTLR) == regs.GICD_CTLR_ARE | regs.GICD_CTLR_DS


def test_v3_gicr_typer_last_and_affinity_whole_and_split():
    h = V3(num_cpus=3, affinities=[0x0, 0x1, 0x1_0002_0304])
    for cpu, aff in enumerate([0x0, 0x1, 0x01020304]):
        base = V3.rd(cpu) + GicrReg.GICR_TYPER
        typer = h.r_read(base, 8)
        assert typer >> 32 == aff
        assert (typer >> 8) & 0xFFFF == cpu
        assert bool(typer & regs.GICR_TYPER_LAST) == (cpu == 2)
        assert h.r_read(base) | h.r_read(base + 4) << 32 == typer


def test_v3_waker_handshake():
    h = V3()
    waker = GicrReg.GICR_WAKER
    assert h.r_read(waker) == 6  # ProcessorSleep and ChildrenAsleep
    h.r_write(waker, 0)
    assert h.r_read(waker) == 0
    assert h.r_read(V3.rd(1) + waker) == 6  # each redistributor separately
    h.r_write(waker, 2)
    assert h.r_read(waker) == 6


def test_v3_sleeping_redistributor_forwards_nothing(v3):
    v3.config(SPI)
    v3.r_write(GicrReg.GICR_WAKER, 2)
    v3.gic.set_level(SPI, True)
    assert not v3.gic.irq_pending(0)
    v3.calls.clear()
    v3.r_write(GicrReg.GICR_WAKER, 0)
    assert v3.gic.irq_pending(0) and v3.calls == [0]


def test_v3_cpu_interface_group_enable(v3):
    v3.config(SPI)
    v3.gic.set_level(SPI, True)
    v3.icc_w(0, "ICC_IGRPEN1_EL1", 0)
    assert not v3.gic.irq_pending(0)
    assert v3.icc_r(0, "ICC_IGRPEN1_EL1") == 0
    v3.icc_w(0, "ICC_IGRPEN1_EL1", 1)
    assert v3.gic.irq_pending(0)


def test_v3_group0_is_fiq_and_needs_iar0(v3):
    v3.config(SPI, group=0)
    v3.gic.set_level(SPI, True)
    assert v3.gic.fiq_pending(0) and not v3.gic.irq_pending(0)
    assert v3.ack(group=1) == 1023
    assert v3.hppir(group=1) == 1023
    assert v3.hppir(group=0) == SPI
    assert v3.ack(group=0) == SPI
    assert v3.icc_r(0, "ICC_AP0R0_EL1") == 1 << (0x80 >> 3)
    v3.eoi(SPI, group=1)  # wrong group: ignored
    assert v3.rpr() == 0x80
    v3.eoi(SPI, group=0)
    assert v3.rpr() == 0xFF and not v3.active(SPI)


def test_v3_active_priority_registers(v3):
    v3.config(SPI, prio=0x48)
    v3.gic.set_level(SPI, True)
    v3.ack()
    assert v3.icc_r(0, "ICC_AP1R0_EL1") == 1 << 9
    v3.icc_w(0, "ICC_AP1R0_EL1", 0)  # a context switch restoring "nothing active"
    assert v3.rpr() == 0xFF


def test_v3_cpu_interface_identification_registers(v3):
    assert v3.icc_r(0, "ICC_SRE_EL1") == 7
    v3.icc_w(0, "ICC_SRE_EL1", 0)
    assert v3.icc_r(0, "ICC_SRE_EL1") == 7
    ctlr = v3.icc_r(0, "ICC_CTLR_EL1")
    assert (ctlr >> 8) & 7 == 4  # PRIbits: 5 bits
    assert (ctlr >> 11) & 7 == 0  # IDbits: 16
    assert ctlr & 3 == 0
    v3.icc_w(0, "ICC_CTLR_EL1", 0xFFFF_FFFF)
    assert v3.icc_r(0, "ICC_CTLR_EL1") & 0xFF == 3  # only CBPR and EOImode are writable
    v3.icc_w(0, "ICC_PMR_EL1", 0xFF)
    assert v3.icc_r(0, "ICC_PMR_EL1") == 0xF8
    v3.icc_w(0, "ICC_PMR_EL1", 0x08)  # Linux's group-0 probe reads this back
    assert v3.icc_r(0, "ICC_PMR_EL1") == 0x08


def test_v3_cbpr_makes_bpr0_govern_group1(v3):
    v3.icc_w(0, "ICC_BPR0_EL1", 4)
    v3.icc_w(0, "ICC_CTLR_EL1", regs.ICC_CTLR_CBPR)
    assert v3.icc_r(0, "ICC_BPR1_EL1") == 5
    v3.config(SPI, prio=0x30)
    v3.config(SPI + 1, prio=0x20)  # same group priority (0x20) under BPR0=4: bits [7:5]
    v3.gic.set_level(SPI, True)
    v3.ack()
    v3.gic.set_level(SPI + 1, True)
    assert not v3.gic.irq_pending(0)


def test_v3_gicd_private_registers_are_raz_wi(v3):
    v3.d_write(GicdReg.GICD_ISENABLER, 0xFFFF_FFFF)
    assert v3.d_read(GicdReg.GICD_ISENABLER) == 0
    v3.d_write(GicdReg.GICD_IPRIORITYR, 0xFFFF_FFFF)
    assert v3.d_read(GicdReg.GICD_IPRIORITYR) == 0
    v3.d_write(GicdReg.GICD_ITARGETSR + 32, 0xFF, size=1)
    assert v3.d_read(GicdReg.GICD_ITARGETSR + 32, 1) == 0
    assert v3.r_read(GicrReg.GICR_ISENABLER0 + 0x10000) == 0  # nothing leaked anywhere


def test_v3_redistributor_sgi_frame(v3):
    base = V3.rd(1)
    v3.r_write(base + GicrReg.GICR_ISENABLER0, 1 << PPI | 1 << 3)
    assert v3.r_read(base + GicrReg.GICR_ISENABLER0) == 1 << PPI | 1 << 3
    assert v3.r_read(GicrReg.GICR_ISENABLER0) == 0  # CPU 0's copy is separate
    v3.r_write(base + GicrReg.GICR_ICENABLER0, 1 << 3)
    assert v3.r_read(base + GicrReg.GICR_ICENABLER0) == 1 << PPI
    assert v3.r_read(base + GicrReg.GICR_ICFGR0) == 0xAAAA_AAAA
    v3.r_write(base + GicrReg.GICR_ICFGR0, 0)
    assert v3.r_read(base + GicrReg.GICR_ICFGR0) == 0xAAAA_AAAA  # SGIs are always edge
    v3.r_write(base + GicrReg.GICR_ICFGR1, 2 << ((PPI - 16) * 2))
    assert v3.r_read(base + GicrReg.GICR_ICFGR1) == 2 << ((PPI - 16) * 2)
    v3.r_write(base + GicrReg.GICR_IPRIORITYR + PPI, 0xA0, size=1)
    assert v3.r_read(base + GicrReg.GICR_IPRIORITYR + 28) == 0xA0 << 16
    v3.r_write(base + GicrReg.GICR_IGROUPR0, 0xFFFF_FFFF)
    assert v3.r_read(base + GicrReg.GICR_IGROUPR0) == 0xFFFF_FFFF
    v3.r_write(base + GicrReg.GICR_ISPENDR0, 1 << 7)
    assert v3.r_read(base + GicrReg.GICR_ISPENDR0) == 1 << 7  # v3 SGIs: settable pending
    v3.r_write(base + GicrReg.GICR_ICPENDR0, 1 << 7)
    assert v3.r_read(base + GicrReg.GICR_ISPENDR0) == 0


def test_v3_sgi_target_list():
    h = V3(num_cpus=4).setup()
    for cpu in range(4):
        h.config(2, cpu=cpu)
    h.calls.clear()
    h.icc_w(0, "ICC_SGI1R_EL1", 2 << 24 | 0b1010)
    assert sorted(h.calls) == [1, 3]
    assert [h.gic.irq_pending(c) for c in range(4)] == [False, True, False, True]


def test_v3_sgi_irm_all_but_self():
    h = V3(num_cpus=3).setup()
    for cpu in range(3):
        h.config(9, cpu=cpu)
    h.icc_w(1, "ICC_SGI1R_EL1", 9 << 24 | regs.SGIR_IRM)
    assert [h.gic.irq_pending(c) for c in range(3)] == [True, False, True]


def test_v3_sgi_affinity_fields():
    # Two clusters (Aff1 0 and 1), and one CPU far away in Aff3/Aff2 with Aff0 = 17 (RS = 1).
    affs = [0x000, 0x001, 0x100, 0x101, 0x07_0005_0011]
    h = V3(num_cpus=5, affinities=affs).setup()
    for cpu in range(5):
        h.config(1, cpu=cpu)
    h.icc_w(0, "ICC_SGI1R_EL1", 1 << 16 | 1 << 24 | 0b10)  # Aff1 = 1, Aff0 = 1
    assert [h.gic.irq_pending(c) for c in range(5)] == [False, False, False, True, False]
    value = 7 << 48 | 5 << 32 | 1 << 44 | 1 << 24 | 0b10  # Aff3 7, Aff2 5, RS 1, Aff0 1 -> 17
    h.icc_w(0, "ICC_SGI1R_EL1", value)
    assert h.gic.irq_pending(4)
    h.icc_w(0, "ICC_SGI1R_EL1", 1 << 24 | 0b10)  # wrong cluster: nobody else
    assert h.gic.irq_pending(1)


def test_v3_sgi0r_only_reaches_group0_sgis(v3):
    v3.config(4, cpu=1, group=1)
    v3.icc_w(0, "ICC_SGI0R_EL1", 4 << 24 | 0b10)
    assert not v3.pending(4, cpu=1)
    v3.icc_w(0, "ICC_ASGI1R_EL1", 4 << 24 | 0b10)
    assert not v3.pending(4, cpu=1)
    v3.config(4, cpu=1, group=0)
    v3.icc_w(0, "ICC_SGI0R_EL1", 4 << 24 | 0b10)
    assert v3.pending(4, cpu=1) and v3.gic.fiq_pending(1)


def test_v3_sgi1r_reaches_either_group(v3):
    v3.config(4, cpu=1, group=0)
    v3.icc_w(0, "ICC_SGI1R_EL1", 4 << 24 | 0b10)
    assert v3.pending(4, cpu=1)


def test_v3_irouter_routes_by_affinity():
    h = V3(num_cpus=3, affinities=[0x0, 0x100, 0x200]).setup()
    h.config(SPI)
    h.d_write(GicdReg.GICD_IROUTER + 8 * SPI, 0x200, size=8)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert h.calls == [2]
    assert h.ack(cpu=2) == SPI
    h.d_write(GicdReg.GICD_IROUTER + 8 * SPI, 0x300, size=8)  # nobody: stays pending
    h.eoi(SPI, cpu=2)
    assert not any(h.gic.irq_pending(c) for c in range(3))


def test_v3_irouter_split_and_whole_accesses(v3):
    off = GicdReg.GICD_IROUTER + 8 * SPI
    v3.d_write(off, 0x8003_0201)
    v3.d_write(off + 4, 0x0000_0004)
    assert v3.d_read(off, 8) == 0x4_8003_0201
    v3.d_write(off, 0xFFFF_FFFF_FFFF_FFFF, size=8)
    assert v3.d_read(off, 8) == regs.GICD_IROUTER_MASK
    assert v3.d_read(off) == 0x80FF_FFFF
    assert v3.d_read(off + 4) == 0xFF
    assert v3.d_read(GicdReg.GICD_IROUTER + 8 * 5, 8) == 0  # no IROUTER for SGIs/PPIs


def test_v3_one_of_n_picks_an_enabled_cpu():
    h = V3(num_cpus=3).setup()
    h.config(SPI)
    h.d_write(GicdReg.GICD_IROUTER + 8 * SPI, regs.GICD_IROUTER_IRM, size=8)
    h.icc_w(0, "ICC_IGRPEN1_EL1", 0)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert h.calls == [1]
    assert [h.gic.irq_pending(c) for c in range(3)] == [False, True, False]
    assert h.ack(cpu=1) == SPI


def test_v3_one_of_n_avoids_a_busy_cpu():
    h = V3(num_cpus=2).setup()
    h.config(SPI + 1, prio=0x20, cpu=0)
    h.gic.set_level(SPI + 1, True)
    assert h.ack(cpu=0) == SPI + 1  # CPU 0 now runs at 0x20
    h.config(SPI, prio=0x80)
    h.d_write(GicdReg.GICD_IROUTER + 8 * SPI, regs.GICD_IROUTER_IRM, size=8)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert h.calls == [1] and h.gic.irq_pending(1)
    assert h.ack(cpu=1) == SPI


def test_v3_icc_unknown_name_is_a_programming_error(v3):
    with pytest.raises(ValueError):
        v3.icc_r(0, "ICC_BOGUS_EL1")


def test_icc_register_encodings():
    assert ICC_REGISTERS["ICC_IAR1_EL1"] == (3, 0, 12, 12, 0)
    assert ICC_REGISTERS["ICC_SGI1R_EL1"] == (3, 0, 12, 11, 5)
    assert ICC_REGISTERS["ICC_PMR_EL1"] == (3, 0, 4, 6, 0)
    assert len(set(ICC_REGISTERS.values())) == len(ICC_REGISTERS)
    assert Gic.ICC_REGISTERS is ICC_REGISTERS


# -- GICv2 specifics ------------------------------------------------------------------------


def test_v2_identification(v2):
    assert v2.d_read(0xFE8) >> 4 & 0xF == 2
    typer = v2.d_read(GicdReg.GICD_TYPER)
    assert typer & 0x1F == 2 and (typer >> 5) & 7 == 1
    assert v2.c_read(GiccReg.GICC_IIDR) >> 16 & 0xF == 2
    assert v2.gic.redistributors is None
    assert v2.gic.icc_read(0, "ICC_SRE_EL1") == 0  # no system-register interface


def test_v2_itargetsr_routing_and_byte_access():
    h = V2(num_cpus=4).setup()
    h.config(SPI, cpu=0)
    h.d_write(GicdReg.GICD_ITARGETSR + SPI, 0b0110, size=1)
    h.calls.clear()
    h.gic.set_level(SPI, True)
    assert sorted(h.calls) == [1, 2]
    assert [h.gic.irq_pending(c) for c in range(4)] == [False, True, True, False]
    assert h.ack(cpu=2) == SPI
    assert h.ack(cpu=1) == 1023  # taken by CPU 2
    word = h.d_read(GicdReg.GICD_ITARGETSR + SPI // 4 * 4)
    assert (word >> (SPI % 4 * 8)) & 0xFF == 0b0110
    h.d_write(GicdReg.GICD_ITARGETSR + SPI + 1, 0xFF, size=1)
    assert h.d_read(GicdReg.GICD_ITARGETSR + SPI + 1, 1) == 0xF  # only existing CPUs


def test_v2_itargetsr_private_reads_own_cpu(v2):
    assert v2.d_read(GicdReg.GICD_ITARGETSR, cpu=0) == 0x0101_0101
    assert v2.d_read(GicdReg.GICD_ITARGETSR + 28, cpu=1) == 0x0202_0202
    v2.d_write(GicdReg.GICD_ITARGETSR, 0, cpu=1)
    assert v2.d_read(GicdReg.GICD_ITARGETSR, cpu=1) == 0x0202_0202


def test_v2_banked_private_registers(v2):
    v2.d_write(GicdReg.GICD_ISENABLER, 1 << PPI, cpu=1)
    assert v2.d_read(GicdReg.GICD_ISENABLER, cpu=1) == 1 << PPI
    assert v2.d_read(GicdReg.GICD_ISENABLER, cpu=0) == 0
    assert v2.d_read(GicdReg.GICD_ICFGR, cpu=0) == 0xAAAA_AAAA


@pytest.mark.parametrize("target_filter, expect", [(0, [False, True, True, False]),
                                                  (1, [False, True, True, True]),
                                                  (2, [True, False, False, False])])
def test_v2_sgir_target_filters(target_filter, expect):
    h = V2(num_cpus=4).setup()
    for cpu in range(4):
        h.config(3, cpu=cpu)
    h.calls.clear()
    h.d_write(GicdReg.GICD_SGIR, target_filter << 24 | 0b0110 << 16 | 3, cpu=0)
    assert [h.gic.irq_pending(c) for c in range(4)] == expect
    assert sorted(h.calls) == [c for c in range(4) if expect[c]]
    for c in range(4):
        if expect[c]:
            assert h.ack(cpu=c) == 3 | 0 << 10  # source CPU 0


def test_v2_sgi_sources_tracked_separately():
    h = V2(num_cpus=3).setup()
    h.config(6, cpu=2)
    h.send_sgi(6, source=1, target=2)
    h.send_sgi(6, source=0, target=2)
    assert h.d_read(GicdReg.GICD_SPENDSGIR + 4, cpu=2) >> 16 & 0xFF == 0b011
    first = h.ack(cpu=2)
    assert first == 6 | 0 << 10
    assert h.pending(6, cpu=2)  # source 1 still pending
    assert h.ack(cpu=2) == 1023  # but SGI 6 is active
    h.eoi(first, cpu=2)
    second = h.ack(cpu=2)
    assert second == 6 | 1 << 10
    h.eoi(second, cpu=2)
    assert not h.pending(6, cpu=2) and not h.active(6, cpu=2)


def test_v2_spendsgir_cpendsgir(v2):
    v2.config(1, cpu=0)
    v2.d_write(GicdReg.GICD_SPENDSGIR + 1, 0b10, size=1, cpu=0)  # SGI 1 from CPU 1
    assert v2.d_read(GicdReg.GICD_SPENDSGIR, cpu=0) == 0b10 << 8
    assert v2.hppir() == 1 | 1 << 10
    v2.d_write(GicdReg.GICD_CPENDSGIR, 0b10 << 8, cpu=0)
    assert not v2.pending(1)


def test_v2_ispendr_does_not_set_sgis(v2):
    v2.d_write(GicdReg.GICD_ISPENDR, 0xFFFF, cpu=0)
    assert v2.d_read(GicdReg.GICD_ISPENDR, cpu=0) == 0


def test_v2_fiqen_turns_group0_into_fiq(v2):
    v2.config(SPI, group=0)
    v2.gic.set_level(SPI, True)
    assert v2.gic.irq_pending(0) and not v2.gic.fiq_pending(0)
    v2.c_write(GiccReg.GICC_CTLR, V2.CTLR | regs.GICC_CTLR_FIQEN)
    assert v2.gic.fiq_pending(0) and not v2.gic.irq_pending(0)


def test_v2_ackctl_and_aliased_group1_registers(v2):
    v2.c_write(GiccReg.GICC_CTLR, regs.GICC_CTLR_ENABLE_GRP0 | regs.GICC_CTLR_ENABLE_GRP1)
    v2.config(SPI, group=1)
    v2.gic.set_level(SPI, True)
    assert v2.c_read(GiccReg.GICC_HPPIR) == 1022
    assert v2.c_read(GiccReg.GICC_IAR) == 1022
    assert v2.c_read(GiccReg.GICC_AHPPIR) == SPI
    assert v2.c_read(GiccReg.GICC_AIAR) == SPI
    assert v2.c_read(GiccReg.GICC_NSAPR0) == 1 << (0x80 >> 3)
    v2.c_write(GiccReg.GICC_AEOIR, SPI)
    assert v2.rpr() == 0xFF


def test_v2_cpu_interface_enable(v2):
    v2.config(SPI, group=0)
    v2.gic.set_level(SPI, True)
    v2.c_write(GiccReg.GICC_CTLR, regs.GICC_CTLR_ENABLE_GRP1)
    assert not v2.gic.irq_pending(0)
    assert v2.c_read(GiccReg.GICC_IAR) == 1023


def test_v2_icc_registers_are_inert(v2):
    v2.gic.icc_write(0, "ICC_PMR_EL1", 0xF0)
    assert v2.gic.icc_read(0, "ICC_PMR_EL1") == 0


# -- device tree ----------------------------------------------------------------------------


def test_parse_dt_interrupt():
    gic = Gic(3, 1, 64, lambda c: None)
    assert gic.parse_dt_interrupt((0, 5, 4)) == (37, "level")
    assert gic.parse_dt_interrupt((0, 0, 8)) == (32, "level")
    assert gic.parse_dt_interrupt((0, 63, 1)) == (95, "edge")
    assert gic.parse_dt_interrupt((0, 7, 2)) == (39, "edge")
    assert gic.parse_dt_interrupt((1, 14, 4)) == (30, "level")
    assert gic.parse_dt_interrupt((1, 13, 0xF08)) == (29, "level")  # v2 CPU mask bits ignored


@pytest.mark.parametrize("cells, message", [
    ((0, 600, 4), "SPI 600 is outside this GIC (max SPI 63)"),
    ((0, 64, 4), "SPI 64 is outside this GIC (max SPI 63)"),
    ((1, 16, 4), "PPI 16 is outside this GIC (max PPI 15)"),
    ((2, 0, 4), "interrupt type 2"),
    ((0, 5), "3 cells"),
])
def test_parse_dt_interrupt_errors(cells, message):
    gic = Gic(3, 1, 64, lambda c: None)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        gic.parse_dt_interrupt(cells)


# -- construction, lines, reset, dump --------------------------------------------------------


@pytest.mark.parametrize("args", [(4, 1, 32), (2, 9, 32), (3, 0, 32), (3, 1, 33), (3, 1, 1024),
                                  (3, 2, -32)])
def test_bad_constructor_arguments(args):
    with pytest.raises(ValueError):
        Gic(*args, lambda c: None)


def test_num_irqs_is_capped_at_1020():
    gic = Gic(3, 1, 992, lambda c: None)
    assert gic.num_irqs == 1020
    assert gic.distributor.read(GicdReg.GICD_TYPER, 4, 0) & 0x1F == 31
    gic.irq_line(1019)
    with pytest.raises(ValueError):
        gic.irq_line(1020)


def test_line_arguments_are_checked():
    gic = Gic(3, 2, 32, lambda c: None)
    with pytest.raises(ValueError):
        gic.irq_line(31)
    with pytest.raises(ValueError):
        gic.ppi_line(0, 32)
    with pytest.raises(ValueError):
        gic.ppi_line(2, 30)
    with pytest.raises(ValueError):
        gic.set_level(30, True)  # a PPI needs its CPU
    with pytest.raises(ValueError):
        gic.set_level(5, True, 0)  # SGIs have no input line


def test_reset_clears_state_but_keeps_input_levels(h):
    h.config(SPI)
    h.gic.set_level(SPI, True)
    h.ack()
    h.gic.reset()
    assert h.rpr() == 0xFF
    assert not h.active(SPI)
    assert h.d_read(GicdReg.GICD_CTLR) & 3 == 0
    assert h.gic.irq_line(SPI).level
    assert h.pending(SPI)  # level input still high (the SPI is disabled after reset)
    assert not h.gic.irq_pending(0)


def test_dump(h):
    h.config(SPI, prio=0x90, edge=True, cpu=1)
    h.gic.set_level(SPI, True)
    h.config(PPI, cpu=0)
    rows = h.gic.dump()
    assert [(r["intid"], r["cpu"]) for r in rows] == [(PPI, 0), (SPI, None)]
    spi = rows[1]
    assert spi["enabled"] and spi["pending"] and not spi["active"]
    assert spi["priority"] == 0x90 and spi["group"] == 1 and spi["config"] == "edge"
    assert spi["target"] == ("0.0.0.1" if h.version == 3 else "cpus 1")
    assert rows[0]["target"] == "cpu 0" and rows[0]["config"] == "level"


# -- contract: no guest value raises -------------------------------------------------------


def _frames(gic):
    frames = [("gicd", gic.distributor, 0x1_0000 if gic.version == 3 else 0x1000)]
    if gic.redistributors is not None:
        frames.append(("gicr", gic.redistributors, gic.num_cpus * 0x20000))
    if gic.cpu_interface_mmio is not None:
        frames.append(("gicc", gic.cpu_interface_mmio, 0x2000))
    return frames


@pytest.mark.parametrize("version", [3, 2])
def test_contract_every_offset_reads_and_takes_random_writes(version):
    rng = random.Random(version)
    gic = Gic(version, 2, 64, lambda c: None)
    for _name, frame, size in _frames(gic):
        for off in range(0, size, 4):
            assert 0 <= frame.read(off, 4, off // 4 % 2) < 1 << 32
        for off in range(0, size, 4):
            frame.write(off, 4, rng.getrandbits(32), rng.randrange(2))
        for off in range(0, size, 4):
            frame.read(off, 4, 1)
        for width in (1, 2, 8):
            for off in range(0, size, width * 7):
                frame.write(off, width, rng.getrandbits(8 * width), 0)
                assert 0 <= frame.read(off, width, 1) < 1 << (8 * width)
        frame.read(3, 4, 0)  # unaligned
        frame.write(5, 8, -1, 0)
        frame.write(0, 3, 0xFFFFFF, 0)
    if version == 3:
        for name in ICC_REGISTERS:
            for cpu in range(2):
                gic.icc_write(cpu, name, rng.getrandbits(64))
                gic.icc_read(cpu, name)
    for intid in range(32, gic.num_irqs):
        gic.set_level(intid, rng.random() < 0.5)
    for cpu in range(2):
        gic.irq_pending(cpu)
        gic.fiq_pending(cpu)
    gic.dump()
    gic.reset()
