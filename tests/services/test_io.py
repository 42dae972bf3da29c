"""io's configuration language as pyned reads it, and what io builds from it for the board."""


import pytest

from pyned.errors import ConfigError
from pyned.ned.io_config import read_io_config
from pyned.services.io import build_vbusses
from pyned.services.rom import Rom, shipped_dirs
from pyned.system import System, SystemOptions


def read(tmp_path, *texts):
    names = []
    for i, text in enumerate(texts):
        (tmp_path / f"c{i}.io").write_text(text)
        names.append(f"rom/c{i}.io")
    return read_io_config(names, Rom([tmp_path] + shipped_dirs()).resolve)


@pytest.fixture
def system(syndrome):
    s = System(SystemOptions(), syndrome=syndrome)
    yield s
    s.shutdown()


def test_devices_resources_and_vbusses_as_io_defines_them(tmp_path):
    cfg = read(tmp_path, '''
local Res = Io.Res
Io.hw_add_devices(function()
  uart = Io.Hw.Device(function()
    compatible = { "arm,pl011", "arm,primecell" }
    Property.hid = "my-uart"
    Resource.registers = Res.mmio(0x9c0b0000, 0x9c0b0fff)
    Resource.irq0 = Res.irq(32 + 7, Io.Resource.Irq_type_level_high)
  end)
  pins = Io.Hw.Device(function()
    compatible = "arm,pl061"
    regs = Res.mmio(0x9c1a1000, 0x9c1a1fff)   -- a resource as a plain member
    child = Io.Hw.Device(function() Resource.irq0 = Res.irq({52, 52}) end)
  end)
end)
''', '''
local hw = Io.system_bus()
print("devices:", #hw:match("arm,primecell"), #hw:match("my-uart"))
Io.add_vbusses {
  b = Io.Vi.System_bus(function() all = wrap(hw:match("arm,pl011", "arm,pl061")) end),
}
''')
    uart, pins = cfg.devices
    assert (uart.name, uart.compatible, uart.hid) == ("uart", ("arm,pl011", "arm,primecell"),
                                                      "my-uart")
    # io keeps four letters of a resource name
    assert [(r.id, r.kind, r.start, r.end) for r in uart.resources] == [
        ("irq0", "irq", 39, 39), ("regi", "mmio", 0x9C0B0000, 0x9C0B0FFF)]
    assert uart.resources[0].flags == 0x3 << 20
    assert pins.children[0].path == "pins.child"
    assert cfg.notes == ["devices: 1 1"]
    (bus,) = cfg.vbusses
    assert [(n, d.name) for n, d in bus.devices] == [("all[1]", "uart"), ("all[2]", "pins")]


def test_a_vbus_is_built_from_board_devices_and_a_resource_inside_a_slot_is_offset(
        tmp_path, system):
    cfg = read(tmp_path, '''
Io.hw_add_devices(function()
  pins = Io.Hw.Device(function()
    Resource.reg0 = Io.Res.mmio(0x9c1a1000, 0x9c1a1fff)
    Resource.irq0 = Io.Res.irq(52)
  end)
end)
Io.add_vbusses { b = Io.Vi.System_bus(function() p = wrap(Io.system_bus().pins) end) }
''')
    (vbus,) = build_vbusses(system, cfg)
    (dev,) = vbus.devices
    (m,) = dev.mmio
    assert m.device is system.hardware.device("gpio0") and m.offset == 0x1000
    assert [(r.start, irq) for r, irq in dev.irqs] == [(52, system.icu.line(52))]
    vbus.claim("vm1")
    with pytest.raises(ConfigError, match="vbus 'b' is in use by vm1"):
        vbus.claim("vm2")
    vbus.release("vm1")
    vbus.claim("vm2")


@pytest.mark.parametrize("text, message", [
    ('Io.hw_add_devices(function() x = Io.Hw.Device(function()\n'
     '  Resource.reg0 = Io.Res.mmio(0x9c1a0100, 0x9c1a01ff) end) end)\n'
     'Io.add_vbusses { b = Io.Vi.System_bus(function() d = wrap(Io.system_bus().x) end) }',
     "must cover whole 4 KiB pages"),
    ('Io.hw_add_devices(function() x = Io.Hw.Device(function()\n'
     '  Property.colour = "red" end) end)', "c0.io:1: Property.colour: pyned knows"),
    ('Io.hw_add_devices(function() x = Io.Hw.Device(function()\n'
     '  Resource.reg0 = Io.Res.mmio(0x2000, 0x1000) end) end)', "c0.io:2: Io.Res.mmio: start"),
    ('Io.add_vbusses { b = Io.Vi.PCI_bus(function() end) }', "c0.io:1: Io.Vi.PCI_bus"),
    ('Io.add_vbusses { b = 5 }', "'b' is not a virtual bus"),
    ('Io.add_vbusses { b = Io.Vi.System_bus(function() d = wrap(Io.system_bus().gpio0, '
     '{ pins = 3 }) end) }', "wrap: filters"),
    ('this is not lua', "c0.io:1:"),
])
def test_bad_configuration_is_one_error_naming_the_file_and_line(tmp_path, system, text, message):
    with pytest.raises(ConfigError) as exc:
        cfg = read(tmp_path, 'Io.hw_add_devices(function() gpio0 = Io.Hw.Device(function()\n'
                   '  Resource.reg0 = Io.Res.mmio(0x9c1a0000, 0x9c1affff) end) end)\n')
        cfg = read(tmp_path, text)
        build_vbusses(system, cfg)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_shipped_board_description_names_every_board_device(tmp_path, system):
    cfg = read_io_config(["rom/fvp-baser.devs"], Rom(shipped_dirs()).resolve)
    assert [d.name for d in cfg.devices] == [p.name for p in system.board.peripherals]
    for d, p in zip(cfg.devices, system.board.peripherals):
        mmio = next(r for r in d.resources if r.kind == "mmio")
        irq = next(r for r in d.resources if r.kind == "irq")
        assert (mmio.range, irq.start) == (p.window, p.intid)
