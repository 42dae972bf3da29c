"""Boot our own guests from Lua scripts, in-process, on the real emulated core."""

import pytest

from pyned.errors import PynedError
from pyned.ned.runtime import ExitMode
from pyned.testing import Booted, run_script

pytestmark = pytest.mark.boot

HELLO = 'vmm.start_vm{ id = %d, mem = 16, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb"%s }\n'
PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'


def test_hello_boots_prints_and_powers_off():
    with Booted(source=PRE + HELLO % (1, ', bootargs = "console=ttyAMA0"')) as b:
        b.expect("vm1", r"hello: powering off")
        assert b.wait() == 0
        text = b.text("vm1")
    assert "hello: EL1 MIDR=0x410fd150 MPIDR=0x80000000" in text
    assert "hello: bootargs: console=ttyAMA0" in text
    assert "hello: also via hvc print" in text
    assert "vm1     | hello: pyned guest up" in b.output.data.decode()


def test_empty_bootargs_are_an_empty_command_line():
    # With uvmm's short option, "-c" and nothing after it took the next argument
    # (the kernel) as the command line.
    with Booted(source=PRE + 'vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", '
                'fdt = "rom/virt-r82.dtb", bootargs = "" }\n') as b:
        b.expect("vm1", "rtos: started")
        dt = b.system.guests[1].vm.dt
        assert dt.raw(dt.node("/chosen"), "bootargs") == b"\0"


def test_exit_code_through_syscon_is_the_status():
    status, b, err = run_script(PRE + HELLO % (1, ', bootargs = "exit=42"'))
    assert err is None and status == 42
    assert "hello: exit 42 via syscon" in b.text("vm1")


@pytest.mark.parametrize("ram", ["", ", ram_base = 0x4000000"])
def test_reboot_exit_code_and_restart_from_exit_handler(ram):
    # With a fixed RAM base the successor needs the very memory its
    # predecessor had: it is free once the predecessor's task has ended.
    src = PRE + '''
local n = 0
local function start()
  n = n + 1
  local kernel = n == 1 and "rom/reboot.elf" or "rom/hello.elf"
  vmm.start_vm{ id = 1, kernel = kernel, fdt = "rom/virt-r82.dtb", bootargs = "run" .. n%s }
    :exit_handler(function(code)
      print("vm1 exit " .. tostring(code))
      if code == 0x66 then start() end
    end)
end
start()
''' % ram
    status, b, err = run_script(src)
    assert err is None and status == 0
    ned = b.text("ned")
    assert "vm1 exit 102" in ned and "vm1 exit 0" in ned
    vm1 = b.text("vm1")  # one console history across the restart
    assert vm1.index("reboot: resetting") < vm1.index("hello: bootargs: run2")


@pytest.mark.parametrize("mode,cause", [
    ("s2", r"stage-2 fault: read of 4 bytes .* far=0x80000000"),
    ("udf", r"undefined with no vector table .* esr=0x02000000"),
    ("store", r"stage-2 fault: write of 8 bytes .* far=0x7ff00000"),
    ("jump", r"instruction fetch .* pc=0x7fe00000"),
])
def test_crash_is_contained_and_reported(mode, cause):
    # halt: uvmm's default fault mode (ignore) would let s2 and store go on
    src = PRE + f'''
local crash = vmm.start_vm{{ id = 1, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb",
                            bootargs = "crash={mode}", ext_args = {{ "--fault-mode=halt" }} }}
local code = crash:wait()
print("crash code " .. tostring(code))
local ok = vmm.start_vm{{ id = 2, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb" }}
print("hello code " .. tostring(ok:wait()))
'''
    status, b, err = run_script(src)
    assert err is None
    vm1 = b.text("vm1")
    assert "VM entered a fatal state" in vm1
    import re
    assert re.search(cause, vm1), vm1
    assert "crash: still alive" not in vm1
    assert "crash code 1" in b.text("ned") and "hello code 0" in b.text("ned")


def test_two_vms_of_one_image_run_side_by_side_in_separate_ram():
    src = PRE + HELLO % (1, "") + HELLO % (2, "")
    with Booted(source=src) as b:
        d1 = b.expect("vm1", r"dtb at 0x[0-9a-f]+")
        d2 = b.expect("vm2", r"dtb at 0x[0-9a-f]+")
        assert b.wait() == 0
    assert d1 != d2


def test_task_api_state_exit_code_kill_and_handler():
    src = PRE + '''
local t = vmm.start_vm{ id = 1, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb",
                        bootargs = "crash=none-such" }
print("state " .. t:state())
local code = t:wait()
print("wait " .. tostring(code) .. " again " .. tostring(t:wait()) .. " state " .. tostring(t:state()))
local spin = vmm.start_vm{ id = 2, kernel = "rom/hcall.elf", fdt = "rom/virt-r82.dtb",
                           bootargs = "n=100000000" }
spin:exit_handler(function(c) print("handler " .. tostring(c)) end)
local ok, err = pcall(function() spin:exit_handler(function() end) end)
print("second handler: " .. tostring(err))
L4.msleep(50)
print("kill " .. tostring(spin:kill()))
'''
    status, b, err = run_script(src)
    assert err is None
    ned = b.text("ned")
    assert "state running" in ned or "state initializing" in ned
    assert "wait 0 again nil state nil" in ned
    assert "exit_handler callback already registered" in ned
    assert "kill killed" in ned and "handler nil" in ned


def test_arg_table_and_execute_statements():
    src = 'print("args " .. arg[0]:match("system.lua$") .. " " .. arg[1] .. " " .. #arg .. " " .. X)\n'
    status, b, err = run_script(src, args=["one", "two"], execute=["X = 7"])
    assert err is None and status == 0
    assert "args system.lua one 2 7" in b.text("ned")


def test_exit_mode_ends_right_after_the_script():
    src = PRE + 'vmm.start_vm{ id = 1, kernel = "rom/hcall.elf", fdt = "rom/virt-r82.dtb", bootargs = "n=100000000" }'
    status, b, err = run_script(src, mode=ExitMode.EXIT)
    assert err is None and status == 0


def test_same_ram_base_twice_is_an_error_at_the_script_line():
    src = PRE + '''vmm.start_vm{ id = 1, kernel = "rom/hcall.elf", fdt = "rom/virt-r82.dtb", ram_base = 0x4000000, bootargs = "n=100000000" }
vmm.start_vm{ id = 2, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb", ram_base = 0x4000000 }
'''
    status, b, err = run_script(src)
    assert isinstance(err, PynedError)
    assert "system.lua:4:" in str(err) and "overlaps" in str(err)
