"""The board's LEDs: each hangs on one GPIO pin and is lit while that pin's pad is high.

The record is the point: every change is kept as ``LedEvent(t_ns, led, on)``
with the host's monotonic time, so tests, the monitor and the plotter see the
same history. Readers take copies (``timeline``) or follow changes
(``subscribe``; callbacks run on the thread that changed the pin and must not
block).
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Callable, Iterable

# A long run keeps the newest events; at a toggle every 100 ms that is hours per LED.
TIMELINE_LIMIT = 200_000


@dataclass(frozen=True)
class LedEvent:
    t_ns: int      # host CLOCK_MONOTONIC, the kernel clock's time base
    led: str
    on: bool


class LedBoard:
    def __init__(self, names: Iterable[str], now: Callable[[], int]) -> None:
        self.names = tuple(names)
        self._now = now
        self.start_ns = now()
        self._state = dict.fromkeys(self.names, False)
        self._events: collections.deque[LedEvent] = collections.deque(maxlen=TIMELINE_LIMIT)
        self._listeners: list[Callable[[LedEvent], None]] = []
        self._lock = threading.Lock()

    def set(self, led: str, on: bool) -> None:
        """The pin under ``led`` changed (from the GPIO model)."""
        with self._lock:
            if self._state[led] == on:
                return
            self._state[led] = on
            event = LedEvent(self._now(), led, on)
            self._events.append(event)
            listeners = list(self._listeners)
        for fn in listeners:
            fn(event)

    def state(self, led: str) -> bool:
        with self._lock:
            return self._state[led]

    def states(self) -> dict[str, bool]:
        with self._lock:
            return dict(self._state)

    def timeline(self, led: str | None = None, since_ns: int = 0) -> list[LedEvent]:
        with self._lock:
            return [e for e in self._events
                    if (led is None or e.led == led) and e.t_ns >= since_ns]

    def toggles(self, led: str, since_ns: int = 0, until_ns: int | None = None) -> list[int]:
        """Times (ns) at which ``led`` changed, within [since_ns, until_ns)."""
        return [e.t_ns for e in self.timeline(led, since_ns)
                if until_ns is None or e.t_ns < until_ns]

    def subscribe(self, fn: Callable[[LedEvent], None]) -> None:
        with self._lock:
            self._listeners.append(fn)
