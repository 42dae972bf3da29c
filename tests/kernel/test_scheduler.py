import threading
import time

from pyned.kernel.clock import Clock, now_ns
from pyned.kernel import scheduler
from pyned.kernel.scheduler import HOLD_GRACE_NS, Core, RunResult


class Spinner:
    """Runs until kicked, counting how often it got the core."""

    def __init__(self, name, prio, limit=None):
        self.name, self.prio = name, prio
        self.runs = 0
        self.kicked = threading.Event()
        self.limit = limit

    def run(self):
        self.runs += 1
        self.kicked.wait(2)
        self.kicked.clear()
        if self.limit is not None and self.runs >= self.limit:
            return RunResult.EXIT
        return RunResult.YIELD

    def kick(self, hand_over=False):
        self.kicked.set()


class Sleeper:
    def __init__(self, name, prio):
        self.name, self.prio = name, prio
        self.runs = 0
        self.ran = threading.Event()

    def run(self):
        self.runs += 1
        self.ran.set()
        return RunResult.BLOCK

    def kick(self, hand_over=False):
        pass


def test_round_robin_within_a_priority():
    clock = Clock()
    core = Core(0, clock, slice_ns=2_000_000)
    a, b = Spinner("a", 1), Spinner("b", 1)
    core.add(a)
    core.add(b)
    time.sleep(0.2)
    core.stop()
    clock.stop()
    a.kick(), b.kick()
    assert a.runs > 5 and b.runs > 5


def test_higher_priority_preempts_promptly_and_wakes():
    clock = Clock()
    core = Core(0, clock, slice_ns=1_000_000_000)
    low = Spinner("low", 1)
    high = Sleeper("high", 5)
    core.add(low)
    time.sleep(0.05)
    core.add(high)
    assert high.ran.wait(0.5)
    high.ran.clear()
    t0 = time.monotonic()
    core.wake(high)
    assert high.ran.wait(0.5)
    assert time.monotonic() - t0 < 0.1
    assert high.runs == 2
    core.stop()
    clock.stop()
    low.kick()


def test_blocked_thread_does_not_run_and_removed_thread_leaves():
    clock = Clock()
    core = Core(0, clock)
    s = Sleeper("s", 1)
    core.add(s)
    assert s.ran.wait(1)
    time.sleep(0.05)
    assert s.runs == 1
    core.remove(s)
    core.wake(s)
    time.sleep(0.05)
    assert s.runs == 1
    core.stop()
    clock.stop()


def test_wake_while_running_is_not_lost():
    clock = Clock()
    core = Core(0, clock)

    class Racer(Sleeper):
        def run(self):
            self.runs += 1
            if self.runs == 1:
                core.wake(self)  # a wake-up arriving before it blocks
            self.ran.set()
            return RunResult.BLOCK

    r = Racer("r", 1)
    core.add(r)
    deadline = time.monotonic() + 1
    while r.runs < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert r.runs == 2
    core.stop()
    clock.stop()


class TimedSpinner(Spinner):
    """A Spinner that notes when each of its slices began and ended."""

    def __init__(self, name, prio):
        super().__init__(name, prio)
        self.entered, self.left = [], []

    def run(self):
        self.entered.append(now_ns())
        result = super().run()
        self.left.append(now_ns())
        return result


class TimedSleeper(Sleeper):
    def __init__(self, name, prio):
        super().__init__(name, prio)
        self.at = []

    def run(self):
        self.at.append(now_ns())
        return super().run()


def _blocked_high(core):
    high = TimedSleeper("high", 5)
    core.add(high)
    assert high.ran.wait(1)
    time.sleep(0.02)   # back from run(): blocked
    high.ran.clear()
    return high


def _reserving_core(clock, monkeypatch):
    """A core running a low-priority spinner beside a blocked high-priority thread; its
    clearing estimate is set high so that the lead (twice it) dwarfs a test thread's wake-up."""
    monkeypatch.setattr(scheduler, "MAX_LEAD_NS", 30_000_000)
    core = Core(0, clock, slice_ns=1_000_000_000)
    low = TimedSpinner("low", 1)
    core.add(low)
    high = _blocked_high(core)
    time.sleep(0.02)
    core.clear_ns = 10_000_000
    return core, low, high


