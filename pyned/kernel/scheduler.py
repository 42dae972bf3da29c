"""Per-core fixed-priority preemptive scheduling with round-robin inside a priority.

Each platform core is one host thread (``emu_start`` releases the GIL, so
cores run in parallel). A core runs its highest-priority runnable thread;
threads of equal priority share the core in time slices. A thread that
becomes runnable at a higher priority preempts the running one: the core
asks it to stop, and asks again every 200 µs until it has, because a stop
request that reaches Unicorn between two ``emu_start`` calls is lost.
"""

from __future__ import annotations

import collections
import threading
from enum import Enum
from typing import Callable, Protocol

from pyned.kernel.clock import Clock, TimerHandle, now_ns

DEFAULT_SLICE_NS = 10_000_000
REKICK_NS = 200_000


class RunResult(Enum):
    YIELD = "yield"   # still runnable: back to the end of its priority's queue
    BLOCK = "block"   # waits for wake()
    EXIT = "exit"     # gone for good


class Schedulable(Protocol):
    name: str
    prio: int

    def run(self) -> RunResult: ...

    def kick(self, hand_over: bool = False) -> None: ...


def urgent_kick(clock: Clock, ent: Schedulable, then: Callable[[], None]) -> None:
    """Kick ``ent``, whose thread has urgent work next (a preemption, an interrupt), then
    call ``then`` (which arms the re-kick: a kick between two slices is lost).

    From a deadline's callback both wait until the callback has returned (its
    locks released), and the kick hands the GIL to ``ent``'s thread
    (``Vcpu.kick``), so ``then`` runs once that thread lets go of it; from any
    other thread it is a plain kick, and ``then`` follows at once.
    """
    def kick_then() -> None:
        ent.kick(hand_over=True)
        then()

    if not clock.defer(kick_then):
        ent.kick()
        then()


