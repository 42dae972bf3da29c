-- U-Boot (Debian's u-boot-qemu, built for QEMU's virt board) on a VM laid out
-- like that board (dts/virt-qemu.dts), booting Debian's Linux from a disk.
-- Fetch the guests once:  pyned images fetch  (it also writes rom/uboot-disk.img;
-- a cache fetched by an older pyned gets it from running the command again)
--   pyned boot lua/examples/uboot.lua
-- U-Boot runs in place from the first flash bank and keeps its environment in
-- the second, backed by uboot-env.img beside this script (created erased).
-- Stop the autoboot with a key, then at the => prompt:
--   virtio scan; virtio info
--   virtio read ${scriptaddr} 0 1; source ${scriptaddr}
-- rom/uboot-disk.img has the kernel and initramfs at fixed sectors and, in
-- sector 0, a script that loads them (virtio read) and starts them (booti).
-- To boot Linux without typing, save it as the boot command:
--   setenv bootcmd 'virtio scan; virtio read ${scriptaddr} 0 1; source ${scriptaddr}'
--   saveenv; reset
-- U-Boot's reset ends the VM with uvmm's reboot code (0x66) and the exit
-- handler starts it again; Linux's poweroff -f ends the script.
local vmm = require "vmm"

local disks = { vda = { file = "rom/uboot-disk.img" } }
vmm.start_virtio_block(disks)

local function boot(n)
  vmm.start_vm{ id = 1, mem = 256, ram_base = 0x40000000, fdt = "rom/virt-qemu.dtb",
                firmware = "rom/u-boot.bin", nvram = "uboot-env.img",
                -- U-Boot passes the tree's bootargs on to Linux unless its
                -- environment sets others.
                bootargs = "console=ttyAMA0 quiet cryptomgr.notests",
                ext_caps = { blk = disks.vda } }
    :exit_handler(function(code)
      if code == 0x66 then
        print("vm1 reset (boot " .. n .. "); starting it again")
        boot(n + 1)
      else
        print("vm1 ended with " .. tostring(code))
      end
    end)
end
boot(1)
