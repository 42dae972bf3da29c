-- Mixed criticality: the rtos guest (1 kHz tick, high priority, core 0) beside
-- Debian's Linux (low priority, core 1). The rtos reports its worst timer
-- lateness once a second while Linux boots; Linux's console is ttyAMA0, and
-- "pyned boot lua/examples/mixed.lua 20" ends both after 20 seconds.
-- Fetch the guests once:  pyned images fetch
local L4 = require "L4"
local vmm = require "vmm"

local seconds = tonumber(arg[1])
vmm.start_vm{ id = 1, mem = 16, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb",
              bootargs = seconds and ("seconds=" .. seconds) or "", prio = 20, cpus = 0x1 }
local run = seconds and (' pyned.run="sleep ' .. seconds .. '; poweroff -f"') or ""
vmm.start_vm{ id = 2, mem = 256, kernel = "rom/Image", rd = "rom/initrd.cpio.gz",
              fdt = "rom/virt-r82.dtb", prio = 1, cpus = 0x2,
              bootargs = "console=ttyAMA0 quiet cryptomgr.notests" .. run }
