"""Debian's U-Boot for QEMU's virt board on pyned's QEMU-like layout (dts/virt-qemu.dts).

U-Boot runs in place from CFI flash, keeps its environment in the second
bank, lists the virtio disk and ``booti``s the same Debian Linux the Linux
tests boot directly. Needs ``pyned images fetch`` and pyned's engine.
"""

import re
import shutil
import time

import pytest

from pyned.cpu.engine import patch_level
from pyned.images import guests
from pyned.images.initramfs import MARKER
from pyned.services.rom import PROJECT_ROOT
from pyned.testing import Booted

pytestmark = [
    pytest.mark.linux, pytest.mark.boot, pytest.mark.slow,
    pytest.mark.skipif(guests.find() is None,
                       reason="no real guests in the cache: run 'pyned images fetch'"),
    pytest.mark.skipif(patch_level() < 3,
                       reason="U-Boot and Linux need pyned's engine (patch level 3): "
                              "'pyned unicorn build'"),
]

PROMPT = "\n=> "
BOOT_FROM_DISK = "virtio scan; virtio read ${scriptaddr} 0 1; source ${scriptaddr}"


class Console:
    """A guest console read in order: each expect starts after the previous match."""

    def __init__(self, b: Booted, name: str) -> None:
        self.b, self.name = b, name
        self.ch = b.channel(name)
        self.pos = 0

    def expect(self, pattern: str, timeout: float = 60) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            # A console whose VM restarts is briefly dead: keep waiting.
            m, pos = self.ch.expect(pattern, max(0.1, deadline - time.monotonic()), self.pos)
            if m is not None:
                self.pos = pos
                return m
            if time.monotonic() >= deadline:
                raise AssertionError(f"{self.name}: no {pattern!r} within {timeout}s; "
                                     f"got:\n{self.ch.text_since(self.pos)[-3000:]}")
            time.sleep(0.05)

    def type(self, line: str, until: str | None = PROMPT, timeout: float = 60) -> str:
        start = self.pos
        assert self.ch.send(line.encode() + b"\n") > 0
        if until is not None:
            self.expect(re.escape(until), timeout)
        return self.ch.text_since(start)

    def stop_autoboot(self) -> None:
        self.expect("Hit any key to stop autoboot")
        self.ch.send(b" ")
        self.expect(re.escape(PROMPT))


@pytest.mark.parametrize("dtb", ["virt-qemu.dtb", "virt-qemu-gicv2.dtb"])
def test_prompt_virtio_info_and_booti_to_the_initramfs(dtb):
    disk = guests.find().boot_disk()
    src = ('local vmm = require "vmm"\n'
           'local disks = { vda = { file = "rom/uboot-disk.img" } }\n'
           'vmm.start_virtio_block(disks)\n'
           f'vmm.start_vm{{ id = 1, mem = 256, ram_base = 0x40000000, fdt = "rom/{dtb}", '
           'firmware = "rom/u-boot.bin", ext_caps = { blk = disks.vda }, '
           'bootargs = \'console=ttyAMA0 quiet cryptomgr.notests pyned.run="cat /proc/interrupts; '
           'poweroff -f"\' }\n')
    with Booted(source=src) as b:
        con = Console(b, "vm1")
        con.expect(r"U-Boot 2\d{3}\.\d\d")
        con.expect(r"Flash: 64 MiB")
        con.stop_autoboot()
        con.type("virtio scan")
        info = con.type("virtio info")
        assert "VirtIO Block Device" in info
        assert f"({disk.size // 512} x 512)" in info
        *loads, booti = disk.commands(kernel_addr="0x40400000", initrd_addr="0x48000000")
        for line in loads:
            out = con.type(line)
            assert "OK" in out or "current device" in out, out
        con.type(booti, until=None)
        con.expect("Starting kernel")
        con.expect(re.escape(MARKER) + r" \(6\.", timeout=180)
        # The GIC U-Boot left alone drives Linux's timer (and the UART).
        gic = "GICv3" if dtb == "virt-qemu.dtb" else "GIC-0"
        con.expect(rf"\d+ +{gic} +27 Level +arch_timer", timeout=60)
        assert b.wait(60) == 0
    assert "vm1 exited with 0x0 (PSCI SYSTEM_OFF)" in b.text("ned")


def test_saved_environment_survives_reset_and_autoboots_linux(tmp_path):
    # The example itself: its nvram file lands beside the script.
    script = tmp_path / "uboot.lua"
    shutil.copy(PROJECT_ROOT / "lua" / "examples" / "uboot.lua", script)
    guests.find().boot_disk()
    with Booted(script) as b:
        con = Console(b, "vm1")
        con.expect(r"Loading Environment from Flash\.\.\. \*\*\* Warning - bad CRC")
        con.stop_autoboot()
        con.type(f"setenv bootcmd '{BOOT_FROM_DISK}'")
        assert "OK" in con.type("saveenv", timeout=120)
        con.type("reset", until=None)
        # The exit handler starts the VM again; U-Boot finds its environment
        # and boots Linux by itself.
        con.expect(r"Loading Environment from Flash\.\.\. OK", timeout=60)
        con.expect("pyned boot disk: loading Linux", timeout=60)
        con.expect(re.escape(MARKER), timeout=180)
        con.expect(r"# ", timeout=60)
        con.type("poweroff -f", until=None)
        assert b.wait(60) == 0
    ned = b.text("ned")
    assert "vm1 exited with 0x66" in ned and "vm1 ended with 0" in ned
    env = (tmp_path / "uboot-env.img").read_bytes()
    assert b"bootcmd=" + BOOT_FROM_DISK.encode() in env
