"""VirtIO end to end: our virtio guest drives console, block, net and entropy devices
that a Lua script wires up the way uvmm's vmm.lua does (switch ports, disks, caps)."""

import re
import struct

import pytest

from pyned.testing import NEEDS_EXACT_STOPS, run_script

pytestmark = pytest.mark.boot
PRE = 'local L4 = require "L4"\nlocal vmm = require "vmm"\n'
VM = 'kernel = "rom/virtio.elf", fdt = "rom/virt-r82-virtio.dtb"'


def disk(tmp_path, size=1 << 20, head=b"PYNED-DISK-HELLO"):
    path = tmp_path / "disk.img"
    path.write_bytes(head + bytes(size - len(head)))
    return path


@NEEDS_EXACT_STOPS
def test_one_vm_drives_console_block_and_entropy(tmp_path):
    img = disk(tmp_path)
    status, b, err = run_script(PRE + f'''
local disks = {{ d1 = {{ file = "{img}", serial = "pyned-test-disk" }} }}
vmm.start_virtio_block(disks)
local rng = {{ r1 = {{ seed = 7 }} }}
vmm.start_virtio_rng(rng)
vmm.start_vm{{ id = 1, {VM}, bootargs = "name=solo",
               ext_caps = {{ blk = disks.d1, rng = rng.r1 }} }}
''')
    text = b.text("vm1")
    assert err is None and status == 0, text
    # The virtio console shares the VM's channel with the PL011.
    assert "virtio-console: hello from solo" in text and "console: ok" in text
    assert "blk: capacity 2048 sectors" in text
    assert "blk: id pyned-test-disk" in text
    assert "blk: sector0 " + b"PYNED-DISK-HELLO".hex() in text
    assert "blk: write flush readback ok" in text
    # The guest wrote its pattern to the last sector; it is in the file now.
    assert b"solo" in img.read_bytes()[-512:]
    # No proxy without a capability: the net node was disabled, not probed.
    assert "virtio: 3 virtio,mmio node(s)" in text
    assert re.search(r"rng: [0-9a-f]{32}", text)


@NEEDS_EXACT_STOPS
def test_a_seeded_entropy_port_repeats_its_stream():
    script = PRE + f'''
local rng = {{ r1 = {{ seed = 42 }} }}
vmm.start_virtio_rng(rng)
vmm.start_vm{{ id = 1, {VM}, bootargs = "name=r", ext_caps = {{ rng = rng.r1 }} }}
'''
    outs = []
    for _ in range(2):
        status, b, err = run_script(script)
        assert err is None and status == 0, b.text("vm1")
        outs.append(re.search(r"rng: ([0-9a-f]{32})", b.text("vm1")).group(1))
    assert outs[0] == outs[1]


@NEEDS_EXACT_STOPS
def test_a_read_only_disk_refuses_writes_and_keeps_the_file(tmp_path):
    img = disk(tmp_path)
    before = img.read_bytes()
    status, b, err = run_script(PRE + f'''
local disks = {{ d1 = {{ file = "{img}", ro = true }} }}
vmm.start_virtio_block(disks)
vmm.start_vm{{ id = 1, {VM}, bootargs = "name=ro", ext_caps = {{ blk = disks.d1 }} }}
''')
    text = b.text("vm1")
    assert err is None and status == 0, text
    assert "blk: read-only write refused ok" in text
    assert img.read_bytes() == before


@NEEDS_EXACT_STOPS
def test_two_vms_exchange_frames_through_the_switch_and_the_capture_opens(tmp_path):
    pcap = tmp_path / "switch.pcap"
    status, b, err = run_script(PRE + f'''
local net = {{ net0 = 1, net1 = {{ "mac=02:00:00:00:00:02" }} }}
vmm.start_virtio_switch_tbl{{ ports = net, pcap = "{pcap}" }}
vmm.start_vm{{ id = 2, {VM}, bootargs = "name=two net=pong frames=10", net = net.net1,
               cpus = 0x2 }}
vmm.start_vm{{ id = 1, {VM}, bootargs = "name=one net=ping frames=10", net = net.net0,
               cpus = 0x1 }}
''')
    assert err is None and status == 0, b.text("vm1") + b.text("vm2")
    assert "net: 10/10 replies" in b.text("vm1")
    assert "net: answered 10 pings" in b.text("vm2")
    # The per-port MAC option reaches the guest's config space.
    assert "net: mac 02:00:00:00:00:02" in b.text("vm2")
    data = pcap.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data)
    assert magic == 0xA1B2C3D4 and linktype == 1
    frames, off = [], 24
    while off < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, off)
        frames.append(data[off + 16: off + 16 + incl])
        off += 16 + incl
    assert off == len(data)
    payloads = [f[14:] for f in frames if f[12:14] == b"\x88\xb5"]
    assert sum(p.startswith(b"ping") for p in payloads) >= 10
    assert sum(p.startswith(b"pong") for p in payloads) >= 10


@pytest.mark.parametrize("lua, message", [
    ('vmm.start_virtio_block({ d = { file = "/nonexistent/disk.img" } })', "no such image file"),
    ('vmm.start_virtio_block({ d = 5 })', "must be a file name or a table"),
    ('vmm.start_virtio_switch_tbl{ ports = { a = { "colour=red" } } }', "unknown port option"),
    ('vmm.start_virtio_switch_tbl{ ports = { a = { "mac=zz" } } }', "l4vio_switch"),
    ('vmm.start_virtio_rng({ r = { seed = "x" } })', "is not a number"),
])
def test_bad_virtio_configuration_is_one_clear_error(lua, message):
    status, b, err = run_script(PRE + lua + "\n")
    assert err is not None and message in str(err)
    assert "\n" not in str(err).strip()


@NEEDS_EXACT_STOPS
def test_a_disk_serves_one_vm_at_a_time(tmp_path):
    img = disk(tmp_path)
    status, b, err = run_script(PRE + f'''
local disks = {{ d1 = "{img}" }}
vmm.start_virtio_block(disks)
vmm.start_vm{{ id = 1, {VM}, bootargs = "name=a stay", ext_caps = {{ blk = disks.d1 }} }}
local second = vmm.start_vm{{ id = 2, {VM}, bootargs = "name=b blkwrite=0",
                              ext_caps = {{ blk = disks.d1 }}, ext_args = {{ "-v" }} }}
second:wait()
''', mode=__import__("pyned.ned.runtime", fromlist=["ExitMode"]).ExitMode.EXIT)
    assert err is None, err
    # The second VM's block node was disabled with the reason; it ran without it.
    assert "virtio@3000: disabled: virtio-block port 'd1' is in use by another VM" in b.text("vm2")
    assert "virtio: 1 virtio,mmio node(s)" in b.text("vm2")
    assert "virtio: done" in b.text("vm2")
