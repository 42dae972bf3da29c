"""The GIC as the VMM sees it: MMIO frames, interrupt lines, the CPU-interface system
registers, the IRQ/FIQ query for the vCPU run loop, device-tree specifiers and a dump.

One lock guards all GIC state: a vCPU thread may write the distributor while a device thread
(a timer) drives a line. After every change the controller works out which CPUs now have a
different interrupt to take and calls ``signal(cpu)`` for them with the lock released, so the
callback may re-enter the GIC (to ask ``irq_pending``, say). A CPU is signalled whenever the
interrupt its interface asserts changes to a new one, so a signal can be spurious but never
missing: a CPU that unmasks (PMR, EOI) while something is pending is signalled as well.

Edge-triggered inputs latch on a rising edge: a device that signals events with
``set_level(True)`` alone must lower the line in between. Line levels are inputs, not GIC
state, so ``reset()`` keeps them.

See ``distributor`` and ``cpu_interface`` for what is and is not modelled.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

from pyned.devices.gic import regs
from pyned.devices.gic.cpu_interface import CpuInterface, CpuInterfaceFrame
from pyned.devices.gic.distributor import (NUM_PRIVATE, NUM_SGIS, Distributor, DistributorFrame,
                                           RedistributorFrame, RegisterFrame)

MAX_INTIDS = 1020
V2_MAX_CPUS = 8

# DT interrupt specifier (Linux bindings arm,gic and arm,gic-v3)
DT_SPI = 0
DT_PPI = 1
DT_EDGE = 0x3  # IRQ_TYPE_EDGE_RISING | IRQ_TYPE_EDGE_FALLING


class _LockedFrame:
    """An MMIO frame of a Gic: runs each access under the GIC lock, then signals."""

    def __init__(self, gic: Gic, frame: RegisterFrame, size: int) -> None:
        self._gic = gic
        self._frame = frame
        self.size = size

    def read(self, offset: int, size: int, cpu: int) -> int:
        return self._gic._run(cpu, self._frame.read, offset, size, cpu)

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        self._gic._run(cpu, self._frame.write, offset, size, value, cpu)

    def reset(self) -> None:
        """Resets the whole GIC: its frames are not separate devices."""
        self._gic.reset()


class _Line:
    """One interrupt input: an SPI, or a PPI of one CPU."""

    def __init__(self, gic: Gic, intid: int, cpu: int | None) -> None:
        self._gic = gic
        self.intid = intid
        self.cpu = cpu

    def set_level(self, level: bool) -> None:
        self._gic.set_level(self.intid, level, self.cpu)

    def pulse(self) -> None:
        self._gic.pulse(self.intid, self.cpu)

    @property
    def level(self) -> bool:
        return self._gic._input(self.intid, self.cpu).line


class Gic:
    """An Arm GICv3 or GICv2 with ``num_cpus`` CPU interfaces and ``num_spis`` SPIs.

    ``affinities`` gives each CPU's MPIDR (Aff3..Aff0) for GICv3 affinity routing,
    GICR_TYPER and ICC_SGI1R_EL1 targeting; by default CPU i has affinity i (Aff0 = i
    below 256).
    """

    ICC_REGISTERS = regs.ICC_REGISTERS

    def __init__(self, version: int, num_cpus: int, num_spis: int,
                 signal: Callable[[int], None], *,
                 affinities: Sequence[int] | None = None) -> None:
        if version not in (2, 3):
            raise ValueError(f"GIC version must be 2 or 3, not {version}")
        max_cpus = V2_MAX_CPUS if version == 2 else 1 << 16
        if not 1 <= num_cpus <= max_cpus:
            raise ValueError(f"a GICv{version} serves 1..{max_cpus} CPUs, not {num_cpus}")
        if num_spis < 0 or num_spis % 32 or NUM_PRIVATE + num_spis > 1024:
            raise ValueError(f"num_spis must be a multiple of 32 up to 992, not {num_spis}")
        if affinities is None:
            affinities = list(range(num_cpus))
        if len(affinities) != num_cpus:
            raise ValueError(f"{len(affinities)} affinities for {num_cpus} CPUs")
        if len({a & 0xFF_00FF_FFFF for a in affinities}) != num_cpus:
            raise ValueError("CPU affinities must be distinct")
        self.version = version
        self.num_cpus = num_cpus
        self.num_irqs = min(NUM_PRIVATE + num_spis, MAX_INTIDS)
        self._signal = signal
        self._lock = threading.Lock()
        self._dist = Distributor(version, num_cpus, self.num_irqs, affinities)
        self._cpus = [CpuInterface(i, self._dist) for i in range(num_cpus)]
        self._dist.cpus = self._cpus
        self._asserted: list[tuple[int, bool] | None] = [None] * num_cpus
        self.distributor = _LockedFrame(self, DistributorFrame(self._dist),
                                        0x1_0000 if version == 3 else 0x1000)
        self.redistributors: _LockedFrame | None = None
        self.cpu_interface_mmio: _LockedFrame | None = None
        if version == 3:
            self.redistributors = _LockedFrame(self, RedistributorFrame(self._dist),
                                               num_cpus * regs.GICR_STRIDE)
        else:
            self.cpu_interface_mmio = _LockedFrame(
                self, CpuInterfaceFrame(self._dist, self._cpus), 0x2000)

    # -- the lock and the wake-ups --------------------------------------------------------

    def _check_cpu(self, cpu: int) -> None:
        if not 0 <= cpu < self.num_cpus:
            raise ValueError(f"CPU {cpu} is outside this GIC (0..{self.num_cpus - 1})")

    def _run(self, cpu: int, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_cpu(cpu)
        with self._lock:
            result = fn(*args)
            wake = self._newly_asserted()
        for c in wake:
            self._signal(c)
        return result

    def _newly_asserted(self) -> list[int]:
        wake = []
        for c in self._cpus:
            irq = c.asserted()
            now = None if irq is None else (irq.intid, c.is_fiq(irq))
            if now is not None and now != self._asserted[c.index]:
                wake.append(c.index)
            self._asserted[c.index] = now
        return wake

    def reset(self) -> None:
        def do_reset() -> None:
            self._dist.reset()
            for c in self._cpus:
                c.reset()
            self._asserted = [None] * self.num_cpus
        self._run(0, do_reset)

    # -- interrupt inputs -----------------------------------------------------------------

    def _input(self, intid: int, cpu: int | None):
        if NUM_PRIVATE <= intid < self.num_irqs:
            return self._dist.spis[intid - NUM_PRIVATE]
        if NUM_SGIS <= intid < NUM_PRIVATE:
            if cpu is None:
                raise ValueError(f"PPI {intid} needs a CPU")
            self._check_cpu(cpu)
            return self._dist.private[cpu][intid]
        raise ValueError(f"INTID {intid} is not an SPI or PPI of this GIC "
                         f"(16..{self.num_irqs - 1})")

    def irq_line(self, intid: int) -> _Line:
        """The input of SPI ``intid`` (32 ≤ intid < num_irqs)."""
        if not NUM_PRIVATE <= intid < self.num_irqs:
            raise ValueError(f"INTID {intid} is not an SPI of this GIC "
                             f"(32..{self.num_irqs - 1})")
        return _Line(self, intid, None)

    def ppi_line(self, cpu: int, intid: int) -> _Line:
        """The input of PPI ``intid`` (16..31) of CPU ``cpu``."""
        if not NUM_SGIS <= intid < NUM_PRIVATE:
            raise ValueError(f"INTID {intid} is not a PPI (16..31)")
        self._check_cpu(cpu)
        return _Line(self, intid, cpu)

    def set_level(self, intid: int, level: bool, cpu: int | None = None) -> None:
        irq = self._input(intid, cpu)
        level = bool(level)
        with self._lock:
            if irq.line == level:
                return
            self._dist.set_line(irq, level)
            wake = self._newly_asserted()
        for c in wake:
            self._signal(c)

    def pulse(self, intid: int, cpu: int | None = None) -> None:
        """An event that makes the interrupt pending whatever its trigger configuration.

        Message-like sources (uvmm's edge sinks: ``l4vmm,virq-rcv``) need no
        acknowledge from the guest and must not be lost on a level-configured input.
        """
        irq = self._input(intid, cpu)
        with self._lock:
            irq.latch = True
            self._dist.sync(irq)
            wake = self._newly_asserted()
        for c in wake:
            self._signal(c)

    # -- the GICv3 system-register CPU interface -------------------------------------------

    def icc_read(self, cpu: int, name: str) -> int:
        if name not in regs.ICC_REGISTERS:
            raise ValueError(f"{name} is not a CPU interface register this GIC implements")
        return self._run(cpu, self._cpus[cpu].sysreg_read, name)

    def icc_write(self, cpu: int, name: str, value: int) -> None:
        if name not in regs.ICC_REGISTERS:
            raise ValueError(f"{name} is not a CPU interface register this GIC implements")
        self._run(cpu, self._cpus[cpu].sysreg_write, name, value)

    # -- for the vCPU run loop ------------------------------------------------------------

    def signals(self, cpu: int) -> tuple[bool, bool]:
        """(IRQ, FIQ): what CPU ``cpu``'s interface asserts now (at most one of them).

        Asked at every guest slice. Every change of GIC state recomputes what
        each interface asserts before its lock is released (``_newly_asserted``),
        so this is a read, without the lock.
        """
        self._check_cpu(cpu)
        now = self._asserted[cpu]
        if now is None:
            return False, False
        return not now[1], now[1]

    def irq_pending(self, cpu: int) -> bool:
        """Whether CPU ``cpu``'s interface asserts IRQ now."""
        return self.signals(cpu)[0]

    def fiq_pending(self, cpu: int) -> bool:
        """Whether CPU ``cpu``'s interface asserts FIQ now (Group 0; GICv2 only with FIQEn)."""
        return self.signals(cpu)[1]

    # -- the device tree ------------------------------------------------------------------

    def parse_dt_interrupt(self, cells: tuple[int, ...]) -> tuple[int, str]:
        """(INTID, "level"|"edge") of a 3-cell ``interrupts`` specifier."""
        if len(cells) < 3:
            raise ValueError(f"a GIC interrupt specifier has 3 cells, not {len(cells)}")
        kind, number, flags = cells[0], cells[1], cells[2]
        trigger = "edge" if flags & DT_EDGE else "level"
        if kind == DT_SPI:
            max_spi = self.num_irqs - NUM_PRIVATE - 1
            if not 0 <= number <= max_spi:
                raise ValueError(f"SPI {number} is outside this GIC (max SPI {max_spi})")
            return NUM_PRIVATE + number, trigger
        if kind == DT_PPI:
            if not 0 <= number < NUM_PRIVATE - NUM_SGIS:
                raise ValueError(f"PPI {number} is outside this GIC (max PPI 15)")
            return NUM_SGIS + number, trigger
        raise ValueError(f"interrupt type {kind} is not supported by this GIC "
                         f"(0 SPI, 1 PPI)")

    # -- for the monitor ------------------------------------------------------------------

    def dump(self) -> list[dict]:
        """Every interrupt with any state (enabled, pending, active, input high)."""
        rows = []
        with self._lock:
            d = self._dist
            for irq in d.all_irqs():
                if not (irq.enabled or irq.pending or irq.active or irq.line):
                    continue
                row = {"intid": irq.intid, "cpu": irq.cpu, "enabled": irq.enabled,
                       "pending": irq.pending, "active": irq.active, "line": irq.line,
                       "priority": irq.priority, "group": irq.group,
                       "config": "edge" if irq.edge else "level",
                       "target": d.route_text(irq)}
                if self.version == 2 and irq.intid < NUM_SGIS:
                    row["sources"] = [c for c in range(self.num_cpus) if irq.sources >> c & 1]
                rows.append(row)
        rows.sort(key=lambda r: (r["intid"], -1 if r["cpu"] is None else r["cpu"]))
        return rows
