"""GIC interrupt state, routing, and the distributor and redistributor register frames.

Modelled: per-INTID enable, pending, active, priority (5 bits), group (0/1), trigger
(level/edge) and routing; the GICv3 distributor (affinity routing only: GICD_CTLR.ARE and DS
are RAO/WI, so the GIC has a single Security state and both groups are visible), GICD_IROUTER
with 1-of-N, the GICv3 redistributors (RD and SGI frames, GICR_WAKER handshake), and the GICv2
distributor (banked SGI/PPI registers, GICD_ITARGETSR, GICD_SGIR with per-source SGI pending
bits, GICD_SPENDSGIR/CPENDSGIR).

Not modelled: LPIs, the ITS and message-based SPIs (GICD_TYPER.LPIS/MBIS are 0, the LPI
registers read 0); extended SPI/PPI ranges; the Security extension (no Secure Group 1,
GICD_IGRPMODR and GICD_NSACR are RAZ/WI); legacy (ARE=0) operation of a GICv3; GICv2 N-N
SPI semantics beyond "pending on every targeted CPU until one acknowledges".

A GICv2 SGI keeps one pending bit per source CPU, as the architecture says, but only one
active state per SGI and target: while SGI n is active on a CPU, further sources of SGI n wait.

Everything here is lock-free; ``controller.Gic`` serialises access.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Callable, Sequence

from pyned.devices.gic import regs
from pyned.devices.gic.regs import GicdReg, GicrReg

if TYPE_CHECKING:
    from pyned.devices.gic.cpu_interface import CpuInterface

NUM_PRIVATE = 32  # SGIs 0..15 and PPIs 16..31, banked per CPU
NUM_SGIS = 16
AFFINITY_MASK = 0xFF_00FF_FFFF  # MPIDR Aff3 [39:32], Aff2..Aff0 [23:0]


class Irq:
    """The state of one interrupt: an SPI, or one CPU's copy of an SGI or PPI."""

    __slots__ = ("intid", "cpu", "line", "enabled", "latch", "active", "priority", "group",
                 "edge", "route", "targets", "sources")

    def __init__(self, intid: int, cpu: int | None) -> None:
        self.intid = intid
        self.cpu = cpu  # the owning CPU of an SGI/PPI; None for SPIs
        self.line = False  # the input wire: not GIC state, so reset() leaves it alone
        self.reset()

    def reset(self) -> None:
        self.enabled = False
        self.latch = False  # pending by edge or by a GICD_ISPENDR/ICC_SGIxR write
        self.active = False
        self.priority = 0
        self.group = 0
        self.edge = self.intid < NUM_SGIS  # SGIs are always edge; PPIs and SPIs reset level
        self.route = 0  # v3 GICD_IROUTER
        self.targets = 0  # v2 GICD_ITARGETSR
        self.sources = 0  # v2 SGI: one pending bit per source CPU

    @property
    def pending(self) -> bool:
        # A level interrupt stays pending while its input is high, whatever software clears.
        return self.latch or self.sources != 0 or (self.line and not self.edge)


class Field(Enum):
    """The per-INTID register arrays, by how a write to them acts."""

    GROUP = 1
    SET_ENABLE = 2
    CLEAR_ENABLE = 3
    SET_PENDING = 4
    CLEAR_PENDING = 5
    SET_ACTIVE = 6
    CLEAR_ACTIVE = 7
    PRIORITY = 8
    TARGETS = 9
    CONFIG = 10
    SGI_SET_PENDING = 11
    SGI_CLEAR_PENDING = 12


FIELD_BITS = {Field.PRIORITY: 8, Field.TARGETS: 8, Field.CONFIG: 2, Field.SGI_SET_PENDING: 8,
              Field.SGI_CLEAR_PENDING: 8}

