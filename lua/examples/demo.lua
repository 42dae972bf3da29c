-- The shipped demo: two VMs on the emulated Cortex-R82 board. vm1 says hello
-- and powers off; vm2 reboots once, and the exit handler restarts it with a
-- guest that powers off.
local L4 = require "L4"
local vmm = require "vmm"

vmm.start_vm{ id = 1, mem = 16, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb",
              bootargs = "console=ttyAMA0" }

local function on_exit(code)
  if code == 0x66 then
    print("vm2 asked for a reboot: starting it again")
    vmm.start_vm{ id = 2, mem = 16, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb",
                  bootargs = "console=ttyAMA0 after-reboot" }
  end
end

vmm.start_vm{ id = 2, mem = 16, kernel = "rom/reboot.elf", fdt = "rom/virt-r82.dtb" }
  :exit_handler(on_exit)
