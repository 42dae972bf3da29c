"""CFI parallel NOR flash, Intel/Sharp command set (CFI primary command set 0x0001).

DT binding ``cfi-flash`` (Linux's mtd-physmap): one bank per ``reg`` entry,
``bank-width`` bytes wide, made of ``bank-width / device-width`` identical
chips side by side, each answering on its own byte lanes (QEMU's virt board:
two x16 chips in a 32-bit bank, as its ``pflash_cfi01`` models them, which is
what U-Boot's and EDK2's drivers for that board expect). Sources of the
facts: the CFI publication JESD68.01 (query table layout) and the Intel
StrataFlash / P30 datasheets (commands, status register, identifier codes).

Commands (the low byte of a write; every chip gets the same one): read array
(0xFF, also AMD's reset 0xF0, which probing drivers send), read status (0x70),
clear status (0x50), read identifier (0x90), CFI query (0x98), word program
(0x40 or 0x10, then the data), buffered program (0xE8, word count, data,
confirm 0xD0), block erase (0x20, confirm 0xD0), block lock setup (0x60, then
0x01 lock or 0xD0 unlock). Operations complete at once, so the status register
reads ready, suspend (0xB0) and resume have nothing to act on, and the device
never reports busy. Programming clears bits only (a 1 written over a 0 stays
0), as on the silicon. A locked block or a ``read-only`` flash refuses program
and erase with the status error bits set. Lock bits are volatile: all blocks
are unlocked at power-on. A broken command sequence sets SR.4 and SR.5, as
Intel's parts do; an unknown command is logged and returns the device to read
array. Not modelled: protection registers, configuration register, burst
reads, suspend, x8 mode of x16 parts.

In read-array mode the bank is plain memory: a VMM may map ``storage`` for
reads and instruction fetches while ``array_mode`` holds (vm.py's romd
windows), which is how firmware executes in place.
"""

from __future__ import annotations

import fcntl
import mmap
import os
from enum import Enum, IntEnum, IntFlag
from pathlib import Path
from typing import Callable

ERASED = 0xFF
# QEMU virt's flash sector: 256 KiB per bank (smaller banks are one block).
BLOCK_SIZE = 256 << 10
# Write buffer per chip (Intel P30: 64 bytes, CFI field 0x2A = 6).
BUFFER_BITS = 6
MANUFACTURER_INTEL = 0x89
DEVICE_CODE = 0x18


class FlashCmd(IntEnum):
    LOCK_BLOCK = 0x01
    PROGRAM_ALT = 0x10
    BLOCK_ERASE = 0x20
    LOCK_DOWN = 0x2F
    PROGRAM = 0x40
    CLEAR_STATUS = 0x50
    LOCK_SETUP = 0x60
    READ_STATUS = 0x70
    READ_ID = 0x90
    CFI_QUERY = 0x98
    SUSPEND = 0xB0
    CONFIRM = 0xD0          # erase, buffered-program and unlock confirm; resume
    WRITE_TO_BUFFER = 0xE8
    AMD_RESET = 0xF0
    READ_ARRAY = 0xFF


class Status(IntFlag):
    """The status register (SR), one per chip."""

    LOCKED = 0x02           # SR.1: program/erase refused, block locked
    PROGRAM_SUSPENDED = 0x04
    VPP_LOW = 0x08
    PROGRAM_ERROR = 0x10    # SR.4, also "set lock bit" error
    ERASE_ERROR = 0x20      # SR.5, also "clear lock bit" error
    ERASE_SUSPENDED = 0x40
    READY = 0x80            # SR.7: the write state machine is idle


class CfiQuery(IntEnum):
    """Byte offsets of the CFI query table (JESD68.01), in device words."""

    QRY = 0x10
    COMMAND_SET = 0x13
    PRIMARY_TABLE = 0x15
    ALT_COMMAND_SET = 0x17
    ALT_TABLE = 0x19
    VCC_MIN = 0x1B
    VCC_MAX = 0x1C
    VPP_MIN = 0x1D
    VPP_MAX = 0x1E
    WORD_PROGRAM_TIMEOUT = 0x1F     # typical, 2^n us
    BUFFER_PROGRAM_TIMEOUT = 0x20   # typical, 2^n us
    BLOCK_ERASE_TIMEOUT = 0x21      # typical, 2^n ms
    CHIP_ERASE_TIMEOUT = 0x22       # typical, 2^n ms (0: no chip erase)
    WORD_PROGRAM_MAX = 0x23         # maximum: 2^n times the typical
    BUFFER_PROGRAM_MAX = 0x24
    BLOCK_ERASE_MAX = 0x25
    CHIP_ERASE_MAX = 0x26
    DEVICE_SIZE = 0x27              # 2^n bytes
    INTERFACE = 0x28
    BUFFER_SIZE = 0x2A              # 2^n bytes
    ERASE_REGIONS = 0x2C
    REGION1 = 0x2D                  # blocks - 1 (16 bits), block size / 256 (16 bits)
    PRI = 0x31                      # the Intel primary extended table: "PRI", version
    PRI_FEATURES = 0x36             # 32 bits of optional features
    PRI_SUSPEND = 0x3A
    PRI_BLOCK_STATUS = 0x3B
    PRI_VCC_OPTIMUM = 0x3D
    PRI_VPP_OPTIMUM = 0x3E
    PRI_PROTECTION_FIELDS = 0x3F
    END = 0x40