# (first offset, end offset, field): the same layout in GICD and in the GICR SGI frame.
_COMMON_BLOCKS = (
    (GicdReg.GICD_IGROUPR, GicdReg.GICD_ISENABLER, Field.GROUP),
    (GicdReg.GICD_ISENABLER, GicdReg.GICD_ICENABLER, Field.SET_ENABLE),
    (GicdReg.GICD_ICENABLER, GicdReg.GICD_ISPENDR, Field.CLEAR_ENABLE),
    (GicdReg.GICD_ISPENDR, GicdReg.GICD_ICPENDR, Field.SET_PENDING),
    (GicdReg.GICD_ICPENDR, GicdReg.GICD_ISACTIVER, Field.CLEAR_PENDING),
    (GicdReg.GICD_ISACTIVER, GicdReg.GICD_ICACTIVER, Field.SET_ACTIVE),
    (GicdReg.GICD_ICACTIVER, GicdReg.GICD_IPRIORITYR, Field.CLEAR_ACTIVE),
    (GicdReg.GICD_IPRIORITYR, GicdReg.GICD_IPRIORITYR + 1020, Field.PRIORITY),
    (GicdReg.GICD_ICFGR, GicdReg.GICD_IGRPMODR, Field.CONFIG),
)
_V2_BLOCKS = _COMMON_BLOCKS + (
    (GicdReg.GICD_ITARGETSR, GicdReg.GICD_ITARGETSR + 1020, Field.TARGETS),
    (GicdReg.GICD_CPENDSGIR, GicdReg.GICD_SPENDSGIR, Field.SGI_CLEAR_PENDING),
    (GicdReg.GICD_SPENDSGIR, GicdReg.GICD_SPENDSGIR + NUM_SGIS, Field.SGI_SET_PENDING),
)


def _find_block(blocks, offset: int, size: int) -> tuple[Field, int, int] | None:
    """(field, first INTID, INTID count) of an access inside a per-INTID array."""
    for start, end, field in blocks:
        if start <= offset and offset + size <= end:
            bits = FIELD_BITS.get(field, 1)
            return field, (offset - start) * 8 // bits, size * 8 // bits
    return None


