"""virtio-blk (VIRTIO 1.2 §5.2), device id 2, on a raw image file.

The capacity is the file size in 512-byte sectors (a trailing partial sector
is ignored, with a log line). Requests run synchronously on the notifying
thread with ``os.preadv``/``os.pwritev`` straight between the file and the
guest's buffers: there is no user-space cache, so a write the guest saw
complete is in the host's page cache (it survives a crash of this process)
and after a completed FLUSH (``fdatasync``) it is on the disk.

Features: F_FLUSH, F_BLK_SIZE (512), F_SEG_MAX (queue size - 2, the header
and status descriptors taking the other two), F_SIZE_MAX (1 MiB per
segment; advisory, larger segments still work), and on a writable image
F_DISCARD and F_WRITE_ZEROES (16 MiB per segment, 8 segments for discard and
1 for write-zeroes, write-zeroes may unmap), or F_RO on a read-only one
(opened O_RDONLY). Discard punches a hole (fallocate PUNCH_HOLE|KEEP_SIZE)
where the host file system allows it and otherwise writes zeros, so a
discarded range always reads back as zeros. GET_ID returns the ``serial``
option or the image's file name, NUL-padded to 20 bytes.

A bad value in a well-formed request (a sector past the end, a length that is
not a multiple of 512, a write to a read-only disk, a host I/O error) is
answered with IOERR; an unknown type or flag with UNSUPP. A request without a
16-byte header or without a status byte is a virtqueue violation.
Not modelled: F_MQ, F_CONFIG_WCE (the cache is always write-back with flush),
F_TOPOLOGY, F_GEOMETRY, secure erase, zoned devices.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Callable

from pyned.devices.virtio.mmio import Deferred, VirtioDevice
from pyned.devices.virtio.queue import (Chain, Virtqueue, VirtqueueError, gather, scatter,
                                        slice_views)

VIRTIO_ID_BLOCK = 2

VIRTIO_BLK_F_SIZE_MAX = 1
VIRTIO_BLK_F_SEG_MAX = 2
VIRTIO_BLK_F_RO = 5
VIRTIO_BLK_F_BLK_SIZE = 6
VIRTIO_BLK_F_FLUSH = 9
VIRTIO_BLK_F_DISCARD = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

VIRTIO_BLK_T_IN = 0
VIRTIO_BLK_T_OUT = 1
VIRTIO_BLK_T_FLUSH = 4
VIRTIO_BLK_T_GET_ID = 8
VIRTIO_BLK_T_DISCARD = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13

VIRTIO_BLK_S_OK = 0
VIRTIO_BLK_S_IOERR = 1
VIRTIO_BLK_S_UNSUPP = 2

VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1
VIRTIO_BLK_ID_BYTES = 20

SECTOR_SIZE = 512
QUEUE_MAX = 256
SEG_MAX = QUEUE_MAX - 2
SIZE_MAX = 1 << 20
MAX_DISCARD_SECTORS = 32768  # 16 MiB
MAX_DISCARD_SEG = 8
DISCARD_SECTOR_ALIGNMENT = 8  # 4 KiB, the host page size hole punching works in
MAX_WRITE_ZEROES_SECTORS = 32768
MAX_WRITE_ZEROES_SEG = 1
_ZERO_CHUNK = memoryview(bytes(1 << 20))

_HDR = struct.Struct("<IIQ")  # type, reserved, sector
_SEGMENT = struct.Struct("<QII")  # sector, num_sectors, flags
# struct virtio_blk_config up to secure_erase_sector_alignment (72 bytes).
_CONFIG = struct.Struct("<QIIHBBIBBHIBBHIIIIIB3xIII")

FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def _libc_fallocate() -> Callable[[int, int, int, int], int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    fn.restype = ctypes.c_int
    return fn


class _RequestError(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


class VirtioBlock(VirtioDevice):
    device_id = VIRTIO_ID_BLOCK
    name = "blk"
    num_queues = 1
    queue_max = QUEUE_MAX

    def __init__(self, path: str | os.PathLike[str], *, read_only: bool = False,
                 serial: str | None = None, log: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self.path = os.fspath(path)
        self.read_only = read_only
        self._log = log if log is not None else (lambda line: None)
        self._fd: int | None = os.open(self.path, (os.O_RDONLY if read_only else os.O_RDWR)
                                       | os.O_CLOEXEC)
        size = os.lseek(self._fd, 0, os.SEEK_END)
        self.capacity = size // SECTOR_SIZE
        if size % SECTOR_SIZE:
            self._log(f"virtio-blk: {self.path}: size {size} is not a multiple of "
                      f"{SECTOR_SIZE}; the last {size % SECTOR_SIZE} bytes are not used")
        ident = (serial if serial is not None else os.path.basename(self.path)).encode()
        self.serial = ident[:VIRTIO_BLK_ID_BYTES].ljust(VIRTIO_BLK_ID_BYTES, b"\0")
        self._fallocate = None if read_only else _libc_fallocate()
        features = (1 << VIRTIO_BLK_F_SIZE_MAX) | (1 << VIRTIO_BLK_F_SEG_MAX) \
            | (1 << VIRTIO_BLK_F_BLK_SIZE) | (1 << VIRTIO_BLK_F_FLUSH)
        if read_only:
            features |= 1 << VIRTIO_BLK_F_RO
        else:
            features |= (1 << VIRTIO_BLK_F_DISCARD) | (1 << VIRTIO_BLK_F_WRITE_ZEROES)
        self.device_features = features
        self._config = _CONFIG.pack(
            self.capacity, SIZE_MAX, SEG_MAX, 0, 0, 0, SECTOR_SIZE, 0, 0, 0, 0, 0, 0, 0,
            MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, DISCARD_SECTOR_ALIGNMENT,
            MAX_WRITE_ZEROES_SECTORS, MAX_WRITE_ZEROES_SEG, 1, 0, 0, 0)
        self.reads = self.writes = self.flushes = self.errors = 0
        self.bytes_read = self.bytes_written = 0

    def config_bytes(self) -> bytes:
        return self._config

    def close(self) -> None:
        """Close the image; requests after this fail with IOERR."""
        if self.transport is not None:
            self.transport.device_call(self._close, None)
        else:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- requests ---------------------------------------------------------------

    def on_notify(self, index: int, queue: Virtqueue) -> Deferred | None:
        while (chain := queue.pop()) is not None:
            queue.push(chain.head, self._request(chain))
        return None

    def _request(self, chain: Chain) -> int:
        """Carry out one request; returns the used length (bytes written to the guest)."""
        if chain.readable_len < _HDR.size:
            raise VirtqueueError("block request without a 16-byte header")
        if chain.writable_len < 1:
            raise VirtqueueError("block request without a status byte")
        first = chain.readable[0]
        header = first if len(first) >= _HDR.size else gather(chain.readable, 0, _HDR.size)
        rtype, _, sector = _HDR.unpack_from(header)
        data_in = chain.writable_len - 1  # bytes before the status byte
        written = 0
        try:
            if self._fd is None:
                raise _RequestError(VIRTIO_BLK_S_IOERR)
            if rtype == VIRTIO_BLK_T_IN:
                written = self._read(chain, sector, data_in)
            elif rtype == VIRTIO_BLK_T_OUT:
                self._write(chain, sector)
            elif rtype == VIRTIO_BLK_T_FLUSH:
                if not self.read_only:
                    os.fdatasync(self._fd)
                self.flushes += 1
            elif rtype == VIRTIO_BLK_T_GET_ID:
                written = scatter(chain.writable, self.serial[:data_in])
            elif rtype in (VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES) and not self.read_only:
                self._discard_or_zero(chain, rtype == VIRTIO_BLK_T_DISCARD)
            else:
                raise _RequestError(VIRTIO_BLK_S_UNSUPP)
            status = VIRTIO_BLK_S_OK
        except _RequestError as e:
            status = e.status
        except OSError as e:
            self._log(f"virtio-blk: {self.path}: request type {rtype} at sector {sector}: {e}")
            status = VIRTIO_BLK_S_IOERR
        if status != VIRTIO_BLK_S_OK:
            self.errors += 1
        # The status is the last writable byte, wherever the driver put it.
        for view in reversed(chain.writable):
            if len(view):
                view[-1] = status
                break
        return written + 1

    def _check_range(self, sector: int, length: int) -> int:
        if length % SECTOR_SIZE or sector + length // SECTOR_SIZE > self.capacity:
            raise _RequestError(VIRTIO_BLK_S_IOERR)
        return sector * SECTOR_SIZE

    def _read(self, chain: Chain, sector: int, length: int) -> int:
        offset = self._check_range(sector, length)
        if length:
            assert self._fd is not None
            if os.preadv(self._fd, slice_views(chain.writable, 0, length), offset) != length:
                raise _RequestError(VIRTIO_BLK_S_IOERR)  # the file shrank under us
        self.reads += 1
        self.bytes_read += length
        return length

    def _write(self, chain: Chain, sector: int) -> None:
        if self.read_only:
            raise _RequestError(VIRTIO_BLK_S_IOERR)
        length = chain.readable_len - _HDR.size
        offset = self._check_range(sector, length)
        if length:
            assert self._fd is not None
            if os.pwritev(self._fd, slice_views(chain.readable, _HDR.size), offset) != length:
                raise _RequestError(VIRTIO_BLK_S_IOERR)  # out of space on the host
        self.writes += 1
        self.bytes_written += length

    def _discard_or_zero(self, chain: Chain, discard: bool) -> None:
        payload = gather(chain.readable, _HDR.size)
        if not payload or len(payload) % _SEGMENT.size:
            raise _RequestError(VIRTIO_BLK_S_IOERR)
        max_seg, max_sectors = ((MAX_DISCARD_SEG, MAX_DISCARD_SECTORS) if discard
                                else (MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SECTORS))
        if len(payload) // _SEGMENT.size > max_seg:
            raise _RequestError(VIRTIO_BLK_S_IOERR)
        ranges = []
        for sector, num, flags in _SEGMENT.iter_unpack(payload):
            if flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP or (discard and flags):
                raise _RequestError(VIRTIO_BLK_S_UNSUPP)
            if num > max_sectors:
                raise _RequestError(VIRTIO_BLK_S_IOERR)
            ranges.append((self._check_range(sector, num * SECTOR_SIZE), num * SECTOR_SIZE,
                           discard or bool(flags)))
        # Checked in full before any change, so a bad segment leaves the disk alone.
        for offset, length, unmap in ranges:
            if not (unmap and self._punch_hole(offset, length)):
                self._write_zeros(offset, length)

    def _punch_hole(self, offset: int, length: int) -> bool:
        if self._fallocate is None or not length:
            return False
        mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        if self._fallocate(self._fd, mode, offset, length) == 0:
            return True
        err = ctypes.get_errno()
        if err in (errno.EOPNOTSUPP, errno.ENOSYS):
            self._fallocate = None  # this file system cannot: write zeros from now on
            return False
        raise OSError(err, os.strerror(err))

    def _write_zeros(self, offset: int, length: int) -> None:
        assert self._fd is not None
        while length:
            n = os.pwrite(self._fd, _ZERO_CHUNK[:min(length, len(_ZERO_CHUNK))], offset)
            if n <= 0:
                raise _RequestError(VIRTIO_BLK_S_IOERR)
            offset += n
            length -= n
