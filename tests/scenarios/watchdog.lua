-- The guest feeds its SBSA watchdog for a second, then stops: WS0 raises the
-- interrupt (journal: watchdog), WS1 resets the VM with uvmm's reboot code,
-- recorded as a crash caused by the watchdog; the policy restarts it once, and
-- the second bite ends the task. A guest that refreshes in its WS0 handler is
-- never reset.
local vmm = require "vmm"
local test = require "test"

local vm = vmm.start_vm{ id = 1, kernel = "rom/wdog.elf", fdt = "rom/virt-r82-wdt.dtb",
                         bootargs = "feed=1 period_ms=200",
                         restart = { on = { "crash" }, max = 1 } }
local ok = vmm.start_vm{ id = 2, kernel = "rom/wdog.elf", fdt = "rom/virt-r82-wdt.dtb",
                         bootargs = "feed=0 period_ms=100 ws0=refresh seconds=2" }

test.expect(vm, "wdog: stopped feeding", 10)
test.expect(vm, "wdog: WS0 interrupt WCS=0x3", 2)
local ws0 = test.wait_event(vm, "watchdog", 2)
test.check(ws0.cause:find("WS0", 1, true), ws0.cause)
local bite = test.wait_event(vm, "crash", 2)
test.equal(bite.code, 0x66, "uvmm's code for WS1")
test.check(bite.cause:find("watchdog WS1", 1, true), bite.cause)
test.check(bite.time - ws0.time >= 0.19, "WS1 one period after WS0")
test.expect(vm, "wdog: started", 5)           -- restarted by the policy
test.wait_event(vm, "gave-up", 10)
test.equal(vm:wait(), 0x66)

test.expect(ok, "wdog: refreshed at WS0", 5)
test.equal(ok:wait(), 0, "the guest that recovers at WS0 powers off by itself")
test.equal(#ok:journal{ event = "crash" }, 0)
test.pass()
