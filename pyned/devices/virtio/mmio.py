"""virtio-mmio transport, register layout version 2 (VIRTIO 1.2 §4.2.2), DT ``virtio,mmio``.

``VirtioMmio(device, ram, irq, log)`` is the MmioDevice the VMM maps; it owns
the register file, feature negotiation, the status state machine, queue
set-up and the interrupt line, and hands requests to a ``VirtioDevice``
backend. VendorID is 0x44, L4Re's L4VIRTIO_VENDOR_KK, as uvmm's own devices
report it. The transport offers VIRTIO_F_VERSION_1 (required: FEATURES_OK is
refused without it), VIRTIO_F_INDIRECT_DESC and VIRTIO_F_EVENT_IDX on top of
the device's own feature bits. There are no shared memory regions (SHMLen
and SHMBase read as all ones) and no VIRTIO_F_RING_RESET. Status writes
must follow the driver initialisation sequence (§3.1.1), except that DRIVER
without ACKNOWLEDGE is taken as both, as QEMU does (U-Boot 2023.01 writes it).

The device interface (``VirtioDevice``), what a backend provides:

- ``device_id``, ``name``, ``num_queues``, ``queue_max``, ``device_features``
  (device-specific bits only);
- ``config_bytes()`` — the current configuration space, little-endian;
  ``write_config(offset, data)`` for the rare writable fields;
- ``reset()`` — forget all driver-visible state (status write 0 or VM reset);
- ``activate(features)`` — DRIVER_OK with the negotiated features; the
  transport then calls ``on_notify`` for every ready queue, so buffers posted
  before DRIVER_OK are seen;
- ``on_notify(index, queue)`` — the driver kicked queue ``index``. It may
  return a callable that the transport runs after releasing its lock: work
  that calls into another device (a frame for the switch, console output)
  goes there, so that two VMs' transports never wait on each other.

And what the transport offers a backend (``device.transport``):

- ``device_call(fn, fallback)`` — run a host-side operation (console input,
  a frame from the switch) under the transport's lock, with the same
  protection as a notification;
- ``queue(index)`` — the live ``Virtqueue`` or None (not ready, not
  DRIVER_OK, failed); only valid inside ``on_notify`` or ``device_call``;
- ``config_changed()`` — bump ConfigGeneration and raise a config interrupt.

Used-buffer interrupts need no call: after every device call the transport
asks each queue whether the driver wants one (event index or NO_INTERRUPT).

Anything the guest gets wrong (an illegal status transition, a register
access that is not 32 bits wide, a queue reconfigured while ready, a bad
ring, a virtqueue rule broken inside a request) sets DEVICE_NEEDS_RESET,
raises a configuration-change interrupt once DRIVER_OK was set, logs one line
and stops the device until the driver resets it. A failing backend is
treated the same way and logged as an internal error, so nothing a guest
does raises into the vCPU, the console or another VM.
"""

from __future__ import annotations

import threading
from enum import IntEnum
from typing import Callable, TypeVar

from pyned.devices.base import GuestRam, IrqLine
from pyned.devices.virtio.queue import Virtqueue, VirtqueueError

MAGIC_VALUE = 0x74726976  # "virt"
VERSION = 2
VENDOR_ID = 0x44  # L4VIRTIO_VENDOR_KK
CONFIG_OFFSET = 0x100

VIRTIO_F_INDIRECT_DESC = 28
VIRTIO_F_EVENT_IDX = 29
VIRTIO_F_VERSION_1 = 32
TRANSPORT_FEATURES = ((1 << VIRTIO_F_INDIRECT_DESC) | (1 << VIRTIO_F_EVENT_IDX)
                      | (1 << VIRTIO_F_VERSION_1))

VIRTIO_MMIO_INT_VRING = 1 << 0
VIRTIO_MMIO_INT_CONFIG = 1 << 1

T = TypeVar("T")
Deferred = Callable[[], None]


