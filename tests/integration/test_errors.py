"""Bad input ends in one clear line naming the file, line or key, and a non-zero status."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyned.errors import PynedError
from pyned.testing import run_script

ROOT = Path(__file__).resolve().parents[2]
PRE = 'local vmm = require "vmm"\n'


def error_of(src, **kw):
    status, b, err = run_script(src, **kw)
    assert isinstance(err, PynedError), f"expected an error, got status {status}"
    msg = str(err)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_lua_syntax_error_names_file_and_line():
    msg = error_of("local x = \nprint((")
    assert msg.startswith(str(Path(msg.split(":")[0]))) and "system.lua:2:" in msg


def test_lua_runtime_error_names_line():
    assert "system.lua:3: attempt to call a nil value" in error_of("\n\nnope()\n")


def test_unknown_start_vm_key():
    msg = error_of(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb", memory = 16 }')
    assert msg == "{}:2: start_vm: unknown option 'memory'".format(msg.split(":")[0])


def test_wrong_option_type():
    assert "option 'bootargs' must be a string" in error_of(
        PRE + 'vmm.start_vm{ id = 1, fdt = "rom/virt-r82.dtb", bootargs = 5 }')


def test_missing_rom_file():
    msg = error_of(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/nothere.elf", fdt = "rom/virt-r82.dtb" }')
    assert "system.lua:2: rom/nothere.elf: not found in the ROM path" in msg


@pytest.mark.parametrize("name,content,expect", [
    ("bad.elf", b"\x7fELF\x02\x01\x01" + bytes(20), "bad.elf: malformed ELF"),
    ("bad.dtb", b"\xd0\x0d\xfe\xed" + bytes(12), "bad.dtb: malformed device tree blob"),
    ("junk.dtb", b"hello", "junk.dtb: not a device tree blob"),
    ("bad.dts", b"/dts-v1/;\n/ { x = <1 ; };\n", "bad.dts:2"),
])
def test_malformed_images(tmp_path, name, content, expect):
    (tmp_path / name).write_bytes(content)
    kernel = f"rom/{name}" if name.endswith(".elf") else "rom/hello.elf"
    fdt = f"rom/{name}" if not name.endswith(".elf") else "rom/virt-r82.dtb"
    msg = error_of(PRE + f'vmm.start_vm{{ id = 1, kernel = "{kernel}", fdt = "{fdt}" }}',
                   rom_dirs=[tmp_path])
    assert expect in msg


def test_kernel_that_does_not_fit(tmp_path):
    big = bytearray(64)
    big[0x38:0x3C] = b"ARM\x64"
    big[16:24] = (8 << 20).to_bytes(8, "little")  # image_size 8 MiB
    (tmp_path / "Image").write_bytes(bytes(big))
    msg = error_of(PRE + 'vmm.start_vm{ id = 1, mem = 4, kernel = "rom/Image", fdt = "rom/virt-r82.dtb" }',
                   rom_dirs=[tmp_path])
    assert "Image: needs" in msg and "give more mem" in msg


def test_ram_that_cannot_exist():
    msg = error_of(PRE + 'vmm.start_vm{ id = 1, mem = 4096, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb" }')
    assert "no free 4096 MiB block" in msg
    msg = error_of(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb", ram_base = 0 }')
    assert "overlaps reserved" in msg


def run_cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "pyned", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def test_cli_error_is_one_line_and_debug_shows_traceback(tmp_path):
    script = tmp_path / "bad.lua"
    script.write_text(PRE + 'vmm.start_vm{ id = 1, colour = "red" }\n')
    r = run_cli("boot", str(script))
    assert r.returncode == 1
    assert r.stderr.strip() == f"pyned: {script}:2: start_vm: unknown option 'colour'"
    r = run_cli("boot", "--debug", str(script))
    assert r.returncode == 1 and "Traceback" in r.stderr


def test_cli_boots_without_core_reservations_or_timer_advance(tmp_path):
    script = tmp_path / "rtos.lua"
    script.write_text(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb", '
                      'bootargs = "seconds=1" }\n')
    r = run_cli("boot", "--no-reserve", "--no-timer-advance", "--wait-and-exit", "--color=never",
                str(script))
    assert r.returncode == 0, r.stderr
    assert "rtos: done ticks=1000 spurious=0" in r.stdout


def test_cli_missing_script():
    r = run_cli("boot", "does-not-exist.lua")
    assert r.returncode == 1 and "does-not-exist.lua: no such script" in r.stderr
