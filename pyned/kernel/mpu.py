"""The EL2 MPU regions that make up one VM's memory map (stage 2 on Armv8-R).

On an MPU system there is no stage-2 translation: a VM sees host-physical
addresses, and the kernel lets it touch only what its EL2 MPU regions cover.
Everything else, including emulated device windows, faults to the hypervisor.
The region count per VM is limited by the hardware (R82: 32, one kept by the
kernel), so RAM, shared memory and pass-through MMIO all count against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Flag

from pyned.errors import MemoryLayoutError
from pyned.platform.board import MemRange

# PRBAR/PRLAR granularity on Armv8-R: 64-byte aligned base and limit.
MPU_GRANULE = 64


class Access(Flag):
    R = 1
    W = 2
    X = 4
    RW = R | W
    RWX = R | W | X


@dataclass(frozen=True)
class MpuRegion:
    range: MemRange
    access: Access
    kind: str  # "ram", "shm", "mmio"
    name: str


class MpuMap:
    """A VM's EL2 MPU regions, checked for alignment, overlap and count."""

    def __init__(self, limit: int, owner: str) -> None:
        self.limit = limit
        self.owner = owner
        self._regions: list[MpuRegion] = []

    def add(self, region: MpuRegion) -> None:
        r = region.range
        if r.base % MPU_GRANULE or r.size % MPU_GRANULE or r.size == 0:
            raise MemoryLayoutError(
                f"{self.owner}: MPU region {region.name} {r} is not {MPU_GRANULE}-byte aligned")
        for other in self._regions:
            if other.range.overlaps(r):
                raise MemoryLayoutError(
                    f"{self.owner}: MPU region {region.name} {r} overlaps {other.name} {other.range}")
        if len(self._regions) >= self.limit:
            raise MemoryLayoutError(
                f"{self.owner}: needs more than the {self.limit} EL2 MPU regions the platform has "
                f"(adding {region.name} {r})")
        self._regions.append(region)
        self._regions.sort(key=lambda x: x.range.base)

    @property
    def regions(self) -> tuple[MpuRegion, ...]:
        return tuple(self._regions)

    def find(self, addr: int, size: int = 1) -> MpuRegion | None:
        for region in self._regions:
            if region.range.contains(addr, size):
                return region
        return None
