-- Debian's arm64 Linux on the R82 board with a busybox initramfs and a disk.
-- Fetch the guests once:  pyned images fetch
--   pyned boot lua/examples/linux.lua [CONSOLE [COMMANDS [COMMANDS_AFTER_REBOOT]]]
-- CONSOLE is ttyAMA0 (the PL011, default) or hvc0 (the virtio console). The
-- initramfs runs COMMANDS (a shell line) before its shell; after the guest
-- reboots (exit code 0x66) the exit handler starts it again, with
-- COMMANDS_AFTER_REBOOT if given. /dev/vda is linux-disk.img beside this
-- script (64 MiB, created empty; "mke2fs /dev/vda" makes a file system, and
-- pyned.modules=ext4 loads the driver that mounts it).
local L4 = require "L4"
local vmm = require "vmm"

local console = arg[1] or "ttyAMA0"
local dir = (arg[0] or ""):match("(.*/)") or "./"
local img = dir .. "linux-disk.img"
local f = io.open(img, "rb")
if f then f:close() else
  f = assert(io.open(img, "wb")); f:seek("set", 64 * 1024 * 1024 - 1); f:write("\0"); f:close()
end

local disks = { vda = { file = "linux-disk.img", serial = "pyned-linux" } }
vmm.start_virtio_block(disks)

local function boot(n)
  local run = (n > 1 and arg[3]) or arg[2]
  local args = "console=" .. console .. " quiet cryptomgr.notests pyned.modules=ext4"
  if run then args = args .. ' pyned.run="' .. run .. '"' end
  vmm.start_vm{ id = 1, mem = 256, kernel = "rom/Image", rd = "rom/initrd.cpio.gz",
                fdt = "rom/virt-r82-virtio.dtb", bootargs = args,
                ext_caps = { blk = disks.vda } }
    :exit_handler(function(code)
      if code == 0x66 then
        print("vm1 rebooted (boot " .. n .. "); starting it again")
        boot(n + 1)
      else
        print("vm1 ended with " .. tostring(code))
      end
    end)
end
boot(1)
