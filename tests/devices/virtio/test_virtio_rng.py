from virtq_driver import Driver

from pyned.devices.virtio.mmio import MmioReg
from pyned.devices.virtio.rng import MAX_REQUEST, VirtioRng


def fetch(seed, sizes):
    drv = Driver(VirtioRng(seed=seed))
    q = drv.bring_up()[0]
    heads = [q.add(in_sizes=[n]) for n in sizes]
    q.kick()
    used = dict(q.take_used())
    return [q.read_buffer(h, 0, used[h]) for h in heads], drv


def test_seeded_stream_is_reproducible():
    a, drv = fetch(1234, [16, 32])
    b, _ = fetch(1234, [16, 32])
    c, _ = fetch(99, [16, 32])
    assert a == b and a != c
    assert [len(x) for x in a] == [16, 32]
    assert drv.get(MmioReg.DEVICE_ID) == 4
    assert drv.irq.level


def test_host_entropy_fills_split_buffers():
    drv = Driver(VirtioRng())
    q = drv.bring_up()[0]
    head = q.add(in_sizes=[8, 24])
    q.kick()
    assert q.take_used() == [(head, 32)]
    assert q.read_buffer(head, 1, 24) != bytes(24)


def test_large_request_is_capped():
    drv = Driver(VirtioRng(seed=1))
    q = drv.bring_up()[0]
    head = q.add(in_sizes=[MAX_REQUEST + 100])
    q.kick()
    assert q.take_used() == [(head, MAX_REQUEST)]


def test_readable_buffer_needs_reset():
    drv = Driver(VirtioRng(seed=1))
    q = drv.bring_up()[0]
    q.add([b"x"], [4])
    q.kick()
    assert drv.needs_reset()
