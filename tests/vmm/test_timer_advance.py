"""The timer advance's estimate and the handle of an advanced deadline (no emulator)."""

from pyned.kernel.clock import TimerHandle
from pyned.vmm.vm import MAX_TIMER_ADVANCE_NS, TimerAdvance, _Deadline


def test_the_advance_follows_the_delivery_time_with_a_margin_for_its_spread():
    steady = TimerAdvance()
    for _ in range(200):
        steady.learn(80_000)
    assert 80_000 <= steady.ns < 82_000
    jittery = TimerAdvance()
    for i in range(200):
        jittery.learn(60_000 if i % 2 else 100_000)
    # Mean 80 us, mean deviation 20 us: four deviations above the mean.
    assert 150_000 <= jittery.ns <= 170_000


def test_a_delivery_no_advance_could_hide_is_not_learned():
    advance = TimerAdvance()
    before = advance.ns
    advance.learn(MAX_TIMER_ADVANCE_NS + 1)   # the VM was paused, say
    assert advance.ns == before
    for _ in range(100):
        advance.learn(MAX_TIMER_ADVANCE_NS)
    assert advance.ns == MAX_TIMER_ADVANCE_NS


def test_a_timer_added_to_a_cancelled_deadline_is_cancelled():
    # The early callback re-arms at the deadline (its vCPU was running) while
    # the guest rewrites the timer: the late addition must not fire.
    deadline = _Deadline()
    first = TimerHandle(1, lambda: None)
    deadline.add(first)
    deadline.cancel()
    late = TimerHandle(2, lambda: None)
    deadline.add(late)
    assert first.cancelled and late.cancelled
