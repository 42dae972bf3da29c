"""Firmware booted from CFI flash (start_vm's firmware and nvram) on the real emulated core.

The firmware here is hand-encoded A64 (no cross compiler needed); U-Boot
itself is in test_uboot.py.
"""

import struct

import pytest

from pyned.errors import PynedError
from pyned.services.rom import PROJECT_ROOT
from pyned.testing import Booted, run_script

pytestmark = pytest.mark.boot

PRE = 'local vmm = require "vmm"\n'

# Runs in place from flash bank 0 and prints a letter per check on the PL011:
# lower case when it passed.
XIP = [
    0xD2800001,  # mov  x1, #0                 flash bank 0
    0xD2A12009,  # mov  x9, #0x9000000         PL011 DR
    0x52801302,  # mov  w2, #0x98
    0xB9015422,  # str  w2, [x1, #0x154]       CFI query: the bank becomes MMIO in this store
    0xB9404023,  # ldr  w3, [x1, #0x40]        same block: 'Q' from both x16 chips
    0x52801FE2,  # mov  w2, #0xff
    0xB9000022,  # str  w2, [x1]               read array (the window stays MMIO)
    0xB9400024,  # ldr  w4, [x1]               the first instruction word, through the device
    0x52800A25,  # mov  w5, #0x51
    0x72A00A25,  # movk w5, #0x51, lsl #16
    0x6B05007F,  # cmp  w3, w5
    0x52800826,  # mov  w6, #'A'
    0x52800C27,  # mov  w7, #'a'
    0x1A8600E8,  # csel w8, w7, w6, eq
    0x39000128,  # strb w8, [x9]
    0x18000525,  # ldr  w5, =0xd2800001        (a literal read through the device)
    0x6B05009F,  # cmp  w4, w5
    0x52800846,  # mov  w6, #'B'
    0x52800C47,  # mov  w7, #'b'
    0x1A8600E8,  # csel w8, w7, w6, eq
    0x39000128,  # strb w8, [x9]
    0x14000001,  # b    next                   a fetch from the window: memory again
    0xD2A0800A,  # mov  x10, #0x4000000        flash bank 1
    0x52800802,  # mov  w2, #0x40
    0xB9000142,  # str  w2, [x10]              word program
    0x18000405,  # ldr  w5, =0x12345678
    0xB9010145,  # str  w5, [x10, #0x100]
    0xB9400146,  # ldr  w6, [x10]              status: ready, both chips
    0x52801FE2,  # mov  w2, #0xff
    0xB9000142,  # str  w2, [x10]
    0xB9410147,  # ldr  w7, [x10, #0x100]
    0x5280100B,  # mov  w11, #0x80
    0x72A0100B,  # movk w11, #0x80, lsl #16
    0x6B0B00DF,  # cmp  w6, w11
    0x7A4500E0,  # ccmp w7, w5, #0, eq
    0x52800866,  # mov  w6, #'C'
    0x52800C67,  # mov  w7, #'c'
    0x1A8600E8,  # csel w8, w7, w6, eq
    0x39000128,  # strb w8, [x9]
    0x52800402,  # mov  w2, #0x20
    0xB9010142,  # str  w2, [x10, #0x100]      block erase
    0x52801A02,  # mov  w2, #0xd0
    0xB9010142,  # str  w2, [x10, #0x100]      confirm
    0x52801FE2,  # mov  w2, #0xff
    0xB9000142,  # str  w2, [x10]
    0xB9410147,  # ldr  w7, [x10, #0x100]
    0x310004FF,  # cmn  w7, #1                 erased: all ones
    0x52800886,  # mov  w6, #'D'
    0x52800C87,  # mov  w7, #'d'
    0x1A8600E8,  # csel w8, w7, w6, eq
    0x39000128,  # strb w8, [x9]
    0x52800148,  # mov  w8, #'\n'
    0x39000128,  # strb w8, [x9]
    0x580000A0,  # ldr  x0, =0x84000008        PSCI SYSTEM_OFF
    0xD4000002,  # hvc  #0
    0x14000000,  # b    .
    0xD2800001, 0x12345678, 0x84000008, 0x00000000,   # literal pool
]

