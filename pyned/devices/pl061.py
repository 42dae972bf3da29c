"""ARM PrimeCell GPIO PL061 (ARM DDI 0190B), DT binding ``arm,pl061``: eight pins.

GPIODATA is address-masked: bits [9:2] of the offset select which pins an
access reads or writes, so a pin can be flipped with one store and no
read-modify-write. Writes change output pins only (GPIODIR = 1). Interrupt
detection works on each pin's pad, which for an output carries the level the
controller drives (so a guest can raise its own GPIO interrupt by toggling an
output) and for an input the level the host applies with ``set_input``:
level or edge (``GPIOIS``), one or both edges (``GPIOIBE``), high/rising or
low/falling (``GPIOIEV``). The one interrupt output is the OR of the masked
status (``GPIOMIS``), as a level. ``GPIOAFSEL`` is kept and has no effect.
The board watches the pads through ``on_pads`` (the LEDs hang on them).
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Callable

from pyned.devices.base import IrqLine

PINS = 8
_MASK = (1 << PINS) - 1


class Pl061Reg(IntEnum):
    GPIODATA = 0x000  # ... 0x3FC, address-masked
    GPIODIR = 0x400
    GPIOIS = 0x404
    GPIOIBE = 0x408
    GPIOIEV = 0x40C
    GPIOIE = 0x410
    GPIORIS = 0x414
    GPIOMIS = 0x418
    GPIOIC = 0x41C
    GPIOAFSEL = 0x420


# GPIOPeriphID0-3 then GPIOPCellID0-3 at 0xFE0..0xFFC: part 0x061, designer ARM.
ID_REGS = (0x61, 0x10, 0x04, 0x00, 0x0D, 0xF0, 0x05, 0xB1)
_CONFIG = (Pl061Reg.GPIODIR, Pl061Reg.GPIOIS, Pl061Reg.GPIOIBE, Pl061Reg.GPIOIEV,
           Pl061Reg.GPIOIE, Pl061Reg.GPIOAFSEL)


class Pl061:
    """One PL061: pin state, interrupt detection and a level interrupt output."""

    def __init__(self, irq: IrqLine, on_pads: Callable[[int, int], None] | None = None) -> None:
        self._irq = irq
        self._on_pads = on_pads      # (pads, outputs) after every change, outside the lock
        self._lock = threading.Lock()
        self._inputs = 0             # what the host applies to the pins
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._out = 0
            self._regs = {r: 0 for r in _CONFIG}
            self._edges = 0          # edge-detected status bits (GPIORIS for edge pins)
            self._pads = self._pad_levels()
            self._update()
            report = (self._pads, self._regs[Pl061Reg.GPIODIR])
        self._report(report)

    # -- guest side ---------------------------------------------------------

    def read(self, offset: int, size: int, cpu: int) -> int:
        with self._lock:
            if offset < 0x400:
                mask = (offset >> 2) & _MASK
                return self._pads & mask
            if offset in self._regs:
                return self._regs[offset]  # type: ignore[index]
            if offset == Pl061Reg.GPIORIS:
                return self._ris()
            if offset == Pl061Reg.GPIOMIS:
                return self._ris() & self._regs[Pl061Reg.GPIOIE]
            if 0xFE0 <= offset <= 0xFFC and offset % 4 == 0:
                return ID_REGS[(offset - 0xFE0) // 4]
            return 0

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        value &= _MASK
        with self._lock:
            if offset < 0x400:
                mask = (offset >> 2) & _MASK & self._regs[Pl061Reg.GPIODIR]
                self._out = (self._out & ~mask) | (value & mask)
            elif offset in self._regs:
                self._regs[offset] = value  # type: ignore[index]
            elif offset == Pl061Reg.GPIOIC:
                self._edges &= ~value
            else:
                return
            changed = self._settle()
            report = (self._pads, self._regs[Pl061Reg.GPIODIR]) if changed else None
        self._report(report)

    # -- host side ----------------------------------------------------------

    def set_input(self, pin: int, level: bool) -> None:
        """Drive pin ``pin`` from outside (a button); it matters while the pin is an input."""
        if not 0 <= pin < PINS:
            raise ValueError(f"a PL061 has pins 0..{PINS - 1}, not {pin}")
        with self._lock:
            self._inputs = (self._inputs & ~(1 << pin)) | (int(level) << pin)
            changed = self._settle()
            report = (self._pads, self._regs[Pl061Reg.GPIODIR]) if changed else None
        self._report(report)

    def pads(self) -> int:
        with self._lock:
            return self._pads

    def outputs(self) -> int:
        with self._lock:
            return self._regs[Pl061Reg.GPIODIR]

    # -- internals ----------------------------------------------------------

    def _pad_levels(self) -> int:
        d = self._regs[Pl061Reg.GPIODIR]
        return (self._out & d) | (self._inputs & ~d & _MASK)

    def _settle(self) -> bool:
        """Recompute the pads, latch edges on them, drive the line; True if a pad changed."""
        old, new = self._pads, self._pad_levels()
        self._pads = new
        if old != new:
            level = self._regs[Pl061Reg.GPIOIS]
            both = self._regs[Pl061Reg.GPIOIBE]
            rising = self._regs[Pl061Reg.GPIOIEV]
            went_up, went_down = new & ~old, old & ~new
            hit = (both & (went_up | went_down)) | (~both & ((rising & went_up)
                                                             | (~rising & went_down)))
            self._edges |= hit & ~level & _MASK
        self._update()
        return old != new

    def _ris(self) -> int:
        level_pins = self._regs[Pl061Reg.GPIOIS]
        active = (self._pads & self._regs[Pl061Reg.GPIOIEV]) | (
            ~self._pads & ~self._regs[Pl061Reg.GPIOIEV])
        return ((active & level_pins) | (self._edges & ~level_pins)) & _MASK

    def _update(self) -> None:
        self._irq.set_level(bool(self._ris() & self._regs[Pl061Reg.GPIOIE]))

    def _report(self, report: tuple[int, int] | None) -> None:
        if report is not None and self._on_pads is not None:
            self._on_pads(*report)
