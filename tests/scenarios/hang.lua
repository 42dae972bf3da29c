-- The host-side no-progress detector (start_vm's hang_timeout): a guest that
-- spins with IRQs masked while its timer interrupt is pending is ended as
-- hung; a guest computing flat out with nothing pending, and one idling in
-- wfi between ticks, run to their end under the same detector.
local vmm = require "vmm"
local test = require "test"

-- The watchdog's period is far away: only the detector can catch this one.
local hung = vmm.start_vm{ id = 1, kernel = "rom/wdog.elf", fdt = "rom/virt-r82-wdt.dtb",
                           bootargs = "feed=1 period_ms=60000 hang", hang_timeout = 1 }
local busy = vmm.start_vm{ id = 2, kernel = "rom/busy.elf", fdt = "rom/virt-r82.dtb",
                           bootargs = "seconds=3", hang_timeout = 1 }
local idle = vmm.start_vm{ id = 3, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb",
                           bootargs = "hz=10 seconds=3", hang_timeout = 1 }

test.expect(hung, "wdog: stopped feeding, hanging", 10)
local c = test.wait_event(hung, "crash", 30)   -- 1 s of its own run time
test.check(c.cause:find("^hang: cpu0 made no progress for 1 s"), c.cause)
test.equal(c.code, 1)
test.equal(hung:wait(), 1)
test.equal(busy:wait(), 0, "busy powers off by itself")
test.equal(idle:wait(), 0, "rtos powers off by itself")
test.equal(#busy:journal{ event = "crash" }, 0)
test.equal(#idle:journal{ event = "crash" }, 0)
test.pass()
