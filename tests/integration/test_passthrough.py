"""Pass-through end to end: io's configuration, vbusses handed to VMs and a native program,
uvmm's binding rules on real device trees, interrupt forwarding, and ownership errors.
The guests are images/blink.elf (drives the GPIO it finds) and images/shm.elf."""

import re
import shutil
import time
from pathlib import Path

import pytest

from pyned.testing import NEEDS_EXACT_STOPS, Booted, run_script

pytestmark = pytest.mark.boot
ROOT = Path(__file__).resolve().parents[2]
PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'
BLINK = 'kernel = "rom/blink.elf", fdt = "rom/virt-r82-passthrough.dtb"'
IO = '"rom/fvp-baser.devs rom/t.io"'


def io(tmp_path, vbusses, extra=""):
    """io's vbusses for a test (the board's devices come from rom/fvp-baser.devs)."""
    (tmp_path / "t.io").write_text(extra + "local hw = Io.system_bus()\nIo.add_vbusses {\n"
                                   + vbusses + "\n}\n")
    return [tmp_path]


def dts(tmp_path, name, body):
    """A device tree in tmp_path that includes the shipped passthrough tree."""
    for f in ("virt-r82.dts", "virt-r82-passthrough.dts"):
        shutil.copy(ROOT / "dts" / f, tmp_path / f)
    (tmp_path / name).write_text('/dts-v1/;\n/include/ "virt-r82-passthrough.dts"\n' + body)


