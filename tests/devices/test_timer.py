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
