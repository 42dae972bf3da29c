"""The emulated board, modelled on Arm's FVP BaseR AEMv8-R memory map.

Software written for that board finds its hardware at the same addresses:
DRAM at 0x0, the GICv3 distributor at 0xAF00_0000 and redistributors at
0xAF10_0000, PL011 UART0-3 at 0x9C09_0000 ... 0x9C0C_0000 on SPIs 5-8, and the
generic timer on PPIs 13/14/11/10 (INTIDs 29/30/27/26). Device models for VMs
use the same addresses because on an MPU system guest-physical equals
host-physical.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class MemRange:
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, addr: int, size: int = 1) -> bool:
        return self.base <= addr and addr + size <= self.end

    def overlaps(self, other: "MemRange") -> bool:
        return self.base < other.end and other.base < self.end

    def __str__(self) -> str:
        return f"[{self.base:#x}-{self.end - 1:#x}]"


# Cortex-R82 identity (Arm Cortex-R82 TRM): implementer 0x41, variant 0,
# architecture 0xF, part 0xD15, revision 0 (r0p0).
R82_MIDR = 0x410FD150


@dataclass(frozen=True)
class Board:
    """Everything fixed about the platform a system runs on."""

    name: str = "fvp-baser-r82"
    cores: int = 2
    dram: MemRange = MemRange(0x0, 2 << 30)
    # Where the microkernel, sigma0, moe and ned live; never given to a VM, so
    # a guest's NULL-pointer access is a stage-2 fault rather than a read of RAM.
    kernel_reserved: MemRange = MemRange(0x0, 16 << 20)
    # Fiasco keeps one EL2 MPU region for itself on the FVP Base-R.
    mpu_regions: int = 32
    mpu_regions_reserved: int = 1
    gicd: MemRange = MemRange(0xAF00_0000, 0x1_0000)
    gicr: MemRange = MemRange(0xAF10_0000, 0x20_0000)
    uarts: tuple[MemRange, ...] = field(
        default=(
            MemRange(0x9C09_0000, 0x1000),
            MemRange(0x9C0A_0000, 0x1000),
            MemRange(0x9C0B_0000, 0x1000),
            MemRange(0x9C0C_0000, 0x1000),
        )
    )
    uart_spis: tuple[int, ...] = (5, 6, 7, 8)
    # Generic timer PPIs: secure phys, non-secure phys, virtual, hyp.
    timer_ppis: tuple[int, int, int, int] = (13, 14, 11, 10)
    # Unicorn's counter is host CLOCK_MONOTONIC / 16 (measured), so CNTFRQ must say so.
    counter_hz: int = 62_500_000
    midr: int = R82_MIDR
    # Virtual devices uvmm adds (syscon, virtio slots) live in this window,
    # which is neither DRAM nor a platform peripheral.
    vdev_window: MemRange = MemRange(0xA000_0000, 0x100_0000)

    @property
    def mpu_regions_per_vm(self) -> int:
        return self.mpu_regions - self.mpu_regions_reserved
