"""The SBSA generic watchdog, DT ``arm,sbsa-gwdt`` (Arm DEN0029 SBSA, revision 1 variant).

Two register frames, as uvmm's ``sbsa_gwdt.cc`` maps them: ``reg[0]`` the
control frame (WCS, WOR, WCV, W_IIDR), ``reg[1]`` the refresh frame (WRR,
W_IIDR). An explicit refresh (a write to WRR, WCS or WOR) sets the compare
value to counter + WOR and clears WS0 and WS1. When the counter reaches the
compare value while the watchdog is enabled, the first timeout raises WS0
(the interrupt line, level, until the next refresh) and loads a new compare
value one WOR later; the second raises WS1, which resets the system (uvmm:
the VM shuts down with the reboot code). The deadlines run on the VM's
counter clock, so pyned needs no vWatchdog service behind the device.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Callable

from pyned.devices.base import IrqLine
from pyned.devices.timer import Deadlines

WCS_EN, WCS_WS0, WCS_WS1 = 1 << 0, 1 << 1, 1 << 2
# Revision 1 variant: WOR is 48 bits wide.
WOR_MASK = (1 << 48) - 1
# W_IIDR: ArchVer (bits 19:16) = 1 (revision 1), no implementer code.
W_IIDR_VALUE = 1 << 16


class ControlReg(IntEnum):
    WCS = 0x000
    WOR_LO = 0x008
    WOR_HI = 0x00C
    WCV_LO = 0x010
    WCV_HI = 0x014
    W_IIDR = 0xFCC


class RefreshReg(IntEnum):
    WRR = 0x000
    W_IIDR = 0xFCC


class SbsaGwdt:
    """The watchdog's state; ``control`` and ``refresh`` are its two MMIO frames."""

    def __init__(self, count: Callable[[], int], deadlines: Deadlines, ws0: IrqLine,
                 on_ws0: Callable[[], None], on_ws1: Callable[[], None]) -> None:
        self._count = count
        self._deadlines = deadlines
        self._ws0_line = ws0
        self._on_ws0 = on_ws0
        self._on_ws1 = on_ws1
        self._lock = threading.Lock()
        self._handle: object | None = None
        self.wcs = 0
        self.wor = 0
        self.wcv = 0
        self.refreshes = 0
        self.control = _Frame(self._ctl_read, self._ctl_write, self.reset)
        self.refresh = _Frame(self._ref_read, self._ref_write, lambda: None)

    def reset(self) -> None:
        with self._lock:
            self._cancel()
            self.wcs = self.wor = self.wcv = 0
            self._ws0_line.set_level(False)

    # -- registers ---------------------------------------------------------------

    def _ctl_read(self, offset: int) -> int:
        if offset == ControlReg.WCS:
            return self.wcs
        if offset == ControlReg.WOR_LO:
            return self.wor & 0xFFFF_FFFF
        if offset == ControlReg.WOR_HI:
            return self.wor >> 32
        if offset == ControlReg.WCV_LO:
            return self.wcv & 0xFFFF_FFFF
        if offset == ControlReg.WCV_HI:
            return self.wcv >> 32
        if offset == ControlReg.W_IIDR:
            return W_IIDR_VALUE
        return 0

    def _ctl_write(self, offset: int, value: int) -> None:
        if offset == ControlReg.WCS:
            self.wcs = (self.wcs & ~WCS_EN) | (value & WCS_EN)
            self._explicit_refresh()
        elif offset == ControlReg.WOR_LO:
            self.wor = (self.wor & ~0xFFFF_FFFF) | value
            self._explicit_refresh()
        elif offset == ControlReg.WOR_HI:
            self.wor = ((value & 0xFFFF) << 32 | (self.wor & 0xFFFF_FFFF)) & WOR_MASK
            self._explicit_refresh()
        elif offset in (ControlReg.WCV_LO, ControlReg.WCV_HI):
            shift = 0 if offset == ControlReg.WCV_LO else 32
            with self._lock:
                self.wcv = (self.wcv & ~(0xFFFF_FFFF << shift)) | (value << shift)
                self._arm()

    def _ref_read(self, offset: int) -> int:
        return W_IIDR_VALUE if offset == RefreshReg.W_IIDR else 0

    def _ref_write(self, offset: int, value: int) -> None:
        if offset == RefreshReg.WRR:
            self._explicit_refresh()

    # -- timeouts ------------------------------------------------------------------

    def _explicit_refresh(self) -> None:
        with self._lock:
            self.refreshes += 1
            was_ws0 = bool(self.wcs & WCS_WS0)
            self.wcs &= WCS_EN
            self.wcv = self._count() + self.wor
            self._arm()
            if was_ws0:   # under the lock: a timeout on the clock thread may race
                self._ws0_line.set_level(False)

    def _arm(self) -> None:
        """Put the next timeout on the clock (lock held)."""
        self._cancel()
        if self.wcs & WCS_EN and not self.wcs & WCS_WS1:
            self._handle = self._deadlines.at_count(self.wcv, self._timeout)

    def _cancel(self) -> None:
        if self._handle is not None:
            self._deadlines.cancel(self._handle)
            self._handle = None

    def _timeout(self) -> None:
        with self._lock:
            self._handle = None
            if not self.wcs & WCS_EN or self._count() < self.wcv:
                return
            if not self.wcs & WCS_WS0:
                self.wcs |= WCS_WS0
                self.wcv = self._count() + self.wor
                self._arm()
                self._ws0_line.set_level(True)
                stage = 0
            else:
                self.wcs |= WCS_WS1
                stage = 1
        if stage == 0:
            self._on_ws0()
        else:
            self._on_ws1()


class _Frame:
    """One register frame: 32-bit registers (a 64-bit access arrives as two halves)."""

    def __init__(self, read: Callable[[int], int], write: Callable[[int, int], None],
                 reset: Callable[[], None]) -> None:
        self._read = read
        self._write = write
        self.reset = reset

    def read(self, offset: int, size: int, cpu: int) -> int:
        shift = (offset & 3) * 8
        return (self._read(offset & ~3) >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        if size == 4 and not offset & 3:
            self._write(offset, value & 0xFFFF_FFFF)
