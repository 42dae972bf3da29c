"""The contracts between device models and the VMM.

A device is given only what it uses (interrupt lines, a character sink, a
power-control port) and exposes ``read(offset, size, cpu)`` and
``write(offset, size, value, cpu)`` with offsets relative to its own window.
"""

from __future__ import annotations

from typing import Callable, Protocol


class MmioDevice(Protocol):
    """A register file reached by guest loads and stores."""

    def read(self, offset: int, size: int, cpu: int) -> int: ...

    def write(self, offset: int, size: int, value: int, cpu: int) -> None: ...

    def reset(self) -> None: ...


class ReplaySafe(Protocol):
    """Optional on an MmioDevice: accesses the VMM may perform twice without harm.

    An access that an asynchronous stop interrupted is performed again when
    the guest resumes; the VMM filters such repeats by matching recorded
    accesses, which can mistake a genuine repeat for one. Accesses a device
    declares safe skip that filter: a repeat costs nothing, a lost one would.
    """

    def replay_safe(self, offset: int, is_write: bool) -> bool: ...


class RomDevice(MmioDevice, Protocol):
    """An MmioDevice that reads as plain memory in one of its modes (flash in read-array mode).

    While ``array_mode`` holds, a read at an offset returns the bytes of
    ``storage`` there, so the VMM may map ``storage`` (page-aligned host
    memory, e.g. an mmap) into the guest for loads and instruction fetches;
    writes always reach ``write``.
    """

    storage: object

    @property
    def array_mode(self) -> bool: ...


class IrqLine(Protocol):
    """One interrupt input of an interrupt controller, as a device sees it."""

    def set_level(self, level: bool) -> None: ...


class UnconnectedIrq:
    """A line with nothing behind it: the device still works polled."""

    def __init__(self) -> None:
        self.level = False

    def set_level(self, level: bool) -> None:
        self.level = level


class CharSink(Protocol):
    """Where a console device's output bytes go."""

    def write(self, data: bytes) -> None: ...


class WriteSink:
    """A CharSink around a plain write function (a console channel's write)."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


class GuestRam(Protocol):
    """Guest-physical RAM as a DMA-capable device sees it.

    Every method raises for a range that is not wholly inside one RAM region;
    a device checks guest-supplied ranges with ``contains`` first.
    """

    def contains(self, addr: int, size: int = 1) -> bool: ...

    def view(self, addr: int, size: int) -> memoryview: ...

    def read(self, addr: int, size: int) -> bytes: ...

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None: ...


class PowerControl(Protocol):
    """The VM-level power actions a device can request."""

    def system_exit(self, code: int, reason: str) -> None: ...