class Distributor:
    """All interrupt state of one GIC and the routing decisions made from it."""

    def __init__(self, version: int, num_cpus: int, num_irqs: int,
                 affinities: Sequence[int]) -> None:
        self.version = version
        self.num_cpus = num_cpus
        self.num_irqs = num_irqs
        self.affinities = [a & AFFINITY_MASK for a in affinities]
        self._cpu_by_affinity = {a: i for i, a in enumerate(self.affinities)}
        self.cpu_mask = (1 << num_cpus) - 1
        self.private = [[Irq(i, cpu) for i in range(NUM_PRIVATE)] for cpu in range(num_cpus)]
        self.spis = [Irq(i, None) for i in range(NUM_PRIVATE, num_irqs)]
        # Everything currently pending, so that finding the highest-priority pending
        # interrupt costs the number of pending interrupts, not the number of INTIDs.
        self.pending: set[Irq] = set()
        self.cpus: list[CpuInterface] = []  # wired by the controller
        self.reset()

    def reset(self) -> None:
        self.ctlr = 0  # group enables
        # GICR_WAKER.ProcessorSleep: a sleeping redistributor forwards nothing to its CPU.
        self.asleep = [self.version == 3] * self.num_cpus
        self.pending.clear()
        for irq in self.all_irqs():
            irq.reset()
            self.sync(irq)

    def all_irqs(self):
        for bank in self.private:
            yield from bank
        yield from self.spis

    def irq(self, intid: int, cpu: int) -> Irq | None:
        """The interrupt ``intid`` as CPU ``cpu`` sees it, or None if not implemented."""
        if intid < NUM_PRIVATE:
            return self.private[cpu][intid] if 0 <= intid else None
        if intid < self.num_irqs:
            return self.spis[intid - NUM_PRIVATE]
        return None

    def sync(self, irq: Irq) -> None:
        """Call after changing anything ``Irq.pending`` depends on."""
        if irq.pending:
            self.pending.add(irq)
        else:
            self.pending.discard(irq)

    def set_line(self, irq: Irq, level: bool) -> None:
        if level and not irq.line and irq.edge:
            irq.latch = True  # rising edge
        irq.line = level
        self.sync(irq)

    # -- routing --------------------------------------------------------------------------

    def group_enabled(self, group: int) -> bool:
        return bool(self.ctlr & (regs.GICD_CTLR_ENABLE_GRP0 << group))

    def routed_to(self, irq: Irq, cpu: int) -> bool:
        if irq.cpu is not None:
            return irq.cpu == cpu
        if self.version == 2:
            return bool(irq.targets >> cpu & 1)
        if irq.route & regs.GICD_IROUTER_IRM:
            return self.one_of_n_target(irq) == cpu
        return self._cpu_by_affinity.get(irq.route & AFFINITY_MASK) == cpu

    def one_of_n_target(self, irq: Irq) -> int | None:
        """The CPU a 1-of-N SPI goes to: the first one that would take it now, else the
        first that could take it at all (awake, group enabled)."""
        eligible = [c for c in self.cpus
                    if not self.asleep[c.index] and c.group_enabled(irq.group)]
        for c in eligible:
            if c.may_signal(irq):
                return c.index
        return eligible[0].index if eligible else None

    def route_text(self, irq: Irq) -> str:
        if irq.cpu is not None:
            return f"cpu {irq.cpu}"
        if self.version == 2:
            return "cpus " + (",".join(str(c) for c in range(self.num_cpus)
                                       if irq.targets >> c & 1) or "none")
        if irq.route & regs.GICD_IROUTER_IRM:
            return "1-of-N"
        r = irq.route
        return f"{r >> 32 & 0xFF}.{r >> 16 & 0xFF}.{r >> 8 & 0xFF}.{r & 0xFF}"

    # -- SGIs -----------------------------------------------------------------------------

    def send_sgi_v3(self, source: int, value: int, any_group: bool) -> None:
        """ICC_SGI1R_EL1 (``any_group``) or ICC_SGI0R/ASGI1R_EL1 (Group 0 SGIs only: with
        DS=1 there is no other Security state for ASGI1R to address)."""
        intid = (value >> regs.SGIR_INTID_SHIFT) & 0xF
        if value & regs.SGIR_IRM:
            targets = [c for c in range(self.num_cpus) if c != source]
        else:
            upper = ((value >> regs.SGIR_AFF3_SHIFT & 0xFF) << 32
                     | (value >> regs.SGIR_AFF2_SHIFT & 0xFF) << 16
                     | (value >> regs.SGIR_AFF1_SHIFT & 0xFF) << 8)
            base = (value >> regs.SGIR_RS_SHIFT & 0xF) * 16
            tlist = value & regs.SGIR_TARGETLIST_MASK
            targets = [c for c, aff in enumerate(self.affinities)
                       if aff & ~0xFF == upper and 0 <= (aff & 0xFF) - base < 16
                       and tlist >> ((aff & 0xFF) - base) & 1]
        for cpu in targets:
            irq = self.private[cpu][intid]
            if any_group or irq.group == 0:
                irq.latch = True
                self.sync(irq)

    def send_sgi_v2(self, source: int, value: int) -> None:
        """GICD_SGIR: TargetListFilter 0 list, 1 all but self, 2 self, 3 reserved."""
        intid = value & 0xF
        target_filter = (value >> 24) & 3
        if target_filter == regs.GICD_SGIR_FILTER_LIST:
            targets = (value >> 16) & 0xFF
        elif target_filter == regs.GICD_SGIR_FILTER_OTHERS:
            targets = self.cpu_mask & ~(1 << source)
        elif target_filter == regs.GICD_SGIR_FILTER_SELF:
            targets = 1 << source
        else:
            return
        for cpu in range(self.num_cpus):
            if targets >> cpu & 1:
                irq = self.private[cpu][intid]
                irq.sources |= 1 << source
                self.sync(irq)

    # -- per-INTID register arrays ----------------------------------------------------------

    def read_fields(self, field: Field, irqs: Sequence[Irq | None]) -> int:
        bits = FIELD_BITS.get(field, 1)
        value = 0
        for i, irq in enumerate(irqs):
            if irq is not None:
                value |= self._get(field, irq) << (i * bits)
        return value

    def write_fields(self, field: Field, irqs: Sequence[Irq | None], value: int) -> None:
        bits = FIELD_BITS.get(field, 1)
        mask = (1 << bits) - 1
        for i, irq in enumerate(irqs):
            if irq is not None:
                self._set(field, irq, (value >> (i * bits)) & mask)
                self.sync(irq)

    def _get(self, field: Field, irq: Irq) -> int:
        if field is Field.GROUP:
            return irq.group
        if field in (Field.SET_ENABLE, Field.CLEAR_ENABLE):
            return int(irq.enabled)
        if field in (Field.SET_PENDING, Field.CLEAR_PENDING):
            return int(irq.pending)
        if field in (Field.SET_ACTIVE, Field.CLEAR_ACTIVE):
            return int(irq.active)
        if field is Field.PRIORITY:
            return irq.priority
        if field is Field.CONFIG:
            return 2 if irq.edge else 0
        if field is Field.TARGETS:
            # SGIs and PPIs: the register reads as the reading CPU's own bit.
            return 1 << irq.cpu if irq.cpu is not None else irq.targets
        return irq.sources  # SGI_SET_PENDING / SGI_CLEAR_PENDING

    def _set(self, field: Field, irq: Irq, v: int) -> None:
        v2_sgi = self.version == 2 and irq.intid < NUM_SGIS
        if field is Field.GROUP:
            irq.group = v
        elif field is Field.SET_ENABLE:
            irq.enabled = irq.enabled or bool(v)
        elif field is Field.CLEAR_ENABLE:
            irq.enabled = irq.enabled and not v
        elif field is Field.SET_PENDING:
            if v and not v2_sgi:  # GICv2 SGIs go through GICD_SPENDSGIR, which names a source
                irq.latch = True
        elif field is Field.CLEAR_PENDING:
            if v and not v2_sgi:
                irq.latch = False
        elif field is Field.SET_ACTIVE:
            irq.active = irq.active or bool(v)
        elif field is Field.CLEAR_ACTIVE:
            irq.active = irq.active and not v
        elif field is Field.PRIORITY:
            irq.priority = v & regs.PRIORITY_MASK
        elif field is Field.CONFIG:
            if irq.intid >= NUM_SGIS:
                irq.edge = bool(v & 2)
        elif field is Field.TARGETS:
            if irq.cpu is None:
                irq.targets = v & self.cpu_mask
        elif field is Field.SGI_SET_PENDING:
            irq.sources |= v & self.cpu_mask
        elif field is Field.SGI_CLEAR_PENDING:
            irq.sources &= ~v


