"""The GIC CPU interface: priority masking, preemption, acknowledge, EOI and deactivation.

Modelled, per CPU: the priority mask, binary points (group priority for preemption), active
priority registers (one bit per group priority; 5 priority bits, so AP0R0/AP1R0 hold all of
them), running priority, the highest-priority pending interrupt (ties go to the lowest
INTID), acknowledge, priority drop, and the split EOI/deactivate mode. GICv3 reaches this
through the ICC_*_EL1 system registers (``sysreg_read``/``sysreg_write``), GICv2 through the
GICC frame (``CpuInterfaceFrame``).

The interface signals one interrupt at a time, the highest-priority pending one, and only if
it is of higher priority (numerically lower) than both the priority mask and the running
priority. GICv3 at EL1 with DS=1 signals Group 0 as FIQ and Group 1 as IRQ; GICv2 signals
Group 0 as FIQ only when GICC_CTLR.FIQEn is set.

Not modelled: the EL2/EL3 registers (ICC_*_EL2/EL3, ICH_*), virtual CPU interfaces (GICV,
GICH), NMIs (ICC_NMIAR1_EL1), ICC_AP0R1..3/AP1R1..3 (only needed beyond 5 priority bits),
ICC_SRE_EL1 writes (the system-register interface is always on), the GICv2 bypass bits of
GICC_CTLR (stored, no effect). GICC_APR0/NSAPR0 use the GICv3 layout, one bit per group
priority (the GICv2 format is IMPLEMENTATION DEFINED).
"""

from __future__ import annotations

from pyned.devices.gic import regs
from pyned.devices.gic.distributor import NUM_SGIS, Distributor, Irq, RegisterFrame
from pyned.devices.gic.regs import GiccReg

SPECIAL_INTIDS = 1020  # 1020..1023 (and, with no LPIs, anything above) are never ended
ICC_INTID_MASK = 0xFF_FFFF  # ICC_EOIRx/DIR_EL1 INTID field, 24 bits
GICC_INTID_MASK = 0x3FF  # GICC_EOIR/DIR bits [9:0]; [12:10] name the SGI source


def _lowest_bit(value: int) -> int:
    return (value & -value).bit_length() - 1