# Identifier codes (read ID mode), in device words from a block's base.
ID_MANUFACTURER, ID_DEVICE, ID_BLOCK_LOCK = 0, 1, 2
# CFI device interface codes by chip width in bytes: x8, x16, x32.
INTERFACE_CODE = {1: 0x0000, 2: 0x0001, 4: 0x0003}
PRI_INSTANT_LOCKING = 1 << 5     # feature bit: blocks lock and unlock individually, at once


class Mode(Enum):
    """What a read returns, and what the next write means."""

    READ_ARRAY = "read array"
    READ_STATUS = "read status"
    READ_ID = "read identifier"
    CFI_QUERY = "CFI query"
    PROGRAM = "program: data"
    ERASE = "erase: confirm"
    LOCK = "lock: confirm"
    BUFFER_COUNT = "buffered program: count"
    BUFFER_DATA = "buffered program: data"
    BUFFER_CONFIRM = "buffered program: confirm"


# The mode a command written in read mode enters.
_FIRST_CYCLE = {
    FlashCmd.READ_ARRAY: Mode.READ_ARRAY, FlashCmd.AMD_RESET: Mode.READ_ARRAY,
    FlashCmd.READ_STATUS: Mode.READ_STATUS, FlashCmd.READ_ID: Mode.READ_ID,
    FlashCmd.CFI_QUERY: Mode.CFI_QUERY,
    FlashCmd.PROGRAM: Mode.PROGRAM, FlashCmd.PROGRAM_ALT: Mode.PROGRAM,
    FlashCmd.BLOCK_ERASE: Mode.ERASE, FlashCmd.LOCK_SETUP: Mode.LOCK,
    FlashCmd.WRITE_TO_BUFFER: Mode.BUFFER_COUNT,   # reads give the status: the buffer is free
    # Nothing runs that could be suspended or resumed.
    FlashCmd.SUSPEND: Mode.READ_STATUS, FlashCmd.CONFIRM: Mode.READ_STATUS,
}


