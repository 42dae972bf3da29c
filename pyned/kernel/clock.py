"""The one clock, and deadline callbacks on it.

Time is host CLOCK_MONOTONIC, the same source Unicorn's counter (CNTVCT) runs
from, so deadlines the kernel keeps and counter values guests read agree.
One thread serves all deadlines; callbacks must be short and must not block.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import sys
import threading
import time
from typing import Callable


# prctl(2): a thread's timer slack, by which Linux may delay its timed wake-ups
# (50 us by default) to batch them; deadlines want none.
PR_SET_TIMERSLACK = 29


def now_ns() -> int:
    return time.monotonic_ns()


def _precise_wakeups() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # no prctl: deadlines are then up to the default slack late


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
        _precise_wakeups()
        while True:
            with self._cond:
                while not self._stopped:
                    while self._heap and self._heap[0][2].cancelled:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    delay = self._heap[0][0] - now_ns()
                    if delay <= 0:
                        break
                    self._cond.wait(delay / 1e9)
                if self._stopped:
                    return
                _, _, handle = heapq.heappop(self._heap)
            if not handle.cancelled:
                self._call(handle.callback)
            while self._deferred:
                self._call(self._deferred.pop(0))

    @staticmethod
    def _call(fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:  # a callback's failure must not stop time
            import traceback
            traceback.print_exc()