class CpuInterface:
    """The CPU interface of CPU ``index``."""

    def __init__(self, index: int, dist: Distributor) -> None:
        self.index = index
        self.dist = dist
        self.v3 = dist.version == 3
        self.reset()

    def reset(self) -> None:
        self.ctlr = 0  # ICC_CTLR_EL1 writable bits, or the whole GICv2 GICC_CTLR
        self.pmr = 0
        self.bpr0 = regs.BPR0_MIN
        self.bpr1 = regs.BPR1_MIN
        self.apr = [0, 0]  # active priorities of Group 0 and Group 1
        self.igrpen = [False, False]  # v3 ICC_IGRPEN0/1_EL1

    # -- configuration --------------------------------------------------------------------

    def group_enabled(self, group: int) -> bool:
        if self.v3:
            return self.igrpen[group]
        return bool(self.ctlr & (regs.GICC_CTLR_ENABLE_GRP0 << group))

    def _eoi_split(self) -> bool:
        return bool(self.ctlr & (regs.ICC_CTLR_EOIMODE if self.v3 else regs.GICC_CTLR_EOIMODE))

    def _cbpr(self) -> bool:
        return bool(self.ctlr & (regs.ICC_CTLR_CBPR if self.v3 else regs.GICC_CTLR_CBPR))

    def group_priority(self, irq: Irq) -> int:
        """The part of the priority that decides preemption."""
        if irq.group == 0 or self._cbpr():
            mask = 0xFF << (self.bpr0 + 1)
        else:
            mask = 0xFF << self.bpr1  # the Group 1 binary point counts one bit less
        return irq.priority & mask & 0xFF

    def running_priority(self) -> int:
        active = self.apr[0] | self.apr[1]
        if not active:
            return regs.PRIORITY_IDLE
        return _lowest_bit(active) << (8 - regs.PRIORITY_BITS)

    def may_signal(self, irq: Irq) -> bool:
        """Whether ``irq`` passes the priority mask and would preempt what is running."""
        return irq.priority < self.pmr and self.group_priority(irq) < self.running_priority()

    def is_fiq(self, irq: Irq) -> bool:
        if irq.group != 0:
            return False
        return self.v3 or bool(self.ctlr & regs.GICC_CTLR_FIQEN)

    # -- what is pending ------------------------------------------------------------------

    def hppi(self) -> Irq | None:
        """The highest-priority interrupt pending (and not active) for this CPU."""
        dist = self.dist
        if dist.asleep[self.index]:
            return None
        best = None
        for irq in dist.pending:
            if (irq.active or not irq.enabled or not dist.group_enabled(irq.group)
                    or not self.group_enabled(irq.group)
                    or not dist.routed_to(irq, self.index)):
                continue
            if best is None or (irq.priority, irq.intid) < (best.priority, best.intid):
                best = irq
        return best

    def asserted(self) -> Irq | None:
        """The interrupt this CPU interface is signalling to its CPU now, if any."""
        if not self.dist.pending:
            return None
        irq = self.hppi()
        return irq if irq is not None and self.may_signal(irq) else None

    def _source(self, irq: Irq) -> int:
        if not self.v3 and irq.intid < NUM_SGIS and irq.sources:
            return _lowest_bit(irq.sources)
        return 0

    def _reported_id(self, irq: Irq | None, group: int | None) -> int:
        """The INTID an IAR/HPPIR read names for ``irq``; ``group`` None is GICv2's
        group-neutral GICC_IAR/HPPIR."""
        if irq is None:
            return regs.INTID_SPURIOUS
        if group is None:
            if irq.group == 1 and not self.ctlr & regs.GICC_CTLR_ACKCTL:
                return regs.INTID_GROUP1_PENDING
        elif irq.group != group:
            return regs.INTID_SPURIOUS
        return irq.intid | self._source(irq) << 10

    def highest_pending(self, group: int | None) -> int:
        return self._reported_id(self.hppi(), group)

    # -- the interrupt life cycle ---------------------------------------------------------

    def acknowledge(self, group: int | None) -> int:
        irq = self.asserted()
        intid = self._reported_id(irq, group)
        if irq is None or intid in (regs.INTID_SPURIOUS, regs.INTID_GROUP1_PENDING):
            return intid  # (a GICv2 SGI's id carries its source above bit 9)
        if not self.v3 and irq.intid < NUM_SGIS:
            irq.sources &= ~(1 << self._source(irq))
        else:
            # Edge: no longer pending. Level: a pending state set by software goes; the
            # input, if still high, keeps it pending (active and pending).
            irq.latch = False
        irq.active = True
        self.apr[irq.group] |= 1 << (self.group_priority(irq) >> (8 - regs.PRIORITY_BITS))
        self.dist.sync(irq)
        return intid

    def _highest_active_group(self) -> int | None:
        a0, a1 = self.apr
        if not a0 and not a1:
            return None
        if not a1 or (a0 and _lowest_bit(a0) <= _lowest_bit(a1)):
            return 0
        return 1

    def end_of_interrupt(self, intid: int, group: int | None) -> None:
        """Priority drop, plus deactivation unless EOImode splits them. An EOI for a group
        other than the one holding the running priority is ignored (as QEMU and hardware
        do); ``group`` None (GICv2 GICC_EOIR) accepts either."""
        if intid >= SPECIAL_INTIDS:
            return
        active_group = self._highest_active_group()
        if active_group is None or (group is not None and group != active_group):
            return
        bits = self.apr[active_group]
        self.apr[active_group] = bits & (bits - 1)
        if not self._eoi_split():
            self.deactivate(intid)

    def deactivate(self, intid: int) -> None:
        if intid >= SPECIAL_INTIDS:
            return
        irq = self.dist.irq(intid, self.index)
        if irq is not None:
            irq.active = False
            self.dist.sync(irq)

    # -- GICv3 system registers -----------------------------------------------------------

    def sysreg_read(self, name: str) -> int:
        if not self.v3:
            return 0  # ICC_SRE_EL1.SRE reads 0: no system-register interface on a GICv2
        if name == "ICC_IAR1_EL1":
            return self.acknowledge(1)
        if name == "ICC_IAR0_EL1":
            return self.acknowledge(0)
        if name == "ICC_HPPIR1_EL1":
            return self.highest_pending(1)
        if name == "ICC_HPPIR0_EL1":
            return self.highest_pending(0)
        if name == "ICC_PMR_EL1":
            return self.pmr
        if name == "ICC_RPR_EL1":
            return self.running_priority()
        if name == "ICC_BPR0_EL1":
            return self.bpr0
        if name == "ICC_BPR1_EL1":
            return min(self.bpr0 + 1, 7) if self._cbpr() else self.bpr1
        if name == "ICC_CTLR_EL1":
            return (self.ctlr
                    | (regs.PRIORITY_BITS - 1) << regs.ICC_CTLR_PRIBITS_SHIFT
                    | 0 << regs.ICC_CTLR_IDBITS_SHIFT  # 16-bit INTIDs
                    | regs.ICC_CTLR_A3V | regs.ICC_CTLR_RSS)
        if name == "ICC_SRE_EL1":
            return regs.ICC_SRE_VALUE
        if name == "ICC_IGRPEN0_EL1":
            return int(self.igrpen[0])
        if name == "ICC_IGRPEN1_EL1":
            return int(self.igrpen[1])
        if name == "ICC_AP0R0_EL1":
            return self.apr[0]
        if name == "ICC_AP1R0_EL1":
            return self.apr[1]
        return 0  # write-only registers

    def sysreg_write(self, name: str, value: int) -> None:
        if not self.v3:
            return
        value &= 0xFFFF_FFFF_FFFF_FFFF
        if name == "ICC_EOIR1_EL1":
            self.end_of_interrupt(value & ICC_INTID_MASK, 1)
        elif name == "ICC_EOIR0_EL1":
            self.end_of_interrupt(value & ICC_INTID_MASK, 0)
        elif name == "ICC_DIR_EL1":
            self.deactivate(value & ICC_INTID_MASK)
        elif name == "ICC_SGI1R_EL1":
            self.dist.send_sgi_v3(self.index, value, any_group=True)
        elif name in ("ICC_SGI0R_EL1", "ICC_ASGI1R_EL1"):
            self.dist.send_sgi_v3(self.index, value, any_group=False)
        elif name == "ICC_PMR_EL1":
            self.pmr = value & regs.PRIORITY_MASK
        elif name == "ICC_BPR0_EL1":
            self.bpr0 = max(value & 7, regs.BPR0_MIN)
        elif name == "ICC_BPR1_EL1":
            if not self._cbpr():
                self.bpr1 = max(value & 7, regs.BPR1_MIN)
        elif name == "ICC_CTLR_EL1":
            self.ctlr = value & (regs.ICC_CTLR_CBPR | regs.ICC_CTLR_EOIMODE)
        elif name == "ICC_IGRPEN0_EL1":
            self.igrpen[0] = bool(value & 1)
        elif name == "ICC_IGRPEN1_EL1":
            self.igrpen[1] = bool(value & 1)
        elif name == "ICC_AP0R0_EL1":
            self.apr[0] = value & 0xFFFF_FFFF
        elif name == "ICC_AP1R0_EL1":
            self.apr[1] = value & 0xFFFF_FFFF
        # ICC_SRE_EL1: SRE, DFB and DIB are RAO/WI. Read-only registers ignore writes.


