"""VM lifecycle under pyned's control: fresh RAM, kills and resets between runs,
faults that crash one VM only, the watchdog and the no-progress detector, the
task API and journal from Lua, and the journal file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pyned.services.uvmm import Guest
from pyned.testing import NEEDS_EXACT_STOPS

pytestmark = pytest.mark.boot
PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'
ROOT = Path(__file__).resolve().parents[2]


def crash_vm(restart, bootargs="crash=udf", vm_id=1):
    return (f'vmm.start_vm{{ id = {vm_id}, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb", '
            f'bootargs = "{bootargs}", restart = {restart} }}\n')


def test_a_restarted_vm_finds_nothing_of_its_last_run(pyned_boot):
    b = pyned_boot(source=PRE + crash_vm('{ on = { "crash" }, max = 1 }'))
    b.wait_event("vm1", "gave-up")
    assert b.text("vm1").count("crash: RAM clean") == 2
    assert "marker of an earlier run" not in b.text("vm1")


def test_the_ram_check_sees_a_run_that_was_not_cleared(pyned_boot, monkeypatch):
    # Proof that the guest's check works: without the zeroing it finds its marker.
    monkeypatch.setattr(Guest, "_clear_ram", lambda self: None)
    b = pyned_boot(source=PRE + crash_vm('{ on = { "crash" }, max = 1 }'))
    b.wait_event("vm1", "gave-up")
    assert "crash: RAM holds a marker of an earlier run" in b.text("vm1")


def test_kill_during_backoff_ends_the_task_without_a_restart(pyned_boot):
    b = pyned_boot(source=PRE + crash_vm('{ on = { "crash" }, backoff_ms = 60000 }'))
    b.wait_event("vm1", "crash")
    g = b.guest("vm1")
    g.task.kill()
    assert g.task.killed and not g.task.alive
    assert [e.event for e in b.journal("vm1")] == ["start", "crash", "killed"]
    assert b.wait(5) == 0


def test_reset_during_backoff_restarts_at_once(pyned_boot):
    b = pyned_boot(source=PRE + crash_vm('{ on = { "crash" }, backoff_ms = 60000 }'))
    b.wait_event("vm1", "crash")
    b.reset("vm1")
    restart = b.wait_event("vm1", "restart", timeout=5)
    assert restart.cause == "test" and restart.restarts == 1
    b.wait_event("vm1", "crash", count=2, timeout=5)


def test_a_failing_device_model_crashes_its_vm_only(pyned_boot):
    b = pyned_boot(source=PRE + '''
vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb", bootargs = "hz=100",
              restart = { on = { "crash" }, max = 1 } }
vmm.start_vm{ id = 2, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb", bootargs = "hz=100" }
''')
    b.expect("vm1", "rtos: tick=100 ")
    b.expect("vm2", "rtos: tick=100 ")
    uart = next(d.device for d in b.guest("vm1").vm.devices if d.compatible == "arm,pl011")

    def broken(*_args):
        raise RuntimeError("model bug")

    uart.write = broken
    crash = b.wait_event("vm1", "crash", timeout=5)
    assert "device model /serial@9c090000 failed: RuntimeError: model bug" in crash.cause
    assert crash.code == 1
    before = b.text("vm2").count("rtos: tick=")
    b.wait_event("vm1", "restart")
    b.expect("vm1", r"(?s)rtos: started.*rtos: started.*rtos: tick=100 ")  # a fresh UART
    b.expect("vm2", rf"rtos: tick={(before + 1) * 100} ")
    assert not b.journal("vm2", "crash")


@NEEDS_EXACT_STOPS
def test_an_injected_hang_is_ended_by_the_detector(pyned_boot):
    b = pyned_boot(source=PRE + 'vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", '
                   'fdt = "rom/virt-r82.dtb", bootargs = "hz=100", hang_timeout = 0.5 }\n')
    b.expect("vm1", "rtos: tick=100 ")
    b.inject("vm1", "hang")
    crash = b.wait_event("vm1", "crash", timeout=10)
    assert crash.cause.startswith("hang: cpu0 made no progress for 0.5 s") and crash.code == 1
    assert crash.console[-1].startswith("rtos: tick=")


@NEEDS_EXACT_STOPS
def test_a_hung_guest_stops_feeding_its_watchdog(pyned_boot):
    b = pyned_boot(source=PRE + 'vmm.start_vm{ id = 1, kernel = "rom/wdog.elf", '
                   'fdt = "rom/virt-r82-wdt.dtb", bootargs = "period_ms=100" }\n')
    b.expect("vm1", "wdog: alive s=1 ")
    b.inject("vm1", "hang")
    ws0 = b.wait_event("vm1", "watchdog", timeout=5)
    crash = b.wait_event("vm1", "crash", timeout=5)
    assert crash.code == 0x66 and crash.cause.startswith("watchdog WS1")
    assert crash.time - ws0.time >= 0.09
    assert b.wait(5) == 0x66


def test_task_api_kill_reaps_and_handlers_see_nil(pyned_boot):
    b = pyned_boot(source=PRE + '''
local t = vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb" }
print("kill " .. tostring(t:kill()) .. " state " .. tostring(t:state())
      .. " code " .. tostring(t:exit_code()) .. " again " .. tostring(t:kill()))
print("late handler " .. tostring(t:exit_handler(function(c) print("handler " .. tostring(c)) end)))
local h = vmm.start_vm{ id = 2, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb" }
print("wait " .. tostring(h:wait()) .. " kill " .. tostring(h:kill()))
''')
    assert b.wait() == 0
    ned = b.text("ned")
    assert "kill killed state nil code nil again nil" in ned
    assert "handler nil" in ned and "late handler false" in ned
    assert "wait 0 kill nil" in ned


def test_on_callbacks_run_after_the_script_with_the_entry(pyned_boot):
    b = pyned_boot(source=PRE + '''
local t = vmm.start_vm{ id = 2, kernel = "rom/reboot.elf", fdt = "rom/virt-r82.dtb" }
local order = {}
t:on("reboot", function(e) order[#order + 1] = "reboot " .. e.code .. " " .. e.cause end)
 :on("exit", function(e) order[#order + 1] = "exit " .. e.code .. " " .. e.cause
   print(table.concat(order, "; ")) end)
L4.msleep(300)
print("during the script: " .. #order .. " " .. t:state())
''')
    assert b.wait() == 0x66
    ned = b.text("ned")
    assert "during the script: 0 zombie" in ned
    assert "reboot 102 PSCI SYSTEM_RESET; exit 102 PSCI SYSTEM_RESET" in ned


@pytest.mark.parametrize("call,message", [
    ('t:on("panic", print)', "on: unknown event 'panic'"),
    ('t:on("crash", 5)', "on: expects a function"),
    ('vmm.start_virtio_rng({ r1 = true }):on("crash", print)',
     "'crash' events come from VMs only"),
])
def test_on_errors_name_the_script_line(pyned_boot, call, message):
    b = pyned_boot(source=PRE + 'local t = vmm.start_vm{ id = 1, kernel = "rom/hello.elf", '
                   'fdt = "rom/virt-r82.dtb" }\n' + call + "\n")
    with pytest.raises(Exception, match=message) as info:
        b.wait()
    assert "system.lua:4:" in str(info.value)


def test_journal_from_lua_filters_by_vm_event_and_sequence(pyned_boot):
    b = pyned_boot(source=PRE + crash_vm('{ on = { "crash" }, max = 2 }') + '''
local t = vmm.start_vm{ id = 2, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb" }
t:wait()
L4.msleep(500)
local all = vmm.journal()
local crashes = vmm.journal{ vm = "vm1", event = "crash" }
local mine = t:journal()
local later = vmm.journal{ since = crashes[1].seq, event = { "crash", "restart" } }
print(string.format("all=%d crashes=%d mine=%s later_first=%s pc=%s", #all, #crashes,
      mine[#mine].event, later[1].event, crashes[1].pc ~= nil))
''')
    b.wait()
    assert "crashes=3 mine=shutdown later_first=restart pc=true" in b.text("ned")


def test_boot_writes_the_journal_file(tmp_path):
    script = tmp_path / "s.lua"
    script.write_text(PRE + crash_vm('{ on = { "crash" }, max = 1 }'))
    out = tmp_path / "journal.json"
    proc = subprocess.run([sys.executable, "-m", "pyned", "boot", "--color=never",
                           "--journal", str(out), str(script)], capture_output=True, text=True,
                          cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    data = json.loads(out.read_text())
    assert [e["event"] for e in data] == ["start", "crash", "restart", "crash", "gave-up"]
    crash = data[1]
    assert crash["vm"] == "vm1" and crash["esr"] == 0x02000000 and crash["code"] == 1
    assert crash["console"][-1] == "crash: executing udf" and crash["restarts"] == 0
