from virtq_driver import ALL_TRANSPORT, Driver

from pyned.devices.virtio.console import INPUT_BUFFER, RECEIVEQ, TRANSMITQ, VirtioConsole
from pyned.devices.virtio.mmio import MmioReg


class Sink:
    def __init__(self):
        self.data = bytearray()
        self.calls = 0

    def write(self, b):
        self.data += b
        self.calls += 1


def make(**kw):
    sink = Sink()
    dev = VirtioConsole(sink, **kw)
    return Driver(dev), dev, sink


def test_identity_and_config():
    drv, _, _ = make()
    assert drv.get(MmioReg.DEVICE_ID) == 3
    assert drv.device_features() == ALL_TRANSPORT  # no MULTIPORT, SIZE or EMERG_WRITE
    assert [drv.mmio.read(0x100 + i, 1, 0) for i in range(12)] == [0] * 12


def test_transmit_goes_to_the_sink():
    drv, dev, sink = make()
    qs = drv.bring_up()
    tx = qs[TRANSMITQ]
    tx.add([b"hello, ", b"world\n"])
    tx.add([b"second\n"], indirect=True)
    tx.kick()
    assert bytes(sink.data) == b"hello, world\nsecond\n"
    assert sink.calls == 1  # one batch, one write
    assert len(tx.take_used()) == 2
    assert dev.tx_bytes == 20


def test_input_waits_for_receive_buffers():
    drv, dev, _ = make()
    assert dev.push_input(b"early") == 5  # before the driver is up: buffered
    qs = drv.bring_up()
    rx = qs[RECEIVEQ]
    head1 = rx.add(in_sizes=[3])
    head2 = rx.add(in_sizes=[8])
    rx.kick()
    assert rx.take_used() == [(head1, 3), (head2, 2)]
    assert rx.read_buffer(head1, 0, 3) == b"ear"
    assert rx.read_buffer(head2, 0, 2) == b"ly"
    assert drv.irq.level
    drv.ack_interrupt()
    # With a buffer waiting, input is delivered at once.
    head3 = rx.add(in_sizes=[16])
    rx.kick()
    assert rx.take_used() == []
    assert dev.push_input(b"typed") == 5
    assert rx.take_used() == [(head3, 5)]
    assert rx.read_buffer(head3, 0, 5) == b"typed"
    assert drv.irq.level


def test_input_buffer_is_bounded():
    drv, dev, _ = make(input_buffer=10)
    assert dev.push_input(b"0123456") == 7
    assert dev.push_input(b"789abc") == 3
    assert dev.push_input(b"x") == 0
    assert INPUT_BUFFER == 64 * 1024


def test_input_survives_the_driver_reset_at_probe():
    drv, dev, _ = make()
    drv.bring_up()
    dev.push_input(b"typed ahead")
    drv.set(MmioReg.STATUS, 0)
    rx = drv.bring_up()[RECEIVEQ]
    head = rx.add(in_sizes=[32])
    rx.kick()
    assert rx.take_used() == [(head, 11)]


def test_writable_transmit_buffer_needs_reset():
    drv, _, sink = make()
    tx = drv.bring_up()[TRANSMITQ]
    tx.add([b"x"], [4])
    tx.kick()
    assert drv.needs_reset()
    assert sink.data == b""
    assert "device-writable" in drv.log[0]


def test_readable_receive_buffer_needs_reset():
    drv, dev, _ = make()
    rx = drv.bring_up()[RECEIVEQ]
    rx.add([b"x"])
    dev.push_input(b"a")
    assert drv.needs_reset()
    assert dev.push_input(b"b") == 0 or drv.needs_reset()
