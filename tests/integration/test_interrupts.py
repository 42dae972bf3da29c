"""Interrupts, time and scheduling with our own guests: rtos, smp, busy."""

import re

import pytest

from pyned.testing import NEEDS_EXACT_STOPS, Booted, run_script

pytestmark = pytest.mark.boot
PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'



def ticks(text):
    return [tuple(int(x) for x in m) for m in re.findall(
        r"rtos: tick=(\d+) worst_late_us=(\d+) mean_late_us=(\d+) taskA=(\d+) taskB=(\d+)", text)]


@NEEDS_EXACT_STOPS
@pytest.mark.parametrize("advance", [True, False])
def test_rtos_ticks_at_1khz_through_gicv3_and_the_virtual_timer(advance):
    with Booted(source=PRE + 'vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", '
                'fdt = "rom/virt-r82.dtb", bootargs = "seconds=2" }\n', timer_advance=advance) as b:
        b.expect("vm1", "rtos: started")
        timer = next(iter(b.system.guests.values())).vm.threads[0].advance
        status = b.wait()
    text = b.text("vm1")
    assert status == 0, text
    lines = ticks(text)
    assert [t[0] for t in lines] == [1000, 2000], text
    # The guest counts a tick it takes before the deadline as spurious: the
    # interrupts delivered ahead of it (the rtos idles in wfi) never show early.
    assert "rtos: done ticks=2000 spurious=0" in text
    assert timer.early > 1000 if advance else timer.early == 0
    m = re.search(r"rtos: latency_us n=(\d+) p50=(\d+) p99=(\d+) max=(\d+)", text)
    n, p50, p99, worst = map(int, m.groups())
    assert n == 2000 and p50 <= p99 and p99 <= max(worst, 10000)
    # Lateness is measured in benchmarks/, not asserted here; the tasks must have run.
    assert all(a > 0 and bb > 0 for _, _, _, a, bb in lines)


@NEEDS_EXACT_STOPS
@pytest.mark.parametrize("reserve", [True, False])
def test_rtos_beside_a_busy_neighbour_on_the_same_core(reserve):
    status, b, err = run_script(PRE + '''
vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb",
              bootargs = "seconds=2 hz=250", prio = 20, cpus = L4.Cpu_set:new(0) }
vmm.start_vm{ id = 2, kernel = "rom/busy.elf", fdt = "rom/virt-r82.dtb", bootargs = "seconds=3",
              prio = 1, cpus = 0x1 }
''', reserve=reserve)
    assert err is None and status == 0, b.text("vm1")
    lines = ticks(b.text("vm1"))
    assert [t[0] for t in lines] == [250, 500]
    assert "rtos: done ticks=500 spurious=0" in b.text("vm1")
    assert "busy: done" in b.text("vm2")
    # The rtos's timer deadlines cleared the core of busy ahead of time (Core.reserve),
    # unless that was turned off (pyned boot --no-reserve). At 250 Hz a tick's work
    # is over long before the next reservation even on a host the hypervisor stalls
    # (at 1 kHz, CI once saw fewer than a quarter of the ticks find the rtos blocked).
    holds = b.system.scheduler.cores[0].holds
    assert holds > 125 if reserve else holds == 0


@pytest.mark.parametrize("fdt,cpus", [("rom/virt-r82-2cpu.dtb", 2), ("rom/virt-r82.dtb", 1)])
def test_smp_guest_counts_exactly_and_exchanges_ipis(fdt, cpus):
    status, b, err = run_script(PRE + f'vmm.start_vm{{ id = 1, kernel = "rom/smp.elf", '
                                f'fdt = "{fdt}", bootargs = "iters=2000 timeout=20" }}\n')
    assert err is None
    text = b.text("vm1")
    assert f"smp: cpus={cpus}" in text
    assert f"counter={2000 * cpus} expected={2000 * cpus}" in text
    assert "smp: PASS" in text and status == 0


def test_gicv2_board_boots():
    status, b, err = run_script(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/hello.elf", '
                                'fdt = "rom/virt-r82-gicv2.dtb" }\n')
    assert err is None and status == 0
    assert "hello: powering off" in b.text("vm1")


def test_interrupt_outside_the_gic_is_rejected_naming_the_node(tmp_path):
    (tmp_path / "bad.dts").write_text('/dts-v1/;\n/include/ "virt-r82.dts"\n'
                                      '/ { serial@9c090000 { interrupts = <0 900 4>; }; };\n')
    (tmp_path / "virt-r82.dts").write_text(
        (__import__("pathlib").Path(__file__).resolve().parents[2] / "dts" / "virt-r82.dts").read_text())
    status, b, err = run_script(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/hello.elf", '
                                'fdt = "rom/bad.dts" }\n', rom_dirs=[tmp_path])
    assert err is not None
    assert "/serial@9c090000: interrupt 0" in str(err) and "SPI 900" in str(err)
