from pyned.devices.base import UnconnectedIrq
from pyned.devices.pl011 import (FR_RXFE, FR_RXFF, FR_TXFE, INT_RT, INT_RX, INT_TX, LCR_H_FEN,
                                 Pl011, Pl011Reg)


class Sink:
    def __init__(self):
        self.data = bytearray()

    def write(self, b):
        self.data += b


def make():
    sink, irq = Sink(), UnconnectedIrq()
    return Pl011(sink, irq), sink, irq


def test_transmit_goes_to_sink_and_raises_tx_interrupt():
    uart, sink, irq = make()
    uart.write(Pl011Reg.IMSC, 4, INT_TX, 0)
    assert not irq.level
    for c in b"hi\n":
        uart.write(Pl011Reg.DR, 4, c, 0)
    assert bytes(sink.data) == b"hi\n"
    assert uart.read(Pl011Reg.RIS, 4, 0) & INT_TX
    assert irq.level
    uart.write(Pl011Reg.ICR, 4, INT_TX, 0)
    assert not irq.level
    assert uart.read(Pl011Reg.FR, 4, 0) & FR_TXFE


def test_receive_fifo_depth_follows_fen_and_typed_input_waits_its_turn():
    uart, _, irq = make()
    assert uart.push_input(b"abc") == 3  # all taken: what does not fit waits
    assert uart.read(Pl011Reg.FR, 4, 0) & FR_RXFF  # FIFO disabled: one holding register
    assert [uart.read(Pl011Reg.DR, 4, 0) for _ in range(3)] == list(b"abc")
    assert uart.read(Pl011Reg.FR, 4, 0) & FR_RXFE
    uart.write(Pl011Reg.LCR_H, 4, LCR_H_FEN, 0)
    assert uart.push_input(bytes(range(40))) == 40
    assert uart.read(Pl011Reg.FR, 4, 0) & FR_RXFF   # 32 in the FIFO, 8 waiting
    assert [uart.read(Pl011Reg.DR, 4, 0) for _ in range(40)] == list(range(40))


def test_a_uart_is_reading_once_its_driver_takes_receive_interrupts():
    uart, _, _ = make()
    assert not uart.reading
    uart.write(Pl011Reg.IMSC, 4, INT_RX | INT_RT, 0)
    assert uart.reading


def test_receive_interrupts_trigger_level_and_timeout():
    uart, _, irq = make()
    uart.write(Pl011Reg.LCR_H, 4, LCR_H_FEN, 0)
    uart.write(Pl011Reg.IMSC, 4, INT_RX | INT_RT, 0)
    uart.push_input(b"x")
    ris = uart.read(Pl011Reg.RIS, 4, 0)
    assert ris & INT_RT and not ris & INT_RX  # below the 1/2 default trigger
    assert irq.level
    uart.push_input(b"y" * 20)
    assert uart.read(Pl011Reg.MIS, 4, 0) & INT_RX
    while not uart.read(Pl011Reg.FR, 4, 0) & FR_RXFE:
        uart.read(Pl011Reg.DR, 4, 0)
    assert not irq.level


def test_primecell_id_and_reset():
    uart, _, _ = make()
    ids = [uart.read(0xFE0 + 4 * i, 4, 0) for i in range(8)]
    assert ids == [0x11, 0x10, 0x34, 0x00, 0x0D, 0xF0, 0x05, 0xB1]
    uart.write(Pl011Reg.IBRD, 4, 26, 0)
    uart.reset()
    assert uart.read(Pl011Reg.IBRD, 4, 0) == 0
    assert uart.read(Pl011Reg.CR, 4, 0) == 0x300


def test_unknown_offsets_are_harmless():
    uart, sink, _ = make()
    for off in range(0, 0x1000, 4):
        uart.read(off, 4, 0)
    for off in range(0x4C, 0xFE0, 4):
        uart.write(off, 4, 0xFFFFFFFF, 0)
    assert not sink.data
