"""The busybox initramfs pyned boots Linux guests with.

``/init`` mounts proc, sysfs and devtmpfs, loads the virtio modules (the
Debian kernel builds virtio-mmio and its devices as modules), switches to
the console the kernel ended up with (``console=hvc0`` exists only once
virtio_console is loaded), prints ``MARKER`` and then runs what the kernel
command line asks for:

* ``pyned.modules=a,b``: more modules to load (with their dependencies);
* ``pyned.run="cmd; cmd"``: shell commands to run before the shell;
* otherwise, or when they return, an interactive busybox shell on the
  console; leaving the shell powers the VM off.

So tests drive a guest through its command line; the initramfs never needs
rebuilding.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile

from pyned.images.cpio import CpioWriter

MARKER = "pyned-initramfs: ready"
# Loaded by /init at every boot: the transport, then the devices pyned offers.
BOOT_MODULES = ("virtio_mmio", "virtio_console", "virtio_blk", "virtio_net")
# Shipped for pyned.modules=: a disk file system and the checksum its journal uses.
EXTRA_MODULES = ("ext4", "crc32c_generic")

INIT = r"""#!/bin/sh
# pyned's initramfs /init (written by 'pyned images fetch'); see pyned/images/initramfs.py
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mkdir -p /proc /sys /dev /tmp /mnt /root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
arg() { xargs -n1 </proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }
load() {
    grep -q "^$1 " /proc/modules && return 0
    for d in $(sed -n "s/^$1://p" /lib/modules/deps); do load "$d"; done
    insmod "/lib/modules/$1.ko" || echo "init: insmod $1 failed"
}
for m in $(cat /lib/modules/boot) $(arg pyned.modules | tr , ' '); do load "$m"; done
exec </dev/console >/dev/console 2>&1
hostname pyned
echo "@MARKER@ ($(uname -r), $(grep -c ^processor /proc/cpuinfo) cpu)"
run=$(arg pyned.run)
[ -n "$run" ] && sh -c "$run"
setsid cttyhack sh -l
poweroff -f
"""

PROFILE = 'PS1="\\h:\\w# "\n'


@dataclass(frozen=True)
class Module:
    name: str
    depends: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    softdeps: tuple[str, ...] = ()   # "pre:" soft dependencies (names or aliases)


def modinfo(data: bytes) -> Module:
    """Name, ``depends=``, aliases and soft dependencies from a module's ``.modinfo``."""
    elf = ELFFile(io.BytesIO(data))
    sec = elf.get_section_by_name(".modinfo")
    if sec is None:
        raise ValueError("not a kernel module (no .modinfo section)")
    fields: dict[str, list[str]] = {}
    for item in sec.data().split(b"\0"):
        key, eq, value = item.decode(errors="replace").partition("=")
        if eq:
            fields.setdefault(key, []).append(value)
    deps = tuple(d for d in (fields.get("depends") or [""])[0].split(",") if d)
    soft: list[str] = []
    for spec in fields.get("softdep", []):
        # "pre: a b post: c": modprobe loads the pre ones first
        words, pre = spec.split(), False
        for w in words:
            if w.endswith(":"):
                pre = w == "pre:"
            elif pre:
                soft.append(w)
    return Module((fields.get("name") or [""])[0], deps, tuple(fields.get("alias", [])),
                  tuple(soft))


def with_softdeps(modules: dict[str, Module]) -> dict[str, Module]:
    """Each module's soft dependencies that name (or alias) another module of the set,
    folded into its dependencies, as modprobe would load them."""
    by_alias = {a: m.name for m in modules.values() for a in (m.name, *m.aliases)}
    out = {}
    for name, m in modules.items():
        extra = tuple(by_alias[s] for s in m.softdeps if by_alias.get(s) not in (None, name))
        out[name] = Module(name, m.depends + tuple(e for e in extra if e not in m.depends),
                           m.aliases, m.softdeps)
    return out


def closure(wanted: list[str], modules: dict[str, Module]) -> list[str]:
    """``wanted`` plus everything they depend on, dependencies first."""
    order: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in chain:
            raise ValueError(f"module dependency cycle: {' -> '.join(chain + (name,))}")
        mod = modules.get(name)
        if mod is None:
            raise ValueError(f"kernel module {name} is not in the kernel package")
        for dep in mod.depends:
            visit(dep, chain + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def build(busybox: bytes, modules: dict[str, tuple[Module, bytes]], boot: list[str]) -> bytes:
    """The gzip-compressed newc archive (``modules``: name -> (info, .ko bytes))."""
    raw = io.BytesIO()
    w = CpioWriter(raw)
    for d in ("bin", "dev", "etc", "lib", "lib/modules", "mnt", "proc", "root", "sys", "tmp"):
        w.directory(d)
    # The kernel opens /dev/console for init before devtmpfs is mounted.
    w.char_device("dev/console", 5, 1)
    w.char_device("dev/null", 1, 3, 0o666)
    w.file("bin/busybox", busybox, 0o755)
    w.symlink("bin/sh", "busybox")
    w.file("init", INIT.replace("@MARKER@", MARKER).encode(), 0o755)
    w.file("etc/profile", PROFILE.encode())
    for name in sorted(modules):
        w.file(f"lib/modules/{name}.ko", modules[name][1])
    infos = with_softdeps({name: m for name, (m, _) in modules.items()})
    deps = "".join(f"{name}: {' '.join(m.depends)}\n" for name, m in sorted(infos.items()))
    w.file("lib/modules/deps", deps.encode())
    w.file("lib/modules/boot", ("\n".join(boot) + "\n").encode())
    w.close()
    # mtime=0: the same inputs give the same bytes.
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)
