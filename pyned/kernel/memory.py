"""Physical memory and dataspaces: the kernel owns DRAM and hands out pieces.

DRAM is one anonymous host mapping; a dataspace is a contiguous, aligned slice
of it. Unicorn maps a VM's RAM straight onto that slice (``mem_map_ptr``), so
host-side device models and the guest see the same bytes without copying.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import weakref
from dataclasses import dataclass

from pyned.errors import MemoryLayoutError
from pyned.platform.board import MemRange

PAGE = 0x1000


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


class Dataspace:
    """A contiguous piece of physical memory; freed when the last holder drops it."""

    def __init__(self, phys: "PhysicalMemory", rng: MemRange, name: str) -> None:
        self._phys = phys
        self.range = rng
        self.name = name
        self._finalizer = weakref.finalize(self, phys._free, rng)

    @property
    def base(self) -> int:
        return self.range.base

    @property
    def size(self) -> int:
        return self.range.size

    def host_address(self) -> int:
        """Host virtual address of the first byte (for ``mem_map_ptr``)."""
        return self._phys.host_address(self.range.base)

    def view(self) -> memoryview:
        return self._phys.view(self.range)

    def clear(self) -> None:
        """Zero the contents (a restarted VM must find nothing of its previous run)."""
        self._phys._zero(self.range)

    def release(self) -> None:
        """Free the memory now instead of at garbage collection."""
        self._finalizer()

    @property
    def alive(self) -> bool:
        return self._finalizer.alive

    def __repr__(self) -> str:
        return f"Dataspace({self.name!r}, {self.range})"


@dataclass(frozen=True)
class Allocation:
    range: MemRange
    name: str


class PhysicalMemory:
    """The board's DRAM with a first-fit allocator for dataspaces."""

    def __init__(self, dram: MemRange, reserved: tuple[MemRange, ...] = ()) -> None:
        self.dram = dram
        # MAP_NORESERVE-like behaviour comes for free: anonymous pages are only
        # backed once touched, so 2 GiB of DRAM costs nothing until used.
        self._map = mmap.mmap(-1, dram.size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self._base_ptr = ctypes.addressof(ctypes.c_char.from_buffer(self._map))
        self._lock = threading.Lock()
        self._used: dict[int, Allocation] = {}
        for r in reserved:
            self._used[r.base] = Allocation(r, "reserved")

    def host_address(self, phys: int) -> int:
        if not self.dram.contains(phys):
            raise ValueError(f"{phys:#x} is not DRAM")
        return self._base_ptr + (phys - self.dram.base)

    def view(self, rng: MemRange) -> memoryview:
        off = rng.base - self.dram.base
        return memoryview(self._map)[off : off + rng.size]

    def allocations(self) -> list[Allocation]:
        with self._lock:
            return sorted(self._used.values(), key=lambda a: a.range.base)

    def allocate(self, size: int, *, align_bits: int = 21, fixed: int | None = None,
                 name: str = "ds") -> Dataspace:
        """Carve a zeroed dataspace of ``size`` bytes aligned to ``2**align_bits``."""
        if size <= 0:
            raise MemoryLayoutError(f"{name}: dataspace size must be positive, got {size}")
        size = _align_up(size, PAGE)
        align = 1 << max(align_bits, 12)
        with self._lock:
            if fixed is not None:
                if fixed % PAGE:
                    raise MemoryLayoutError(f"{name}: fixed address {fixed:#x} is not page aligned")
                want = MemRange(fixed, size)
                if not self.dram.contains(want.base, want.size):
                    raise MemoryLayoutError(f"{name}: {want} is outside DRAM {self.dram}")
                clash = self._clash(want)
                if clash:
                    raise MemoryLayoutError(
                        f"{name}: {want} overlaps {clash.name} {clash.range}")
                rng = want
            else:
                rng = self._first_fit(size, align)
                if rng is None:
                    raise MemoryLayoutError(
                        f"{name}: no free {size >> 20} MiB block aligned to {align:#x} in DRAM "
                        f"{self.dram} ({self._free_bytes() >> 20} MiB free in total)")
            self._used[rng.base] = Allocation(rng, name)
        # A dataspace always starts zeroed: nothing of a previous owner leaks.
        self._zero(rng)
        return Dataspace(self, rng, name)

    def _clash(self, want: MemRange) -> Allocation | None:
        for a in self._used.values():
            if a.range.overlaps(want):
                return a
        return None

    def _first_fit(self, size: int, align: int) -> MemRange | None:
        cursor = _align_up(self.dram.base, align)
        for a in sorted(self._used.values(), key=lambda a: a.range.base):
            if cursor + size <= a.range.base:
                return MemRange(cursor, size)
            cursor = max(cursor, _align_up(a.range.end, align))
        if cursor + size <= self.dram.end:
            return MemRange(cursor, size)
        return None

    def _free_bytes(self) -> int:
        return self.dram.size - sum(a.range.size for a in self._used.values())

    def _zero(self, rng: MemRange) -> None:
        off = rng.base - self.dram.base
        # MADV_DONTNEED on a private anonymous mapping drops the pages: they read
        # back as zero and the host gets the memory back.
        self._map.madvise(mmap.MADV_DONTNEED, off, rng.size)

    def _free(self, rng: MemRange) -> None:
        with self._lock:
            self._used.pop(rng.base, None)
        if not self._map.closed:
            self._zero(rng)
