"""A typed request to start a program: what ned's Lua tables become."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from pyned.errors import ConfigError
from pyned.services.cons import Channel

if TYPE_CHECKING:
    from pyned.services.journal import JournalEntry

# The VM ends a restart policy may act on (vm.py's VmEnd.event, less "killed").
RESTARTABLE = ("crash", "reboot", "shutdown")


@dataclass(frozen=True)
class SchedSpec:
    prio: int
    cpus: int  # bit mask of platform cores


@dataclass(frozen=True)
class RestartPolicy:
    """When a VM is started again in its own task instead of the task exiting.

    ``max`` restarts are allowed (within the last ``window_s`` seconds, if
    given; otherwise in all); the next end of a kind in ``on`` after that
    gives up and the task exits with that end's code. The n-th restart waits
    ``backoff_ms * backoff_factor ** (n - 1)``, at most ``backoff_max_ms``.
    """

    on: tuple[str, ...] = ("crash",)
    max: int | None = None
    backoff_ms: float = 0.0
    backoff_factor: float = 1.0
    backoff_max_ms: float | None = None
    window_s: float | None = None

    def __post_init__(self) -> None:
        for kind in self.on:
            if kind not in RESTARTABLE:
                raise ConfigError(f"restart.on: {kind!r} is not one of {', '.join(RESTARTABLE)}")
        if self.max is not None and self.max < 0:
            raise ConfigError(f"restart.max must be 0 or more, not {self.max}")
        if self.backoff_ms < 0 or self.backoff_factor < 1 or (
                self.backoff_max_ms is not None and self.backoff_max_ms < 0):
            raise ConfigError("restart: backoff_ms and backoff_max_ms must be 0 or more, "
                              "backoff_factor 1 or more")
        if self.window_s is not None and self.window_s <= 0:
            raise ConfigError(f"restart.window_s must be positive, not {self.window_s}")


class RestartBudget:
    """A policy applied to one VM's history of restarts."""

    def __init__(self, policy: RestartPolicy) -> None:
        self.policy = policy
        self._times: deque[float] = deque()   # restarts inside the window (if one is set)
        self._total = 0
        self._streak = 0

    def next_delay(self, event: str, now: float | None = None) -> float | None:
        """Seconds to wait before restarting after an ``event`` end, or None to give up."""
        p = self.policy
        if event not in p.on:
            return None
        now = time.monotonic() if now is None else now
        used = self._total
        if p.window_s is not None:
            while self._times and now - self._times[0] > p.window_s:
                self._times.popleft()
            if not self._times:
                self._streak = 0   # a quiet window starts the backoff over
            used = len(self._times)
        if p.max is not None and used >= p.max:
            return None
        if p.window_s is not None:
            self._times.append(now)
        self._total += 1
        self._streak += 1
        delay = p.backoff_ms * p.backoff_factor ** (self._streak - 1)
        if p.backoff_max_ms is not None:
            delay = min(delay, p.backoff_max_ms)
        return delay / 1000.0


@dataclass
class StartSpec:
    program: str
    args: list[str]
    caps: dict[str, object] = field(default_factory=dict)
    log: Channel | None = None
    scheduler: SchedSpec | None = None
    # A configuration the ned layer read for the program (io's Lua files).
    config: object | None = None
    restart: RestartPolicy | None = None
    # Told of every lifecycle entry the program records about itself (a VM's
    # crash, restart, ...), on the thread that recorded it; must not block.
    observer: Callable[["JournalEntry"], None] | None = None
