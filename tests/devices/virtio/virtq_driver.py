"""The guest-driver side of virtio-mmio for device tests: fake RAM, rings, registers.

``FakeRam`` is a bytearray with the GuestRam contract that records (and
raises on) every access outside itself, so tests can assert that a device
never touched memory it should not. ``Driver`` brings a ``VirtioMmio`` up the
way Linux does and ``DriverQueue`` builds descriptor chains in the rings.
"""

from __future__ import annotations

import struct

from pyned.devices.virtio.mmio import (VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC,
                                       VIRTIO_F_VERSION_1, DeviceStatus, MmioReg, VirtioDevice,
                                       VirtioMmio)
from pyned.devices.virtio.queue import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE

RAM_BASE = 0x4000_0000


class FakeRam:
    def __init__(self, size: int = 4 << 20, base: int = RAM_BASE) -> None:
        self.base = base
        self.size = size
        self.mem = bytearray(size)
        self.misuse: list[str] = []
        self._heap = base

    def contains(self, addr: int, size: int = 1) -> bool:
        return size >= 0 and addr >= self.base and addr + size <= self.base + self.size

    def _offset(self, addr: int, size: int) -> int:
        if not self.contains(addr, size):
            self.misuse.append(f"[{addr:#x}, +{size:#x})")
            raise AssertionError(f"access [{addr:#x}, +{size:#x}) outside fake RAM")
        return addr - self.base

    def view(self, addr: int, size: int) -> memoryview:
        off = self._offset(addr, size)
        return memoryview(self.mem)[off:off + size]

    def read(self, addr: int, size: int) -> bytes:
        off = self._offset(addr, size)
        return bytes(self.mem[off:off + size])

    def write(self, addr: int, data: bytes) -> None:
        off = self._offset(addr, len(data))
        self.mem[off:off + len(data)] = data

    def alloc(self, size: int, align: int = 16) -> int:
        addr = (self._heap + align - 1) // align * align
        if addr + size > self.base + self.size:
            # Tests complete requests promptly, so wrapping the heap is safe.
            addr = (self.base + self.size // 2 + align - 1) // align * align
        self._heap = addr + size
        return addr


class Irq:
    def __init__(self) -> None:
        self.level = False
        self.changes = 0

    def set_level(self, level: bool) -> None:
        self.level = level
        self.changes += 1


class Log(list):
    def __call__(self, line: str) -> None:
        self.append(line)

    def internal_errors(self) -> list[str]:
        return [line for line in self if "internal error" in line]


class DriverQueue:
    """One virtqueue as the driver sees it."""

    def __init__(self, drv: Driver, index: int, size: int) -> None:
        self.drv = drv
        self.index = index
        self.size = size
        ram = drv.ram
        self.desc = ram.alloc(16 * size, 16)
        self.avail = ram.alloc(6 + 2 * size, 2)
        self.used = ram.alloc(6 + 8 * size, 4)
        self.avail_idx = 0
        self.last_used = 0
        self.free = list(range(size))
        self.chain_of: dict[int, list[int]] = {}
        self.buffers: dict[int, list[int]] = {}  # head -> writable buffer addresses

    def setup_registers(self) -> None:
        d = self.drv
        d.set(MmioReg.QUEUE_SEL, self.index)
        d.set(MmioReg.QUEUE_NUM, self.size)
        for reg, addr in ((MmioReg.QUEUE_DESC_LOW, self.desc),
                          (MmioReg.QUEUE_DRIVER_LOW, self.avail),
                          (MmioReg.QUEUE_DEVICE_LOW, self.used)):
            d.set(reg, addr & 0xFFFF_FFFF)
            d.set(reg + 4, addr >> 32)
        d.set(MmioReg.QUEUE_READY, 1)

    def write_desc(self, table: int, i: int, addr: int, length: int, flags: int, nxt: int) -> None:
        self.drv.ram.write(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def add(self, out: list[bytes] = (), in_sizes: list[int] = (), *,
            indirect: bool = False, publish: bool = True) -> int:
        """Post a chain of readable buffers ``out`` and writable buffers of ``in_sizes``."""
        ram = self.drv.ram
        parts = [(ram.alloc(len(b), 8), len(b), 0) for b in out]
        for (addr, _, _), data in zip(parts, out):
            ram.write(addr, data)
        writable = [(ram.alloc(n, 8), n, VIRTQ_DESC_F_WRITE) for n in in_sizes]
        parts += writable
        if indirect:
            table = ram.alloc(16 * len(parts), 16)
            for i, (addr, n, flags) in enumerate(parts):
                more = VIRTQ_DESC_F_NEXT if i + 1 < len(parts) else 0
                self.write_desc(table, i, addr, n, flags | more, i + 1 if more else 0)
            head = self.free.pop(0)
            self.write_desc(self.desc, head, table, 16 * len(parts), VIRTQ_DESC_F_INDIRECT, 0)
            ids = [head]
        else:
            ids = [self.free.pop(0) for _ in parts]
            for i, (addr, n, flags) in enumerate(parts):
                more = VIRTQ_DESC_F_NEXT if i + 1 < len(parts) else 0
                self.write_desc(self.desc, ids[i], addr, n, flags | more, ids[i + 1] if more else 0)
            head = ids[0]
        self.chain_of[head] = ids
        self.buffers[head] = [addr for addr, _, _ in writable]
        if publish:
            self.publish(head)
        return head

    def publish(self, head: int) -> None:
        ram = self.drv.ram
        ram.write(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        ram.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def kick(self) -> None:
        self.drv.set(MmioReg.QUEUE_NOTIFY, self.index)

    def take_used(self) -> list[tuple[int, int]]:
        """New used entries (id, len) since the last call; their descriptors become free."""
        ram = self.drv.ram
        idx = struct.unpack("<H", ram.read(self.used + 2, 2))[0]
        out = []
        while self.last_used != idx:
            slot = self.used + 4 + 8 * (self.last_used % self.size)
            i, n = struct.unpack("<II", ram.read(slot, 8))
            out.append((i, n))
            self.free += self.chain_of.pop(i, [])
            self.last_used = (self.last_used + 1) & 0xFFFF
        # As Linux's virtqueue_enable_cb(): interrupt me for the next completion.
        self.set_used_event(self.last_used)
        return out

    def read_buffer(self, head: int, which: int, n: int) -> bytes:
        return self.drv.ram.read(self.buffers[head][which], n)

    def set_used_event(self, value: int) -> None:
        self.drv.ram.write(self.avail + 4 + 2 * self.size, struct.pack("<H", value))

    def set_avail_flags(self, flags: int) -> None:
        self.drv.ram.write(self.avail, struct.pack("<H", flags))

    def avail_event(self) -> int:
        return struct.unpack("<H", self.drv.ram.read(self.used + 4 + 8 * self.size, 2))[0]


class Driver:
    def __init__(self, device: VirtioDevice, ram: FakeRam | None = None) -> None:
        self.ram = ram or FakeRam()
        self.irq = Irq()
        self.log = Log()
        self.device = device
        self.mmio = VirtioMmio(device, self.ram, self.irq, self.log)
        self.queues: list[DriverQueue] = []

    def get(self, reg: int) -> int:
        return self.mmio.read(reg, 4, 0)

    def set(self, reg: int, value: int) -> None:
        self.mmio.write(reg, 4, value, 0)

    def status(self) -> int:
        return self.get(MmioReg.STATUS)

    def add_status(self, bits: int) -> None:
        self.set(MmioReg.STATUS, self.status() | bits)

    def device_features(self) -> int:
        self.set(MmioReg.DEVICE_FEATURES_SEL, 0)
        low = self.get(MmioReg.DEVICE_FEATURES)
        self.set(MmioReg.DEVICE_FEATURES_SEL, 1)
        return low | self.get(MmioReg.DEVICE_FEATURES) << 32

    def negotiate(self, accept: int | None = None) -> bool:
        self.set(MmioReg.STATUS, 0)
        self.add_status(DeviceStatus.ACKNOWLEDGE)
        self.add_status(DeviceStatus.DRIVER)
        features = self.device_features() if accept is None else accept
        for sel in (0, 1):
            self.set(MmioReg.DRIVER_FEATURES_SEL, sel)
            self.set(MmioReg.DRIVER_FEATURES, (features >> (32 * sel)) & 0xFFFF_FFFF)
        self.add_status(DeviceStatus.FEATURES_OK)
        return bool(self.status() & DeviceStatus.FEATURES_OK)

    def bring_up(self, sizes: list[int] | None = None, accept: int | None = None,
                 driver_ok: bool = True) -> list[DriverQueue]:
        assert self.negotiate(accept), self.log
        sizes = sizes or [min(16, self.device.queue_max)] * self.device.num_queues
        self.queues = [DriverQueue(self, i, n) for i, n in enumerate(sizes)]
        for q in self.queues:
            q.setup_registers()
        if driver_ok:
            self.add_status(DeviceStatus.DRIVER_OK)
        return self.queues

    def ack_interrupt(self) -> int:
        isr = self.get(MmioReg.INTERRUPT_STATUS)
        self.set(MmioReg.INTERRUPT_ACK, isr)
        return isr

    def needs_reset(self) -> bool:
        return bool(self.status() & DeviceStatus.DEVICE_NEEDS_RESET)


BASE_FEATURES = (1 << VIRTIO_F_VERSION_1)
ALL_TRANSPORT = BASE_FEATURES | (1 << VIRTIO_F_INDIRECT_DESC) | (1 << VIRTIO_F_EVENT_IDX)
