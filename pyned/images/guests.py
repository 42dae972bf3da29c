"""``pyned images fetch``: real guests from Debian's packages, into pyned's cache.

What lands in ``<cache>/guests`` (never in git):

* ``Image``: Debian's arm64 Linux kernel (``linux-image-<abi>-arm64-unsigned``,
  the version ``linux-image-arm64`` currently depends on);
* ``initrd.cpio.gz``: busybox (``busybox-static``) plus the virtio modules of
  that kernel, with pyned's ``/init`` (``pyned.images.initramfs``);
* ``u-boot.bin``: ``u-boot-qemu``'s ``qemu_arm64/u-boot.bin``;
* ``manifest.json``: package versions and the file list;
* ``uboot-disk.img``: a disk U-Boot boots the kernel and initramfs from
  (``pyned.images.bootdisk``), made from the files above when they change.

A second run finds the manifest and does nothing; ``refresh=True`` asks apt
again for the newest versions. The folder is on the ``rom/`` search path, so
scripts name ``rom/Image``, ``rom/initrd.cpio.gz`` and ``rom/u-boot.bin``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pyned.cpu.engine import cache_root
from pyned.images import bootdisk, initramfs
from pyned.images.debian import Apt, FetchError, deb_members, deb_files

# Bumped when what fetch builds changes, so an older cache is rebuilt.
RECIPE = 2
KERNEL_META = "linux-image-arm64"
BUSYBOX = "busybox-static"
UBOOT = "u-boot-qemu"
UBOOT_FILE = "usr/lib/u-boot/qemu_arm64/u-boot.bin"
FILES = ("Image", "initrd.cpio.gz", "u-boot.bin")


def guests_dir() -> Path:
    return cache_root() / "guests"


@dataclass(frozen=True)
class Guests:
    """The fetched files, as a test or benchmark finds them."""

    folder: Path
    manifest: dict

    @property
    def kernel(self) -> Path:
        return self.folder / "Image"

    @property
    def initrd(self) -> Path:
        return self.folder / "initrd.cpio.gz"

    @property
    def uboot(self) -> Path:
        return self.folder / "u-boot.bin"

    def boot_disk(self) -> bootdisk.BootDisk:
        """The disk U-Boot boots this kernel and initramfs from (built if out of date)."""
        return bootdisk.ensure(self.kernel, self.initrd, self.folder)


def find(folder: Path | None = None) -> Guests | None:
    """The cache if a complete fetch of the current recipe is there, else None."""
    folder = folder or guests_dir()
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != RECIPE or not all((folder / f).is_file() for f in FILES):
        return None
    return Guests(folder, manifest)


def fetch(folder: Path | None = None, *, refresh: bool = False,
          log: Callable[[str], None] = print) -> Guests:
    folder = folder or guests_dir()
    have = find(folder)
    if have is not None and not refresh:
        log(f"guests already in {folder} (linux {have.manifest['kernel_release']}); "
            f"--refresh asks Debian for newer ones")
        have.boot_disk()
        return have
    folder.mkdir(parents=True, exist_ok=True)
    apt = Apt(folder / "apt", log)
    debs = folder / "debs"
    apt.update()
    meta_dep = apt.field(KERNEL_META, "Depends")
    m = re.search(r"linux-image-([0-9][^\s,|]*-arm64)\b", meta_dep)
    if m is None:
        raise FetchError(f"{KERNEL_META} depends on {meta_dep!r}: no arm64 kernel package")
    release = m.group(1)
    kernel_pkg = f"linux-image-{release}-unsigned"
    versions = {p: apt.field(p, "Version") for p in (kernel_pkg, BUSYBOX, UBOOT)}
    kernel_deb = _cached_deb(apt, kernel_pkg, versions[kernel_pkg], debs)
    busybox_deb = _cached_deb(apt, BUSYBOX, versions[BUSYBOX], debs)
    uboot_deb = _cached_deb(apt, UBOOT, versions[UBOOT], debs)

    log(f"unpacking {kernel_deb.name}")
    image, modules = _kernel_and_modules(kernel_deb, release)
    busybox = deb_files(busybox_deb, ["bin/busybox"])["bin/busybox"]
    uboot = deb_files(uboot_deb, [UBOOT_FILE])[UBOOT_FILE]
    initrd = initramfs.build(busybox, modules, list(initramfs.BOOT_MODULES))

    for name, data in (("Image", image), ("initrd.cpio.gz", initrd), ("u-boot.bin", uboot)):
        _write_atomic(folder / name, data)
    for old in debs.glob("*.deb"):  # superseded versions only waste space
        if old.name not in {kernel_deb.name, busybox_deb.name, uboot_deb.name}:
            old.unlink()
    manifest = {
        "recipe": RECIPE, "kernel_release": release, "packages": versions,
        "modules": sorted(modules), "marker": initramfs.MARKER,
        "files": {name: (folder / name).stat().st_size for name in FILES},
    }
    _write_atomic(folder / "manifest.json", json.dumps(manifest, indent=1).encode())
    log(f"guests in {folder}: linux {release} ({len(image) >> 20} MiB Image), "
        f"initrd {len(initrd) >> 10} KiB with {len(modules)} modules, u-boot {versions[UBOOT]}")
    fetched = Guests(folder, manifest)
    fetched.boot_disk()
    return fetched


def _cached_deb(apt: Apt, package: str, version: str, debs: Path) -> Path:
    # apt names files package_version_arch.deb with ':' in the version escaped.
    quoted = version.replace(":", "%3a")
    for path in debs.glob(f"{package}_{quoted}_*.deb"):
        return path
    return apt.download(f"{package}={version}", debs)


def _kernel_and_modules(deb: Path, release: str
                        ) -> tuple[bytes, dict[str, tuple[initramfs.Module, bytes]]]:
    """The Image and the modules the initramfs carries, with their dependencies.

    The package holds ~3700 modules and dependencies are only known from their
    ``.modinfo``, so the one pass over the package keeps the modules of the
    few folders where the wanted ones and their dependencies live.
    """
    image_path = f"boot/vmlinuz-{release}"
    prefix = f"lib/modules/{release}/"
    image: list[bytes] = []
    infos: dict[str, initramfs.Module] = {}
    blobs: dict[str, bytes] = {}

    def on_member(name: str, data: bytes) -> None:
        if name == image_path:
            image.append(data)
            return
        mod = initramfs.modinfo(data)
        infos[mod.name] = mod
        blobs[mod.name] = data

    def want(name: str) -> bool:
        return name == image_path or (name.startswith(prefix) and name.endswith(".ko")
                                      and _may_need(name))

    deb_members(deb, want, on_member)
    if not image:
        raise FetchError(f"{deb.name}: no {image_path}")
    names = initramfs.closure(list(initramfs.BOOT_MODULES + initramfs.EXTRA_MODULES), infos)
    return image[0], {n: (infos[n], blobs[n]) for n in names}


# Where the modules the initramfs needs (and their dependencies) live in the
# tree; reading only these keeps the pass small. A missing dependency fails
# loudly in closure(), so a kernel that moves things is noticed.
_MODULE_DIRS = ("kernel/drivers/virtio/", "kernel/drivers/char/", "kernel/drivers/block/",
                "kernel/drivers/net/", "kernel/net/core/", "kernel/fs/", "kernel/lib/",
                "kernel/crypto/")


def _may_need(path: str) -> bool:
    rel = path.split("/", 3)[3] if path.count("/") >= 3 else path
    return rel.startswith(_MODULE_DIRS) and rel.count("/") <= 4


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