class CfiFlash:
    """One flash bank: its storage, command state machine and status register."""

    def __init__(self, storage: mmap.mmap | bytearray, *, bank_width: int = 4,
                 device_width: int | None = None, block_size: int = BLOCK_SIZE,
                 read_only: bool = False, log: Callable[[str], None] = lambda text: None) -> None:
        size = len(storage)
        device_width = device_width or bank_width
        self.check_geometry(size, bank_width, device_width)
        chips = bank_width // device_width
        block_size = min(block_size, size)
        self.storage = storage
        self.size = size
        self.bank_width = bank_width
        self.device_width = device_width
        self.chips = chips
        self.block_size = block_size
        self.read_only = read_only
        self.buffer_bytes = (1 << BUFFER_BITS) * chips
        self._log = log
        self._table = self._query_table()
        self._warned: set[int] = set()
        self.reset()

    @staticmethod
    def check_geometry(size: int, bank_width: int, device_width: int | None) -> None:
        """Raise ValueError (saying why) for a bank this model cannot describe in CFI terms."""
        device_width = device_width or bank_width
        if bank_width not in (1, 2, 4, 8):
            raise ValueError(f"bank-width {bank_width} is not 1, 2, 4 or 8 bytes")
        if device_width not in INTERFACE_CODE or bank_width % device_width:
            raise ValueError(f"device-width {device_width} does not divide bank-width "
                             f"{bank_width} (chips are 1, 2 or 4 bytes wide)")
        if size < 0x1000 or size & (size - 1):
            raise ValueError(f"bank size {size:#x} is not a power of two of at least 4 KiB")

    def _query_table(self) -> bytes:
        """One chip's CFI query table: the bank's geometry divided among its chips."""
        t = bytearray(CfiQuery.END)
        chip_size = self.size // self.chips
        chip_block = self.block_size // self.chips
        blocks = self.size // self.block_size

        def put16(at: int, value: int) -> None:
            t[at], t[at + 1] = value & 0xFF, value >> 8

        t[CfiQuery.QRY:CfiQuery.QRY + 3] = b"QRY"
        put16(CfiQuery.COMMAND_SET, 0x0001)            # Intel/Sharp extended
        put16(CfiQuery.PRIMARY_TABLE, CfiQuery.PRI)
        t[CfiQuery.VCC_MIN], t[CfiQuery.VCC_MAX] = 0x27, 0x36        # 2.7-3.6 V
        t[CfiQuery.WORD_PROGRAM_TIMEOUT] = 8           # 256 us
        t[CfiQuery.BUFFER_PROGRAM_TIMEOUT] = 9         # 512 us
        t[CfiQuery.BLOCK_ERASE_TIMEOUT] = 10           # 1 s
        t[CfiQuery.WORD_PROGRAM_MAX] = 1
        t[CfiQuery.BUFFER_PROGRAM_MAX] = 1
        t[CfiQuery.BLOCK_ERASE_MAX] = 2
        t[CfiQuery.DEVICE_SIZE] = chip_size.bit_length() - 1
        put16(CfiQuery.INTERFACE, INTERFACE_CODE[self.device_width])
        put16(CfiQuery.BUFFER_SIZE, BUFFER_BITS)
        t[CfiQuery.ERASE_REGIONS] = 1
        put16(CfiQuery.REGION1, blocks - 1)
        put16(CfiQuery.REGION1 + 2, chip_block >> 8)
        t[CfiQuery.PRI:CfiQuery.PRI + 5] = b"PRI10"
        t[CfiQuery.PRI_FEATURES] = PRI_INSTANT_LOCKING
        put16(CfiQuery.PRI_BLOCK_STATUS, 0x0001)       # the lock bit is reported
        t[CfiQuery.PRI_VCC_OPTIMUM] = 0x33             # 3.3 V
        return bytes(t)

    def reset(self) -> None:
        """Power-on state: read array, status ready, every block unlocked."""
        self.mode = Mode.READ_ARRAY
        self.status = Status.READY
        self._locked = bytearray(self.size // self.block_size)
        self._buffer: dict[int, int] = {}      # offset -> byte, for the buffered program
        self._buffer_window = -1
        self._count = 0

    @property
    def array_mode(self) -> bool:
        """Reads return the storage (the bank may be mapped as memory)."""
        return self.mode is Mode.READ_ARRAY

    # -- the bus --------------------------------------------------------------

    def read(self, offset: int, size: int, cpu: int) -> int:
        if offset < 0 or offset + size > self.size:
            return 0
        if self.mode is Mode.READ_ARRAY:
            return int.from_bytes(self.storage[offset:offset + size], "little")
        value = 0
        word_offset = -1
        word = 0
        for i in range(size):
            at = offset + i
            lane = at % self.bank_width
            if at - lane != word_offset:
                word_offset = at - lane
                word = self._word(word_offset)
            value |= ((word >> (8 * lane)) & 0xFF) << (8 * i)
        return value

    def _word(self, offset: int) -> int:
        """The bank's word at ``offset`` outside read array: each chip's answer, side by side."""
        index = offset // self.bank_width
        if self.mode is Mode.CFI_QUERY:
            chip = self._table[index] if index < len(self._table) else 0
        elif self.mode is Mode.READ_ID:
            in_block = (offset % self.block_size) // self.bank_width
            chip = {ID_MANUFACTURER: MANUFACTURER_INTEL, ID_DEVICE: DEVICE_CODE,
                    ID_BLOCK_LOCK: self._locked[offset // self.block_size]}.get(in_block, 0)
        else:  # status, also while a command waits for its next cycle
            chip = int(self.status)
        word = 0
        for c in range(self.chips):
            word |= chip << (8 * self.device_width * c)
        return word

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        if offset < 0 or offset + size > self.size:
            return
        mode = self.mode
        if mode is Mode.PROGRAM:
            self._program(offset, value.to_bytes(size, "little"))
            self.mode = Mode.READ_STATUS
        elif mode is Mode.BUFFER_COUNT:
            # Each chip gets its word count - 1 on its own lanes; the bank takes
            # as many bus words of data.
            self._buffer_count((value & ((1 << (8 * self.device_width)) - 1)) + 1)
        elif mode is Mode.BUFFER_DATA:
            self._buffer_data(offset, value.to_bytes(size, "little"))
        else:
            self._command(offset, value & 0xFF)

    def _command(self, offset: int, cmd: int) -> None:
        mode = self.mode
        if mode is Mode.ERASE:
            if cmd == FlashCmd.CONFIRM:
                self._erase(offset)
            self._second_cycle_done(cmd == FlashCmd.CONFIRM)
        elif mode is Mode.LOCK:
            ok = cmd in (FlashCmd.LOCK_BLOCK, FlashCmd.LOCK_DOWN, FlashCmd.CONFIRM)
            if ok:
                self._locked[offset // self.block_size] = int(cmd != FlashCmd.CONFIRM)
            self._second_cycle_done(ok)
        elif mode is Mode.BUFFER_CONFIRM:
            ok = cmd == FlashCmd.CONFIRM
            if ok:
                for start, data in _runs(self._buffer):
                    self._program(start, data)
            self._buffer.clear()
            self._second_cycle_done(ok)
        else:
            self._first_cycle(offset, cmd)

    def _first_cycle(self, offset: int, cmd: int) -> None:
        if cmd == FlashCmd.CLEAR_STATUS:
            self.status = Status.READY
            return
        mode = _FIRST_CYCLE.get(cmd)
        if mode is None:
            if cmd not in self._warned:
                self._warned.add(cmd)
                self._log(f"cfi-flash: unknown command {cmd:#04x} at {offset:#x}; "
                          f"back to read array")
            mode = Mode.READ_ARRAY
        self.mode = mode

    def _second_cycle_done(self, ok: bool) -> None:
        if not ok:  # Intel: an improper command sequence sets both error bits
            self.status |= Status.PROGRAM_ERROR | Status.ERASE_ERROR
        self.mode = Mode.READ_STATUS

    def _writable(self, offset: int, error: Status) -> bool:
        if self.read_only or self._locked[offset // self.block_size]:
            self.status |= Status.LOCKED | error
            return False
        return True

    def _program(self, offset: int, data: bytes) -> None:
        if not self._writable(offset, Status.PROGRAM_ERROR):
            return
        old = self.storage[offset:offset + len(data)]
        self.storage[offset:offset + len(data)] = bytes(a & b for a, b in zip(old, data))

    def _erase(self, offset: int) -> None:
        if not self._writable(offset, Status.ERASE_ERROR):
            return
        start = offset - offset % self.block_size
        self.storage[start:start + self.block_size] = bytes([ERASED]) * self.block_size

    def _buffer_count(self, count: int) -> None:
        if count * self.bank_width > self.buffer_bytes:
            self._second_cycle_done(False)
            return
        self._count = count
        self._buffer.clear()
        self._buffer_window = -1
        self.mode = Mode.BUFFER_DATA

    def _buffer_data(self, offset: int, data: bytes) -> None:
        # All data of one buffered program lies in one buffer-aligned window.
        window = offset - offset % self.buffer_bytes
        if self._buffer_window < 0:
            self._buffer_window = window
        if window != self._buffer_window or offset + len(data) > window + self.buffer_bytes:
            self._buffer.clear()
            self._second_cycle_done(False)
            return
        for i, b in enumerate(data):
            self._buffer[offset + i] = b
        self._count -= 1
        if self._count == 0:
            self.mode = Mode.BUFFER_CONFIRM


def _runs(data: dict[int, int]) -> list[tuple[int, bytes]]:
    """Contiguous stretches of {offset: byte}."""
    out: list[tuple[int, bytearray]] = []
    for off in sorted(data):
        if out and out[-1][0] + len(out[-1][1]) == off:
            out[-1][1].append(data[off])
        else:
            out.append((off, bytearray([data[off]])))
    return [(o, bytes(b)) for o, b in out]


class FlashStorage:
    """A bank's contents in host memory: erased, loaded from an image, or a file kept in sync.

    The memory is page-aligned (an anonymous or file mapping) so that a VMM
    can map it into a guest. A file-backed bank maps the file shared: what
    the guest programs reaches the file as it happens (``flush`` forces it
    out); the file is locked so that two VMs never share one.
    """

    def __init__(self, size: int, *, image: bytes | None = None, path: Path | None = None) -> None:
        self._fd: int | None = None
        if path is None:
            self.memory = mmap.mmap(-1, size)
            self.memory[:] = bytes([ERASED]) * size
            if image:
                if len(image) > size:
                    raise ValueError(f"image of {len(image)} bytes does not fit the "
                                     f"{size >> 20} MiB bank")
                self.memory[:len(image)] = image
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ValueError(f"{path} is in use by another VM") from None
            have = os.fstat(fd).st_size
            if have == 0:
                os.pwrite(fd, bytes([ERASED]) * size, 0)   # a new bank starts erased
            elif have != size:
                raise ValueError(f"{path} has {have} bytes; a flash bank of this VM needs "
                                 f"exactly {size} ({size >> 20} MiB), or an empty file")
            self.memory = mmap.mmap(fd, size, mmap.MAP_SHARED)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def flush(self) -> None:
        if self._fd is not None and not self.memory.closed:
            self.memory.flush()

    def close(self) -> None:
        """Write back and let go (the VM has ended; nothing maps the memory any more)."""
        if self.memory.closed:
            return
        self.flush()
        self.memory.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
