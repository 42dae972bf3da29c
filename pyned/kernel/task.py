"""Tasks: every program and VM a script starts is one, with ned's states and exit codes."""

from __future__ import annotations

import itertools
import threading
import time
from enum import Enum
from typing import Callable


class TaskState(Enum):
    INITIALIZING = "initializing"
    RUNNING = "running"
    ZOMBIE = "zombie"


class Task:
    """A started program: it runs, then exits once with a code (None when killed)."""

    def __init__(self, tid: int, name: str, kill_fn: Callable[[], None] | None = None) -> None:
        self.tid = tid
        self.name = name
        self.state = TaskState.INITIALIZING
        self.exit_code: int | None = None
        self.killed = False
        self.exit_reason = ""
        self.started = time.monotonic()
        self.ended: float | None = None
        self._kill_fn = kill_fn
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._listeners: list[Callable[["Task"], None]] = []
        # A server (a switch, a disk) only answers other tasks: it alone does
        # not keep the system running.
        self.server = False
        # The name of its console (log) channel, which the monitor shows.
        self.channel: str | None = None

    def set_kill(self, kill_fn: Callable[[], None]) -> None:
        self._kill_fn = kill_fn

    def running(self) -> None:
        with self._lock:
            if self.state == TaskState.INITIALIZING:
                self.state = TaskState.RUNNING

    @property
    def alive(self) -> bool:
        return not self._done.is_set()

    def exit(self, code: int | None, reason: str = "", killed: bool = False) -> bool:
        """Record the end of the task; only the first call counts."""
        with self._lock:
            if self._done.is_set():
                return False
            self.exit_code = None if killed else code
            self.killed = killed
            self.exit_reason = reason
            self.state = TaskState.ZOMBIE
            self.ended = time.monotonic()
            self._done.set()
            listeners = list(self._listeners)
        for fn in listeners:
            fn(self)
        return True

    def kill(self) -> None:
        if self.alive and self._kill_fn is not None:
            self._kill_fn()
        self.exit(None, "killed", killed=True)

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def on_exit(self, fn: Callable[["Task"], None]) -> None:
        with self._lock:
            if not self._done.is_set():
                self._listeners.append(fn)
                return
        fn(self)


class TaskTable:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.tasks: list[Task] = []

    def create(self, name: str) -> Task:
        with self._lock:
            task = Task(next(self._ids), name)
            self.tasks.append(task)
            return task

    def alive(self) -> list[Task]:
        with self._lock:
            return [t for t in self.tasks if t.alive]

    def clients_alive(self) -> bool:
        """Whether a task other than a server is still running."""
        with self._lock:
            return any(t.alive and not t.server for t in self.tasks)
