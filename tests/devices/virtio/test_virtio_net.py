import struct
import threading

from virtq_driver import Driver

from pyned.devices.virtio.mmio import VIRTIO_MMIO_INT_CONFIG, MmioReg
from pyned.devices.virtio.net import (NET_HDR_LEN, VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VirtioNet,
                                      default_mac, parse_mac)
from pyned.services.switch import VirtioSwitch

HDR = bytes(NET_HDR_LEN)
BCAST = b"\xff" * 6


def frame(dst, src, payload=b"payload"):
    return dst + src + b"\x88\xb5" + payload


def make(mac=None, **kw):
    dev = VirtioNet(mac, **kw)
    drv = Driver(dev)
    rx, tx = drv.bring_up()
    return drv, dev, rx, tx


def test_config_mac_and_link():
    drv, dev, _, _ = make("52:54:00:12:34:56")
    assert drv.get(MmioReg.DEVICE_ID) == 1
    features = drv.device_features()
    assert features >> VIRTIO_NET_F_MAC & 1 and features >> VIRTIO_NET_F_STATUS & 1
    assert bytes(drv.mmio.read(0x100 + i, 1, 0) for i in range(6)) == bytes.fromhex("525400123456")
    assert drv.mmio.read(0x106, 2, 0) == 1  # VIRTIO_NET_S_LINK_UP


def test_default_mac_is_stable_and_locally_administered():
    a, b = default_mac("vm1/net0"), default_mac("vm1/net0")
    assert a == b and a != default_mac("vm2/net0")
    assert a[0] & 0x02 and not a[0] & 0x01
    assert VirtioNet(seed="x").mac == default_mac("x")
    assert parse_mac("02-00-00-00-00-01") == bytes([2, 0, 0, 0, 0, 1])


def test_transmit_hands_frames_to_the_uplink_outside_the_lock():
    drv, dev, _, tx = make()
    sent = []

    def uplink(f):
        # A frame may go straight into another device: our lock must be free.
        assert dev.transport._lock.acquire(blocking=False)
        dev.transport._lock.release()
        sent.append(f)
    dev.connect(uplink)
    f1 = frame(BCAST, dev.mac)
    f2 = frame(b"\x02" * 6, dev.mac, b"x" * 1000)
    tx.add([HDR + f1])
    tx.add([HDR[:4], HDR[4:] + f2[:10], f2[10:]])
    tx.kick()
    assert sent == [f1, f2]
    assert [n for _, n in tx.take_used()] == [0, 0]
    assert dev.tx_frames == 2 and dev.tx_bytes == len(f1) + len(f2)


def test_transmit_without_uplink_or_too_short_is_dropped():
    drv, dev, _, tx = make()
    tx.add([HDR + frame(BCAST, dev.mac)])
    tx.add([HDR + b"short"])
    tx.kick()
    assert len(tx.take_used()) == 2
    assert dev.tx_dropped == 2 and not drv.needs_reset()


def test_receive_writes_header_and_frame():
    drv, dev, rx, _ = make()
    f = frame(dev.mac, b"\x02\x00\x00\x00\x00\x09")
    assert not dev.deliver(f)  # no buffer yet
    head = rx.add(in_sizes=[1526])
    rx.kick()
    assert dev.deliver(f)
    assert rx.take_used() == [(head, NET_HDR_LEN + len(f))]
    raw = rx.read_buffer(head, 0, NET_HDR_LEN + len(f))
    assert struct.unpack_from("<BBHHHHH", raw) == (0, 0, 0, 0, 0, 0, 1)
    assert raw[NET_HDR_LEN:] == f
    assert drv.irq.level
    assert dev.rx_frames == 1 and dev.rx_dropped == 1


