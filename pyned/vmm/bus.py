"""The VM's MMIO bus: device windows, their Unicorn callbacks, and replay safety.

Unicorn re-executes a load/store when an asynchronous ``emu_stop`` lands
during it (unicorn-aarch64.md, addendum pitfall 1), so a device would see
the access twice: a FIFO pops two bytes, an interrupt is acknowledged twice.
Every callback therefore goes through a per-vCPU ``ReplayGuard``: when a
slice ends on a load/store whose bytes cover the last device accesses, those
are remembered, and if the next slice begins with the identical accesses
they are answered from the record instead of reaching the device again.
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
    address: int
    size: int
    is_write: bool
    value: int

    def same(self, other: "_Access") -> bool:
        return (self.address, self.size, self.is_write) == (
            other.address, other.size, other.is_write) and (
            not self.is_write or self.value == other.value)


class ReplayGuard:
    """Swallows the accesses Unicorn replays after a slice stopped inside an instruction.

    Measured: an asynchronous stop is almost always noticed in the middle of
    an MMIO access (the callback has run, the instruction has not retired), so
    the next ``emu_start`` performs it again. Whether the stop flag was
    already visible inside the callback is no guide (it was not, about four
    times in ten). What identifies the case is the instruction the slice
    stopped on: if it is a load/store whose bytes cover the slice's last
    device accesses, those accesses belong to it and will be replayed.
    A stop that lands just after an access, on the next identical access,
    looks the same; that needs two rare events together (measured: about
    one stop in 500 does not land on an access at all).
    """

    _KEEP = 4  # a 16-byte access arrives as four callbacks

    def __init__(self) -> None:
        self._recent: list[_Access] = []
        self._armed: list[_Access] = []
        self.replays = 0

    def filter(self, access: _Access) -> _Access | None:
        """Return the recorded access if ``access`` is a replay of it, else None."""
        if self._armed:
            head = self._armed.pop(0)
            if head.same(access):
                self.replays += 1
                # The replayed instruction can be interrupted again.
                self.record(head)
                return head
            self._armed.clear()
        return None

    def record(self, access: _Access) -> None:
        self._recent.append(access)
        if len(self._recent) > self._KEEP:
            del self._recent[0]

    def slice_ended(self, pending: tuple[int, int, bool] | None) -> None:
        """``pending``: (address, size, is_load) of the instruction at the stop PC, if any."""
        if not self._recent and self._armed:
            # No device access in this slice: the interrupted instruction has
            # not run again yet (the slice may have been an interrupt handler
            # entered before it, or stopped at once). Keep waiting for it.
            return
        armed: list[_Access] = []
        if pending is not None:
            addr, size, is_load = pending
            for acc in reversed(self._recent):
                if acc.is_write == is_load or not (addr <= acc.address < addr + size):
                    break
                armed.insert(0, acc)
        self._armed = armed
        self._recent = []


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

    def callbacks(self, index: int, cpu: int, guard: ReplayGuard | None,
                  on_error: Callable[[str, Exception], None]) -> tuple[Callable, Callable]:
        """Unicorn ``mmio_map`` callbacks for region ``index`` as seen by vCPU ``cpu``.

        ``guard`` is None when the engine never performs an access twice; the
        callbacks then go straight to the device.
        """
        region = self.regions[index]
        device = region.device
        base = region.range.base
        bus = self

        def read(offset: int, size: int) -> int | None:
            try:
                return device.read(offset, size, cpu) & ((1 << (8 * size)) - 1)
            except Exception as exc:  # a failing model crashes this VM, not the host
                on_error(region.name, exc)
                return None

        def write(offset: int, size: int, value: int) -> bool:
            try:
                device.write(offset, size, value, cpu)
                return True
            except Exception as exc:
                on_error(region.name, exc)
                return False

        if guard is None:
            def direct_read_cb(_uc: object, offset: int, size: int, _ud: object) -> int:
                bus.accesses += 1
                return read(offset, size) or 0

            def direct_write_cb(_uc: object, offset: int, size: int, value: int,
                                _ud: object) -> None:
                bus.accesses += 1
                write(offset, size, value)

            return direct_read_cb, direct_write_cb

        safe = getattr(device, "replay_safe", None)

        def read_cb(_uc: object, offset: int, size: int, _ud: object) -> int:
            bus.accesses += 1
            if safe is not None and safe(offset, False):
                return read(offset, size) or 0
            access = _Access(base + offset, size, False, 0)
            replayed = guard.filter(access)
            if replayed is not None:
                return replayed.value
            value = read(offset, size)
            if value is None:
                return 0
            access.value = value
            guard.record(access)
            return value

        def write_cb(_uc: object, offset: int, size: int, value: int, _ud: object) -> None:
            bus.accesses += 1
            if safe is not None and safe(offset, True):
                write(offset, size, value)
                return
            access = _Access(base + offset, size, True, value)
            if guard.filter(access) is None and write(offset, size, value):
                guard.record(access)

        return read_cb, write_cb
