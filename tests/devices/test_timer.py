from pyned.devices.timer import CTL_ENABLE, CTL_IMASK, CTL_ISTATUS, GenericTimer, TimerKind


class Line:
    def __init__(self):
        self.level = False
        self.changes = []

    def set_level(self, level):
        self.level = level
        self.changes.append(level)


class FakeClock:
    def __init__(self):
        self.now = 1000
        self.pending = {}
        self.seq = 0

    def at_count(self, count, cb):
        self.seq += 1
        self.pending[self.seq] = (count, cb)
        return self.seq

    def cancel(self, h):
        self.pending.pop(h, None)

    def advance(self, ticks):
        self.now += ticks
        for h, (count, cb) in sorted(self.pending.items()):
            if count <= self.now:
                self.pending.pop(h, None)
                cb()


def make():
    clock = FakeClock()
    phys, virt = Line(), Line()
    return GenericTimer(lambda: clock.now, clock, phys, virt), clock, phys, virt


def test_cval_deadline_raises_and_rearm_lowers():
    t, clock, _, virt = make()
    t.write_cval(TimerKind.VIRT, 1500)
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE)
    assert not virt.level and len(clock.pending) == 1
    clock.advance(499)
    assert not virt.level
    clock.advance(1)
    assert virt.level
    assert t.read_ctl(TimerKind.VIRT) == CTL_ENABLE | CTL_ISTATUS
    t.write_cval(TimerKind.VIRT, 3000)   # the handler re-arms: the level drops
    assert not virt.level
    assert t.state(TimerKind.VIRT)["fired"] == 1


def test_imask_and_disable():
    t, clock, _, virt = make()
    t.write_cval(TimerKind.VIRT, 900)      # already in the past
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE | CTL_IMASK)
    assert not virt.level
    assert t.read_ctl(TimerKind.VIRT) & CTL_ISTATUS  # ISTATUS ignores IMASK
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE)
    assert virt.level
    t.write_ctl(TimerKind.VIRT, 0)
    assert not virt.level and t.read_ctl(TimerKind.VIRT) == 0


def test_tval_is_signed_32_bit():
    t, clock, phys, _ = make()
    t.write_tval(TimerKind.PHYS, 100)
    assert t.read_cval(TimerKind.PHYS) == 1100
    assert t.read_tval(TimerKind.PHYS) == 100
    t.write_tval(TimerKind.PHYS, 0xFFFF_FFF6)  # -10
    assert t.read_cval(TimerKind.PHYS) == 990
    t.write_ctl(TimerKind.PHYS, CTL_ENABLE)
    assert phys.level
    assert t.read_tval(TimerKind.PHYS) == (990 - 1000) & 0xFFFFFFFF


def test_timers_are_independent_and_reset():
    t, clock, phys, virt = make()
    t.write_cval(TimerKind.PHYS, 1100)
    t.write_ctl(TimerKind.PHYS, CTL_ENABLE)
    t.write_cval(TimerKind.VIRT, 1200)
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE)
    clock.advance(150)
    assert phys.level and not virt.level
    t.reset()
    assert not phys.level and not clock.pending


def test_a_level_computed_first_is_not_delivered_last():
    """The guest re-arms (level low) while the clock's deadline raises it again on another
    thread: the GIC's input must end where the timer's state is, high."""
    import threading
    import time

    t, clock, _, _ = make()
    slow = Line()
    slow_set = slow.set_level

    def set_level(level):
        if not level:
            time.sleep(0.05)   # the guest's thread is descheduled right here
        slow_set(level)
    slow.set_level = set_level
    t._timers[TimerKind.VIRT].line = slow
    t.write_cval(TimerKind.VIRT, 1500)
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE)
    clock.advance(500)
    assert slow.level
    guest = threading.Thread(target=t.write_cval, args=(TimerKind.VIRT, 2000))
    guest.start()                   # computes "low", then dawdles delivering it
    time.sleep(0.01)
    clock.now = 2500                # meanwhile the new deadline passes too
    t.read_ctl(TimerKind.VIRT)
    for _h, (_count, cb) in list(clock.pending.items()):
        cb()                        # the clock thread's _update
    guest.join()
    assert t.state(TimerKind.VIRT)["level"] is True
    assert slow.level is True, slow.changes


def test_a_deadline_delivered_early_takes_its_count_as_reached():
    # The kernel may call a deadline back before its count (its timer advance,
    # while the CPU cannot look): the line rises then, not a second time later.
    t, clock, _, virt = make()
    t.write_cval(TimerKind.VIRT, 1500)
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE)
    (_, early), = clock.pending.values()
    clock.pending.clear()
    early()
    assert virt.level and virt.changes == [True] and not clock.pending
    assert t.state(TimerKind.VIRT)["fired"] == 1
    clock.advance(500)
    assert t.read_ctl(TimerKind.VIRT) == CTL_ENABLE | CTL_ISTATUS


def test_an_early_callback_for_a_rewritten_cval_does_not_fire():
    # The callback was already on its way when the guest moved CVAL earlier:
    # reaching the old count says nothing about the new one.
    t, clock, _, virt = make()
    t.write_cval(TimerKind.VIRT, 3000)
    t.write_ctl(TimerKind.VIRT, CTL_ENABLE)
    (_, stale), = clock.pending.values()
    t.write_cval(TimerKind.VIRT, 2000)
    stale()
    assert not virt.level
    (count, _), = clock.pending.values()
    assert count == 2000
