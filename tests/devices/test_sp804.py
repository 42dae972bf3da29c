"""SP804 dual timer on a hand-driven clock: counting, modes, interrupts."""

import heapq

from pyned.devices.base import UnconnectedIrq
from pyned.devices.sp804 import Sp804

US = 1000
ONESHOT, BIT32, INTEN, PERIODIC, ENABLE = 1, 2, 0x20, 0x40, 0x80


class Handle:
    def __init__(self):
        self.cancelled = False

    def cancel(self):
        self.cancelled = True


class FakeClock:
    def __init__(self):
        self.now = 0
        self._heap, self._seq = [], 0
        self.armed = 0

    def at(self, deadline, callback):
        h = Handle()
        self._seq += 1
        self.armed += 1
        heapq.heappush(self._heap, (deadline, self._seq, h, callback))
        return h

    def advance(self, ns):
        end = self.now + ns
        while self._heap and self._heap[0][0] <= end:
            deadline, _, h, cb = heapq.heappop(self._heap)
            self.now = max(self.now, deadline)
            if not h.cancelled:
                cb()
        self.now = end


def timer():
    clock, line = FakeClock(), UnconnectedIrq()
    return Sp804(line, clock, lambda: clock.now), clock, line


def test_identity_and_reset_state():
    dev, _, _ = timer()
    assert [dev.read(0xFE0 + 4 * i, 4, 0) for i in range(4)] == [0x04, 0x18, 0x14, 0x00]
    assert dev.read(0x08, 4, 0) == INTEN and dev.read(0x04, 4, 0) == 0xFFFF_FFFF


def test_one_shot_counts_at_1mhz_interrupts_at_zero_and_halts():
    dev, clock, line = timer()
    dev.write(0x00, 4, 1000, 0)
    dev.write(0x08, 4, ENABLE | ONESHOT | BIT32 | INTEN, 0)
    clock.advance(400 * US)
    assert dev.read(0x04, 4, 0) == 600 and not line.level
    clock.advance(600 * US)
    assert line.level and dev.read(0x10, 4, 0) == 1 and dev.read(0x04, 4, 0) == 0
    clock.advance(5000 * US)
    assert dev.read(0x04, 4, 0) == 0       # halted at zero
    dev.write(0x0C, 4, 1, 0)
    assert not line.level
    dev.write(0x00, 4, 10, 0)             # Load restarts it
    clock.advance(10 * US)
    assert line.level


def test_periodic_reloads_free_running_wraps_and_the_prescaler_divides():
    dev, clock, line = timer()
    dev.write(0x00, 4, 100, 0)
    dev.write(0x08, 4, ENABLE | PERIODIC | BIT32 | INTEN, 0)
    clock.advance(150 * US)
    assert dev.read(0x04, 4, 0) == 51 and line.level   # 100..0, then 100 again
    dev.write(0x20 + 0x08, 4, ENABLE | BIT32 | (1 << 2), 0)   # timer 2: free-running, /16
    clock.advance(16 * 10 * US)
    assert dev.read(0x24, 4, 0) == 0xFFFF_FFFF - 10
    dev.write(0x20, 4, 2, 0)
    clock.advance(16 * 4 * US)
    assert dev.read(0x24, 4, 0) == 0xFFFF_FFFF - 1    # 2, 1, 0, then wraps


def test_masked_interrupt_sets_only_the_raw_status():
    dev, clock, line = timer()
    dev.write(0x00, 4, 5, 0)
    dev.write(0x08, 4, ENABLE | ONESHOT | BIT32, 0)
    clock.advance(5 * US)
    assert dev.read(0x10, 4, 0) == 1 and dev.read(0x14, 4, 0) == 0 and not line.level


def test_a_periodic_load_of_zero_does_not_flood_the_clock():
    dev, clock, line = timer()
    dev.write(0x00, 4, 0, 0)
    dev.write(0x08, 4, ENABLE | PERIODIC | BIT32 | INTEN, 0)
    clock.advance(1000 * US)
    assert line.level and clock.armed <= 2   # re-armed only once cleared
    dev.write(0x0C, 4, 1, 0)
    clock.advance(1 * US)
    assert line.level
