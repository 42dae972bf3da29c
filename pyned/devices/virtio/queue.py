"""Split virtqueues (VIRTIO 1.2 §2.7) over guest RAM, from the device side.

A ``Virtqueue`` is built when the driver sets QueueReady, after the transport
has checked the ring addresses; it keeps memoryviews on the three rings so
that a request costs a few ``struct.unpack_from`` calls and no copies.
``pop()`` walks one descriptor chain (direct or through one indirect table)
and returns it as lists of zero-copy memoryviews, the device-readable part
first, then the device-writable part. ``push()`` returns a chain through the
used ring; ``needs_interrupt()`` applies VIRTIO_F_EVENT_IDX or the
NO_INTERRUPT flag once per batch.

Everything read from guest memory is checked before use: a chain that loops
or is longer than allowed, a descriptor index past the table, a buffer
outside RAM or wrapping 2**64, an available index more than the queue size
ahead, a nested or misformed indirect table, and a readable descriptor after
a writable one all raise ``VirtqueueError``; the transport turns that into
DEVICE_NEEDS_RESET. Each descriptor is read exactly once, so a guest
rewriting the table while the device walks it gains nothing.

Not modelled: packed virtqueues, VIRTIO_F_IN_ORDER, VIRTIO_F_NOTIFICATION_DATA.
"""

from __future__ import annotations

import struct
from typing import Sequence

from pyned.devices.base import GuestRam

VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
VIRTQ_AVAIL_F_NO_INTERRUPT = 1

DESC_SIZE = 16
MAX_QUEUE_SIZE = 32768
# Ring alignment (§2.7, "Virtqueue Alignment").
DESC_ALIGN = 16
AVAIL_ALIGN = 2
USED_ALIGN = 4

_DESC = struct.Struct("<QIHH")
_U16 = struct.Struct("<H")
_USED_ELEM = struct.Struct("<II")
_U64_END = 1 << 64
# Zero-length buffers touch no memory; writable so scatter() may slice-assign it.
_EMPTY = memoryview(bytearray())


class VirtqueueError(Exception):
    """The driver broke the virtqueue rules; the device needs a reset."""


def desc_table_size(size: int) -> int:
    return DESC_SIZE * size


def avail_ring_size(size: int) -> int:
    # flags, idx, ring[size], used_event: the driver always lays out used_event.
    return 6 + 2 * size


def used_ring_size(size: int) -> int:
    # flags, idx, ring[size] of (id, len), avail_event.
    return 6 + 8 * size


class Chain:
    """One popped descriptor chain: readable views, then writable views."""

    __slots__ = ("head", "readable", "writable", "readable_len", "writable_len")

    def __init__(self, head: int, readable: list[memoryview], writable: list[memoryview],
                 readable_len: int, writable_len: int) -> None:
        self.head = head
        self.readable = readable
        self.writable = writable
        self.readable_len = readable_len
        self.writable_len = writable_len


