import struct

import pytest

from pyned.services.switch import LINKTYPE_ETHERNET, PCAP_MAGIC, VirtioSwitch


class Endpoint:
    """A NIC double: records what it receives, sends through its uplink."""

    def __init__(self, mac, accept=True):
        self.mac = mac
        self.accept = accept
        self.received = []
        self.uplink = None

    def connect(self, uplink):
        self.uplink = uplink

    def deliver(self, frame):
        self.received.append(frame)
        return self.accept

    def send(self, dst, payload=b"data"):
        self.uplink(dst + self.mac + b"\x08\x00" + payload)


BCAST = b"\xff" * 6
MCAST = bytes.fromhex("01005e000001")


def setup(n=3, **kw):
    sw = VirtioSwitch("sw", **kw)
    eps = []
    for i in range(n):
        port = sw.add_port(f"p{i}")
        ep = Endpoint(port.mac)
        sw.attach(f"p{i}", ep)
        eps.append(ep)
    return sw, eps


def test_ports_get_distinct_stable_macs_and_options():
    sw = VirtioSwitch("sw")
    a = sw.add_port("a")
    b = sw.add_port("b", mac="52:54:00:00:00:02")
    assert a.mac != b.mac and a.mac[0] & 2
    assert VirtioSwitch("sw").add_port("a").mac == a.mac
    assert b.mac == bytes.fromhex("525400000002")
    with pytest.raises(ValueError, match="already used"):
        sw.add_port("c", mac="52:54:00:00:00:02")
    with pytest.raises(ValueError, match="exists"):
        sw.add_port("a")
    with pytest.raises(ValueError, match="VLAN"):
        sw.add_port("v", vlan="access=1")
    with pytest.raises(ValueError, match="bad MAC"):
        sw.add_port("m", mac="zz")
    small = VirtioSwitch("s", max_ports=1)
    small.add_port("x")
    with pytest.raises(ValueError, match="no free port"):
        small.add_port("y")


@pytest.mark.parametrize("dst", [BCAST, MCAST])
def test_broadcast_and_multicast_flood_to_all_others(dst):
    _, (a, b, c) = setup()
    a.send(dst)
    assert a.received == [] and len(b.received) == 1 and len(c.received) == 1


def test_unknown_unicast_floods_then_learned_unicast_goes_to_one_port():
    sw, (a, b, c) = setup()
    a.send(b.mac)  # b not learned yet: flooded
    assert len(b.received) == 1 and len(c.received) == 1
    b.send(a.mac)  # a was learned from its first frame
    assert len(a.received) == 1 and len(c.received) == 1
    a.send(b.mac)  # now b is known
    assert len(b.received) == 2 and len(c.received) == 1
    assert sw.port("p0").rx_frames == 2 and sw.port("p1").tx_frames == 2


def test_never_back_to_the_sender():
    sw, (a, b, _) = setup()
    a.send(BCAST)
    a.send(a.mac)  # to itself: the switch learned a on a's own port
    assert a.received == []
    assert len(b.received) == 1


def test_drops_are_counted():
    sw, (a, b) = setup(2)
    b.accept = False
    a.send(BCAST)
    assert sw.port("p1").tx_dropped == 1
    a.uplink(b"short")
    assert sw.port("p0").rx_frames == 1


def test_detach_flushes_learned_macs_and_reattach_replaces_the_device():
    sw, (a, b, c) = setup()
    b.send(BCAST)
    assert "p1" in sw.mac_table().values()
    old_uplink = b.uplink
    sw.detach("p1")
    assert b.uplink is None
    assert "p1" not in sw.mac_table().values()
    a.send(b.mac)  # unknown again: flooded, but nothing is plugged into p1
    assert b.received == [] and len(c.received) == 2  # b's broadcast, then the flood
    new_b = Endpoint(b.mac)
    sw.attach("p1", new_b)
    seen_by_a = len(a.received)
    old_uplink(BCAST + b.mac + b"\x08\x00old")  # the replaced device's late frame
    assert len(a.received) == seen_by_a
    new_b.send(BCAST)
    assert len(a.received) == seen_by_a + 1
    a.send(new_b.mac)
    assert len(new_b.received) == 1 and len(c.received) == 3  # learned: c is spared
    sw.detach("p1", endpoint=b)  # a stale detach is ignored
    assert new_b.uplink is not None


def test_monitor_port_sees_everything_and_cannot_send():
    sw = VirtioSwitch("sw")
    eps = {}
    for name, kind in (("a", "none"), ("b", "none"), ("mon", "monitor")):
        port = sw.add_port(name, port_type=kind)
        eps[name] = Endpoint(port.mac)
        sw.attach(name, eps[name])
    eps["b"].send(BCAST)
    eps["a"].send(eps["b"].mac)
    assert len(eps["mon"].received) == 2
    assert len(eps["b"].received) == 1
    eps["mon"].send(BCAST)
    assert len(eps["a"].received) == 1


def test_mac_table_is_bounded():
    sw = VirtioSwitch("sw", mac_table_size=4)
    sw.add_port("a")
    ep = Endpoint(sw.port("a").mac)
    sw.attach("a", ep)
    for i in range(10):
        ep.uplink(BCAST + bytes([2, 0, 0, 0, 0, i]) + b"\x08\x00")
    table = sw.mac_table()
    assert len(table) == 4
    assert "02:00:00:00:00:09" in table and "02:00:00:00:00:00" not in table


def test_pcap_capture(tmp_path):
    path = tmp_path / "switch.pcap"
    times = iter([1000.25, 1001.5])
    sw, (a, b) = setup(2, pcap=path, clock=lambda: next(times))
    a.send(BCAST, b"x" * 50)
    # The file is complete after each packet, while the switch is still running.
    raw = path.read_bytes()
    assert len(raw) == 24 + 16 + 64
    b.send(a.mac, b"y" * 10)
    sw.close()
    raw = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", raw)
    assert (magic, major, minor, linktype) == (PCAP_MAGIC, 2, 4, LINKTYPE_ETHERNET)
    assert snaplen >= 1518
    off = 24
    records = []
    while off < len(raw):
        sec, usec, incl, orig = struct.unpack_from("<IIII", raw, off)
        records.append((sec, usec, raw[off + 16:off + 16 + incl]))
        assert incl == orig
        off += 16 + incl
    assert off == len(raw)
    assert [(s, u, len(d)) for s, u, d in records] == [(1000, 250000, 64), (1001, 500000, 24)]
    assert records[0][2][:6] == BCAST and records[1][2][6:12] == b.mac


def test_stats():
    sw, (a, b) = setup(2)
    a.send(BCAST, b"12345678")
    stats = {s["name"]: s for s in sw.stats()}
    assert stats["p0"]["rx_frames"] == 1 and stats["p0"]["rx_bytes"] == 22
    assert stats["p1"]["tx_frames"] == 1 and stats["p1"]["attached"]
