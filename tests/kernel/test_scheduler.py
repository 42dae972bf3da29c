import threading
import time

from pyned.kernel.clock import Clock
from pyned.kernel.scheduler import Core, RunResult


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