class MmioReg(IntEnum):
    MAGIC_VALUE = 0x000
    VERSION = 0x004
    DEVICE_ID = 0x008
    VENDOR_ID = 0x00C
    DEVICE_FEATURES = 0x010
    DEVICE_FEATURES_SEL = 0x014
    DRIVER_FEATURES = 0x020
    DRIVER_FEATURES_SEL = 0x024
    QUEUE_SEL = 0x030
    QUEUE_NUM_MAX = 0x034
    QUEUE_NUM = 0x038
    QUEUE_READY = 0x044
    QUEUE_NOTIFY = 0x050
    INTERRUPT_STATUS = 0x060
    INTERRUPT_ACK = 0x064
    STATUS = 0x070
    QUEUE_DESC_LOW = 0x080
    QUEUE_DESC_HIGH = 0x084
    QUEUE_DRIVER_LOW = 0x090
    QUEUE_DRIVER_HIGH = 0x094
    QUEUE_DEVICE_LOW = 0x0A0
    QUEUE_DEVICE_HIGH = 0x0A4
    SHM_SEL = 0x0AC
    SHM_LEN_LOW = 0x0B0
    SHM_LEN_HIGH = 0x0B4
    SHM_BASE_LOW = 0x0B8
    SHM_BASE_HIGH = 0x0BC
    QUEUE_RESET = 0x0C0
    CONFIG_GENERATION = 0x0FC


class DeviceStatus(IntEnum):
    """Status register bits (§2.1); members are plain ints in arithmetic."""

    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    DEVICE_NEEDS_RESET = 0x40
    FAILED = 0x80


# The 64-bit ring address registers: (field, shift) per register.
_QUEUE_ADDR_REGS = {
    MmioReg.QUEUE_DESC_LOW: ("desc", 0), MmioReg.QUEUE_DESC_HIGH: ("desc", 32),
    MmioReg.QUEUE_DRIVER_LOW: ("driver", 0), MmioReg.QUEUE_DRIVER_HIGH: ("driver", 32),
    MmioReg.QUEUE_DEVICE_LOW: ("device", 0), MmioReg.QUEUE_DEVICE_HIGH: ("device", 32),
}
_LOW32 = 0xFFFF_FFFF


class VirtioDevice:
    """Base class of the device backends; see the module docstring for the contract."""

    device_id = 0
    name = "virtio"
    num_queues = 1
    queue_max = 256
    device_features = 0

    def __init__(self) -> None:
        self.transport: VirtioMmio | None = None
        self.features = 0

    def config_bytes(self) -> bytes:
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """Read-only configuration by default: the write is dropped."""

    def reset(self) -> None:
        self.features = 0

    def activate(self, features: int) -> None:
        self.features = features

    def on_notify(self, index: int, queue: Virtqueue) -> Deferred | None:
        return None


class _QueueState:
    __slots__ = ("num", "ready", "desc", "driver", "device", "vq")

    def __init__(self, num: int) -> None:
        self.num = num
        self.ready = False
        self.desc = 0
        self.driver = 0
        self.device = 0
        self.vq: Virtqueue | None = None


