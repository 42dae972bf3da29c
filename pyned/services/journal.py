"""The lifecycle journal: every start, end, restart and control action of a VM.

One journal per System. Entries are immutable and numbered; readers take a
snapshot (``entries``) or follow new ones (``subscribe``), so the monitor,
Lua and tests see the same history. Subscribers run on the thread that
recorded the entry and must not block.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from pyned.errors import ConfigError

# How many entries a long-running system keeps; the oldest go first.
JOURNAL_LIMIT = 10_000


@dataclass(frozen=True)
class JournalEntry:
    seq: int
    time: float            # seconds since the system started
    wall: float            # Unix time, for files read later
    vm: str
    event: str             # start, shutdown, reboot, crash, killed, restart, pause, ...
    cause: str = ""
    code: int | None = None
    pc: int | None = None
    esr: int | None = None
    far: int | None = None
    restarts: int = 0
    console: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["console"] = list(self.console)
        return d

    def line(self) -> str:
        """One human-readable line (the monitor's ``events``)."""
        parts = [f"{self.time:10.3f}s", f"{self.vm:<8}", f"{self.event:<9}"]
        if self.code is not None:
            parts.append(f"code={self.code:#x}")
        if self.pc is not None:
            parts.append(f"pc={self.pc:#x} esr={self.esr or 0:#010x} far={self.far or 0:#x}")
        if self.restarts:
            parts.append(f"restarts={self.restarts}")
        if self.cause:
            parts.append(f"({self.cause})")
        return " ".join(parts)


class Journal:
    def __init__(self, limit: int = JOURNAL_LIMIT) -> None:
        self._t0 = time.monotonic()
        self._limit = limit
        self._lock = threading.Lock()
        self._entries: list[JournalEntry] = []
        self._seq = 0
        self._subscribers: list[Callable[[JournalEntry], None]] = []

    @property
    def start(self) -> float:
        """``time.monotonic()`` at the journal's time 0 (to line entries up with other clocks)."""
        return self._t0

    def record(self, vm: str, event: str, **fields: object) -> JournalEntry:
        with self._lock:
            self._seq += 1
            entry = JournalEntry(self._seq, time.monotonic() - self._t0, time.time(), vm, event,
                                 **fields)  # type: ignore[arg-type]
            self._entries.append(entry)
            if len(self._entries) > self._limit:
                del self._entries[: len(self._entries) - self._limit]
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(entry)
        return entry

    def entries(self, vm: str | None = None, since: int = 0,
                events: tuple[str, ...] = ()) -> list[JournalEntry]:
        """Entries with ``seq > since``, optionally of one VM and some event kinds."""
        with self._lock:
            return [e for e in self._entries
                    if e.seq > since and (vm is None or e.vm == vm)
                    and (not events or e.event in events)]

    def subscribe(self, fn: Callable[[JournalEntry], None]) -> Callable[[], None]:
        """Call ``fn`` for every new entry; returns the function that stops it."""
        with self._lock:
            self._subscribers.append(fn)

        def cancel() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)
        return cancel

    def write_json(self, path: Path) -> None:
        data = [e.to_dict() for e in self.entries()]
        try:
            path.write_text(json.dumps(data, indent=1) + "\n")
        except OSError as err:
            raise ConfigError(f"{path}: cannot write the journal: {err.strerror}") from None
