"""The VM's MMIO bus: device windows, their Unicorn callbacks, and replay safety.

Unicorn re-executes a load/store when an asynchronous ``emu_stop`` lands
during it (unicorn-aarch64.md, addendum pitfall 1), so a device would see
the access twice: a FIFO pops two bytes, an interrupt is acknowledged twice.
Every callback therefore goes through a per-vCPU ``ReplayGuard``: an access
made while a stop was pending, on a slice that then ended on a load/store
instruction, is remembered, and if the next slice begins with the identical
access it is answered from the record instead of reaching the device again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pyned.devices.base import MmioDevice
from pyned.errors import MemoryLayoutError
from pyned.platform.board import MemRange


@dataclass(frozen=True)
class BusRegion:
    range: MemRange
    name: str
    device: MmioDevice


@dataclass
class _Access:
    region: int
    offset: int
    size: int
    is_write: bool
    value: int

    def same(self, other: "_Access") -> bool:
        return (self.region, self.offset, self.size, self.is_write) == (
            other.region, other.offset, other.size, other.is_write) and (
            not self.is_write or self.value == other.value)


def is_load_store(insn: int) -> bool:
    """ARM ARM C4.1: op0 = x1x0 is the loads-and-stores encoding group."""
    return (insn >> 25) & 0b0101 == 0b0100


class ReplayGuard:
    """Swallows the one access Unicorn replays after an interrupted slice."""

    def __init__(self) -> None:
        self._last: _Access | None = None
        self._last_risky = False
        self._armed: _Access | None = None
        self.replays = 0

    def filter(self, access: _Access, stop_pending: bool) -> _Access | None:
        """Return the recorded access if ``access`` is its replay, else None."""
        armed, self._armed = self._armed, None
        if armed is not None and armed.same(access):
            self.replays += 1
            return armed
        return None

    def record(self, access: _Access, stop_pending: bool) -> None:
        self._last = access
        self._last_risky = stop_pending

    def slice_ended(self, stopped_on_load_store: bool) -> None:
        if self._last is not None and self._last_risky and stopped_on_load_store:
            self._armed = self._last
        self._last = None
        self._last_risky = False


class MmioBus:
    """Non-overlapping device windows, each served inline from Unicorn callbacks."""

    def __init__(self) -> None:
        self.regions: list[BusRegion] = []
        self.accesses = 0

    def add(self, rng: MemRange, name: str, device: MmioDevice) -> None:
        for r in self.regions:
            if r.range.overlaps(rng):
                raise MemoryLayoutError(f"{name} {rng} overlaps {r.name} {r.range}")
        self.regions.append(BusRegion(rng, name, device))
        self.regions.sort(key=lambda r: r.range.base)

    def find(self, addr: int) -> BusRegion | None:
        for r in self.regions:
            if r.range.contains(addr):
                return r
        return None

    def callbacks(self, index: int, cpu: int, guard: ReplayGuard,
                  stop_pending: Callable[[], bool],
                  on_error: Callable[[str, Exception], None]) -> tuple[Callable, Callable]:
        """Unicorn ``mmio_map`` callbacks for region ``index`` as seen by vCPU ``cpu``."""
        region = self.regions[index]
        device = region.device
        bus = self

        def read_cb(_uc: object, offset: int, size: int, _ud: object) -> int:
            bus.accesses += 1
            access = _Access(index, offset, size, False, 0)
            pending = stop_pending()
            replayed = guard.filter(access, pending)
            if replayed is not None:
                return replayed.value
            try:
                access.value = device.read(offset, size, cpu) & ((1 << (8 * size)) - 1)
            except Exception as exc:  # a failing model crashes this VM, not the host
                on_error(region.name, exc)
                return 0
            guard.record(access, pending or stop_pending())
            return access.value

        def write_cb(_uc: object, offset: int, size: int, value: int, _ud: object) -> None:
            bus.accesses += 1
            access = _Access(index, offset, size, True, value)
            pending = stop_pending()
            if guard.filter(access, pending) is not None:
                return
            try:
                device.write(offset, size, value, cpu)
            except Exception as exc:
                on_error(region.name, exc)
                return
            guard.record(access, pending or stop_pending())

        return read_cb, write_cb
