"""Property tests: random and hostile guests against the queue, the transport and the devices.

Whatever the guest writes, nothing may raise into the host, nothing outside
guest RAM may be touched (FakeRam records every such attempt), and the
device either works or says DEVICE_NEEDS_RESET.
"""

import random
import struct

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from virtq_driver import RAM_BASE, Driver, FakeRam

from pyned.devices.virtio.block import VirtioBlock
from pyned.devices.virtio.console import VirtioConsole
from pyned.devices.virtio.mmio import DeviceStatus, MmioReg
from pyned.devices.virtio.net import VirtioNet
from pyned.devices.virtio.queue import Virtqueue, VirtqueueError
from pyned.devices.virtio.rng import VirtioRng

RAM_SIZE = 1 << 16
INDIRECT_AREA = RAM_BASE + 0x8000  # random descriptors live here too
SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

DATA = RAM_BASE + 0x4000


def plausible_or_hostile(rnd, plausible, hostile):
    """Mostly plausible values, so chains get deep before something breaks."""
    return hostile() if rnd.random() < rnd.hostility else plausible()


def random_descriptor(rnd, n):
    addr = plausible_or_hostile(rnd, lambda: rnd.choice([
        rnd.randrange(DATA, DATA + 0x1000), rnd.randrange(DATA, DATA + 0x1000),
        INDIRECT_AREA + 16 * rnd.randrange(8),
        rnd.randrange(RAM_BASE + RAM_SIZE - 64, RAM_BASE + RAM_SIZE)]),
        lambda: rnd.choice([rnd.getrandbits(64), (1 << 64) - rnd.randrange(1, 64),
                            rnd.randrange(0, RAM_BASE), RAM_BASE + RAM_SIZE + rnd.randrange(64)]))
    length = plausible_or_hostile(rnd, lambda: rnd.choice([rnd.randrange(65),
                                                           16 * rnd.randrange(1, 9)]),
                                  lambda: rnd.getrandbits(32))
    fl = plausible_or_hostile(rnd, lambda: rnd.choice([0, 1, 1, 1, 3, 3, 2, 4]),
                              lambda: rnd.getrandbits(16))
    nxt = plausible_or_hostile(rnd, lambda: rnd.randrange(n), lambda: rnd.getrandbits(16))
    return addr, length, fl, nxt


@st.composite
def hostile_queue(draw):
    size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    # A seeded PRNG keeps the intended mix; hypothesis still reports the seed.
    rnd = random.Random(draw(st.integers(0, (1 << 64) - 1)))
    rnd.hostility = draw(st.sampled_from([0.0, 0.02, 0.1, 0.3]))
    table = [random_descriptor(rnd, size) for _ in range(size)]
    indirect_table = [random_descriptor(rnd, 8) for _ in range(8)]
    ring = [plausible_or_hostile(rnd, lambda: rnd.randrange(size), lambda: rnd.getrandbits(16))
            for _ in range(size)]
    avail_idx = plausible_or_hostile(rnd, lambda: rnd.randrange(1, size + 1),
                                     lambda: rnd.getrandbits(16))
    return size, table, indirect_table, ring, avail_idx, draw(st.booleans()), draw(st.booleans())


def write_descs(ram, base, descs):
    for i, (addr, length, fl, nxt) in enumerate(descs):
        ram.write(base + 16 * i, struct.pack("<QIHH", addr, length, fl, nxt))


@SETTINGS
@given(hostile_queue())
def test_queue_never_escapes_ram_or_raises_anything_else(case):
    size, table, indirect_table, ring, avail_idx, indirect, event_idx = case
    ram = FakeRam(RAM_SIZE)
    desc, avail, used = RAM_BASE, RAM_BASE + 0x1000, RAM_BASE + 0x2000
    write_descs(ram, desc, table)
    write_descs(ram, INDIRECT_AREA, indirect_table)
    ram.write(avail + 2, struct.pack("<H", avail_idx))
    for i, head in enumerate(ring):
        ram.write(avail + 4 + 2 * i, struct.pack("<H", head))
    vq = Virtqueue(ram, size, desc, avail, used, indirect=indirect, event_idx=event_idx)
    popped = 0
    stop = None
    try:
        while (chain := vq.pop()) is not None:
            popped += 1
            assert chain.readable_len == sum(map(len, chain.readable))
            assert chain.writable_len == sum(map(len, chain.writable))
            assert len(chain.readable) + len(chain.writable) <= max(size, 8)
            vq.push(chain.head, chain.writable_len)
            assert popped <= size
    except VirtqueueError as e:
        stop = str(e)
    note(f"popped {popped}, stopped by {stop}")
    assert ram.misuse == []
    assert vq.used_idx == popped


