"""The SBSA generic watchdog model on its own, with a counter the test moves."""

from pyned.devices.base import UnconnectedIrq
from pyned.devices.watchdog import W_IIDR_VALUE, WCS_EN, WCS_WS0, WCS_WS1, SbsaGwdt


class Clock:
    """Deadlines on a counter the test advances; callbacks run when it passes them."""

    def __init__(self) -> None:
        self.now = 1000
        self.pending: list[list] = []

    def at_count(self, count, callback):
        h = [count, callback, False]
        self.pending.append(h)
        return h

    def cancel(self, handle):
        handle[2] = True

    def advance(self, ticks):
        self.now += ticks
        while True:
            due = [h for h in self.pending if not h[2] and h[0] <= self.now]
            if not due:
                return
            for h in due:
                h[2] = True
                h[1]()


def make():
    clock, line, events = Clock(), UnconnectedIrq(), []
    wdt = SbsaGwdt(lambda: clock.now, clock, line, lambda: events.append("ws0"),
                   lambda: events.append("ws1"))
    return clock, line, events, wdt


def test_two_stages_then_reset():
    clock, line, events, wdt = make()
    wdt.control.write(0x8, 4, 500, 0)          # WOR
    wdt.control.write(0x0, 4, WCS_EN, 0)       # enable (a refresh)
    assert wdt.control.read(0x10, 4, 0) == 1500  # WCV = now + WOR
    clock.advance(499)
    assert events == [] and not line.level
    clock.advance(1)
    assert events == ["ws0"] and line.level and wdt.control.read(0, 4, 0) == WCS_EN | WCS_WS0
    clock.advance(499)
    assert events == ["ws0"]
    clock.advance(1)
    assert events == ["ws0", "ws1"] and wdt.control.read(0, 4, 0) == WCS_EN | WCS_WS0 | WCS_WS1
    clock.advance(10_000)
    assert events == ["ws0", "ws1"]             # nothing after the reset request


def test_refresh_clears_ws0_and_restarts_the_period():
    clock, line, events, wdt = make()
    wdt.control.write(0x8, 4, 100, 0)
    wdt.control.write(0x0, 4, WCS_EN, 0)
    clock.advance(100)
    assert line.level
    wdt.refresh.write(0x0, 4, 0, 0)            # WRR: any value
    assert not line.level and wdt.control.read(0, 4, 0) == WCS_EN
    clock.advance(99)
    assert events == ["ws0"]
    for _ in range(10):                        # fed in time: no further stage
        wdt.refresh.write(0x0, 4, 0, 0)
        clock.advance(90)
    assert events == ["ws0"]


def test_disabled_watchdog_never_fires_and_wor_is_48_bits():
    clock, line, events, wdt = make()
    wdt.control.write(0xC, 4, 0xFFFF_FFFF, 0)
    assert wdt.control.read(0xC, 4, 0) == 0xFFFF
    wdt.control.write(0x8, 4, 10, 0)
    clock.advance(1 << 50)
    assert events == []
    assert wdt.control.read(0xFCC, 4, 0) == W_IIDR_VALUE == wdt.refresh.read(0xFCC, 4, 0)


def test_wcv_write_sets_the_next_timeout():
    clock, line, events, wdt = make()
    wdt.control.write(0x8, 4, 1000, 0)
    wdt.control.write(0x0, 4, WCS_EN, 0)
    wdt.control.write(0x10, 4, clock.now + 10, 0)
    clock.advance(10)
    assert events == ["ws0"]


def test_reset_clears_everything():
    clock, line, events, wdt = make()
    wdt.control.write(0x8, 4, 10, 0)
    wdt.control.write(0x0, 4, WCS_EN, 0)
    clock.advance(10)
    wdt.control.reset()
    assert not line.level and wdt.control.read(0, 4, 0) == 0
    clock.advance(100)
    assert events == ["ws0"]
