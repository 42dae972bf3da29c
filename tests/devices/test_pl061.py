"""PL061 GPIO: address-masked data, directions, interrupt detection on the pads."""

from pyned.devices.base import UnconnectedIrq
from pyned.devices.pl061 import Pl061, Pl061Reg as R


def gpio():
    line = UnconnectedIrq()
    reports = []
    dev = Pl061(line, lambda pads, outs: reports.append(pads))
    return dev, line, reports


def w(dev, off, v):
    dev.write(off, 4, v, 0)


def r(dev, off):
    return dev.read(off, 4, 0)


def test_identity_registers_say_pl061():
    dev, _, _ = gpio()
    assert [r(dev, 0xFE0 + 4 * i) for i in range(8)] == [0x61, 0x10, 0x04, 0x00,
                                                          0x0D, 0xF0, 0x05, 0xB1]


def test_data_is_address_masked_and_touches_outputs_only():
    dev, _, reports = gpio()
    w(dev, R.GPIODIR, 0b0000_0011)
    w(dev, 0x3FC, 0xFF)                   # all bits selected: only pins 0, 1 are outputs
    assert r(dev, 0x3FC) == 0b11
    w(dev, 0b10 << 2, 0)                  # mask = pin 1 only
    assert r(dev, 0x3FC) == 0b01
    assert r(dev, 0b10 << 2) == 0         # a read sees the masked pins only
    dev.set_input(5, True)
    assert r(dev, 0x3FC) == 0b10_0001
    assert reports == [0, 0b11, 0b01, 0b10_0001]      # from reset on


def test_rising_edge_on_an_input_interrupts_until_cleared():
    dev, line, _ = gpio()
    w(dev, R.GPIOIEV, 1 << 7)
    w(dev, R.GPIOIE, 1 << 7)
    dev.set_input(7, True)
    assert line.level and r(dev, R.GPIOMIS) == 1 << 7
    dev.set_input(7, False)               # an edge stays latched
    assert line.level
    w(dev, R.GPIOIC, 1 << 7)
    assert not line.level and r(dev, R.GPIORIS) == 0


def test_level_and_both_edge_detection_and_the_mask():
    dev, line, _ = gpio()
    w(dev, R.GPIOIS, 1 << 3)              # pin 3 level, high
    w(dev, R.GPIOIEV, 1 << 3)
    dev.set_input(3, True)
    assert r(dev, R.GPIORIS) == 1 << 3 and not line.level   # masked
    w(dev, R.GPIOIE, 1 << 3)
    assert line.level
    dev.set_input(3, False)
    assert not line.level                 # a level follows the pad
    w(dev, R.GPIOIS, 0)
    w(dev, R.GPIOIBE, 1 << 3)
    w(dev, R.GPIOIEV, 0)
    dev.set_input(3, True)
    assert line.level


def test_an_output_pin_raises_its_own_interrupt():
    dev, line, _ = gpio()
    w(dev, R.GPIODIR, 1)
    w(dev, R.GPIOIEV, 1)
    w(dev, R.GPIOIE, 1)
    w(dev, 0x3FC, 1)
    assert line.level
