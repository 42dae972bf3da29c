"""A writer for the ``newc`` cpio format, the one the Linux kernel unpacks as initramfs.

Written here rather than run through cpio(1) so that an initramfs needs no
root (device nodes are just headers) and is byte-for-byte reproducible: every
entry has uid/gid 0 and mtime 0, and entries come out in the order given.
Format: Linux ``Documentation/driver-api/early-userspace/buffer-format.rst``.
"""

from __future__ import annotations

import stat
from typing import BinaryIO

MAGIC = b"070701"
TRAILER = "TRAILER!!!"


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class CpioWriter:
    """Appends entries to a binary stream; ``close()`` writes the trailer."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._ino = 0
        self._names: set[str] = set()
        self._closed = False

    def _entry(self, name: str, mode: int, data: bytes = b"", *, rdev: tuple[int, int] = (0, 0),
               nlink: int = 1) -> None:
        if self._closed:
            raise ValueError("cpio archive already closed")
        name = name.strip("/") or "."
        if name in self._names and name != TRAILER:
            raise ValueError(f"cpio: duplicate entry {name!r}")
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdev[0], rdev[1],
                  len(encoded), 0)
        header = MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded + _pad4(len(header) + len(encoded)))
        self._out.write(data + _pad4(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def close(self) -> None:
        if not self._closed:
            self._entry(TRAILER, 0, nlink=1)
            self._closed = True
            # The kernel reads the archive in 512-byte blocks like cpio(1) pads it.
            pos = self._out.tell()
            self._out.write(b"\0" * (-pos % 512))


def read_entries(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of every entry up to the trailer: for tests and inspection."""
    out = []
    pos = 0
    while True:
        if data[pos:pos + 6] != MAGIC:
            raise ValueError(f"cpio: bad magic at offset {pos}")
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start:name_start + namesize - 1].decode()
        body = name_start + namesize
        body += -body % 4
        if name == TRAILER:
            return out
        out.append((name, mode, data[body:body + size]))
        pos = body + size
        pos += -pos % 4
