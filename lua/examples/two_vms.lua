-- Mixed criticality on one core: the rtos guest (1 kHz tick) at high
-- priority and a busy noisy neighbour at low priority share core 0. The
-- rtos prints its worst timer lateness once a second; the neighbour must not
-- change it. Pass a number of seconds to end the run (default: forever).
local L4 = require "L4"
local vmm = require "vmm"

local seconds = tonumber(arg[1])
local rtos_args = seconds and ("seconds=" .. seconds) or ""
local busy_args = seconds and ("seconds=" .. (seconds + 1)) or ""

vmm.start_vm{ id = 1, mem = 16, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb",
              bootargs = rtos_args, prio = 20, cpus = L4.Cpu_set:new(0) }
vmm.start_vm{ id = 2, mem = 16, kernel = "rom/busy.elf", fdt = "rom/virt-r82.dtb",
              bootargs = busy_args, prio = 1, cpus = 0x1 }