# Reads bank 1 20000 times in read-array mode after a command (firmware reading
# its variables): the bank becomes memory again before the loop ends.
LONG_READ = [
    0xD2A0800A,  # mov  x10, #0x4000000        flash bank 1
    0x52801202,  # mov  w2, #0x90
    0xB9000142,  # str  w2, [x10]              read identifier: the bank becomes MMIO
    0x52801FE2,  # mov  w2, #0xff
    0xB9000142,  # str  w2, [x10]              read array, served by the device
    0x5289C40C,  # mov  w12, #20000
    0xB941014D,  # ldr  w13, [x10, #0x100]
    0x7100058C,  # subs w12, w12, #1
    0x54FFFFC1,  # b.ne the ldr
    0x58000060,  # ldr  x0, =0x84000008        PSCI SYSTEM_OFF
    0xD4000002,  # hvc  #0
    0x00000000, 0x84000008, 0x00000000,        # literal pool
]

# Puts the flash into read-status mode and jumps into it.
FETCH_IN_COMMAND_MODE = [
    0xD2800001,  # mov  x1, #0
    0x52800E02,  # mov  w2, #0x70              read status
    0xB9000022,  # str  w2, [x1]
    0x14000001,  # b    next                   a fetch from the flash, which reads status
    0xD4000002,  # hvc  #0
]


# Two vCPUs: cpu0 puts the flash into query mode and starts cpu1, which reads
# the query through its own engine's mapping of the flash (memory until then).
# The code runs from RAM, as the ramdisk at the top of a 16 MiB RAM at
# 0x40000000 (page-aligned: 0x40fff000); the flash only jumps there.
JUMP_TO_RAMDISK = [0xD2A81FE1, 0xF29E0001, 0xD61F0020]   # mov x1, #0x40fff000; br x1
SMP_RAM = [
    0xD2800002,  # mov  x2, #0
    0x52801303,  # mov  w3, #0x98
    0xB9000043,  # str  w3, [x2]               CFI query: cpu0's window becomes MMIO
    0x580002E0,  # ldr  x0, =0xc4000003        PSCI CPU_ON
    0xD2800021,  # mov  x1, #1                 cpu@1
    0x100000A2,  # adr  x2, cpu1
    0xD2800003,  # mov  x3, #0
    0xD4000002,  # hvc  #0
    0xD503207F,  # wfi
    0x17FFFFFF,  # b    wfi
    0xD2800002,  # cpu1: mov x2, #0
    0xB9404044,  # ldr  w4, [x2, #0x40]        through cpu1's window
    0xD2A12009,  # mov  x9, #0x9000000
    0x52800A25,  # mov  w5, #0x51
    0x72A00A25,  # movk w5, #0x51, lsl #16
    0x6B05009F,  # cmp  w4, w5
    0x52800A26,  # mov  w6, #'Q'
    0x52800E27,  # mov  w7, #'q'
    0x1A8600E8,  # csel w8, w7, w6, eq
    0x39000128,  # strb w8, [x9]
    0x52800148,  # mov  w8, #'\n'
    0x39000128,  # strb w8, [x9]
    0x580000C0,  # ldr  x0, =0x84000008        PSCI SYSTEM_OFF
    0xD4000002,  # hvc  #0
    0x14000000,  # b    .
    0x00000000, 0xC4000003, 0x00000000, 0x84000008, 0x00000000,   # literal pool
]
SECOND_CPU = """
&{/cpus} {
	cpu@1 {
		device_type = "cpu";
		compatible = "arm,cortex-r82", "arm,armv8";
		reg = <0x1>;
		enable-method = "psci";
	};
};
"""


def firmware(tmp_path, words, name="fw.bin"):
    path = tmp_path / name
    path.write_bytes(struct.pack(f"<{len(words)}I", *words))
    return path


def vm(fw, extra=""):
    return (PRE + f'vmm.start_vm{{ id = 1, mem = 16, ram_base = 0x40000000, '
            f'fdt = "rom/virt-qemu.dtb", firmware = "{fw}"{extra} }}\n')


def test_firmware_runs_in_place_and_drives_the_flash(tmp_path):
    with Booted(source=vm(firmware(tmp_path, XIP))) as b:
        b.expect("vm1", r"\n", timeout=20)
        romd = next(iter(b.system.guests.values())).vm.romd
        assert b.wait() == 0
    assert b.text("vm1").strip() == "abcd"
    # Bank 0 became MMIO at the query and memory again at the branch; bank 1
    # was never memory-mapped again after its first command.
    assert [w.remaps for w in romd] == [2, 1]