class CpuInterfaceFrame(RegisterFrame):
    """GICv2 GICC, 8 KiB, banked: each CPU reaches its own interface at the same address."""

    def __init__(self, dist: Distributor, cpus: list[CpuInterface]) -> None:
        self.dist = dist
        self.cpus = cpus

    def read_word(self, offset, cpu):
        c = self.cpus[cpu]
        if offset == GiccReg.GICC_CTLR:
            return c.ctlr
        if offset == GiccReg.GICC_PMR:
            return c.pmr
        if offset == GiccReg.GICC_BPR:
            return c.bpr0
        if offset == GiccReg.GICC_ABPR:
            return c.bpr1
        if offset == GiccReg.GICC_IAR:
            return c.acknowledge(None)
        if offset == GiccReg.GICC_AIAR:
            return c.acknowledge(1)
        if offset == GiccReg.GICC_RPR:
            return c.running_priority()
        if offset == GiccReg.GICC_HPPIR:
            return c.highest_pending(None)
        if offset == GiccReg.GICC_AHPPIR:
            return c.highest_pending(1)
        if offset == GiccReg.GICC_APR0:
            return c.apr[0]
        if offset == GiccReg.GICC_NSAPR0:
            return c.apr[1]
        if offset == GiccReg.GICC_IIDR:
            return regs.GICC_IIDR_VALUE
        return 0

    def write_word(self, offset, value, cpu):
        c = self.cpus[cpu]
        if offset == GiccReg.GICC_CTLR:
            c.ctlr = value & regs.GICC_CTLR_MASK
        elif offset == GiccReg.GICC_PMR:
            c.pmr = value & regs.PRIORITY_MASK
        elif offset == GiccReg.GICC_BPR:
            c.bpr0 = max(value & 7, regs.BPR0_MIN)
        elif offset == GiccReg.GICC_ABPR:
            c.bpr1 = max(value & 7, regs.BPR1_MIN)
        elif offset == GiccReg.GICC_EOIR:
            c.end_of_interrupt(value & GICC_INTID_MASK, None)
        elif offset == GiccReg.GICC_AEOIR:
            c.end_of_interrupt(value & GICC_INTID_MASK, 1)
        elif offset == GiccReg.GICC_DIR:
            c.deactivate(value & GICC_INTID_MASK)
        elif offset == GiccReg.GICC_APR0:
            c.apr[0] = value
        elif offset == GiccReg.GICC_NSAPR0:
            c.apr[1] = value
