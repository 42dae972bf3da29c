"""Kernel IRQ objects: one owner each, levels and events kept until someone binds."""

import pytest

from pyned.kernel.irq import Icu, Irq, IrqBusy


class Sink:
    def __init__(self):
        self.levels, self.pulses = [], 0

    def set_level(self, level):
        self.levels.append(level)

    def pulse(self):
        self.pulses += 1


def test_a_line_has_one_owner_and_refuses_a_second():
    irq = Icu(32, 224).line(52)
    irq.bind("vm1", Sink())
    with pytest.raises(IrqBusy, match="interrupt 52 is bound to vm1 already; it cannot also "
                                      "go to vm2"):
        irq.bind("vm2", Sink())
    irq.unbind("vm2")                     # not the owner: nothing happens
    assert irq.owner == "vm1"
    irq.unbind("vm1")
    irq.bind("vm2", Sink())
    assert irq.owner == "vm2"


def test_levels_reach_the_owner_and_a_high_line_is_delivered_at_bind():
    irq = Irq("interrupt 52", 52)
    irq.set_level(True)                   # nobody bound: the level is kept
    sink = Sink()
    irq.bind("vm1", sink)
    assert sink.levels == [True]
    irq.set_level(True)                   # no change, no delivery
    irq.set_level(False)
    assert sink.levels == [True, False] and irq.events == 1
    irq.unbind("vm1")
    irq.set_level(True)
    assert sink.levels == [True, False]


def test_a_software_event_waits_for_its_receiver():
    irq = Irq("IRQ object 1")
    irq.trigger()
    irq.trigger()                         # a kernel IRQ keeps one pending event
    sink = Sink()
    irq.bind("vm2", sink)
    assert sink.pulses == 1
    irq.trigger()
    assert sink.pulses == 2 and irq.events == 3


def test_the_icu_knows_only_shared_lines():
    icu = Icu(32, 224)
    assert icu.line(40) is icu.line(40)
    with pytest.raises(ValueError):
        icu.line(27)
