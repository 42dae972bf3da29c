"""The Arm generic timer's EL1 timers for one CPU (ARM ARM D11), DT ``arm,armv8-timer``.

Unicorn runs the counter itself (CNTVCT = CNTPCT = host monotonic ns / 16,
62.5 MHz) but its timers are stubs: control writes are dropped and nothing
ever fires. This model keeps CTL/CVAL for the virtual and the EL1 physical
timer, derives TVAL and ISTATUS from the counter, drives each timer's PPI as
a level (ENABLE and not IMASK and count >= CVAL), and asks the kernel clock
for a callback at the next deadline so that the line rises on time.
CNTVOFF is 0, so both timers compare against the same count. The EL2 and
secure timers are not modelled (a guest at EL1 cannot reach them).
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Callable, Protocol

from pyned.devices.base import IrqLine

CTL_ENABLE = 1 << 0
CTL_IMASK = 1 << 1
CTL_ISTATUS = 1 << 2
_U64 = (1 << 64) - 1


class TimerKind(IntEnum):
    PHYS = 0
    VIRT = 1


class Deadlines(Protocol):
    """The kernel clock as a timer needs it: one pending callback per timer.

    A callback may come before its count (a hypervisor's timer advance, given
    while the CPU cannot observe the timer: it does not run again before the
    count); the timer takes the count it armed as reached.
    """

    def at_count(self, count: int, callback: Callable[[], None]) -> object: ...

    def cancel(self, handle: object) -> None: ...


class _Timer:
    def __init__(self, line: IrqLine) -> None:
        self.line = line
        self.ctl = 0
        self.cval = 0
        self.level = False
        self.handle: object | None = None
        self.fired = 0


class GenericTimer:
    """EL1 physical and virtual timers of one CPU."""

    def __init__(self, count: Callable[[], int], deadlines: Deadlines, phys_irq: IrqLine,
                 virt_irq: IrqLine) -> None:
        self._count = count
        self._deadlines = deadlines
        self._lock = threading.Lock()
        self._timers = {TimerKind.PHYS: _Timer(phys_irq), TimerKind.VIRT: _Timer(virt_irq)}

    def reset(self) -> None:
        with self._lock:
            for t in self._timers.values():
                if t.handle is not None:
                    self._deadlines.cancel(t.handle)
                t.ctl, t.cval, t.handle = 0, 0, None
        for kind in TimerKind:
            self._update(kind)

    # -- system-register view ---------------------------------------------------

    def read_ctl(self, kind: TimerKind) -> int:
        t = self._timers[kind]
        ctl = t.ctl & (CTL_ENABLE | CTL_IMASK)
        if t.ctl & CTL_ENABLE and self._count() >= t.cval:
            ctl |= CTL_ISTATUS
        return ctl

    def write_ctl(self, kind: TimerKind, value: int) -> None:
        self._timers[kind].ctl = value & (CTL_ENABLE | CTL_IMASK)
        self._update(kind)

    def read_cval(self, kind: TimerKind) -> int:
        return self._timers[kind].cval

    def write_cval(self, kind: TimerKind, value: int) -> None:
        self._timers[kind].cval = value & _U64
        self._update(kind)

    def read_tval(self, kind: TimerKind) -> int:
        # TVAL is the signed 32-bit distance to CVAL, read back modulo 2^32.
        return (self._timers[kind].cval - self._count()) & 0xFFFF_FFFF

    def write_tval(self, kind: TimerKind, value: int) -> None:
        delta = value & 0xFFFF_FFFF
        if delta & 0x8000_0000:
            delta -= 1 << 32
        self._timers[kind].cval = (self._count() + delta) & _U64
        self._update(kind)

    # -- state ------------------------------------------------------------------

    def state(self, kind: TimerKind) -> dict[str, int | bool]:
        t = self._timers[kind]
        return {"ctl": self.read_ctl(kind), "cval": t.cval, "level": t.level, "fired": t.fired}

    def _update(self, kind: TimerKind, reached: int | None = None) -> None:
        """Recompute the line and the next deadline (any thread); ``reached``: the
        CVAL whose deadline has come, early or not (ignored if CVAL has changed since).

        The line is set under the lock: the clock's deadline and the guest's
        CVAL write run this on different threads, and a level computed first
        but delivered last would leave the GIC's input low while the timer
        believes it high, with no deadline left to correct it (seen as an
        rtos that stopped ticking under host load).
        """
        t = self._timers[kind]
        with self._lock:
            armed = t.ctl & CTL_ENABLE and not t.ctl & CTL_IMASK
            cval = t.cval
            level = bool(armed and (reached == cval or self._count() >= cval))
            if t.handle is not None:
                self._deadlines.cancel(t.handle)
                t.handle = None
            if armed and not level:
                t.handle = self._deadlines.at_count(cval, lambda: self._update(kind, cval))
            rose = level and not t.level
            if rose:
                t.fired += 1
            if level != t.level:
                t.level = level
                t.line.set_level(level)
