"""The U-Boot boot disk: layout, the legacy script image in sector 0, rebuilds."""

import os
import struct
import zlib

from pyned.images.bootdisk import (IH_MAGIC, IH_TYPE_SCRIPT, KERNEL_LBA, SECTOR, ensure,
                                   script_image)


def parse_script(image: bytes) -> str:
    """Check a legacy script image as U-Boot's ``source`` does; return its text."""
    magic, hcrc, _time, size, _load, _ep, dcrc, _os, _arch, kind, comp = \
        struct.unpack(">7I4B", image[:32])
    assert magic == IH_MAGIC and kind == IH_TYPE_SCRIPT and comp == 0
    header = image[:4] + b"\0" * 4 + image[8:64]
    assert zlib.crc32(header) == hcrc
    data = image[64:64 + size]
    assert zlib.crc32(data) == dcrc
    length, end = struct.unpack(">II", data[:8])
    assert end == 0
    return data[8:8 + length].decode()


def test_script_image_is_what_source_accepts():
    text = parse_script(script_image("echo hi\n"))
    assert text == "echo hi\n"
    assert script_image("echo hi\n") == script_image("echo hi\n")   # no time stamp


def test_layout_script_and_commands(tmp_path):
    kernel, initrd = tmp_path / "Image", tmp_path / "initrd"
    kernel.write_bytes(b"K" * (3 * SECTOR + 1))
    initrd.write_bytes(b"I" * 1000)
    disk = ensure(kernel, initrd, tmp_path)
    data = disk.path.read_bytes()
    assert disk.kernel_lba == KERNEL_LBA and disk.initrd_lba == KERNEL_LBA + 2048
    assert len(data) == disk.size == 3 << 20
    assert data[KERNEL_LBA * SECTOR:][:3 * SECTOR + 1] == kernel.read_bytes()
    assert data[disk.initrd_lba * SECTOR:][:1000] == initrd.read_bytes()
    assert disk.commands("0x40400000", "0x48000000") == [
        "virtio dev 0",
        "virtio read 0x40400000 0x800 0x4",
        "virtio read 0x48000000 0x1000 0x2",
        "booti 0x40400000 0x48000000:0x3e8 ${fdtcontroladdr}"]
    script = parse_script(data[:SECTOR])
    assert script.splitlines()[1:] == disk.commands()


def test_rebuilt_only_when_the_guests_change(tmp_path):
    kernel, initrd = tmp_path / "Image", tmp_path / "initrd"
    kernel.write_bytes(b"K" * 100)
    initrd.write_bytes(b"I" * 100)
    disk = ensure(kernel, initrd, tmp_path)
    stamp = disk.path.stat().st_mtime_ns
    assert ensure(kernel, initrd, tmp_path) == disk
    assert disk.path.stat().st_mtime_ns == stamp
    initrd.write_bytes(b"J" * 100)
    later = disk.path.stat().st_mtime + 5
    os.utime(initrd, (later, later))
    ensure(kernel, initrd, tmp_path)
    assert disk.path.read_bytes()[disk.initrd_lba * SECTOR:][:100] == b"J" * 100
    assert not list(tmp_path.glob("*.tmp"))
