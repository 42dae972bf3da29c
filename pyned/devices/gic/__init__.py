"""Arm Generic Interrupt Controller, GICv3 and GICv2 (IHI 0069, IHI 0048B), as a pure model.

``Gic`` is the whole controller: MMIO frames (``distributor``, ``redistributors`` for v3,
``cpu_interface_mmio`` for v2), interrupt input lines, the GICv3 ICC_*_EL1 system registers
(``icc_read``/``icc_write``, encodings in ``ICC_REGISTERS``), the IRQ/FIQ query for the vCPU
run loop, device-tree interrupt specifiers and a dump for the monitor.

Modelled: SGIs, PPIs and up to 988 SPIs; enable, pending, active, level/edge, 5-bit
priorities, two groups with a single Security state (GICD_CTLR.DS=1), priority mask,
binary points, preemption through active priorities, split EOI/deactivate, GICv3 affinity
routing (IROUTER with 1-of-N) and GICv2 target lists, SGI generation both ways.
Not modelled: LPIs and the ITS, extended SPI/PPI ranges, the Security extension beyond DS=1,
GICv3 legacy (ARE=0) mode, GICv2 virtualization extensions (GICH/GICV), GICv3 virtual CPU
interface (ICH_*), NMIs, power management beyond the GICR_WAKER handshake.
"""

from pyned.devices.gic.controller import Gic
from pyned.devices.gic.regs import (ICC_REGISTERS, GiccReg, GicdReg, GicrReg)

__all__ = ["Gic", "ICC_REGISTERS", "GicdReg", "GicrReg", "GiccReg"]