def test_receive_into_split_buffer_and_too_small_buffer():
    drv, dev, rx, _ = make()
    f = frame(dev.mac, dev.mac, b"y" * 100)
    head = rx.add(in_sizes=[10, 200])
    assert dev.deliver(f)
    assert rx.take_used() == [(head, NET_HDR_LEN + len(f))]
    raw = rx.read_buffer(head, 0, 10) + rx.read_buffer(head, 1, NET_HDR_LEN + len(f) - 10)
    assert raw[NET_HDR_LEN:] == f
    small = rx.add(in_sizes=[60])
    assert not dev.deliver(f)
    assert rx.take_used() == [(small, 0)]
    assert not drv.needs_reset()


def test_no_delivery_before_driver_ok_or_with_link_down():
    dev = VirtioNet()
    drv = Driver(dev)
    rx, _ = drv.bring_up(driver_ok=False)
    rx.add(in_sizes=[1526])
    assert not dev.deliver(frame(BCAST, dev.mac))
    drv.add_status(0x4)
    drv.ack_interrupt()
    dev.set_link(False)
    assert drv.get(MmioReg.INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG
    assert drv.mmio.read(0x106, 2, 0) == 0
    assert not dev.deliver(frame(BCAST, dev.mac))
    dev.set_link(True)
    assert dev.deliver(frame(BCAST, dev.mac))


def test_hostile_buffers_need_reset():
    drv, dev, rx, tx = make()
    tx.add([HDR + frame(BCAST, dev.mac)], [16])
    tx.kick()
    assert drv.needs_reset()
    drv, dev, rx, tx = make()
    rx.add([b"x"], [1526])
    assert not dev.deliver(frame(BCAST, dev.mac))
    assert drv.needs_reset()


def test_two_vms_through_the_switch():
    switch = VirtioSwitch("sw")
    pa, pb = switch.add_port("a"), switch.add_port("b")
    drv_a, a, rx_a, tx_a = make(pa.mac)
    drv_b, b, rx_b, tx_b = make(pb.mac)
    switch.attach("a", a)
    switch.attach("b", b)
    for _ in range(4):
        rx_a.add(in_sizes=[1526])
        rx_b.add(in_sizes=[1526])
    ping = frame(BCAST, a.mac, b"ping")
    tx_a.add([HDR + ping])
    tx_a.kick()
    (head, n), = rx_b.take_used()
    assert rx_b.read_buffer(head, 0, n)[NET_HDR_LEN:] == ping
    assert rx_a.take_used() == []  # never echoed to the sender
    pong = frame(a.mac, b.mac, b"pong")
    tx_b.add([HDR + pong])
    tx_b.kick()
    (head, n), = rx_a.take_used()
    assert rx_a.read_buffer(head, 0, n)[NET_HDR_LEN:] == pong
    assert switch.mac_table() == {pa.stats()["mac"]: "a", pb.stats()["mac"]: "b"}


def test_vms_sending_to_each_other_concurrently_do_not_deadlock():
    switch = VirtioSwitch("sw")
    switch.add_port("a")
    switch.add_port("b")
    drv_a, a, rx_a, tx_a = make(switch.port("a").mac)
    drv_b, b, rx_b, tx_b = make(switch.port("b").mac)
    switch.attach("a", a)
    switch.attach("b", b)
    errors = []

    def pump(dev, rx, tx, dst):
        try:
            for _ in range(300):
                rx.take_used()
                if len(rx.free) >= 1:
                    rx.add(in_sizes=[1526])
                    rx.kick()
                tx.take_used()
                if tx.free:
                    tx.add([HDR + frame(dst, dev.mac)])
                    tx.kick()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    # The driver helpers are not thread-safe per VM, but each thread owns one VM.
    ta = threading.Thread(target=pump, args=(a, rx_a, tx_a, b.mac))
    tb = threading.Thread(target=pump, args=(b, rx_b, tx_b, a.mac))
    ta.start()
    tb.start()
    ta.join(20)
    tb.join(20)
    assert not ta.is_alive() and not tb.is_alive()
    assert errors == []
    assert a.tx_frames == 300 and b.tx_frames == 300
    assert a.rx_frames + a.rx_dropped == 300
    assert not drv_a.needs_reset() and not drv_b.needs_reset()
    assert drv_a.log.internal_errors() == [] and drv_b.log.internal_errors() == []