class RegisterFrame:
    """Access-size rules shared by the GIC's MMIO frames.

    Per-INTID arrays take any naturally aligned 1-, 2- or 4-byte access (byte access is
    architectural for IPRIORITYR and ITARGETSR and harmless elsewhere). Other registers are
    32-bit: a sub-word access to one reads 0 and is ignored, so that it cannot trigger a
    read side effect such as an acknowledge. An aligned 8-byte access is two 32-bit accesses,
    low half first, which is also how 64-bit registers behave when split by the guest.
    Unaligned accesses read 0 and are ignored.
    """

    def read(self, offset: int, size: int, cpu: int) -> int:
        if size == 8 and offset % 8 == 0:
            return self._read(offset, 4, cpu) | self._read(offset + 4, 4, cpu) << 32
        if size in (1, 2, 4) and offset % size == 0:
            return self._read(offset, size, cpu)
        return 0

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        if size == 8 and offset % 8 == 0:
            self._write(offset, 4, value & 0xFFFF_FFFF, cpu)
            self._write(offset + 4, 4, (value >> 32) & 0xFFFF_FFFF, cpu)
        elif size in (1, 2, 4) and offset % size == 0:
            self._write(offset, size, value & ((1 << (8 * size)) - 1), cpu)

    def _read(self, offset: int, size: int, cpu: int) -> int:
        found = self.fields_at(offset, size, cpu)
        if found is not None:
            return self.dist.read_fields(*found)
        return self.read_word(offset, cpu) if size == 4 else 0

    def _write(self, offset: int, size: int, value: int, cpu: int) -> None:
        found = self.fields_at(offset, size, cpu)
        if found is not None:
            self.dist.write_fields(found[0], found[1], value)
        elif size == 4:
            self.write_word(offset, value, cpu)

    # -- for subclasses -------------------------------------------------------------------

    dist: Distributor

    def fields_at(self, offset: int, size: int,
                  cpu: int) -> tuple[Field, list[Irq | None]] | None:
        return None

    def read_word(self, offset: int, cpu: int) -> int:
        return 0

    def write_word(self, offset: int, value: int, cpu: int) -> None:
        pass


def _irq_list(lookup: Callable[[int], Irq | None], first: int, count: int) -> list[Irq | None]:
    return [lookup(i) for i in range(first, first + count)]