def wait_for(cond, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return False


def guest(b, name):
    return next(g for g in b.system.guests.values() if g.name == name)


@NEEDS_EXACT_STOPS
def test_a_vm_blinks_the_led_it_owns_and_the_other_gpios_are_disabled_with_the_reason(tmp_path):
    dirs = io(tmp_path, 'vm_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio0) end),')
    status, b, err = run_script(PRE + f'''
local bus = {{ vm_hw = 1 }}
vmm.start_io(bus, {IO})
vmm.start_vm{{ id = 1, {BLINK}, vbus = bus.vm_hw, bootargs = "period_ms=40 toggles=10",
               ext_args = {{ "-v" }} }}
''', rom_dirs=dirs)
    text = b.text("vm1")
    assert err is None and status == 0, text
    assert "blink: led on gpio at 0x9c1a0000 irq 52" in text
    assert "blink: done toggles=10" in text
    leds = b.system.hardware.leds
    assert [e.on for e in leds.timeline("led0")] == [True, False] * 5
    assert leds.timeline("led1") == [] and not leds.state("led0")
    # uvmm's 1:1 rule: the nodes whose resources are not on the vbus are disabled, saying why.
    assert "/gpio@9c1b0000: disabled: reg [0x9c1b0000, +0x1000) is not on vbus 'vm_hw'" in text
    assert "/timer@9c110000: disabled: reg [0x9c110000, +0x1000) is not on vbus 'vm_hw'" in text


@NEEDS_EXACT_STOPS
def test_the_vms_memory_map_interrupt_and_vbus_belong_to_it_until_it_ends(tmp_path):
    dirs = io(tmp_path, 'vm_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio0) end),')
    with Booted(source=PRE + f'''
local bus = {{ vm_hw = 1 }}
vmm.start_io(bus, {IO})
vm = vmm.start_vm{{ id = 1, {BLINK}, vbus = bus.vm_hw, bootargs = "period_ms=50" }}
''', rom_dirs=dirs) as b:
        b.expect("vm1", "blink: led on gpio", 20)
        vm = guest(b, "vm1").vm
        mmio = [r for r in vm.mpu.regions if r.kind == "mmio"]
        assert [(r.range.base, r.range.size) for r in mmio] == [(0x9C1A0000, 0x10000)]
        entry = next(d for d in vm.devices if d.path == "/gpio@9c1a0000")
        gpio = b.system.hardware.device("gpio0")
        assert entry.kind == "pass-through" and entry.device is gpio   # no per-VM model
        irq = b.system.icu.line(52)
        assert irq.owner == "vm1"
        leds = b.system.hardware.leds
        assert wait_for(lambda: leds.timeline("led0"))   # the guest has set the GPIO up
        # The host presses the button on pin 7: the GPIO raises SPI 20, the IRQ object
        # forwards it to vm1's virtual GIC, the guest's handler counts it.
        for n in (1, 2):
            gpio.set_input(7, True)
            b.expect("vm1", f"blink: button {n}", 10)
            gpio.set_input(7, False)
        assert irq.events >= 2
        assert wait_for(lambda: len(leds.timeline("led0")) > 4)
        next(t for t in b.system.tasks.tasks if t.name == "uvmm").kill()
        assert wait_for(lambda: irq.owner is None)
        assert next(t for t in b.system.tasks.tasks if t.name == "io").alive


@NEEDS_EXACT_STOPS
def test_vbus_dev_binds_by_name_and_may_renumber_the_interrupt(tmp_path):
    dts(tmp_path, "named.dts", '''
/ {
	gpio@9c1b0000 {
		reg = <0x0 0x9c1b0000 0x0 0x10000>;  // the size of io's resource, as uvmm wants
		interrupts = <0 30 4>;               // SPI 30 in the VM, SPI 21 on the board
		l4vmm,vbus-dev = "led-gpio1";
	};
};
''')
    dirs = io(tmp_path, 'vm_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio1) end),')
    with Booted(source=PRE + f'''
local bus = {{ vm_hw = 1 }}
vmm.start_io(bus, {IO})
vmm.start_vm{{ id = 1, kernel = "rom/blink.elf", fdt = "rom/named.dts", vbus = bus.vm_hw,
               bootargs = "period_ms=50" }}
''', rom_dirs=dirs) as b:
        b.expect("vm1", "blink: led on gpio at 0x9c1b0000 irq 62", 20)
        assert wait_for(lambda: b.system.hardware.leds.timeline("led1"))   # set up
        b.system.hardware.device("gpio1").set_input(7, True)
        b.expect("vm1", "blink: button 1", 10)
        assert b.system.icu.line(53).owner == "vm1"
        assert wait_for(lambda: len(b.system.hardware.leds.timeline("led1")) > 2)


def test_vbus_dev_cannot_move_device_memory_and_force_enable_keeps_a_node(tmp_path):
    dts(tmp_path, "moved.dts", '''
/ {
	gpio@9c1c0000 {
		reg = <0x0 0x9c1c0000 0x0 0x10000>;
		l4vmm,vbus-dev = "led-gpio3";        // gpio3 is at 0x9c1d0000
	};
	gpio@9c1b0000 {
		l4vmm,force-enable;
	};
};
''')
    dirs = io(tmp_path, 'vm_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio3) end),')
    status, b, err = run_script(PRE + f'''
local bus = {{ vm_hw = 1 }}
vmm.start_io(bus, {IO})
vmm.start_vm{{ id = 1, kernel = "rom/hello.elf", fdt = "rom/moved.dts", vbus = bus.vm_hw,
               ext_args = {{ "-v" }} }}
''', rom_dirs=dirs)
    text = b.text("vm1")
    assert err is None and status == 0, text
    assert ("/gpio@9c1c0000: disabled: reg 0 at 0x9c1c0000 but 'led' is at 0x9c1d0000: an MPU "
            "system cannot move device memory") in text
    assert ("/gpio@9c1b0000: kept enabled (l4vmm,force-enable) although nothing backs it: "
            "reg [0x9c1b0000, +0x1000) is not on vbus 'vm_hw'") in text
    assert "/gpio@9c1b0000: disabled" not in text


def test_without_a_vbus_the_board_devices_are_disabled(tmp_path):
    status, b, err = run_script(PRE + 'vmm.start_vm{ id = 1, kernel = "rom/hello.elf", '
                                'fdt = "rom/virt-r82-passthrough.dtb", ext_args = { "-v" } }\n')
    text = b.text("vm1")
    assert err is None and status == 0, text
    assert ("/gpio@9c1a0000: disabled: no virtual device model for arm,pl061, arm,primecell "
            "and no vbus to pass it through") in text


@NEEDS_EXACT_STOPS
def test_a_uart_on_the_vbus_is_passed_through_and_otherwise_emulated(tmp_path):
    dts(tmp_path, "uart.dts", '''
/ {
	serial@9c0a0000 {
		compatible = "arm,pl011", "arm,primecell";
		reg = <0x0 0x9c0a0000 0x0 0x1000>;
		interrupts = <0 6 4>;
		clocks = <&apb_pclk>, <&apb_pclk>;
		clock-names = "uartclk", "apb_pclk";
	};
};
''')
    dirs = io(tmp_path, '''
  with_uart = Io.Vi.System_bus(function() led = wrap(hw.gpio0); tty = wrap(hw.uart1) end),
  without = Io.Vi.System_bus(function() led = wrap(hw.gpio1) end),''')
    status, b, err = run_script(PRE + f'''
local bus = {{ with_uart = 1, without = 1 }}
vmm.start_io(bus, {IO})
vmm.start_vm{{ id = 1, kernel = "rom/blink.elf", fdt = "rom/uart.dts", vbus = bus.with_uart,
               bootargs = "name=one toggles=2 period_ms=20" }}
vmm.start_vm{{ id = 2, kernel = "rom/blink.elf", fdt = "rom/uart.dts", vbus = bus.without,
               bootargs = "name=two toggles=2 period_ms=20" }}
''', rom_dirs=dirs)
    assert err is None and status == 0, b.text("vm1") + b.text("vm2")
    # vm1 owns UART1: its greeting reaches the board's UART, not its console.
    assert "blink: hello from one" in b.text("uart1")
    assert "hello from one" not in b.text("vm1")
    # vm2's vbus lacks it: uvmm's virtual PL011 takes the node, on vm2's console.
    assert "blink: hello from two" in b.text("vm2")
    assert "hello from two" not in b.text("uart1")


@NEEDS_EXACT_STOPS
def test_a_vm_cannot_touch_a_gpio_it_does_not_own(tmp_path):
    dirs = io(tmp_path, 'vm_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio0) end),')
    with Booted(source=PRE + f'''
local bus = {{ vm_hw = 1 }}
vmm.start_io(bus, {IO})
vmm.start_vm{{ id = 1, {BLINK}, vbus = bus.vm_hw, bootargs = "period_ms=40", cpus = 0x1 }}
vmm.start_vm{{ id = 2, kernel = "rom/blink.elf", fdt = "rom/virt-r82.dtb",
               bootargs = "gpio=0x9c1a0000", cpus = 0x2, ext_args = {{ "--fault-mode=halt" }} }}
''', rom_dirs=dirs) as b:
        b.expect("vm2", r"stage-2 fault: .* far=0x9c1a0400", 20)
        before = len(b.system.hardware.leds.timeline("led0"))
        assert wait_for(lambda: len(b.system.hardware.leds.timeline("led0")) > before + 3)
        assert b.system.icu.line(52).owner == "vm1"


@pytest.mark.parametrize("vbusses, extra, message", [
    ('a = Io.Vi.System_bus(function() d = wrap(hw.gpio0) end),\n'
     'b = Io.Vi.System_bus(function() d = wrap(hw.gpio0) end),', "",
     "io: device 'gpio0' is on vbus 'a' and on vbus 'b'; a device belongs to one vbus"),
    ('a = Io.Vi.System_bus(function() d = wrap(hw.gpio0) end),\n'
     'b = Io.Vi.System_bus(function() d = wrap(hw.again) end),',
     'Io.hw_add_devices(function() again = Io.Hw.Device(function()\n'
     '  Resource.reg0 = Io.Res.mmio(0x9c1a0000, 0x9c1a0fff) end) end)\n',
     "board device gpio0 is on vbus 'a' (as 'gpio0') already; it cannot also be on vbus 'b'"),
    ('a = Io.Vi.System_bus(function() d = wrap(hw.gpio0) end),\n'
     'b = Io.Vi.System_bus(function() d = wrap(hw.shared) end),',
     'Io.hw_add_devices(function() shared = Io.Hw.Device(function()\n'
     '  Resource.irq0 = Io.Res.irq(52) end) end)\n',
     "interrupt 52 is routed to vbus 'a' ('gpio0') already; an interrupt has one owner"),
    ('a = Io.Vi.System_bus(function() d = wrap(hw.ghost) end),',
     'Io.hw_add_devices(function() ghost = Io.Hw.Device(function()\n'
     '  Resource.reg0 = Io.Res.mmio(0x9c300000, 0x9c300fff) end) end)\n',
     "MMIO [0x9c300000-0x9c300fff] is no device of the board"),
    ('a = Io.Vi.System_bus(function() d = wrap(hw.odd) end),',
     'Io.hw_add_devices(function() odd = Io.Hw.Device(function()\n'
     '  Resource.irq0 = Io.Res.irq(99) end) end)\n',
     "interrupt 99 is no interrupt line of the board's devices"),
    ('a = Io.Vi.System_bus(function() d = wrap(hw.gpio0) end),',
     'Io.hw_add_devices(function() x = Io.Hw.Gpio_bcm2835_chip(function() end) end)\n',
     "t.io:1: Io.Hw.Gpio_bcm2835_chip: pyned models plain devices only"),
])
def test_io_refuses_a_configuration_that_gives_hardware_twice_or_that_is_not_there(
        tmp_path, vbusses, extra, message):
    dirs = io(tmp_path, vbusses, extra)
    status, b, err = run_script(PRE + f'vmm.start_io({{ a = 1 }}, {IO})\n'
                                'vmm.start_vm{ id = 1, kernel = "rom/hello.elf", '
                                'fdt = "rom/virt-r82.dtb" }\n', rom_dirs=dirs)
    assert err is not None and message in str(err), str(err)
    assert "\n" not in str(err).strip()
    assert "vm1" not in b.system.cons.channels      # before any VM ran


@pytest.mark.parametrize("lua, message", [
    ('local bus = { vm_hw = 1 }\nvmm.start_io(bus, ' + IO + ')\n'
     'vmm.start_vm{ id = 1, ' + BLINK + ', vbus = bus.vm_hw }\n'
     'vmm.start_vm{ id = 2, ' + BLINK + ', vbus = bus.vm_hw }\n',
     "vbus 'vm_hw' is in use by vm1; a vbus serves one client at a time"),
    ('vmm.start_io({ nobus = 1, vm_hw = 1 }, ' + IO + ')\n',
     "io: rom/nobus.vbus not found, and no other configuration file defines vbus 'nobus'"),
    ('L4.default_loader:start({ caps = { nobus = L4.default_loader:new_channel():svr() } }, '
     '"rom/io rom/fvp-baser.devs rom/t.io")\n',
     "io: channel 'nobus' names no vbus of the configuration"),
    ('vmm.start_vm{ id = 1, ' + BLINK + ',\n'
     '  vbus = L4.Env.user_factory:create(L4.Proto.Dataspace, 4096) }\n',
     "capability 'vbus' is not a vbus"),
])
def test_handing_out_a_vbus_wrongly_is_one_clear_error(tmp_path, lua, message):
    dirs = io(tmp_path, 'vm_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio0) end),')
    status, b, err = run_script(PRE + lua, rom_dirs=dirs)
    assert err is not None and message in str(err), str(err)
    assert "\n" not in str(err).strip()


@NEEDS_EXACT_STOPS
def test_a_native_program_blinks_its_led_and_takes_its_gpio_interrupt(tmp_path):
    dirs = io(tmp_path, 'blink_hw = Io.Vi.System_bus(function() led = wrap(hw.gpio2) end),')
    with Booted(source=PRE + f'''
local bus = {{ blink_hw = 1 }}
vmm.start_io(bus, {IO})
L4.default_loader:start({{ caps = {{ vbus = bus.blink_hw }} }}, "rom/gpio-blink period_ms=30")
''', rom_dirs=dirs) as b:
        leds = b.system.hardware.leds
        assert wait_for(lambda: len(leds.timeline("led2")) >= 6)
        assert b.system.icu.line(54).owner == "gpio-blink"
        b.system.hardware.device("gpio2").set_input(7, True)
        b.expect("gpio-blink", "gpio-blink: button press 1", 10)
        task = next(t for t in b.system.tasks.tasks if t.name == "gpio-blink")
        task.kill()
        assert wait_for(lambda: b.system.icu.line(54).owner is None)
        n = len(leds.timeline("led2"))
        time.sleep(0.1)
        assert len(leds.timeline("led2")) == n     # stopped; the LED keeps its state


@NEEDS_EXACT_STOPS
def test_two_vms_exchange_messages_through_shared_memory_and_doorbells():
    status, b, err = run_script(PRE + '''
local shm = L4.Env.user_factory:create(L4.Proto.Dataspace, 64 * 1024)
local to_two = L4.Env.factory:create(L4.Proto.Irq_sender)
local to_one = L4.Env.factory:create(L4.Proto.Irq_sender)
local vm = 'kernel = "rom/shm.elf", fdt = "rom/virt-r82-shm.dtb"'
vmm.start_vm{ id = 2, kernel = "rom/shm.elf", fdt = "rom/virt-r82-shm.dtb", cpus = 0x2,
              bootargs = "role=pong name=two rounds=50",
              ext_caps = { shm = shm, doorbell_out = to_one, doorbell_in = to_two } }
vmm.start_vm{ id = 1, kernel = "rom/shm.elf", fdt = "rom/virt-r82-shm.dtb", cpus = 0x1,
              bootargs = "role=ping name=one rounds=50",
              ext_caps = { shm = shm, doorbell_out = to_two, doorbell_in = to_one } }
''')
    one, two = b.text("vm1"), b.text("vm2")
    assert err is None and status == 0, one + two
    base = re.search(r"shared memory at (0x[0-9a-f]+)", one).group(1)
    assert f"shared memory at {base}" in two           # the same dataspace in both
    assert 'shm: first message "ping 1 from one"' in two
    assert 'shm: first reply "pong 1 from two"' in one
    assert "shm: 50/50 round trips" in one
    m = re.search(r"shm: answered 50 messages, doorbells (\d+)", two)
    assert m and int(m.group(1)) >= 1


def test_a_doorbell_without_its_irq_capability_is_disabled():
    status, b, err = run_script(PRE + '''
local shm = L4.Env.user_factory:create(L4.Proto.Dataspace, 64 * 1024)
vmm.start_vm{ id = 1, kernel = "rom/shm.elf", fdt = "rom/virt-r82-shm.dtb", ext_args = { "-v" },
              ext_caps = { shm = shm } }
''')
    text = b.text("vm1")
    assert err is None and status == 0, text
    assert "virq@5000: disabled: no capability 'doorbell_out' (l4vmm,virqcap)" in text
    assert "shm: no shared memory or doorbells in the device tree" in text


def test_shared_memory_takes_an_mpu_region_of_its_own():
    with Booted(source=PRE + '''
local shm = L4.Env.user_factory:create(L4.Proto.Dataspace, 64 * 1024)
vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82-shm.dtb", bootargs = "hz=10",
              ext_caps = { shm = shm } }
''') as b:
        b.expect("vm1", "rtos: started", 20)
        regions = guest(b, "vm1").vm.mpu.regions
    assert sorted(r.kind for r in regions) == ["ram", "shm"]
