"""ARM Dual-Timer Module SP804 (ARM DDI 0271D), DT binding ``arm,sp804``.

Two down-counters (at 0x00 and 0x20) clocked by TIMCLK, 1 MHz on the FVP
(its SP810 feeds the timers from the 1 MHz reference), each divided by the
prescaler (1, 16 or 256). Modes: free-running (after zero the counter wraps
to 0xFFFFFFFF, or 0xFFFF in 16-bit mode, and goes on), periodic (reloads
from Load) and one-shot (stops at zero). Reaching zero sets the raw
interrupt; the board ORs both timers' masked interrupts onto one line
(TIMINTC), which is how the FVP wires each SP804 to one SPI. Writing Load
restarts the count at once; BGLoad only changes the next reload.

The count is derived from the kernel clock on every read, so the guest sees
a counter that runs in real time, and a deadline on the same clock raises the
interrupt when the counter passes zero. The integration-test registers
(TimerITCR/ITOP) read as zero and ignore writes.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Callable, Protocol

from pyned.devices.base import IrqLine

TIMCLK_HZ = 1_000_000
TIMER_STRIDE = 0x20


class Sp804Reg(IntEnum):
    LOAD = 0x00
    VALUE = 0x04
    CONTROL = 0x08
    INTCLR = 0x0C
    RIS = 0x10
    MIS = 0x14
    BGLOAD = 0x18


CTRL_ONESHOT = 1 << 0
CTRL_32BIT = 1 << 1
CTRL_PRESCALE_SHIFT = 2
CTRL_INTEN = 1 << 5
CTRL_PERIODIC = 1 << 6
CTRL_ENABLE = 1 << 7
CTRL_RESET = CTRL_INTEN

# TimerPeriphID0-3 then TimerPCellID0-3 at 0xFE0..0xFFC: part 0x804, designer ARM.
ID_REGS = (0x04, 0x18, 0x14, 0x00, 0x0D, 0xF0, 0x05, 0xB1)


class Clock(Protocol):
    """The kernel clock as a timer needs it."""

    def at(self, deadline_ns: int, callback: Callable[[], None]) -> object: ...


class _Timer:
    """One counter. The count is ``value`` at time ``since`` and falls from there."""

    def __init__(self) -> None:
        self.load = 0
        self.control = CTRL_RESET
        self.value = 0xFFFF_FFFF
        self.since = 0
        self.ris = False
        self.halted = False          # a one-shot that reached zero, until Load is written
        self.deadline: object | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.control & CTRL_ENABLE)

    @property
    def top(self) -> int:
        return 0xFFFF_FFFF if self.control & CTRL_32BIT else 0xFFFF

    @property
    def ns_per_tick(self) -> int:
        div = (1, 16, 256, 256)[(self.control >> CTRL_PRESCALE_SHIFT) & 3]
        return 1_000_000_000 * div // TIMCLK_HZ


class Sp804:
    """An SP804 on the kernel clock; ``now`` gives the clock's current time in ns."""

    def __init__(self, irq: IrqLine, clock: Clock, now: Callable[[], int]) -> None:
        self._irq = irq
        self._clock = clock
        self._now = now
        self._lock = threading.Lock()
        self._timers = (_Timer(), _Timer())
        self.expiries = 0

    def reset(self) -> None:
        with self._lock:
            for t in self._timers:
                self._cancel(t)
            self._timers = (_Timer(), _Timer())
            self._update()

    # -- guest side ---------------------------------------------------------

    def read(self, offset: int, size: int, cpu: int) -> int:
        if 0xFE0 <= offset <= 0xFFC and offset % 4 == 0:
            return ID_REGS[(offset - 0xFE0) // 4]
        if offset >= 2 * TIMER_STRIDE:
            return 0
        t = self._timers[offset // TIMER_STRIDE]
        reg = offset % TIMER_STRIDE
        with self._lock:
            if reg == Sp804Reg.VALUE:
                return self._count(t, self._now())
            if reg in (Sp804Reg.LOAD, Sp804Reg.BGLOAD):
                return t.load
            if reg == Sp804Reg.CONTROL:
                return t.control
            if reg == Sp804Reg.RIS:
                return int(t.ris)
            if reg == Sp804Reg.MIS:
                return int(t.ris and bool(t.control & CTRL_INTEN))
            return 0

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        if offset >= 2 * TIMER_STRIDE:
            return
        t = self._timers[offset // TIMER_STRIDE]
        reg = offset % TIMER_STRIDE
        value &= 0xFFFF_FFFF
        with self._lock:
            now = self._now()
            if reg == Sp804Reg.LOAD:
                t.load = value
                t.halted = False
                self._restart(t, now, value & t.top)
            elif reg == Sp804Reg.BGLOAD:
                t.load = value
            elif reg == Sp804Reg.CONTROL:
                count = self._count(t, now)
                t.control = value & 0xFF
                self._restart(t, now, count & t.top)
            elif reg == Sp804Reg.INTCLR:
                t.ris = False
                self._restart(t, now, self._count(t, now))
            self._update()

    # -- internals (under the lock) -----------------------------------------

    def _count(self, t: _Timer, now: int) -> int:
        if not t.enabled or t.halted:
            return t.value
        ticks = (now - t.since) // t.ns_per_tick
        if ticks <= t.value:
            return t.value - ticks
        if t.control & CTRL_ONESHOT:
            return 0
        # Past zero: count on from the reload value (the expiry callback re-anchors).
        reload = self._reload(t)
        return reload - (ticks - t.value - 1) % (reload + 1)

    def _reload(self, t: _Timer) -> int:
        return (t.load & t.top) if t.control & CTRL_PERIODIC else t.top

    def _restart(self, t: _Timer, now: int, value: int) -> None:
        self._cancel(t)
        t.value, t.since = value, now
        # While the raw interrupt is set, further zero crossings change nothing a
        # guest can see; arming again only once it is cleared bounds the host's
        # work by the guest's IntClr rate (a periodic Load of 0 fires every tick).
        if t.enabled and not t.halted and not t.ris:
            self._arm(t)

    def _arm(self, t: _Timer) -> None:
        # The counter is at zero value ticks after `since`; it raises the interrupt
        # on the tick that takes it from 1 to 0 (and at once when loaded with 0).
        due = t.since + t.value * t.ns_per_tick
        t.deadline = self._clock.at(due, lambda: self._expired(t))

    def _cancel(self, t: _Timer) -> None:
        if t.deadline is not None:
            t.deadline.cancel()  # type: ignore[attr-defined]
            t.deadline = None

    def _expired(self, t: _Timer) -> None:
        with self._lock:
            if t.deadline is None or not t.enabled:
                return
            t.deadline = None
            self.expiries += 1
            t.ris = True
            zero_at = t.since + t.value * t.ns_per_tick
            if t.control & CTRL_ONESHOT:
                t.value, t.since, t.halted = 0, zero_at, True
            else:
                t.value, t.since = self._reload(t), zero_at + t.ns_per_tick
            self._update()

    def _update(self) -> None:
        self._irq.set_level(any(t.ris and t.control & CTRL_INTEN for t in self._timers))