class Virtqueue:
    """The device side of one split virtqueue."""

    def __init__(self, ram: GuestRam, size: int, desc_addr: int, avail_addr: int,
                 used_addr: int, *, indirect: bool, event_idx: bool,
                 max_chain: int | None = None) -> None:
        if size <= 0 or size > MAX_QUEUE_SIZE or size & (size - 1):
            raise VirtqueueError(f"queue size {size} is not a power of two in 1..{MAX_QUEUE_SIZE}")
        rings = (("descriptor table", desc_addr, desc_table_size(size), DESC_ALIGN),
                 ("available ring", avail_addr, avail_ring_size(size), AVAIL_ALIGN),
                 ("used ring", used_addr, used_ring_size(size), USED_ALIGN))
        for what, addr, length, align in rings:
            if addr % align:
                raise VirtqueueError(f"{what} at {addr:#x} is not {align}-byte aligned")
            if addr + length > _U64_END or not ram.contains(addr, length):
                raise VirtqueueError(f"{what} [{addr:#x}, +{length:#x}) is outside guest RAM")
        self.size = size
        self.desc_addr = desc_addr
        self.avail_addr = avail_addr
        self.used_addr = used_addr
        self.indirect = indirect
        self.event_idx = event_idx
        # A chain, direct or indirect, may not be longer than this (§2.7.5.3.1
        # bounds it by the queue size; the device may allow its own maximum).
        self.max_chain = max(size, max_chain or 0)
        self._ram = ram
        self._mask = size - 1
        self._desc = ram.view(desc_addr, desc_table_size(size))
        self._avail = ram.view(avail_addr, avail_ring_size(size))
        self._used = ram.view(used_addr, used_ring_size(size))
        self._used_event_off = 4 + 2 * size
        self._avail_event_off = 4 + 8 * size
        self.last_avail_idx = 0
        self.used_idx = 0
        self._signalled_used = 0
        self.popped = 0

    # -- available ring -----------------------------------------------------

    def has_available(self) -> bool:
        return _U16.unpack_from(self._avail, 2)[0] != self.last_avail_idx

    def pop(self) -> Chain | None:
        """The next available chain, or None when the driver has posted nothing new."""
        avail_idx = _U16.unpack_from(self._avail, 2)[0]
        last = self.last_avail_idx
        if avail_idx == last:
            return None
        if (avail_idx - last) & 0xFFFF > self.size:
            raise VirtqueueError(f"available index {avail_idx} is more than the queue size "
                                 f"{self.size} ahead of {last}")
        head = _U16.unpack_from(self._avail, 4 + 2 * (last & self._mask))[0]
        last = (last + 1) & 0xFFFF
        self.last_avail_idx = last
        if self.event_idx:
            # Ask for a notification as soon as anything past what we took arrives.
            _U16.pack_into(self._used, self._avail_event_off, last)
        self.popped += 1
        return self._walk(head)

    def _walk(self, head: int) -> Chain:
        size = self.size
        if head >= size:
            raise VirtqueueError(f"chain head {head} is not below the queue size {size}")
        contains = self._ram.contains
        view_of = self._ram.view
        table = self._desc
        limit = size
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        rlen = wlen = 0
        idx = head
        count = 0
        in_indirect = False
        while True:
            addr, length, flags, nxt = _DESC.unpack_from(table, idx * DESC_SIZE)
            count += 1
            if count > limit:
                raise VirtqueueError(f"descriptor chain from head {head} loops or is longer "
                                     f"than {limit}")
            if flags & VIRTQ_DESC_F_INDIRECT:
                if in_indirect:
                    raise VirtqueueError("indirect descriptor inside an indirect table")
                if not self.indirect:
                    raise VirtqueueError("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
                if count != 1 or flags & VIRTQ_DESC_F_NEXT:
                    raise VirtqueueError("an indirect descriptor must be the whole chain")
                if length == 0 or length % DESC_SIZE:
                    raise VirtqueueError(f"indirect table length {length} is not a non-zero "
                                         "multiple of 16")
                limit = length // DESC_SIZE
                if limit > self.max_chain:
                    raise VirtqueueError(f"indirect table of {limit} descriptors exceeds "
                                         f"{self.max_chain}")
                self._check(addr, length)
                table = view_of(addr, length)
                size = limit
                in_indirect = True
                idx = 0
                count = 0
                continue
            if length:
                # The common case inline: this loop is the per-request cost.
                if addr + length > _U64_END or not contains(addr, length):
                    self._check(addr, length)
                view = view_of(addr, length)
            else:
                view = _EMPTY
            if flags & VIRTQ_DESC_F_WRITE:
                writable.append(view)
                wlen += length
            else:
                if writable:
                    raise VirtqueueError("device-readable descriptor after a device-writable one")
                readable.append(view)
                rlen += length
            if not flags & VIRTQ_DESC_F_NEXT:
                return Chain(head, readable, writable, rlen, wlen)
            idx = nxt
            if idx >= size:
                raise VirtqueueError(f"next descriptor {idx} is not below the table size {size}")

    def _check(self, addr: int, length: int) -> None:
        if addr + length > _U64_END:
            raise VirtqueueError(f"buffer [{addr:#x}, +{length:#x}) wraps the address space")
        if not self._ram.contains(addr, length):
            raise VirtqueueError(f"buffer [{addr:#x}, +{length:#x}) is outside guest RAM")

    # -- used ring ----------------------------------------------------------

    def push(self, head: int, written: int) -> None:
        """Return chain ``head`` to the driver; ``written`` bytes went into its writable part."""
        idx = self.used_idx
        _USED_ELEM.pack_into(self._used, 4 + 8 * (idx & self._mask), head, written)
        idx = (idx + 1) & 0xFFFF
        self.used_idx = idx
        _U16.pack_into(self._used, 2, idx)

    def needs_interrupt(self) -> bool:
        """Whether the used entries pushed since the last call should interrupt the driver."""
        new = self.used_idx
        old = self._signalled_used
        if new == old:
            return False
        self._signalled_used = new
        if self.event_idx:
            used_event = _U16.unpack_from(self._avail, self._used_event_off)[0]
            # vring_need_event(): interrupt if used_event lies in (old, new].
            return (new - used_event - 1) & 0xFFFF < (new - old) & 0xFFFF
        return not _U16.unpack_from(self._avail, 0)[0] & VIRTQ_AVAIL_F_NO_INTERRUPT

    def info(self) -> dict[str, int]:
        """Ring addresses and indices, for the monitor."""
        return {"size": self.size, "desc": self.desc_addr, "avail": self.avail_addr,
                "used": self.used_addr, "last_avail_idx": self.last_avail_idx,
                "avail_idx": _U16.unpack_from(self._avail, 2)[0], "used_idx": self.used_idx,
                "popped": self.popped}


# -- copying between chains and host buffers ----------------------------------

def gather(views: Sequence[memoryview], start: int = 0, length: int | None = None) -> bytes:
    """Copy ``length`` bytes (all when None) starting ``start`` bytes into ``views``."""
    return b"".join(slice_views(views, start, length))


def slice_views(views: Sequence[memoryview], start: int = 0,
                length: int | None = None) -> list[memoryview]:
    """The sub-views covering [start, start+length) of the concatenation of ``views``."""
    out: list[memoryview] = []
    remaining = -1 if length is None else length
    for view in views:
        n = len(view)
        if start >= n:
            start -= n
            continue
        part = view[start:] if start else view
        start = 0
        if remaining >= 0:
            if len(part) >= remaining:
                if remaining:
                    out.append(part[:remaining])
                return out
            remaining -= len(part)
        out.append(part)
    return out


def scatter(views: Sequence[memoryview], data: bytes | bytearray | memoryview,
            start: int = 0) -> int:
    """Copy ``data`` into ``views`` from byte ``start`` on; returns how many bytes fitted."""
    done = 0
    # Released on return, so a bytearray source can be resized afterwards.
    with memoryview(data) as src:
        total = len(src)
        for view in slice_views(views, start):
            if done == total:
                break
            n = min(len(view), total - done)
            view[:n] = src[done:done + n]
            done += n
    return done
