import struct

import pytest
from virtq_driver import ALL_TRANSPORT, BASE_FEATURES, Driver, FakeRam

from pyned.devices.virtio.mmio import (MAGIC_VALUE, VENDOR_ID, VIRTIO_F_EVENT_IDX,
                                       VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING, DeviceStatus,
                                       MmioReg, VirtioDevice)
from pyned.devices.virtio.queue import gather, scatter


class Loopback(VirtioDevice):
    """Copies each chain's readable bytes into its writable part."""

    device_id = 42
    name = "loop"
    num_queues = 2
    queue_max = 64
    device_features = 1 << 3

    def __init__(self):
        super().__init__()
        self.activated = None
        self.resets = 0
        self.config = bytearray(range(16))

    def config_bytes(self):
        return bytes(self.config)

    def write_config(self, offset, data):
        self.config[offset:offset + len(data)] = data

    def reset(self):
        super().reset()
        self.resets += 1

    def activate(self, features):
        super().activate(features)
        self.activated = features

    def on_notify(self, index, queue):
        while (chain := queue.pop()) is not None:
            n = scatter(chain.writable, gather(chain.readable))
            queue.push(chain.head, n)


def make():
    dev = Loopback()
    return Driver(dev), dev


def test_identification_registers():
    drv, _ = make()
    assert drv.get(MmioReg.MAGIC_VALUE) == MAGIC_VALUE
    assert drv.get(MmioReg.VERSION) == 2
    assert drv.get(MmioReg.DEVICE_ID) == 42
    assert drv.get(MmioReg.VENDOR_ID) == VENDOR_ID
    assert drv.device_features() == ALL_TRANSPORT | (1 << 3)
    drv.set(MmioReg.DEVICE_FEATURES_SEL, 2)
    assert drv.get(MmioReg.DEVICE_FEATURES) == 0
    for reg in (MmioReg.SHM_LEN_LOW, MmioReg.SHM_LEN_HIGH, MmioReg.SHM_BASE_LOW,
                MmioReg.SHM_BASE_HIGH):
        assert drv.get(reg) == 0xFFFF_FFFF
    assert drv.get(MmioReg.QUEUE_RESET) == 0
    assert drv.get(MmioReg.STATUS) == 0


def test_every_register_offset_reads_without_harm():
    drv, _ = make()
    for off in range(0, 0x100, 4):
        drv.get(off)
    assert not drv.needs_reset()


def test_queue_num_max_per_selected_queue():
    drv, _ = make()
    drv.set(MmioReg.QUEUE_SEL, 1)
    assert drv.get(MmioReg.QUEUE_NUM_MAX) == 64
    drv.set(MmioReg.QUEUE_SEL, 2)
    assert drv.get(MmioReg.QUEUE_NUM_MAX) == 0
    assert drv.get(MmioReg.QUEUE_READY) == 0


def test_feature_negotiation_requires_version_1():
    drv, dev = make()
    assert not drv.negotiate(accept=1 << 3)
    assert any("VERSION_1" in line for line in drv.log)
    assert not drv.needs_reset()
    assert drv.negotiate(accept=BASE_FEATURES | (1 << 3))


def test_features_not_offered_are_refused():
    drv, _ = make()
    assert not drv.negotiate(accept=BASE_FEATURES | (1 << 7))
    drv.set(MmioReg.STATUS, 0)
    drv.add_status(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)
    drv.set(MmioReg.DRIVER_FEATURES_SEL, 1)
    drv.set(MmioReg.DRIVER_FEATURES, 1)
    drv.set(MmioReg.DRIVER_FEATURES_SEL, 2)
    drv.set(MmioReg.DRIVER_FEATURES, 1)
    drv.add_status(DeviceStatus.FEATURES_OK)
    assert not drv.status() & DeviceStatus.FEATURES_OK


def test_round_trip_and_used_interrupt():
    drv, dev = make()
    q0, _ = drv.bring_up(sizes=[8, 8])
    assert dev.activated == drv.mmio.driver_features
    head = q0.add([b"hello"], [8])
    assert not drv.irq.level
    q0.kick()
    assert q0.take_used() == [(head, 5)]
    assert q0.read_buffer(head, 0, 5) == b"hello"
    assert drv.irq.level
    assert drv.ack_interrupt() == VIRTIO_MMIO_INT_VRING
    assert not drv.irq.level


def test_indirect_descriptors():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[8, 8])
    head = q0.add([b"ab", b"cd"], [3, 3], indirect=True)
    q0.kick()
    assert q0.take_used() == [(head, 4)]
    assert q0.read_buffer(head, 0, 3) == b"abc"
    assert q0.read_buffer(head, 1, 1) == b"d"


def test_indirect_refused_without_the_feature():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[8, 8], accept=BASE_FEATURES)
    q0.add([b"x"], [1], indirect=True)
    q0.kick()
    assert drv.needs_reset()
    assert "VIRTIO_F_INDIRECT_DESC" in drv.mmio.failure


