"""Per-core fixed-priority preemptive scheduling with round-robin inside a priority.

Each platform core is one host thread (``emu_start`` releases the GIL, so
cores run in parallel). A core runs its highest-priority runnable thread;
threads of equal priority share the core in time slices. A thread that
becomes runnable at a higher priority preempts the running one: the core
asks it to stop, and asks again every 200 µs until it has, because a stop
request that reaches Unicorn between two ``emu_start`` calls is lost.

Preempting a thread that is inside the emulator takes tens of microseconds
(its host thread must leave Unicorn and unwind its slice), which a timer
interrupt would otherwise wait out. A blocked thread whose wake-up time is
known (its timer deadline) therefore reserves its core (``reserve``): shortly
before the deadline a lower-priority thread running there is preempted and
the core held idle until the deadline's wake-up arrives, the same lead a
hypervisor gives a guest's timer to hide its own entry latency.
"""

from __future__ import annotations

import collections
import threading
from enum import Enum
from typing import Callable, Protocol

from pyned.kernel.clock import Clock, TimerHandle, now_ns, precise_timers

DEFAULT_SLICE_NS = 10_000_000
REKICK_NS = 200_000
# How long before a reserved deadline the core is cleared: twice what clearing
# it took lately (from the instant it was asked to the core being idle), so that
# most deadlines find the core idle; the estimate starts at a slow host's.
LEAD_FACTOR = 2
INITIAL_CLEAR_NS = 60_000
MIN_LEAD_NS, MAX_LEAD_NS = 20_000, 500_000
CLEAR_WEIGHT = 8   # the estimate moves 1/8 of the way per measured clearing
# How long a held core waits past the deadline for the wake-up to arrive (the
# clock's own lateness) before it lets lower priorities run again.
HOLD_GRACE_NS = 1_000_000


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
    def __init__(self, index: int, clock: Clock, slice_ns: int = DEFAULT_SLICE_NS,
                 reserve: bool = True) -> None:
        self.index = index
        self._clock = clock
        self._slice_ns = slice_ns
        self._reserve = reserve
        self.clear_ns = INITIAL_CLEAR_NS   # what clearing the core for a reservation takes
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
        # (priority, until when): the core runs nothing below that priority.
        self._held: tuple[int, int] | None = None
        # A reservation that came while its thread still ran: held when it blocks.
        self._hold_on_block: tuple[Schedulable, int] | None = None
        self._clearing_since: int | None = None   # when the core was asked to clear
        self._stopped = False
        self.switches = 0
        self.holds = 0
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

    def reserve(self, ent: Schedulable, deadline_ns: int) -> TimerHandle | None:
        """Clear the core for ``ent``, blocked until its timer ``deadline_ns``, shortly before it.

        The returned timer is cancelled when the deadline is; None when there
        is nothing to clear (reservations off, or no lower priority on this core).
        """
        if not self._reserve:
            return None
        with self._cond:
            if not any(e.prio < ent.prio for e in self._state):
                return None
        lead = min(max(LEAD_FACTOR * self.clear_ns, MIN_LEAD_NS), MAX_LEAD_NS)
        start = deadline_ns - lead
        return self._clock.at(start, lambda: self._hold_for(ent, start,
                                                            deadline_ns + HOLD_GRACE_NS))

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

    def _best_queued_prio(self) -> int | None:
        prios = [p for p, q in self._queues.items() if q]
        return max(prios) if prios else None

    def _held_prio(self) -> int | None:
        held = self._held
        if held is None:
            return None
        if now_ns() >= held[1]:
            self._held = None   # the wake-up never came (the guest masked the timer, say)
            return None
        return held[0]

    def _best_waiting_prio(self) -> int | None:
        best, held = self._best_queued_prio(), self._held_prio()
        if held is not None and (best is None or held > best):
            return held
        return best

    def _hold_for(self, ent: Schedulable, start_ns: int, until_ns: int) -> None:
        with self._cond:
            state, cur = self._state.get(ent), self.current
            if state == "running" and cur is ent:
                # Still busy from its last deadline (a slow host, a long handler):
                # the core must not go to a lower priority once it blocks.
                self._hold_on_block = (ent, until_ns)
                return
            if state != "blocked":
                return   # queued: it runs before any lower priority anyway
            if cur is not None and cur.prio >= ent.prio:
                return
            self._hold(ent.prio, until_ns)
            if cur is not None:
                self._clearing_since = start_ns
                self._preempt(self._dispatch)

    def _hold(self, prio: int, until_ns: int) -> None:
        """Run nothing below ``prio`` until ``until_ns`` (or until it runs); lock held."""
        held = self._held
        if held is None or held[0] <= prio:
            self._held = (prio, max(until_ns, held[1]) if held else until_ns)
        self.holds += 1

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
        best, held = self._best_queued_prio(), self._held_prio()
        if best is None or (held is not None and held > best):
            return None
        if held is not None:
            self._held = None   # what the core was held for (or better) runs now
        return self._queues[best].popleft()

    def _idle_timeout(self) -> float | None:
        """How long the idle core may wait: until its hold ends, if it is held."""
        held = self._held
        return None if held is None else max(held[1] - now_ns(), 0) / 1e9

    def _loop(self) -> None:
        precise_timers()   # a vCPU waits for an early-delivered timer's deadline in a spin
        while True:
            with self._cond:
                # Stopped before picking: a thread taken off its queue here
                # would stay "runnable" in no queue, and a later remove() fail.
                ent = None if self._stopped else self._pick()
                while ent is None and not self._stopped:
                    self._cond.wait(self._idle_timeout())
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
                if self._clearing_since is not None:
                    took = now_ns() - self._clearing_since
                    self.clear_ns += (min(took, MAX_LEAD_NS) - self.clear_ns) // CLEAR_WEIGHT
                    self._clearing_since = None
                for timer in (self._slice_timer, self._rekick_timer):
                    if timer is not None:
                        timer.cancel()
                self._slice_timer = self._rekick_timer = None
                pending, self._hold_on_block = self._hold_on_block, None
                if self._state.get(ent) != "running":
                    continue  # removed while running
                if result == RunResult.EXIT:
                    del self._state[ent]
                    self._wake_pending.discard(ent)
                elif result == RunResult.BLOCK and ent not in self._wake_pending:
                    self._state[ent] = "blocked"
                    if pending is not None and pending[0] is ent and now_ns() < pending[1]:
                        self._hold(ent.prio, pending[1])
                else:
                    self._wake_pending.discard(ent)
                    self._make_runnable(ent, from_core=True)


class Scheduler:
    """The platform's cores."""

    def __init__(self, cores: int, clock: Clock, slice_ns: int = DEFAULT_SLICE_NS,
                 reserve: bool = True) -> None:
        self.cores = [Core(i, clock, slice_ns, reserve) for i in range(cores)]

    def stop(self, wait_s: float = 2.0) -> None:
        """Stop every core; wait until their threads have left the emulator.

        A core thread still inside Unicorn while the interpreter shuts down
        crashes the process, so the exit status would be lost.
        """
        for core in self.cores:
            core.stop()
        for core in self.cores:
            core.join(wait_s)