def test_a_sibling_vcpu_sees_the_mode_another_one_set(tmp_path):
    dts = tmp_path / "virt-qemu-2cpu.dts"
    dts.write_text((PROJECT_ROOT / "dts" / "virt-qemu.dts").read_text() + SECOND_CPU)
    ram = firmware(tmp_path, SMP_RAM, "ram.bin")
    src = vm(firmware(tmp_path, JUMP_TO_RAMDISK), f', rd = "{ram}"').replace(
        "rom/virt-qemu.dtb", str(dts))
    with Booted(source=src) as b:
        assert b.wait() == 0
    assert b.text("vm1").strip() == "q"


def test_long_reads_in_read_array_mode_make_the_bank_memory_again(tmp_path):
    with Booted(source=vm(firmware(tmp_path, LONG_READ))) as b:
        romd = b.guest("vm1").vm.romd
        assert b.wait() == 0
    assert [w.remaps for w in romd] == [0, 2]


def test_nvram_file_keeps_what_the_guest_programs(tmp_path):
    # The erase confirm replaced by a read-array command: a broken sequence,
    # so the block keeps what was programmed and the erase check fails.
    words = list(XIP)
    words[XIP.index(0x52801A02)] = 0x52801FE2     # mov w2, #0xd0 -> mov w2, #0xff
    nvram = tmp_path / "vars.img"
    with Booted(source=vm(firmware(tmp_path, words), f', nvram = "{nvram}"')) as b:
        assert b.wait() == 0
    assert b.text("vm1").strip() == "abcD"
    data = nvram.read_bytes()
    assert len(data) == 64 << 20
    assert data[0x100:0x104] == struct.pack("<I", 0x12345678)
    assert data[:0x100] + data[0x104:] == b"\xff" * (len(data) - 4)


def test_fetch_from_flash_in_command_mode_halts_the_vm(tmp_path):
    with Booted(source=vm(firmware(tmp_path, FETCH_IN_COMMAND_MODE))) as b:
        assert b.wait() == 1
        crash = b.journal("vm1", "crash")[0]
    assert "instruction fetch from /flash@0 bank 0 at 0x10" in crash.cause
    assert crash.pc == 0x10


def test_firmware_bigger_than_the_bank(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * ((64 << 20) + 1))
    status, b, err = run_script(vm(big))
    assert isinstance(err, PynedError) and "does not fit the 64 MiB bank" in str(err)


@pytest.mark.parametrize("options, message", [
    ('fdt = "rom/virt-qemu.dtb", kernel = "rom/hello.elf"', "firmware and kernel exclude each other"),
    ('fdt = "rom/virt-r82.dtb"', "firmware needs a cfi-flash bank in the device tree, which has 0"),
    ('fdt = "rom/virt-r82.dtb", nvram = "x.img"', "nvram needs a second cfi-flash bank"),
])
def test_firmware_configuration_errors(tmp_path, options, message):
    fw = firmware(tmp_path, XIP)
    status, b, err = run_script(PRE + f'vmm.start_vm{{ id = 1, mem = 16, firmware = "{fw}", '
                                f'{options} }}\n')
    assert isinstance(err, PynedError), status
    assert message in str(err) and "\n" not in str(err)


def test_nvram_of_the_wrong_size_is_refused_and_left_alone(tmp_path):
    nvram = tmp_path / "vars.img"
    nvram.write_bytes(b"keep me")
    status, b, err = run_script(vm(firmware(tmp_path, XIP), f', nvram = "{nvram}"'))
    assert isinstance(err, PynedError)
    assert "has 7 bytes; a flash bank of this VM needs exactly 67108864" in str(err)
    assert nvram.read_bytes() == b"keep me"


def test_two_vms_cannot_share_an_nvram_file(tmp_path):
    fw = firmware(tmp_path, [0x14000000])      # b . (runs until killed)
    nvram = tmp_path / "vars.img"
    src = (PRE + f'local a = vmm.start_vm{{ id = 1, mem = 16, ram_base = 0x40000000, '
           f'fdt = "rom/virt-qemu.dtb", firmware = "{fw}", nvram = "{nvram}" }}\n'
           f'vmm.start_vm{{ id = 2, mem = 16, ram_base = 0x41000000, fdt = "rom/virt-qemu.dtb", '
           f'firmware = "{fw}", nvram = "{nvram}" }}\n')
    status, b, err = run_script(src)
    assert isinstance(err, PynedError) and "vars.img is in use by another VM" in str(err)
