-- The LED demo, after Kernkonzept's: two VMs each blink their own LED through
-- pass-through (a GPIO each, handed over by io), and a native program blinks a third.
-- vm2 crashes itself after 15 toggles (about 3 s): its LED stays as it was while the
-- others keep their rhythm, and the exit handler starts vm2 again a second later (as it
-- does when vm2 is crashed or killed from outside).
--   pyned boot lua/examples/leds.lua [SECONDS]          (default: until Ctrl-C)
--   pyned boot --led-trace leds.svg lua/examples/leds.lua 10
local L4 = require "L4"
local vmm = require "vmm"

local seconds = tonumber(arg[1])
local VM1_MS, VM2_MS, NATIVE_MS = 150, 200, 100
local CRASH_AFTER = 15

-- Run for the given time (in toggles, so a restarted VM ends with the rest).
local function until_end(period_ms, spent_ms)
  if not seconds then return "" end
  return " toggles=" .. math.max(0, (seconds * 1000 - spent_ms) // period_ms)
end

local hw = { vm1_hw = 1, vm2_hw = 1, blink_hw = 1 }
vmm.start_io(hw, "rom/fvp-baser.devs rom/io.cfg")

L4.default_loader:start({ caps = { vbus = hw.blink_hw }, log = { "blink", "y" } },
                        "rom/gpio-blink period_ms=" .. NATIVE_MS
                        .. (seconds and " seconds=" .. seconds or ""))

vmm.start_vm{ id = 1, kernel = "rom/blink.elf", fdt = "rom/virt-r82-passthrough.dtb",
              vbus = hw.vm1_hw, cpus = 0x1,
              bootargs = "name=vm1 period_ms=" .. VM1_MS .. until_end(VM1_MS, 0) }

local function start_vm2(crash)
  local args = "name=vm2 period_ms=" .. VM2_MS
  if crash then
    args = args .. " crash_after=" .. CRASH_AFTER
  else
    args = args .. until_end(VM2_MS, CRASH_AFTER * VM2_MS + 1000)
  end
  -- uvmm ignores an access outside the VM by default; here it is the crash.
  vmm.start_vm{ id = 2, kernel = "rom/blink.elf", fdt = "rom/virt-r82-passthrough.dtb",
                vbus = hw.vm2_hw, cpus = 0x2, bootargs = args, ext_args = { "--fault-mode=halt" } }
    :exit_handler(function(code)
      if code == 0 then return end     -- its planned end
      -- A crash (exit 1), or a kill from the monitor (nil): bring vm2 back.
      print("vm2 " .. (code and ("crashed (exit " .. code .. ")") or "was killed")
            .. ": its LED keeps its state; starting vm2 again in 1 s")
      L4.sleep(1)   -- holds ned's loop for that second; the VMs and programs run on
      start_vm2(false)
    end)
end
start_vm2(true)