def test_a_reserved_deadline_clears_the_core_before_it_and_holds_it_for_the_wake(monkeypatch):
    clock = Clock()
    core, low, high = _reserving_core(clock, monkeypatch)
    deadline = now_ns() + 50_000_000
    assert core.reserve(high, deadline) is not None
    time.sleep((deadline - now_ns()) / 1e9)
    assert core.holds == 1
    cleared = low.left[-1]
    assert deadline - 20_000_000 <= cleared < deadline
    core.wake(high)                       # the timer's interrupt
    assert high.ran.wait(0.5)
    time.sleep(0.02)
    woken = high.at[-1]
    # Nothing ran on the core between the clearing and the wake but what it was held for.
    assert not [t for t in low.entered if cleared < t < woken]
    assert low.entered[-1] > woken        # released once high has run
    assert core.clear_ns < 10_000_000     # learned from what this clearing took
    core.stop()
    clock.stop()
    low.kick()


def test_a_hold_whose_wake_never_comes_ends_after_the_grace(monkeypatch):
    clock = Clock()
    core, low, high = _reserving_core(clock, monkeypatch)
    deadline = now_ns() + 50_000_000
    core.reserve(high, deadline)
    time.sleep((deadline - now_ns()) / 1e9 + 0.1)
    cleared = min(t for t in low.left if t > deadline - 20_000_000)
    assert cleared < deadline
    resumed = min(t for t in low.entered if t > cleared)
    assert resumed >= deadline + HOLD_GRACE_NS
    assert high.runs == 1
    core.stop()
    clock.stop()
    low.kick()


def test_nothing_is_reserved_without_a_lower_priority_or_when_turned_off():
    clock = Clock()
    alone = Core(0, clock)
    high = _blocked_high(alone)
    assert alone.reserve(high, now_ns() + 10_000_000) is None
    off = Core(1, clock, reserve=False)
    off.add(Sleeper("low", 1))
    high2 = _blocked_high(off)
    assert off.reserve(high2, now_ns() + 10_000_000) is None
    for core in (alone, off):
        core.stop()
    clock.stop()


def test_a_reservation_for_a_thread_that_is_not_blocked_changes_nothing():
    clock = Clock()
    core = Core(0, clock, slice_ns=1_000_000_000)
    low = Spinner("low", 1)
    mid = Spinner("mid", 3)
    core.add(low)
    core.add(mid)       # mid runs; low waits
    time.sleep(0.02)
    core.reserve(mid, now_ns() + 5_000_000)
    time.sleep(0.05)
    assert core.holds == 0 and mid.runs == 1
    core.stop()
    clock.stop()
    mid.kick(), low.kick()


class Worker(TimedSleeper):
    """Runs until told to stop working, then blocks."""

    def __init__(self, name, prio):
        super().__init__(name, prio)
        self.go_idle = threading.Event()

    def run(self):
        self.go_idle.wait(2)
        self.go_idle.clear()
        return super().run()


def test_a_reservation_that_finds_its_thread_still_running_holds_the_core_when_it_blocks(
        monkeypatch):
    # On a slow host the last tick's work can still run when the next deadline's
    # reservation comes; the lower priority must not get the core in between.
    monkeypatch.setattr(scheduler, "MAX_LEAD_NS", 30_000_000)
    clock = Clock()
    core = Core(0, clock, slice_ns=1_000_000_000)
    low = TimedSpinner("low", 1)
    core.add(low)
    high = Worker("high", 5)
    core.add(high)                    # preempts low; works
    time.sleep(0.02)
    core.clear_ns = 15_000_000        # lead 30 ms: the reservation comes at once
    deadline = now_ns() + 25_000_000
    assert core.reserve(high, deadline) is not None
    time.sleep(0.005)
    assert core.holds == 0            # nothing to clear yet: high has the core
    high.go_idle.set()                # high blocks
    assert high.ran.wait(1)
    blocked = now_ns()
    time.sleep((deadline - now_ns()) / 1e9)
    assert core.holds == 1
    assert not [t for t in low.entered if t > blocked]   # held, not given to low
    high.go_idle.set()
    core.wake(high)                   # the timer's interrupt
    time.sleep(0.05)
    assert high.runs == 2 and low.entered[-1] > deadline
    core.stop()
    clock.stop()
    low.kick()
