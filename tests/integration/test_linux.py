"""Debian's arm64 Linux and busybox on the R82 board: the truth test of the VMM.

Needs the guests ``pyned images fetch`` puts in the cache, and pyned's engine
(level 3: Unicorn alone runs stale code and misses stops; ``pyned unicorn
build``). Each test boots with ``quiet cryptomgr.notests`` and drives the
initramfs through ``pyned.run`` on the kernel command line.
"""

import re

import pytest

from pyned.cpu.engine import patch_level
from pyned.images import guests
from pyned.images.initramfs import MARKER
from pyned.testing import Booted

pytestmark = [
    pytest.mark.linux, pytest.mark.boot, pytest.mark.slow,
    pytest.mark.skipif(guests.find() is None,
                       reason="no real guests in the cache: run 'pyned images fetch'"),
    pytest.mark.skipif(patch_level() < 3,
                       reason="Linux needs pyned's engine (patch level 3): 'pyned unicorn build'"),
]

PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'
ARGS = "quiet cryptomgr.notests"


def run(src: str, timeout: float = 240) -> tuple[int, Booted]:
    """Run a script to its end; a Linux boot takes seconds (two vCPUs about twice as long)."""
    with Booted(source=src) as b:
        status = b.wait(timeout)
    return status, b


def linux_vm(id_: int, fdt: str, console: str, run: str, extra: str = "") -> str:
    return (f'vmm.start_vm{{ id = {id_}, mem = 256, kernel = "rom/Image", '
            f'rd = "rom/initrd.cpio.gz", fdt = "rom/{fdt}", '
            f"bootargs = 'console={console} {ARGS} pyned.run=\"{run}\"'{extra} }}\n")


def test_gicv3_pl011_boot_to_the_initramfs_and_power_off():
    src = PRE + linux_vm(1, "virt-r82.dtb", "ttyAMA0", "echo cpus=$(nproc); poweroff -f")
    status, b = run(src)
    assert status == 0
    vm1 = b.text("vm1")
    assert f"{MARKER} (6.1" in vm1 and "cpus=1" in vm1
    assert "vm1 exited with 0x0 (PSCI SYSTEM_OFF)" in b.text("ned")


def test_gicv2_on_the_virtio_console_and_reboot_exit_code():
    cmds = "cat /proc/consoles; reboot -f"
    # uvmm's -m switches the board's virtio console slot on.
    src = PRE + linux_vm(1, "virt-r82-gicv2.dtb", "hvc0", cmds,
                         ', ext_args = { "-m/l4vmm@a0000000/virtio@1000/status=okay" }')
    status, b = run(src)
    assert status == 0x66
    vm1 = b.text("vm1")
    assert "hvc0" in vm1 and MARKER in vm1


@pytest.mark.parametrize("fdt", ["virt-r82-gicv2-2cpu.dtb", "virt-r82-2cpu.dtb"])
def test_two_vcpus_boot_and_power_off(fdt):
    src = PRE + linux_vm(1, fdt, "ttyAMA0", "echo cpus=$(nproc); poweroff -f")
    status, b = run(src, timeout=60)
    assert status == 0, b.text("vm1")
    assert "(6.1" in b.text("vm1") and "2 cpu)" in b.text("vm1") and "cpus=2" in b.text("vm1")


def test_two_vcpus_beside_a_higher_priority_rtos_on_one_of_their_cores():
    # Linux's cpu0 shares core 0 with the rtos's 1 kHz tick; while the rtos
    # runs there, Linux's cpu1 goes on alone on core 1.
    src = PRE + ('local rtos = vmm.start_vm{ id = 2, kernel = "rom/rtos.elf", '
                 'fdt = "rom/virt-r82.dtb", prio = 20, cpus = 0x1 }\n')
    src += "local vm1 = " + linux_vm(1, "virt-r82-2cpu.dtb", "ttyAMA0",
                                     "echo cpus=$(nproc); poweroff -f", ", prio = 1, cpus = 0x3")
    src += "vm1:exit_handler(function(code) rtos:kill() end)\n"
    status, b = run(src, timeout=90)
    assert status == 0 and "cpus=2" in b.text("vm1"), b.text("vm1")
    ticked = [int(t) for t in re.findall(r"rtos: tick=(\d+) ", b.text("vm2"))]
    assert len(ticked) >= 2 and ticked == sorted(ticked)   # one line a second while Linux ran