REGS = [r.value for r in MmioReg]
values = st.one_of(st.integers(0, 0xFFFF_FFFF),
                   st.sampled_from([0, 1, 2, 3, 4, 8, 0xF, 0x40, 0x80]),
                   st.integers(RAM_BASE, RAM_BASE + RAM_SIZE).map(lambda a: a & ~0xF))
operations = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(REGS), values),
    st.tuples(st.just("read"), st.sampled_from(REGS), st.just(0)),
    st.tuples(st.just("odd"), st.integers(0, 0x1FF), st.sampled_from([1, 2, 4, 8])),
    st.tuples(st.just("kick"), st.integers(0, 3), st.just(0)),
    st.tuples(st.just("post"), st.integers(0, 3),
              st.tuples(st.integers(0, 600), st.integers(0, 1600))),
    # The driver's rings sit at the start of RAM: scribble there most of the time.
    st.tuples(st.just("poke"), st.one_of(st.integers(0, 0x600), st.integers(0, RAM_SIZE - 8)),
              st.integers(0, (1 << 64) - 1)),
    st.tuples(st.just("host"), st.integers(0, 3), st.binary(max_size=64)),
)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("hostile") / "disk.img"
    path.write_bytes(bytes(64 * 512))
    return path


class Sink:
    def write(self, data):
        pass


def make_device(kind, image):
    if kind == "console":
        return VirtioConsole(Sink())
    if kind == "block":
        return VirtioBlock(image)
    if kind == "net":
        dev = VirtioNet()
        dev.connect(lambda frame: None)
        return dev
    return VirtioRng(seed=7)


def host_action(dev, data):
    if isinstance(dev, VirtioConsole):
        dev.push_input(data)
    elif isinstance(dev, VirtioNet):
        dev.deliver(b"\xff" * 6 + dev.mac + b"\x08\x00" + data)


@pytest.mark.parametrize("kind", ["console", "block", "net", "rng"])
def test_random_driver_against_each_device(kind, image):
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(start_up=st.booleans(), ops=st.lists(operations, max_size=40))
    def run(start_up, ops):
        dev = make_device(kind, image)
        drv = Driver(dev, FakeRam(RAM_SIZE))
        m = drv.mmio
        queues = []
        try:
            if start_up:
                queues = drv.bring_up(sizes=[8] * dev.num_queues)
            for op, a, b in ops:
                if op == "write":
                    m.write(a, 4, b, 0)
                elif op == "read":
                    m.read(a, 4, 0)
                elif op == "odd":
                    m.read(a, b, 0)
                    m.write(a, b, a, 0)
                elif op == "kick":
                    m.write(MmioReg.QUEUE_NOTIFY, 4, a, 0)
                elif op == "post":
                    out, inn = b
                    if a < len(queues) and len(queues[a].free) >= 2 and (out or inn):
                        queues[a].add([bytes(16) + b"x" * out] if out else [], [inn] if inn else [])
                elif op == "poke":
                    drv.ram.write(RAM_BASE + a, struct.pack("<Q", b))
                else:
                    host_action(dev, b)
                assert drv.ram.misuse == []
                assert drv.log.internal_errors() == []
                status = m.status
                assert (m.failure is not None) == bool(status & DeviceStatus.DEVICE_NEEDS_RESET)
                assert drv.irq.level == (m.read(MmioReg.INTERRUPT_STATUS, 4, 0) != 0)
        finally:
            if isinstance(dev, VirtioBlock):
                dev.close()

    run()


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([0, 1]), st.integers(0, 300), st.integers(0, 3)),
                max_size=30))
def test_well_behaved_console_traffic_never_needs_reset(steps):
    """The other half of "consistent": correct drivers are never punished."""
    out = bytearray()

    class Collect:
        def write(self, data):
            out.extend(data)

    dev = VirtioConsole(Collect())
    drv = Driver(dev, FakeRam(1 << 20))
    rx, tx = drv.bring_up(sizes=[8, 8])
    sent = bytearray()
    for queue, n, parts in steps:
        rx.take_used()
        tx.take_used()
        if queue == 0 and rx.free:
            rx.add(in_sizes=[n + 1])
            rx.kick()
            dev.push_input(b"i" * n)
        elif queue == 1 and len(tx.free) >= parts + 1:
            chunks = [bytes([65 + i]) * (n // (parts + 1)) for i in range(parts + 1)]
            tx.add(chunks, indirect=parts % 2 == 1)
            sent += b"".join(chunks)
            tx.kick()
    assert not drv.needs_reset(), drv.log
    assert bytes(out) == bytes(sent)
