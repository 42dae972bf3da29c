"""The LED demo (lua/examples/leds.lua): while vm2 crashes, its LED freezes and the other two
keep their rhythm; the script restarts vm2. Periods come from the board's LED timeline
(host timestamps), compared over the stretch around the crash."""

import statistics
from pathlib import Path

import pytest

from pyned.kernel.clock import now_ns
from pyned.ledplot import Marker, write_trace
from pyned.testing import NEEDS_EXACT_STOPS, Booted

pytestmark = [pytest.mark.boot, pytest.mark.slow]
DEMO = Path(__file__).resolve().parents[2] / "lua" / "examples" / "leds.lua"
VM1_MS, VM2_MS, NATIVE_MS, CRASH_AFTER = 150, 200, 100, 15   # as the script sets them


def intervals_ms(times):
    return [(b - a) / 1e6 for a, b in zip(times, times[1:])]


@NEEDS_EXACT_STOPS
def test_the_other_leds_keep_their_rhythm_while_vm2_crashes_and_restarts(tmp_path):
    with Booted(DEMO, args=["7"]) as b:
        status = b.wait(60)
        system = b.system
        leds = system.hardware.leds
        journal = system.journal
        t0 = journal.start
        events = [(int((t0 + e.time) * 1e9), e.event) for e in journal.entries(vm="vm2")]
        svg = tmp_path / "leds.svg"
        write_trace(svg, leds.timeline(), list(leds.names), leds.start_ns, now_ns(),
                    [Marker(t, f"vm2 {ev}", ev) for t, ev in events], "leds.lua")
    assert status == 0, system.cons.channels["ned"].text()
    assert "vm2 crashed" in b.text("ned")
    crash = next(t for t, ev in events if ev == "crash")
    restart = next(t for t, ev in events if ev == "start" and t > crash)

    # vm2's LED: CRASH_AFTER toggles, then nothing until the new vm2 starts.
    before = leds.toggles("led1", until_ns=crash)
    assert len(before) == CRASH_AFTER
    assert leds.toggles("led1", since_ns=crash, until_ns=restart) == []
    assert len(leds.toggles("led1", since_ns=restart)) > 3        # blinking again

    # The others, from one second before the crash to one second after the restart.
    window = (crash - 1_000_000_000, restart + 1_000_000_000)
    for led, period in (("led0", VM1_MS), ("led2", NATIVE_MS)):
        times = leds.toggles(led, *window)
        gaps = intervals_ms(times)
        expected = (window[1] - window[0]) / 1e6 / period
        assert len(times) >= 0.9 * expected, (led, len(times), expected)
        assert abs(statistics.median(gaps) - period) <= 0.05 * period, (led, gaps)
        assert abs(statistics.mean(gaps) - period) <= 0.05 * period, (led, gaps)
        assert max(gaps) < 2 * period, (led, gaps)             # no toggle was lost

    # The plot shows it: a lane per LED and the crash line.
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("changes") == 4   # led0..led3 lanes
    assert "vm2 crash" in text
