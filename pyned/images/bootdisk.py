"""A raw disk that firmware boots Linux from by block numbers (U-Boot's ``virtio read``).

No partition table and no file system: the kernel ``Image`` starts at sector
2048 (1 MiB), the initramfs at the next MiB boundary after it, and sector 0
holds a U-Boot script (a legacy ``mkimage -T script`` image) with the
commands that load and start both, so at U-Boot's prompt

    virtio scan; virtio read ${scriptaddr} 0 1; source ${scriptaddr}

boots Linux, and a ``bootcmd`` saved with ``saveenv`` makes that automatic.
``BootDisk.commands`` gives the same commands for typing them one by one.
The disk is built next to the guests ``pyned images fetch`` fetched
(``rom/uboot-disk.img``) and rebuilt when they are newer.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

SECTOR = 512
KERNEL_LBA = 2048
ALIGN = 1 << 20
DISK_NAME = "uboot-disk.img"
# U-Boot's legacy image header (include/image.h): big-endian, 64 bytes.
IH_MAGIC = 0x27051956
IH_OS_LINUX, IH_ARCH_ARM64, IH_TYPE_SCRIPT, IH_COMP_NONE = 5, 22, 6, 0
BOOT_FROM_DISK = "virtio scan; virtio read ${scriptaddr} 0 1; source ${scriptaddr}"


def _sectors(size: int) -> int:
    return (size + SECTOR - 1) // SECTOR


def _align(value: int) -> int:
    return (value + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class BootDisk:
    path: Path
    kernel_size: int
    initrd_size: int

    @property
    def kernel_lba(self) -> int:
        return KERNEL_LBA

    @property
    def initrd_lba(self) -> int:
        return _align(KERNEL_LBA * SECTOR + self.kernel_size) // SECTOR

    @property
    def size(self) -> int:
        return _align(self.initrd_lba * SECTOR + self.initrd_size)

    def commands(self, kernel_addr: str = "${kernel_addr_r}",
                 initrd_addr: str = "${ramdisk_addr_r}", device: int = 0) -> list[str]:
        """U-Boot commands that load the kernel and initramfs from the disk and boot them."""
        return [f"virtio dev {device}",
                f"virtio read {kernel_addr} {self.kernel_lba:#x} {_sectors(self.kernel_size):#x}",
                f"virtio read {initrd_addr} {self.initrd_lba:#x} {_sectors(self.initrd_size):#x}",
                f"booti {kernel_addr} {initrd_addr}:{self.initrd_size:#x} ${{fdtcontroladdr}}"]


def script_image(text: str, name: str = "pyned boot disk") -> bytes:
    """``text`` as U-Boot's ``source`` command takes it: a legacy image of type script."""
    body = text.encode()
    # A script image's data: the length of each part, a zero, then the parts.
    data = struct.pack(">II", len(body), 0) + body
    # Time stamp 0: the same inputs give the same disk.
    fields = (IH_MAGIC, 0, 0, len(data), 0, 0, zlib.crc32(data),
              IH_OS_LINUX, IH_ARCH_ARM64, IH_TYPE_SCRIPT, IH_COMP_NONE)
    header = struct.pack(">7I4B32s", *fields, name.encode()[:31])
    hcrc = zlib.crc32(header)
    return header[:4] + struct.pack(">I", hcrc) + header[8:] + data


def ensure(kernel: Path, initrd: Path, folder: Path) -> BootDisk:
    """The boot disk for these files in ``folder``, built unless it is newer than both."""
    disk = BootDisk(folder / DISK_NAME, kernel.stat().st_size, initrd.stat().st_size)
    try:
        current = disk.path.stat()
        if (current.st_size == disk.size
                and current.st_mtime >= max(kernel.stat().st_mtime, initrd.stat().st_mtime)):
            return disk
    except FileNotFoundError:
        pass
    script = "\n".join(["echo pyned boot disk: loading Linux and its initramfs"]
                       + disk.commands()) + "\n"
    header = script_image(script)
    if len(header) > SECTOR:
        raise ValueError("the boot script does not fit in sector 0")
    tmp = disk.path.with_name(f"{disk.path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.seek(disk.kernel_lba * SECTOR)
        f.write(kernel.read_bytes())
        f.seek(disk.initrd_lba * SECTOR)
        f.write(initrd.read_bytes())
        f.truncate(disk.size)
    os.replace(tmp, disk.path)
    return disk