def test_buffers_posted_before_driver_ok_are_processed_on_driver_ok():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[8, 8], driver_ok=False)
    head = q0.add([b"z"], [1])
    q0.kick()  # ignored: not live yet
    assert q0.take_used() == []
    drv.add_status(DeviceStatus.DRIVER_OK)
    assert q0.take_used() == [(head, 1)]


def test_event_idx_suppresses_interrupts_and_publishes_avail_event():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[16, 16])
    assert drv.mmio.driver_features >> VIRTIO_F_EVENT_IDX & 1
    q0.set_used_event(5)  # interrupt only once used idx passes 5
    for _ in range(3):
        q0.add([b"a"], [1])
        q0.kick()
    assert not drv.irq.level
    assert q0.avail_event() == 3
    for _ in range(3):
        q0.add([b"a"], [1])
    q0.kick()
    assert drv.irq.level
    assert len(q0.take_used()) == 6


def test_no_interrupt_flag_without_event_idx():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[8, 8], accept=BASE_FEATURES)
    q0.set_avail_flags(1)
    q0.add([b"a"], [1])
    q0.kick()
    assert not drv.irq.level
    q0.set_avail_flags(0)
    q0.add([b"a"], [1])
    q0.kick()
    assert drv.irq.level


def test_ring_index_wraps_around_16_bits():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[4, 4])
    # Start the rings just before the wrap: both sides agree on any start index.
    vq = drv.mmio.queue(0)
    vq.last_avail_idx = vq.used_idx = 0xFFFE
    vq._signalled_used = 0xFFFE
    q0.avail_idx = q0.last_used = 0xFFFE
    for i in range(6):
        head = q0.add([bytes([i])], [1])
        q0.kick()
        assert q0.take_used() == [(head, 1)]
    assert vq.last_avail_idx == 4 and vq.used_idx == 4
    assert not drv.needs_reset()


def test_config_space_accesses():
    drv, dev = make()
    m = drv.mmio
    assert m.read(0x100, 1, 0) == 0
    assert m.read(0x102, 2, 0) == 0x0302
    assert m.read(0x104, 4, 0) == 0x07060504
    assert m.read(0x108, 8, 0) == struct.unpack("<Q", bytes(range(8, 16)))[0]
    assert m.read(0x10E, 4, 0) == 0x0F0E  # past the end reads as zero
    m.write(0x100, 2, 0xBEEF, 0)
    assert dev.config[:2] == b"\xef\xbe"


def test_config_change_interrupt_and_generation():
    drv, _ = make()
    drv.bring_up()
    gen = drv.get(MmioReg.CONFIG_GENERATION)
    drv.mmio.config_changed()
    assert drv.get(MmioReg.CONFIG_GENERATION) == gen + 1
    assert drv.irq.level
    assert drv.ack_interrupt() == VIRTIO_MMIO_INT_CONFIG


def test_reset_by_status_zero_and_by_mmio_reset():
    drv, dev = make()
    q0, _ = drv.bring_up(sizes=[8, 8])
    q0.add([b"a"], [1])
    q0.kick()
    assert drv.irq.level
    resets = dev.resets
    drv.set(MmioReg.STATUS, 0)
    assert dev.resets == resets + 1
    assert drv.status() == 0 and not drv.irq.level
    drv.set(MmioReg.QUEUE_SEL, 0)
    assert drv.get(MmioReg.QUEUE_READY) == 0
    drv.bring_up(sizes=[8, 8])
    resets = dev.resets
    drv.mmio.reset()
    assert drv.status() == 0 and dev.resets == resets + 1


ACK, DRV = DeviceStatus.ACKNOWLEDGE, DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER


@pytest.mark.parametrize("steps, reason", [
    ([ACK, ACK | DeviceStatus.FEATURES_OK], "without DRIVER"),
    ([ACK, DRV, ACK], "clears bits"),
    ([ACK, DRV, DRV | DeviceStatus.DRIVER_OK], "without FEATURES_OK"),
    ([ACK | 0x10], "undefined bits"),
])
def test_illegal_status_transitions_need_reset(steps, reason):
    drv, _ = make()
    for value in steps:
        drv.set(MmioReg.STATUS, value)
    assert drv.needs_reset()
    assert reason in drv.mmio.failure
    assert len(drv.log) == 1
    drv.set(MmioReg.STATUS, 0)
    assert drv.status() == 0 and drv.mmio.failure is None


def test_driver_without_acknowledge_is_taken_as_both():
    # U-Boot 2023.01 resets the device and then writes DRIVER alone.
    drv, _ = make()
    drv.set(MmioReg.STATUS, DeviceStatus.DRIVER)
    assert not drv.needs_reset()
    assert drv.status() == DRV
    assert len(drv.log) == 1 and "without ACKNOWLEDGE" in drv.log[0]
    assert drv.negotiate()


