"""Guest RAM as one bounds-checked object, over the VM's dataspaces.

On the MPU platform guest-physical equals host-physical, so a region's guest
address is its dataspace's physical address. Device models and loaders use
only this object, never Unicorn's memory calls.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pyned.kernel.memory import Dataspace
from pyned.platform.board import MemRange


class GuestMemoryError(Exception):
    """An access outside guest RAM (a guest-controlled value, never a host bug)."""

    def __init__(self, addr: int, size: int) -> None:
        super().__init__(f"guest access [{addr:#x}, +{size:#x}) is outside guest RAM")
        self.addr = addr
        self.size = size


@dataclass
class RamRegion:
    range: MemRange
    dataspace: Dataspace
    name: str


class GuestMemory:
    def __init__(self) -> None:
        self.regions: list[RamRegion] = []
        # (base, end, view) per region, built once: device DMA looks ranges
        # up per descriptor.
        self._spans: list[tuple[int, int, memoryview]] = []

    def add(self, region: RamRegion) -> None:
        self.regions.append(region)
        self.regions.sort(key=lambda r: r.range.base)
        self._spans = [(r.range.base, r.range.base + r.range.size, r.dataspace.view())
                       for r in self.regions]

    def _span(self, addr: int, end: int) -> tuple[int, memoryview] | None:
        for base, limit, view in self._spans:
            if base <= addr and end <= limit:
                return base, view
        return None

    def _find(self, addr: int, size: int) -> tuple[memoryview, int]:
        span = self._span(addr, addr + max(size, 1)) if size >= 0 and addr >= 0 else None
        if span is None:
            raise GuestMemoryError(addr, size)
        base, view = span
        return view, addr - base

    def contains(self, addr: int, size: int = 1) -> bool:
        return self._span(addr, addr + size) is not None

    def view(self, addr: int, size: int) -> memoryview:
        """Zero-copy access for device DMA; valid while the VM's RAM lives."""
        view, off = self._find(addr, size)
        return view[off : off + size]

    def read(self, addr: int, size: int) -> bytes:
        view, off = self._find(addr, size)
        return bytes(view[off : off + size])

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        view, off = self._find(addr, len(data))
        view[off : off + len(data)] = data

    def fill(self, addr: int, size: int, byte: int = 0) -> None:
        view, off = self._find(addr, size)
        view[off : off + size] = bytes([byte]) * size

    def read_u32(self, addr: int) -> int:
        return struct.unpack("<I", self.read(addr, 4))[0]

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    def write_u32(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<I", value & 0xFFFF_FFFF))

    def write_u64(self, addr: int, value: int) -> None:
        self.write(addr, struct.pack("<Q", value & 0xFFFF_FFFF_FFFF_FFFF))
