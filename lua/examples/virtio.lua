-- Two VMs on a virtual switch; the first also has a disk and an entropy source.
-- vm1 pings vm2 through the switch; every frame lands in virtio-switch.pcap.
--   pyned boot lua/examples/virtio.lua
local L4 = require "L4"
local vmm = require "vmm"

-- A scratch disk beside this script (1 MiB of zeros) unless one is there already.
local dir = (arg[0] or ""):match("(.*/)") or "./"
local img = dir .. "virtio-disk.img"
local f = io.open(img, "rb")
if f then f:close() else
  f = assert(io.open(img, "wb")); f:write(string.rep("\0", 1024 * 1024)); f:close()
end

local net = { net0 = 1, net1 = 1 }
-- Server file names are relative to this script's folder, like rom/ names.
vmm.start_virtio_switch_tbl{ ports = net, pcap = "virtio-switch.pcap" }
local disks = { disk0 = { file = "virtio-disk.img", serial = "pyned-demo" } }
vmm.start_virtio_block(disks)
local rng = { rng0 = true }
vmm.start_virtio_rng(rng)

vmm.start_vm{ id = 2, kernel = "rom/virtio.elf", fdt = "rom/virt-r82-virtio.dtb",
              bootargs = "name=vm2 net=pong frames=10", net = net.net1, cpus = 0x2 }
vmm.start_vm{ id = 1, kernel = "rom/virtio.elf", fdt = "rom/virt-r82-virtio.dtb",
              bootargs = "name=vm1 net=ping frames=10", net = net.net0, cpus = 0x1,
              ext_caps = { blk = disks.disk0, rng = rng.rng0 } }
