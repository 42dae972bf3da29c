"""The one clock, and deadline callbacks on it.

Time is host CLOCK_MONOTONIC, the same source Unicorn's counter (CNTVCT) runs
from, so deadlines the kernel keeps and counter values guests read agree.
One thread serves all deadlines; callbacks must be short and must not block.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import os
import sys
import threading
import time
from typing import Callable


PR_SET_TIMERSLACK = 29   # prctl(2)
# The lowest real-time priority: above every ordinary thread, below the host's own.
CLOCK_FIFO_PRIORITY = 1

# The clock thread's timed waits end late by the host's wake-up latency (tens of
# microseconds in a virtual machine whose idle CPU the hypervisor has parked).
# It learns that lateness, waits that much less and spins the rest of the way,
# as a hypervisor advances a guest's timer: callbacks run closer to their
# deadlines, never before them. The spin is bounded by the advance.
MAX_ADVANCE_NS = 100_000
ADVANCE_WEIGHT = 16   # the lateness estimate moves 1/16 of the way per wake-up


def now_ns() -> int:
    return time.monotonic_ns()


def precise_timers() -> None:
    """Give the calling thread no timer slack.

    Linux may end a thread's timed waits late by its timer slack (50 us by
    default) to batch wake-ups; that includes each ``sleep(0)`` of a spin.
    """
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no prctl: waits are then up to the default slack late


def spin_until(deadline_ns: int, give_up: Callable[[], bool]) -> bool:
    """Busy-wait until ``deadline_ns``; False if ``give_up()`` ended the wait first.

    For waits shorter than the host's wake-up latency, on a thread that called
    ``precise_timers``. ``sleep(0)`` lets go of the interpreter lock at each
    turn, so other threads get it, but not of the host CPU.
    """
    while now_ns() < deadline_ns:
        if give_up():
            return False
        time.sleep(0)
    return True


def _realtime_thread() -> bool:
    """Make the calling (clock) thread's wake-ups prompt; True if it got a real-time policy.

    Without one, Linux (EEVDF) may queue the woken clock thread behind a core
    thread that emulates a busy guest on the same host CPU until that thread's
    slice ends, milliseconds after a deadline. SCHED_FIFO needs CAP_SYS_NICE;
    it is safe for this thread, which only ever runs short callbacks and spins
    at most MAX_ADVANCE_NS.
    """
    precise_timers()
    if not sys.platform.startswith("linux"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                              os.sched_param(CLOCK_FIFO_PRIORITY))
    except (OSError, AttributeError):
        return False   # unprivileged: deadlines can then be late on a loaded host
    return True


class TimerHandle:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: int, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    def __init__(self) -> None:
        self._heap: list[tuple[int, int, TimerHandle]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._stopped = False
        self._deferred: list[Callable[[], None]] = []
        self.advance_ns = 0
        self.realtime = False   # whether the clock thread runs under SCHED_FIFO
        self._thread = threading.Thread(target=self._serve, name="pyned-clock", daemon=True)
        self._thread.start()

    def at(self, deadline_ns: int, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(deadline_ns, callback)
        with self._cond:
            heapq.heappush(self._heap, (deadline_ns, next(self._seq), handle))
            if self._heap[0][2] is handle:
                self._cond.notify()
        return handle

    def after(self, delay_ns: int, callback: Callable[[], None]) -> TimerHandle:
        return self.at(now_ns() + delay_ns, callback)

    def defer(self, fn: Callable[[], None]) -> bool:
        """From inside a callback: run ``fn`` on the clock thread once the callback has returned.

        For work that must happen after the callback's locks are released (a
        kick that hands the GIL to the kicked vCPU). False on any other
        thread: the caller does the work itself.
        """
        if threading.get_ident() != self._thread.ident:
            return False
        self._deferred.append(fn)
        return True

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()

    def _serve(self) -> None:
        self.realtime = _realtime_thread()
        while True:
            with self._cond:
                handle = self._next_due()
            if handle is None:
                return
            if not handle.cancelled:
                self._call(handle.callback)
            while self._deferred:
                self._call(self._deferred.pop(0))

    def _next_due(self) -> TimerHandle | None:
        """Wait (holding ``_cond``) until the first deadline; pop it. None once stopped."""
        while not self._stopped:
            while self._heap and self._heap[0][2].cancelled:
                heapq.heappop(self._heap)
            if not self._heap:
                self._cond.wait()
                continue
            deadline = self._heap[0][0]
            now = now_ns()
            if now >= deadline:
                return heapq.heappop(self._heap)[2]
            if deadline - now > self.advance_ns:
                target = deadline - self.advance_ns
                if not self._cond.wait((target - now) / 1e9):
                    self._learn_lateness(now_ns() - target)
                continue
            self._cond.release()
            try:
                # An earlier timer added meanwhile ends the spin.
                spin_until(deadline, lambda: self._stopped or self._earlier_than(deadline))
            finally:
                self._cond.acquire()
        return None

    def _learn_lateness(self, late_ns: int) -> None:
        late_ns = min(max(late_ns, 0), MAX_ADVANCE_NS)
        self.advance_ns += (late_ns - self.advance_ns) // ADVANCE_WEIGHT

    def _earlier_than(self, deadline: int) -> bool:
        try:
            return self._heap[0][0] < deadline
        except IndexError:
            return True

    @staticmethod
    def _call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a callback's failure must not stop time
            import traceback
            traceback.print_exc()