class VirtioMmio:
    """One virtio-mmio window in front of one device backend."""

    def __init__(self, device: VirtioDevice, ram: GuestRam, irq: IrqLine,
                 log: Callable[[str], None] | None = None) -> None:
        self.device = device
        self._ram = ram
        self._irq = irq
        self._log = log if log is not None else (lambda line: None)
        # Re-entrant: a backend inside on_notify may call config_changed().
        self._lock = threading.RLock()
        self._irq_level: bool | None = None
        self.config_generation = 0
        self.notifications = 0
        self.interrupts = 0
        self.failure: str | None = None
        device.transport = self
        self.reset()

    # -- MmioDevice ---------------------------------------------------------

    def replay_safe(self, offset: int, is_write: bool) -> bool:
        """Whether doing this access twice is the same as doing it once.

        Reads have no side effects here, and a second QueueNotify only makes
        the device look at a queue again (VIRTIO 1.2 §2.9). Only
        InterruptACK clears state that may have been set in between.
        """
        return not is_write or offset != MmioReg.INTERRUPT_ACK

    def reset(self) -> None:
        with self._lock:
            self._reset()

    def read(self, offset: int, size: int, cpu: int) -> int:
        with self._lock:
            if offset >= CONFIG_OFFSET:
                return self._config_read(offset - CONFIG_OFFSET, size)
            if size != 4 or offset % 4:
                self._fail(f"{size}-byte register read at {offset:#x} (only aligned 32-bit "
                           "accesses are allowed)")
                return 0
            return self._read_reg(offset)

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        with self._lock:
            if offset >= CONFIG_OFFSET:
                self._config_write(offset - CONFIG_OFFSET, size, value)
                return
            if size != 4 or offset % 4:
                self._fail(f"{size}-byte register write at {offset:#x} (only aligned 32-bit "
                           "accesses are allowed)")
                return
            deferred = self._write_reg(offset, value & _LOW32)
        # Outside the lock: this may call into another VM's device or a terminal.
        for action in deferred:
            self._run_deferred(action)

    # -- the backend's side ---------------------------------------------------

    def device_call(self, fn: Callable[[], T], fallback: T) -> T:
        """Run ``fn`` under the transport lock; a guest violation inside yields ``fallback``."""
        with self._lock:
            ok, result = self._guarded(fn)
            self._update_interrupts()
            return result if ok else fallback

    def queue(self, index: int) -> Virtqueue | None:
        if not self._live() or not 0 <= index < len(self._queues):
            return None
        return self._queues[index].vq

    def config_changed(self) -> None:
        with self._lock:
            self.config_generation = (self.config_generation + 1) & _LOW32
            if self._status & DeviceStatus.DRIVER_OK:
                self._isr |= VIRTIO_MMIO_INT_CONFIG
                self._update_irq()

    @property
    def status(self) -> int:
        return self._status

    @property
    def driver_features(self) -> int:
        return self._driver_features

    def info(self) -> dict[str, object]:
        """Transport and queue state, for the monitor."""
        with self._lock:
            return {"device": self.device.name, "device_id": self.device.device_id,
                    "status": self._status, "driver_features": self._driver_features,
                    "interrupt_status": self._isr, "failure": self.failure,
                    "notifications": self.notifications, "interrupts": self.interrupts,
                    "queues": [q.vq.info() if q.vq else {"ready": False, "num": q.num}
                               for q in self._queues]}

    # -- registers ------------------------------------------------------------

    def _read_reg(self, reg: int) -> int:
        if reg == MmioReg.INTERRUPT_STATUS:
            return self._isr
        if reg == MmioReg.STATUS:
            return self._status
        if reg == MmioReg.MAGIC_VALUE:
            return MAGIC_VALUE
        if reg == MmioReg.VERSION:
            return VERSION
        if reg == MmioReg.DEVICE_ID:
            return self.device.device_id
        if reg == MmioReg.VENDOR_ID:
            return VENDOR_ID
        if reg == MmioReg.DEVICE_FEATURES:
            if self._device_features_sel > 1:
                return 0
            return (self._offered() >> (32 * self._device_features_sel)) & _LOW32
        if reg == MmioReg.CONFIG_GENERATION:
            return self.config_generation
        if reg in (MmioReg.SHM_LEN_LOW, MmioReg.SHM_LEN_HIGH, MmioReg.SHM_BASE_LOW,
                   MmioReg.SHM_BASE_HIGH):
            return _LOW32  # no shared memory region with any id
        q = self._selected()
        if q is None:
            return 0
        if reg == MmioReg.QUEUE_NUM_MAX:
            return self.device.queue_max
        if reg == MmioReg.QUEUE_READY:
            return int(q.ready)
        if reg == MmioReg.QUEUE_NUM:
            return q.num
        if reg in _QUEUE_ADDR_REGS:
            field, shift = _QUEUE_ADDR_REGS[reg]
            return (getattr(q, field) >> shift) & _LOW32
        return 0

    def _write_reg(self, reg: int, value: int) -> list[Deferred]:
        if reg == MmioReg.QUEUE_NOTIFY:
            return self._notify(value)
        if reg == MmioReg.INTERRUPT_ACK:
            self._isr &= ~value
            self._update_irq()
        elif reg == MmioReg.STATUS:
            return self._write_status(value)
        elif reg == MmioReg.DEVICE_FEATURES_SEL:
            self._device_features_sel = value
        elif reg == MmioReg.DRIVER_FEATURES_SEL:
            self._driver_features_sel = value
        elif reg == MmioReg.DRIVER_FEATURES:
            self._write_driver_features(value)
        elif reg == MmioReg.QUEUE_SEL:
            self._queue_sel = value
        elif reg == MmioReg.QUEUE_READY:
            self._write_queue_ready(value & 1)
        elif reg == MmioReg.QUEUE_NUM or reg in _QUEUE_ADDR_REGS:
            self._write_queue_field(reg, value)
        # Everything else is read-only, or SHMSel/QueueReset without the
        # feature: the write has no effect.
        return []

    def _write_driver_features(self, value: int) -> None:
        if self._status & DeviceStatus.FEATURES_OK:
            self._fail("DriverFeatures written after FEATURES_OK")
            return
        sel = self._driver_features_sel
        if sel > 1:
            # Bits past 63 are never offered; remember that some were asked for.
            self._extra_features |= value != 0
            return
        shift = 32 * sel
        self._driver_features = (self._driver_features & ~(_LOW32 << shift)) | (value << shift)

    def _selected(self) -> _QueueState | None:
        sel = self._queue_sel
        return self._queues[sel] if sel < len(self._queues) else None

    def _write_queue_field(self, reg: int, value: int) -> None:
        q = self._selected()
        if q is None:
            return
        if q.ready:
            self._fail(f"queue {self._queue_sel} register {MmioReg(reg).name} written while "
                       "the queue is ready")
            return
        if reg == MmioReg.QUEUE_NUM:
            q.num = value
            return
        field, shift = _QUEUE_ADDR_REGS[reg]
        old = getattr(q, field)
        setattr(q, field, (old & ~(_LOW32 << shift)) | (value << shift))

    def _write_queue_ready(self, ready: int) -> None:
        q = self._selected()
        if q is None or self.failure is not None:
            return
        if not ready:
            q.ready = False
            q.vq = None
            return
        if q.ready:
            return
        index = self._queue_sel
        if not self._status & DeviceStatus.FEATURES_OK:
            self._fail(f"queue {index} made ready before FEATURES_OK")
            return
        if q.num > self.device.queue_max:
            self._fail(f"queue {index}: QueueNum {q.num} exceeds QueueNumMax "
                       f"{self.device.queue_max}")
            return
        features = self._driver_features
        try:
            q.vq = Virtqueue(self._ram, q.num, q.desc, q.driver, q.device,
                             indirect=bool(features >> VIRTIO_F_INDIRECT_DESC & 1),
                             event_idx=bool(features >> VIRTIO_F_EVENT_IDX & 1),
                             max_chain=self.device.queue_max)
        except VirtqueueError as e:
            self._fail(f"queue {index}: {e}")
            return
        q.ready = True

    # -- status state machine -------------------------------------------------

    def _offered(self) -> int:
        return self.device.device_features | TRANSPORT_FEATURES

    def _write_status(self, value: int) -> list[Deferred]:
        if value == 0:
            self._reset()
            return []
        old = self._status
        value &= 0xFF & ~DeviceStatus.DEVICE_NEEDS_RESET  # that bit is the device's
        if old & ~value & ~DeviceStatus.DEVICE_NEEDS_RESET:
            self._fail(f"status write {value:#x} clears bits of {old:#x}")
            return []
        new = value & ~old
        if not new:
            return []
        if new & DeviceStatus.FAILED:
            self._status |= DeviceStatus.FAILED
            self._log(f"virtio-{self.device.name}: driver gave up (status FAILED)")
            return []
        if self.failure is not None:
            return []
        if new & ~(DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER | DeviceStatus.FEATURES_OK
                   | DeviceStatus.DRIVER_OK):
            self._fail(f"status write {value:#x} sets undefined bits")
            return []
        if value & DeviceStatus.DRIVER and not value & DeviceStatus.ACKNOWLEDGE:
            # U-Boot up to 2023.01 (Debian 12's) skips ACKNOWLEDGE after the reset
            # it does before probing; QEMU accepts that, and it does no harm.
            self._log(f"virtio-{self.device.name}: status DRIVER set without ACKNOWLEDGE; "
                      f"taken as both")
            value |= DeviceStatus.ACKNOWLEDGE
        if value & DeviceStatus.FEATURES_OK and not value & DeviceStatus.DRIVER:
            self._fail("status FEATURES_OK set without DRIVER")
            return []
        status = old | (value & (DeviceStatus.ACKNOWLEDGE | DeviceStatus.DRIVER))
        if new & DeviceStatus.FEATURES_OK:
            refusal = self._refuse_features()
            if refusal:
                # Not a violation: the driver reads FEATURES_OK back and gives up.
                self._log(f"virtio-{self.device.name}: FEATURES_OK refused: {refusal}")
            else:
                status |= DeviceStatus.FEATURES_OK
        self._status = status
        if new & DeviceStatus.DRIVER_OK:
            if not status & DeviceStatus.FEATURES_OK:
                self._fail("status DRIVER_OK set without FEATURES_OK")
                return []
            self._status |= DeviceStatus.DRIVER_OK
            return self._activate()
        return []

    def _refuse_features(self) -> str | None:
        features = self._driver_features
        if not features >> VIRTIO_F_VERSION_1 & 1:
            return "VIRTIO_F_VERSION_1 not accepted (legacy drivers are not supported)"
        unoffered = features & ~self._offered()
        if unoffered or self._extra_features:
            return f"driver accepted features {unoffered:#x} that were not offered"
        return None

    def _activate(self) -> list[Deferred]:
        ok, _ = self._guarded(lambda: self.device.activate(self._driver_features))
        deferred: list[Deferred] = []
        if ok:
            # Buffers posted before DRIVER_OK (receive buffers, typically) count now.
            for index, q in enumerate(self._queues):
                if q.vq is not None and self.failure is None:
                    deferred.extend(self._notify(index, count=False))
        self._update_interrupts()
        return deferred

    def _reset(self) -> None:
        self._status = 0
        self._isr = 0
        self._device_features_sel = 0
        self._driver_features_sel = 0
        self._driver_features = 0
        self._extra_features = False
        self._queue_sel = 0
        self._queues = [_QueueState(self.device.queue_max) for _ in range(self.device.num_queues)]
        self.failure = None
        self._guarded(self.device.reset)
        self._irq_level = None
        self._update_irq()

    # -- notifications and interrupts ----------------------------------------

    def _live(self) -> bool:
        return (self._status & (DeviceStatus.DRIVER_OK | DeviceStatus.FAILED)
                == DeviceStatus.DRIVER_OK and self.failure is None)

    def _notify(self, index: int, count: bool = True) -> list[Deferred]:
        if count:
            self.notifications += 1
        # Kicks before DRIVER_OK are not lost: activation kicks every queue.
        if not self._live() or index >= len(self._queues):
            return []
        vq = self._queues[index].vq
        if vq is None:
            return []
        ok, deferred = self._guarded(lambda: self.device.on_notify(index, vq))
        self._update_interrupts()
        return [deferred] if ok and deferred is not None else []

    def _guarded(self, fn: Callable[[], T]) -> tuple[bool, T | None]:
        try:
            return True, fn()
        except VirtqueueError as e:
            self._fail(str(e))
        except Exception as e:  # a backend bug must not take the vCPU thread down
            self._fail(f"internal error in the device model: {type(e).__name__}: {e}")
        return False, None

    def _update_interrupts(self) -> None:
        for q in self._queues:
            if q.vq is not None and q.vq.needs_interrupt():
                self._isr |= VIRTIO_MMIO_INT_VRING
        self._update_irq()

    def _update_irq(self) -> None:
        level = self._isr != 0
        if level != self._irq_level:
            self._irq_level = level
            if level:
                self.interrupts += 1
            self._irq.set_level(level)

    def _fail(self, reason: str) -> None:
        if self.failure is not None:
            return
        self.failure = reason
        self._status |= DeviceStatus.DEVICE_NEEDS_RESET
        self._log(f"virtio-{self.device.name}: {reason}; device needs reset")
        if self._status & DeviceStatus.DRIVER_OK:
            self._isr |= VIRTIO_MMIO_INT_CONFIG
            self._update_irq()

    def _run_deferred(self, action: Deferred) -> None:
        try:
            action()
        except Exception as e:
            with self._lock:
                self._fail(f"internal error after a notification: {type(e).__name__}: {e}")

    # -- configuration space ---------------------------------------------------

    def _config_read(self, offset: int, size: int) -> int:
        if size not in (1, 2, 4, 8):
            return 0
        ok, config = self._guarded(self.device.config_bytes)
        if not ok or config is None:
            return 0
        return int.from_bytes(config[offset:offset + size].ljust(size, b"\0"), "little")

    def _config_write(self, offset: int, size: int, value: int) -> None:
        if size not in (1, 2, 4, 8):
            return
        data = (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")
        self._guarded(lambda: self.device.write_config(offset, data))
