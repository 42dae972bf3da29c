import struct

import pytest
from virtq_driver import FakeRam

from pyned.devices.virtio.queue import (VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
                                        VIRTQ_DESC_F_WRITE, Virtqueue, VirtqueueError, gather,
                                        scatter, slice_views)

SIZE = 8


class Rings:
    """A queue laid out at fixed addresses, written descriptor by descriptor."""

    def __init__(self, size=SIZE, indirect=True, event_idx=False):
        self.ram = FakeRam(1 << 16)
        b = self.ram.base
        self.desc, self.avail, self.used = b, b + 0x1000, b + 0x2000
        self.data = b + 0x4000
        self.size = size
        self.vq = Virtqueue(self.ram, size, self.desc, self.avail, self.used,
                            indirect=indirect, event_idx=event_idx)
        self.idx = 0

    def desc_at(self, table, i, addr, length, flags=0, nxt=0):
        self.ram.write(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def d(self, i, addr, length, flags=0, nxt=0):
        self.desc_at(self.desc, i, addr, length, flags, nxt)

    def offer(self, head, idx_step=1):
        self.ram.write(self.avail + 4 + 2 * (self.idx % self.size), struct.pack("<H", head))
        self.idx = (self.idx + idx_step) & 0xFFFF
        self.ram.write(self.avail + 2, struct.pack("<H", self.idx))


def test_chain_with_readable_and_writable_parts():
    r = Rings()
    r.ram.write(r.data, b"abcdef")
    r.d(0, r.data, 4, VIRTQ_DESC_F_NEXT, 3)
    r.d(3, r.data + 4, 2, VIRTQ_DESC_F_NEXT, 5)
    r.d(5, r.data + 0x100, 16, VIRTQ_DESC_F_WRITE)
    r.offer(0)
    chain = r.vq.pop()
    assert chain.head == 0
    assert gather(chain.readable) == b"abcdef"
    assert chain.readable_len == 6 and chain.writable_len == 16
    assert r.vq.pop() is None
    r.vq.push(chain.head, 16)
    assert struct.unpack_from("<HHII", r.ram.read(r.used, 12)) == (0, 1, 0, 16)


def test_zero_length_descriptor_touches_nothing():
    r = Rings()
    r.d(0, 0xDEAD_0000_0000, 0, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1)
    r.d(1, r.data, 4, VIRTQ_DESC_F_WRITE)
    r.offer(0)
    chain = r.vq.pop()
    assert chain.writable_len == 4
    assert scatter(chain.writable, b"wxyz") == 4
    assert r.ram.read(r.data, 4) == b"wxyz"


@pytest.mark.parametrize("build, message", [
    (lambda r: (r.d(0, r.data, 1, VIRTQ_DESC_F_NEXT, 1), r.d(1, r.data, 1, VIRTQ_DESC_F_NEXT, 0)),
     "loops"),
    (lambda r: r.d(0, r.data, 1, VIRTQ_DESC_F_NEXT, SIZE), "not below the table size"),
    (lambda r: r.d(0, r.ram.base + r.ram.size - 2, 4), "outside guest RAM"),
    (lambda r: r.d(0, (1 << 64) - 2, 4), "wraps"),
    (lambda r: r.d(0, 0, 4), "outside guest RAM"),
    (lambda r: (r.d(0, r.data, 1, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 1), r.d(1, r.data, 1)),
     "readable descriptor after"),
    (lambda r: r.d(0, r.data, 20, VIRTQ_DESC_F_INDIRECT), "multiple of 16"),
    (lambda r: r.d(0, r.data, 0, VIRTQ_DESC_F_INDIRECT), "multiple of 16"),
    (lambda r: r.d(0, r.data, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, 1), "whole chain"),
    (lambda r: (r.d(0, r.data, 1, VIRTQ_DESC_F_NEXT, 1), r.d(1, r.data, 16, VIRTQ_DESC_F_INDIRECT)),
     "whole chain"),
    (lambda r: (r.d(0, r.data, 32, VIRTQ_DESC_F_INDIRECT),
                r.desc_at(r.data, 0, r.data + 0x100, 16, VIRTQ_DESC_F_INDIRECT)),
     "inside an indirect"),
    (lambda r: (r.d(0, r.data, 32, VIRTQ_DESC_F_INDIRECT),
                r.desc_at(r.data, 0, r.data + 0x100, 1, VIRTQ_DESC_F_NEXT, 2)), "table size 2"),
    (lambda r: (r.d(0, r.data, 32, VIRTQ_DESC_F_INDIRECT),
                r.desc_at(r.data, 0, r.data + 0x100, 1, VIRTQ_DESC_F_NEXT, 1),
                r.desc_at(r.data, 1, r.data + 0x100, 1, VIRTQ_DESC_F_NEXT, 0)), "loops"),
    (lambda r: r.d(0, r.data, 16 * (SIZE + 1), VIRTQ_DESC_F_INDIRECT), "exceeds"),
    (lambda r: r.d(0, r.ram.base + r.ram.size - 16, 32, VIRTQ_DESC_F_INDIRECT), "outside"),
])
def test_hostile_chains_are_rejected(build, message):
    r = Rings()
    build(r)
    r.offer(0)
    with pytest.raises(VirtqueueError, match=message):
        r.vq.pop()
    assert r.ram.misuse == []


def test_chain_longer_than_queue_is_rejected():
    r = Rings()
    for i in range(SIZE):
        r.d(i, r.data, 1, VIRTQ_DESC_F_NEXT, (i + 1) % SIZE)
    r.offer(0)
    with pytest.raises(VirtqueueError, match="loops or is longer"):
        r.vq.pop()


def test_head_past_queue_size_is_rejected():
    r = Rings()
    r.offer(SIZE)
    with pytest.raises(VirtqueueError, match="head"):
        r.vq.pop()


def test_avail_index_jumping_ahead_is_rejected():
    r = Rings()
    r.d(0, r.data, 1)
    r.offer(0, idx_step=SIZE + 1)
    with pytest.raises(VirtqueueError, match="ahead"):
        r.vq.pop()


def test_indirect_needs_the_feature():
    r = Rings(indirect=False)
    r.d(0, r.data, 16, VIRTQ_DESC_F_INDIRECT)
    r.offer(0)
    with pytest.raises(VirtqueueError, match="INDIRECT_DESC"):
        r.vq.pop()


@pytest.mark.parametrize("size, addrs, message", [
    (0, (0, 0x1000, 0x2000), "power of two"),
    (3, (0, 0x1000, 0x2000), "power of two"),
    (1 << 16, (0, 0x1000, 0x2000), "power of two"),
    (8, (4, 0x1000, 0x2000), "aligned"),
    (8, (0, 0x1000, 0xFFF0), "outside"),
])
def test_ring_validation(size, addrs, message):
    ram = FakeRam(1 << 16)
    with pytest.raises(VirtqueueError, match=message):
        Virtqueue(ram, size, *(ram.base + a for a in addrs), indirect=True, event_idx=True)


def test_slice_and_scatter_helpers():
    bufs = [bytearray(3), bytearray(0), bytearray(5)]
    views = [memoryview(b) for b in bufs]
    assert scatter(views, b"0123456789") == 8
    assert bytes(bufs[0]) == b"012" and bytes(bufs[2]) == b"34567"
    assert gather(views, 2, 3) == b"234"
    assert gather(views, 7) == b"7"
    assert gather(views, 9) == b""
    assert [bytes(v) for v in slice_views(views, 1, 7)] == [b"12", b"34567"]
    assert slice_views(views, 0, 0) == []
    assert scatter(views, b"ab", 6) == 2
    assert bytes(bufs[2]) == b"345ab"
