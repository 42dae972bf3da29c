"""The initramfs pyned writes: newc cpio, module dependencies, reproducible bytes."""

import gzip
import io
import json
import stat

import pytest

from pyned.images import guests
from pyned.images.cpio import CpioWriter, read_entries
from pyned.images.initramfs import (INIT, MARKER, Module, build, closure, with_softdeps)


def test_newc_entries_round_trip_with_nodes_links_and_padding():
    out = io.BytesIO()
    w = CpioWriter(out)
    w.directory("dev")
    w.char_device("dev/console", 5, 1)
    w.file("init", b"#!/bin/sh\n", 0o755)
    w.symlink("bin/sh", "busybox")
    w.close()
    data = out.getvalue()
    assert len(data) % 512 == 0 and data[:6] == b"070701"
    entries = {name: (mode, body) for name, mode, body in read_entries(data)}
    assert stat.S_ISDIR(entries["dev"][0])
    assert stat.S_ISCHR(entries["dev/console"][0])
    hdr = data[data.index(b"dev/console\0") - 110:]
    assert int(hdr[6 + 9 * 8:6 + 10 * 8], 16) == 5 and int(hdr[6 + 10 * 8:6 + 11 * 8], 16) == 1
    assert entries["init"] == (stat.S_IFREG | 0o755, b"#!/bin/sh\n")
    assert entries["bin/sh"] == (stat.S_IFLNK | 0o777, b"busybox")


def test_duplicate_entries_are_refused():
    w = CpioWriter(io.BytesIO())
    w.file("a", b"")
    with pytest.raises(ValueError, match="duplicate"):
        w.file("a", b"")


MODS = {
    "ext4": Module("ext4", ("jbd2", "crc16"), softdeps=("crypto-crc32c",)),
    "jbd2": Module("jbd2", ()),
    "crc16": Module("crc16", ()),
    "crc32c_generic": Module("crc32c_generic", (), aliases=("crypto-crc32c", "crc32c")),
    "virtio_net": Module("virtio_net", ("net_failover",)),
    "net_failover": Module("net_failover", ("failover",)),
    "failover": Module("failover", ()),
}


def test_dependencies_come_first_and_soft_dependencies_resolve_through_aliases():
    order = closure(["virtio_net", "ext4"], with_softdeps(MODS))
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert order.index("crc32c_generic") < order.index("ext4")
    with pytest.raises(ValueError, match="not in the kernel package"):
        closure(["nonesuch"], MODS)


def test_the_archive_is_reproducible_and_carries_init_and_modules():
    mods = {n: (m, n.encode()) for n, m in MODS.items()}
    a = build(b"BUSYBOX", mods, ["virtio_net"])
    assert a == build(b"BUSYBOX", mods, ["virtio_net"])
    entries = {name: body for name, _, body in read_entries(gzip.decompress(a))}
    assert MARKER.encode() in entries["init"] and b"pyned.run" in entries["init"]
    assert entries["lib/modules/boot"] == b"virtio_net\n"
    assert b"ext4: jbd2 crc16 crc32c_generic\n" in entries["lib/modules/deps"]
    assert entries["bin/busybox"] == b"BUSYBOX"
    assert INIT.startswith("#!/bin/sh")


def test_a_cache_of_an_older_recipe_or_with_files_missing_is_not_used(tmp_path):
    assert guests.find(tmp_path) is None
    for name in guests.FILES:
        (tmp_path / name).write_bytes(b"x")
    manifest = {"recipe": guests.RECIPE, "kernel_release": "6.1.0-0-arm64", "packages": {}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert guests.find(tmp_path) is not None
    (tmp_path / "manifest.json").write_text(json.dumps(dict(manifest, recipe=0)))
    assert guests.find(tmp_path) is None