def test_failed_status_stops_the_device():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[8, 8])
    drv.add_status(DeviceStatus.FAILED)
    q0.add([b"a"], [1])
    q0.kick()
    assert q0.take_used() == []
    assert not drv.needs_reset()


@pytest.mark.parametrize("size, offset", [(1, 0x70), (2, 0x70), (8, 0x80), (4, 0x72)])
def test_register_access_width_violations(size, offset):
    drv, _ = make()
    drv.mmio.write(offset, size, 1, 0)
    assert drv.needs_reset()
    assert "32-bit" in drv.mmio.failure


def test_queue_setup_validation():
    drv, _ = make()
    assert drv.negotiate()
    ram = drv.ram

    def try_queue(num, desc, avail, used):
        drv.set(MmioReg.QUEUE_SEL, 0)
        drv.set(MmioReg.QUEUE_NUM, num)
        drv.set(MmioReg.QUEUE_DESC_LOW, desc & 0xFFFF_FFFF)
        drv.set(MmioReg.QUEUE_DESC_HIGH, desc >> 32)
        drv.set(MmioReg.QUEUE_DRIVER_LOW, avail & 0xFFFF_FFFF)
        drv.set(MmioReg.QUEUE_DRIVER_HIGH, avail >> 32)
        drv.set(MmioReg.QUEUE_DEVICE_LOW, used & 0xFFFF_FFFF)
        drv.set(MmioReg.QUEUE_DEVICE_HIGH, used >> 32)
        drv.set(MmioReg.QUEUE_READY, 1)
        failure = drv.mmio.failure
        assert drv.negotiate()  # reset and renegotiate for the next case
        return failure

    base = ram.base
    assert try_queue(8, base, base + 0x1000, base + 0x2000) is None
    assert "power of two" in try_queue(6, base, base + 0x1000, base + 0x2000)
    assert "QueueNumMax" in try_queue(128, base, base + 0x1000, base + 0x2000)
    assert "aligned" in try_queue(8, base + 8, base + 0x1000, base + 0x2000)
    assert "aligned" in try_queue(8, base, base + 0x1001, base + 0x2000)
    assert "aligned" in try_queue(8, base, base + 0x1000, base + 0x2002)
    assert "outside" in try_queue(8, base + ram.size - 16, base + 0x1000, base + 0x2000)
    assert "outside" in try_queue(8, 0, base + 0x1000, base + 0x2000)
    assert "outside" in try_queue(8, (1 << 64) - 16, base + 0x1000, base + 0x2000)
    assert ram.misuse == []


def test_queue_registers_locked_while_ready():
    drv, _ = make()
    drv.bring_up(sizes=[8, 8])
    drv.set(MmioReg.QUEUE_SEL, 0)
    drv.set(MmioReg.QUEUE_NUM, 4)
    assert drv.needs_reset()
    assert "while the queue is ready" in drv.mmio.failure


def test_queue_ready_before_features_ok_is_a_violation():
    drv, _ = make()
    drv.add_status(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER)
    drv.set(MmioReg.QUEUE_READY, 1)
    assert drv.needs_reset()


def test_needs_reset_raises_config_interrupt_and_stops_processing():
    drv, _ = make()
    q0, _ = drv.bring_up(sizes=[8, 8])
    q0.publish(9)  # head past the queue size
    q0.kick()
    assert drv.needs_reset()
    assert drv.get(MmioReg.INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG
    assert drv.irq.level
    assert len(drv.log) == 1 and "needs reset" in drv.log[0]
    q0.kick()
    assert len(drv.log) == 1
    # A reset brings it back.
    q0, _ = drv.bring_up(sizes=[8, 8])
    head = q0.add([b"k"], [1])
    q0.kick()
    assert q0.take_used() == [(head, 1)]


def test_backend_bug_is_contained():
    class Broken(Loopback):
        def on_notify(self, index, queue):
            raise RuntimeError("boom")

    drv = Driver(Broken())
    q0, _ = drv.bring_up(sizes=[8, 8])
    q0.add([b"a"], [1])
    q0.kick()
    assert drv.needs_reset()
    assert "internal error" in drv.log[0] and "boom" in drv.log[0]


def test_deferred_work_runs_after_the_lock_is_released():
    seen = []

    class Deferring(Loopback):
        def on_notify(self, index, queue):
            super().on_notify(index, queue)
            lock = self.transport._lock

            def later():
                # Another thread could take the lock now: it is not held.
                seen.append(lock.acquire(blocking=False) and (lock.release() or True))
            return later

    drv = Driver(Deferring())
    q0, _ = drv.bring_up(sizes=[8, 8])
    q0.add([b"a"], [1])
    q0.kick()
    assert seen and all(seen)


def test_info_for_the_monitor():
    drv, _ = make()
    drv.bring_up(sizes=[8, 8])
    info = drv.mmio.info()
    assert info["device"] == "loop"
    assert info["queues"][0]["size"] == 8
    assert FakeRam().misuse == []
