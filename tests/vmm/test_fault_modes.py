"""uvmm's --fault-mode for accesses outside a VM's memory and devices, on real guests.

wdog.elf on the plain board finds no watchdog at 0xA0010000: its first access
(a read of W_IIDR) is unbacked. crash.elf jumps outside its memory.
"""

import re

import pytest

from pyned.testing import run_script

pytestmark = pytest.mark.boot
PRE = 'local vmm = require "vmm"\n'


def _run(kernel, bootargs, mode):
    args = "" if mode is None else f', ext_args = {{ "--fault-mode={mode}" }}'
    src = PRE + (f'local t = vmm.start_vm{{ id = 1, kernel = "rom/{kernel}", '
                 f'fdt = "rom/virt-r82.dtb", bootargs = "{bootargs}"{args} }}\n'
                 'print("code " .. tostring(t:wait()))\n')
    status, b, err = run_script(src)
    assert err is None
    return b.text("vm1"), b.text("ned"), b.system.journal.entries(vm="vm1")


def test_ignore_is_the_default_reads_zero_and_skips():
    text, ned, journal = _run("wdog.elf", "feed=0 seconds=1", None)
    assert "[uvmm] Invalid read from 0xa0010fcc, ip 0x" in text and "Ignoring..." in text
    # the load read 0 (uvmm's warning lands in the middle of the guest's line)
    assert re.search(r"W_IIDR=(\[uvmm\] Invalid read[^\n]*\n)?0x0\n", text), text
    assert "[uvmm] Invalid write to 0xa0010008" in text         # WOR, skipped
    assert "crash" not in [e.event for e in journal]


def test_ignore_cannot_skip_a_fetch():
    text, ned, journal = _run("crash.elf", "crash=jump", None)
    assert "instruction fetch outside the VM's memory" in text and "code 1" in ned
    assert journal[-1].event == "crash" and journal[-1].far == 0x7FE00000


def test_halt_ends_the_vm_with_a_report():
    text, ned, journal = _run("wdog.elf", "seconds=1", "halt")
    assert "VM entered a fatal state" in text and "far=0xa0010fcc" in text
    assert "code 1" in ned and journal[-1].event == "crash" and journal[-1].far == 0xA0010FCC


def test_inject_gives_the_guest_a_synchronous_external_abort():
    text, ned, journal = _run("wdog.elf", "seconds=1", "inject")
    # EC 0x25 (data abort, same EL), IL, DFSC 0x10; FAR the address; the guest's
    # own handler reports it and powers off.
    assert "wdog: unexpected exception ESR=0x96000010" in text and "FAR=0xa0010fcc" in text
    assert "code 0" in ned and journal[-1].event == "shutdown"


def test_inject_without_a_vector_table_halts():
    text, ned, journal = _run("crash.elf", "crash=s2", "inject")
    assert "injected abort for stage-2 fault: read of 4 bytes" in text
    assert "with no vector table" in text and "code 1" in ned