class Core:
    def __init__(self, index: int, clock: Clock, slice_ns: int = DEFAULT_SLICE_NS) -> None:
        self.index = index
        self._clock = clock
        self._slice_ns = slice_ns
        self._cond = threading.Condition()
        self._queues: dict[int, collections.deque[Schedulable]] = {}
        self._state: dict[Schedulable, str] = {}
        self._wake_pending: set[Schedulable] = set()
        self.current: Schedulable | None = None
        self._dispatch = 0
        self._dispatched_at = 0
        # Armed only while a thread of the running one's priority waits: a
        # thread alone at its priority needs no time slice, and a 1 kHz guest
        # would otherwise leave a dead timer on the clock at every dispatch.
        self._slice_timer: TimerHandle | None = None
        self._rekick_timer: TimerHandle | None = None
        self._slice_over = False
        self._stopped = False
        self.switches = 0
        self._thread = threading.Thread(target=self._loop, name=f"pyned-core{index}", daemon=True)
        self._thread.start()

    # -- API (any thread) ---------------------------------------------------

    def add(self, ent: Schedulable) -> None:
        """Make ``ent`` runnable on this core, whether it is new here or blocked."""
        self.wake(ent, new=True)

    def wake(self, ent: Schedulable, new: bool = False) -> None:
        with self._cond:
            state = self._state.get(ent)
            if state == "blocked" or (state is None and new):
                self._make_runnable(ent)
            elif state == "running":
                self._wake_pending.add(ent)

    def remove(self, ent: Schedulable) -> None:
        """Take ``ent`` off the core; a running one is asked to stop."""
        with self._cond:
            state = self._state.pop(ent, None)
            self._wake_pending.discard(ent)
            if state == "runnable":
                self._queues[ent.prio].remove(ent)
            running = state == "running"
        if running:
            ent.kick()

    def should_yield(self, ent: Schedulable) -> bool:
        """Whether ``ent``, running here, ought to give the core up now (also: the core stops)."""
        with self._cond:
            if self._stopped:
                return True
            best = self._best_waiting_prio()
            if best is None:
                return False
            return best > ent.prio or (best == ent.prio and self._slice_over)

    def threads(self) -> list[tuple[str, int, str]]:
        with self._cond:
            return [(e.name, e.prio, s) for e, s in self._state.items()]

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
            cur = self.current
        if cur is not None:
            cur.kick()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # -- internals ----------------------------------------------------------

    def _make_runnable(self, ent: Schedulable, from_core: bool = False) -> None:
        self._state[ent] = "runnable"
        queue = self._queues.get(ent.prio)
        if queue is None:
            queue = self._queues[ent.prio] = collections.deque()
        queue.append(ent)
        if not from_core:   # only the core's own thread waits on _cond
            self._cond.notify()
        cur = self.current
        if cur is None:
            return
        if ent.prio > cur.prio:
            self._preempt(self._dispatch)
        elif ent.prio == cur.prio:
            self._arm_slice()

    def _arm_slice(self) -> None:
        if self._slice_timer is None:
            dispatch = self._dispatch
            self._slice_timer = self._clock.at(self._dispatched_at + self._slice_ns,
                                               lambda: self._slice_end(dispatch))

    def _best_waiting_prio(self) -> int | None:
        prios = [p for p, q in self._queues.items() if q]
        return max(prios) if prios else None

    def _preempt(self, dispatch: int) -> None:
        """Kick the running thread, and again until it has left the core."""
        cur = self.current
        if cur is None or dispatch != self._dispatch:
            return
        urgent_kick(self._clock, cur, lambda: self._arm_rekick(dispatch))

    def _arm_rekick(self, dispatch: int) -> None:
        with self._cond:
            if dispatch == self._dispatch and self.current is not None:
                self._rekick_timer = self._clock.after(REKICK_NS,
                                                       lambda: self._rekick(dispatch))

    def _rekick(self, dispatch: int) -> None:
        with self._cond:
            if dispatch == self._dispatch and self.current is not None:
                self._preempt(dispatch)

    def _slice_end(self, dispatch: int) -> None:
        with self._cond:
            if dispatch != self._dispatch or self.current is None:
                return
            self._slice_timer = None
            best = self._best_waiting_prio()
            if best is not None and best >= self.current.prio:
                self._slice_over = True
                self._preempt(dispatch)

    def _pick(self) -> Schedulable | None:
        best = self._best_waiting_prio()
        if best is None:
            return None
        return self._queues[best].popleft()

    def _loop(self) -> None:
        while True:
            with self._cond:
                # Stopped before picking: a thread taken off its queue here
                # would stay "runnable" in no queue, and a later remove() fail.
                ent = None if self._stopped else self._pick()
                while ent is None and not self._stopped:
                    self._cond.wait()
                    ent = None if self._stopped else self._pick()
                if ent is None:
                    return
                self._state[ent] = "running"
                self._slice_over = False
                self.current = ent
                self._dispatch += 1
                self._dispatched_at = now_ns()
                self.switches += 1
                best = self._best_waiting_prio()
                if best is not None and best >= ent.prio:
                    self._arm_slice()
            try:
                result = ent.run()
            except Exception:  # the run loop contains guest failures; this is a host bug
                import traceback
                traceback.print_exc()
                result = RunResult.EXIT
            with self._cond:
                self.current = None
                self._dispatch += 1
                for timer in (self._slice_timer, self._rekick_timer):
                    if timer is not None:
                        timer.cancel()
                self._slice_timer = self._rekick_timer = None
                if self._state.get(ent) != "running":
                    continue  # removed while running
                if result == RunResult.EXIT:
                    del self._state[ent]
                    self._wake_pending.discard(ent)
                elif result == RunResult.BLOCK and ent not in self._wake_pending:
                    self._state[ent] = "blocked"
                else:
                    self._wake_pending.discard(ent)
                    self._make_runnable(ent, from_core=True)


class Scheduler:
    """The platform's cores."""

    def __init__(self, cores: int, clock: Clock, slice_ns: int = DEFAULT_SLICE_NS) -> None:
        self.cores = [Core(i, clock, slice_ns) for i in range(cores)]

    def stop(self, wait_s: float = 2.0) -> None:
        """Stop every core; wait until their threads have left the emulator.

        A core thread still inside Unicorn while the interpreter shuts down
        crashes the process, so the exit status would be lost.
        """
        for core in self.cores:
            core.stop()
        for core in self.cores:
            core.join(wait_s)
