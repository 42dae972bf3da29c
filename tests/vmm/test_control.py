"""Controlling a running VM: pause/resume, fault injection, reset, and the journal."""

import re
import time

import pytest

from pyned.testing import NEEDS_EXACT_STOPS, Booted
from pyned.vmm.vm import Injection

pytestmark = pytest.mark.boot
PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'
RTOS = PRE + ('vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb", '
              'bootargs = "seconds=30" }\n')


def guest(b, name):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        for g in list(b.system.guests.values()):
            if g.name == name:
                return g
        time.sleep(0.01)
    raise AssertionError(f"no guest {name}")


def tick_count(text):
    return len(re.findall(r"rtos: tick=", text))


@NEEDS_EXACT_STOPS
def test_pause_stops_the_guest_and_resume_continues_it():
    with Booted(source=RTOS) as b:
        b.expect("vm1", r"rtos: tick=1000 ")
        g = guest(b, "vm1")
        g.vm.pause()
        assert not g.vm._executing
        before = g.vm.threads[0].vcpu.registers()
        n = tick_count(b.text("vm1"))
        time.sleep(1.3)
        assert tick_count(b.text("vm1")) == n      # no second passed for the guest's output
        assert g.vm.threads[0].vcpu.registers()["pc"] == before["pc"]
        g.vm.resume()
        b.expect("vm1", rf"rtos: tick={(n + 1) * 1000} ", timeout=5)


@NEEDS_EXACT_STOPS
@pytest.mark.parametrize("kind,esr", [(Injection.DATA_ABORT, "0x96000410"),
                                      (Injection.UNDEFINED, "0x2000000")])
def test_injected_synchronous_fault_reaches_the_guests_vector(kind, esr):
    with Booted(source=RTOS) as b:
        b.expect("vm1", r"rtos: tick=1000 ")
        guest(b, "vm1").vm.inject(kind)
        b.expect("vm1", rf"unexpected exception ESR={esr}")
        assert b.wait() == 0       # the guest's own handler powers off
        events = [e.event for e in b.system.journal.entries(vm="vm1")]
        assert events == ["start", "shutdown"]


def test_injected_fault_without_a_vector_table_halts_the_vm_with_a_report():
    src = PRE + ('vmm.start_vm{ id = 1, kernel = "rom/busy.elf", fdt = "rom/virt-r82.dtb", '
                 'bootargs = "seconds=30" }\n')
    with Booted(source=src) as b:
        b.expect("vm1", r"busy: ")
        guest(b, "vm1").vm.inject(Injection.DATA_ABORT)
        b.expect("vm1", r"injected data-abort with no vector table")
        assert b.wait() == 1
        crash = b.system.journal.entries(vm="vm1", events=("crash",))
        assert len(crash) == 1 and crash[0].esr == 0x96000410 and crash[0].code == 1
        assert any("busy" in line for line in crash[0].console)


def test_serror_waits_while_masked():
    # rtos runs with PSTATE.A masked (boot state 0x3c5, never cleared): the
    # SError stays pending and the guest goes on.
    with Booted(source=RTOS) as b:
        b.expect("vm1", r"rtos: tick=1000 ")
        g = guest(b, "vm1")
        g.vm.inject(Injection.SERROR)
        b.expect("vm1", r"rtos: tick=2000 ", timeout=5)
        assert g.vm.threads[0].serror_pending
        assert "unexpected" not in b.text("vm1")


def test_hang_stops_progress_until_reset():
    with Booted(source=RTOS) as b:
        b.expect("vm1", r"rtos: tick=1000 ")
        g = guest(b, "vm1")
        g.vm.inject(Injection.HANG)
        time.sleep(0.1)
        n = tick_count(b.text("vm1"))
        time.sleep(1.2)
        assert tick_count(b.text("vm1")) == n and g.task.alive
        g.reset("hung")
        b.expect("vm1", r"(?s)rtos: tick=1000 .*rtos: tick=1000 ", timeout=5)
        assert g.restarts == 1 and g.task.alive


def test_reset_starts_a_fresh_vm_with_zeroed_ram_and_keeps_the_task():
    with Booted(source=RTOS) as b:
        b.expect("vm1", r"rtos: tick=1000 ")
        g = guest(b, "vm1")
        old = g.vm
        ram = old.memory.regions[0]
        marker = b"left over from the first run"
        old.memory.write(ram.range.base + ram.range.size // 2, marker)
        g.reset()
        b.expect("vm1", r"(?s)rtos: tick=1000 .*rtos: tick=1000 ", timeout=5)
        assert g.vm is not old and g.restarts == 1 and g.task.alive
        assert marker not in g.vm.memory.read(ram.range.base, ram.range.size)
        events = [(e.event, e.restarts) for e in b.system.journal.entries(vm="vm1")]
        assert events == [("start", 0), ("restart", 1)]
        g.task.kill()
        assert b.wait() == 0
        assert b.system.journal.entries(vm="vm1")[-1].event == "killed"


def test_stopping_the_cores_takes_a_computing_vcpu_out_of_the_emulator():
    # Scheduler.stop's promise: a core thread left inside Unicorn when the
    # interpreter exits crashes the process.
    with Booted(source=PRE + 'vmm.start_vm{ id = 1, kernel = "rom/busy.elf", '
                             'fdt = "rom/virt-r82.dtb" }\n') as b:
        b.expect("vm1", "busy: started")
        b.system.scheduler.stop(wait_s=2.0)
        assert not any(c._thread.is_alive() for c in b.system.scheduler.cores)
