"""The emulated board, modelled on Arm's FVP BaseR AEMv8-R memory map.

Software written for that board finds its hardware at the same addresses:
DRAM at 0x0, the GICv3 distributor at 0xAF00_0000 and redistributors at
0xAF10_0000, PL011 UART0-3 at 0x9C09_0000 ... 0x9C0C_0000 on SPIs 5-8, and the
generic timer on PPIs 13/14/11/10 (INTIDs 29/30/27/26). Device models for VMs
use the same addresses because on an MPU system guest-physical equals
host-physical.

The board's own hardware, which io hands to VMs and services, sits in the
FVP's motherboard I/O window as the FVP's device tree (Linux's
rtsm_ve-motherboard.dtsi) places it: UART1-3, and the two SP804 dual timers
at 0x9C11_0000/0x9C12_0000 on SPIs 2 and 3. Four PL061 GPIO controllers with
an LED on pin 0 of each are pyned's addition, in a stretch of that window the
FVP leaves empty (0x9C1A_0000 ... 0x9C1D_0000, SPIs 20-23).
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


@dataclass(frozen=True)
class Peripheral:
    """A physical device of the board: one MMIO window and one shared interrupt."""

    name: str
    compatible: str
    window: MemRange
    spi: int

    @property
    def intid(self) -> int:
        return 32 + self.spi


@dataclass(frozen=True)
class Led:
    name: str
    gpio: str      # the Peripheral whose pin drives it
    pin: int


# Each motherboard peripheral decodes a 64 KiB slot; its registers fill the first 4 KiB.
SLOT = 0x1_0000
FVP_PERIPHERALS = (
    Peripheral("uart1", "arm,pl011", MemRange(0x9C0A_0000, SLOT), 6),
    Peripheral("uart2", "arm,pl011", MemRange(0x9C0B_0000, SLOT), 7),
    Peripheral("uart3", "arm,pl011", MemRange(0x9C0C_0000, SLOT), 8),
    Peripheral("timer01", "arm,sp804", MemRange(0x9C11_0000, SLOT), 2),
    Peripheral("timer23", "arm,sp804", MemRange(0x9C12_0000, SLOT), 3),
    Peripheral("gpio0", "arm,pl061", MemRange(0x9C1A_0000, SLOT), 20),
    Peripheral("gpio1", "arm,pl061", MemRange(0x9C1B_0000, SLOT), 21),
    Peripheral("gpio2", "arm,pl061", MemRange(0x9C1C_0000, SLOT), 22),
    Peripheral("gpio3", "arm,pl061", MemRange(0x9C1D_0000, SLOT), 23),
)
FVP_LEDS = tuple(Led(f"led{i}", f"gpio{i}", 0) for i in range(4))

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
            MemRange(0x9C0B_0000, SLOT),
            MemRange(0x9C0C_0000, SLOT),
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
    peripherals: tuple[Peripheral, ...] = FVP_PERIPHERALS
    leds: tuple[Led, ...] = FVP_LEDS
    # SPIs the board's GIC has (INTIDs 32 .. 32 + spis - 1).
    spis: int = 224

    @property
    def mpu_regions_per_vm(self) -> int:
        return self.mpu_regions - self.mpu_regions_reserved

    def peripheral(self, name: str) -> Peripheral | None:
        return next((p for p in self.peripherals if p.name == name), None)

    def peripheral_at(self, addr: int, size: int = 1) -> Peripheral | None:
        return next((p for p in self.peripherals if p.window.contains(addr, size)), None)