class DistributorFrame(RegisterFrame):
    """GICD: 64 KiB (v3) or 4 KiB (v2)."""

    def __init__(self, dist: Distributor) -> None:
        self.dist = dist
        v3 = dist.version == 3
        self._blocks = _COMMON_BLOCKS if v3 else _V2_BLOCKS
        self._id_regs = regs.id_block(dist.version)
        self._id_base = regs.GICD_ID_BLOCK_V3 if v3 else regs.GICD_ID_BLOCK_V2
        it_lines = (dist.num_irqs + 31) // 32 - 1
        typer = it_lines | (min(dist.num_cpus, 8) - 1) << 5
        if v3:
            typer |= (9 << regs.GICD_TYPER_IDBITS_SHIFT) | regs.GICD_TYPER_A3V \
                | regs.GICD_TYPER_RSS
        self._typer = typer

    def fields_at(self, offset, size, cpu):
        found = _find_block(self._blocks, offset, size)
        if found is None:
            return None
        field, first, count = found
        if field in (Field.SGI_SET_PENDING, Field.SGI_CLEAR_PENDING):
            return field, _irq_list(lambda i: self.dist.private[cpu][i], first, count)
        if self.dist.version == 3:
            # Affinity routing: SGIs and PPIs are configured in the redistributor.
            def lookup(i):
                return self.dist.irq(i, cpu) if i >= NUM_PRIVATE else None
        else:
            def lookup(i):
                return self.dist.irq(i, cpu)
        return field, _irq_list(lookup, first, count)

    def read_word(self, offset, cpu):
        d = self.dist
        if offset == GicdReg.GICD_CTLR:
            if d.version == 3:
                return d.ctlr | regs.GICD_CTLR_ARE | regs.GICD_CTLR_DS
            return d.ctlr
        if offset == GicdReg.GICD_TYPER:
            return self._typer
        if offset == GicdReg.GICD_IIDR:
            return regs.GICD_IIDR_VALUE
        if self._id_base <= offset < self._id_base + 0x30:
            return self._id_regs[(offset - self._id_base) // 4]
        irq, high = self._irouter(offset)
        if irq is not None:
            return irq.route >> 32 if high else irq.route & 0xFFFF_FFFF
        return 0

    def write_word(self, offset, value, cpu):
        d = self.dist
        if offset == GicdReg.GICD_CTLR:
            d.ctlr = value & (regs.GICD_CTLR_ENABLE_GRP0 | regs.GICD_CTLR_ENABLE_GRP1)
        elif offset == GicdReg.GICD_SGIR and d.version == 2:
            d.send_sgi_v2(cpu, value)
        else:
            irq, high = self._irouter(offset)
            if irq is not None:
                half = (value << 32) if high else value
                keep = 0xFFFF_FFFF if high else 0xFFFF_FFFF << 32
                irq.route = ((irq.route & keep) | half) & regs.GICD_IROUTER_MASK

    def _irouter(self, offset: int) -> tuple[Irq | None, bool]:
        """The SPI whose GICD_IROUTER holds ``offset``, and whether it is the upper half."""
        if self.dist.version != 3:
            return None, False
        index, rem = divmod(offset - GicdReg.GICD_IROUTER, 8)
        if NUM_PRIVATE <= index < self.dist.num_irqs:
            return self.dist.spis[index - NUM_PRIVATE], rem == 4
        return None, False


class RedistributorFrame(RegisterFrame):
    """All GICv3 redistributors in one window: CPU i's RD frame at i * 0x20000, its SGI
    frame 0x10000 above. Which redistributor is addressed depends on the offset, not on the
    accessing CPU."""

    def __init__(self, dist: Distributor) -> None:
        self.dist = dist
        self._id_regs = regs.id_block(3)

    def fields_at(self, offset, size, cpu):
        owner, local = divmod(offset, regs.GICR_STRIDE)
        if not 0 <= owner < self.dist.num_cpus or local < regs.GICR_SGI_BASE:
            return None
        found = _find_block(_COMMON_BLOCKS, local - regs.GICR_SGI_BASE, size)
        if found is None:
            return None
        field, first, count = found
        bank = self.dist.private[owner]
        return field, _irq_list(lambda i: bank[i] if i < NUM_PRIVATE else None, first, count)

    def read_word(self, offset, cpu):
        owner, local = divmod(offset, regs.GICR_STRIDE)
        if not 0 <= owner < self.dist.num_cpus:
            return 0
        frame = local % regs.GICR_SGI_BASE
        if regs.GICR_ID_BLOCK <= frame < regs.GICR_ID_BLOCK + 0x30:
            return self._id_regs[(frame - regs.GICR_ID_BLOCK) // 4]
        if local == GicrReg.GICR_IIDR:
            return regs.GICD_IIDR_VALUE
        if local == GicrReg.GICR_TYPER:
            last = regs.GICR_TYPER_LAST if owner == self.dist.num_cpus - 1 else 0
            return (owner << 8) | last
        if local == GicrReg.GICR_TYPER + 4:
            aff = self.dist.affinities[owner]
            return (aff >> 32 & 0xFF) << 24 | (aff & 0xFF_FFFF)
        if local == GicrReg.GICR_WAKER:
            if self.dist.asleep[owner]:
                return regs.GICR_WAKER_PROCESSOR_SLEEP | regs.GICR_WAKER_CHILDREN_ASLEEP
            return 0
        return 0

    def write_word(self, offset, value, cpu):
        owner, local = divmod(offset, regs.GICR_STRIDE)
        if 0 <= owner < self.dist.num_cpus and local == GicrReg.GICR_WAKER:
            # No power controller to wait for: ChildrenAsleep follows ProcessorSleep at once.
            self.dist.asleep[owner] = bool(value & regs.GICR_WAKER_PROCESSOR_SLEEP)