def test_a_file_written_to_the_disk_is_there_after_reboot(tmp_path):
    import shutil

    from pyned.services.rom import PROJECT_ROOT

    script = tmp_path / "linux.lua"
    shutil.copy(PROJECT_ROOT / "lua" / "examples" / "linux.lua", script)
    write = ("mke2fs -q /dev/vda && mount -t ext4 /dev/vda /mnt && echo kept-$((6*7)) > /mnt/f"
             " && umount /mnt && reboot -f")
    read = "mount -t ext4 /dev/vda /mnt && cat /mnt/f && poweroff -f"
    with Booted(script, args=["ttyAMA0", write, read]) as b:
        assert b.wait(180) == 0
    assert "kept-42" in b.text("vm1")   # one console history across the restart
    ned = b.text("ned")
    assert "vm1 exited with 0x66" in ned and "vm1 ended with 0" in ned


def test_two_linux_vms_ping_each_other_through_the_switch():
    src = PRE + 'local net = { p1 = 1, p2 = 1 }\nvmm.start_virtio_switch_tbl{ ports = net }\n'
    src += "local vm2 = " + linux_vm(2, "virt-r82-virtio.dtb", "ttyAMA0",
                                     "ifconfig eth0 10.0.0.2 up", ", net = net.p2, cpus = 0x2")
    src += "local vm1 = " + linux_vm(
        1, "virt-r82-virtio.dtb", "ttyAMA0",
        "ifconfig eth0 10.0.0.1 up && ping -c 2 -w 20 10.0.0.2; poweroff -f",
        ", net = net.p1, cpus = 0x1")
    src += 'vm1:exit_handler(function(code) vm2:kill() end)\n'
    status, b = run(src)
    assert status == 0
    assert "2 packets transmitted, 2 packets received" in b.text("vm1")


def test_typed_input_reaches_the_shell_on_the_console():
    src = PRE + linux_vm(1, "virt-r82-virtio.dtb", "ttyAMA0", "echo shell-next")
    with Booted(source=src) as b:
        b.expect("vm1", r"shell-next", timeout=120)
        b.expect("vm1", r"pyned:/# ", timeout=30)
        ch = b.channel("vm1")
        assert ch.send(b"echo typed-$((6*7))\n") > 0
        b.expect("vm1", r"typed-42", timeout=30)
        ch.send(b"poweroff -f\n")
        assert b.wait(60) == 0


def test_the_monitor_client_connects_a_terminal_to_the_linux_shell(tmp_path):
    """A person at ``pyned monitor``: connect vm1, use the shell, Ctrl-E . back, quit."""
    import os
    import pty
    import select
    import subprocess
    import sys
    import time

    src = PRE + linux_vm(1, "virt-r82.dtb", "ttyAMA0", "echo shell-next")
    with Booted(source=src) as b:
        b.expect("vm1", "shell-next", 120)
        leader, follower = pty.openpty()
        client = subprocess.Popen(
            [sys.executable, "-m", "pyned", "monitor", f"unix:{b.monitor_path()}"],
            stdin=follower, stdout=follower, stderr=follower, close_fds=True,
            env=dict(os.environ, HOME=str(tmp_path), TERM="dumb"))
        os.close(follower)
        seen = bytearray()

        def until(what: bytes, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while what not in seen:
                left = deadline - time.monotonic()
                assert left > 0, f"no {what!r} on the terminal; got {bytes(seen)!r}"
                if select.select([leader], [], [], left)[0]:
                    seen.extend(os.read(leader, 65536))
            del seen[:seen.index(what) + len(what)]

        try:
            until(b"pyned> ")
            os.write(leader, b"connect vm1\r")
            until(b"[connected to vm1")
            os.write(leader, b"\r")                       # a fresh shell prompt
            until(b"# ")
            os.write(leader, b"echo $((6*7))-$(uname -m)\r")
            until(b"42-aarch64")
            os.write(leader, b"cd /proc && ls -d 1 self\r")  # the shell keeps its state
            until(b"self")
            os.write(leader, b"\x05.")
            until(b"[disconnected from vm1]")
            until(b"pyned> ")
            os.write(leader, b"quit\r")
            assert client.wait(10) == 0
        finally:
            if client.poll() is None:
                client.kill()
            os.close(leader)
        assert "42-aarch64" in b.text("vm1")
