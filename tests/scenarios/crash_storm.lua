-- A VM that crashes the moment it boots, under a policy of at most 5 restarts
-- in 10 s with an exponential backoff (5, 10, 20, 40, 80 ms): the storm stops
-- after the fifth restart, and the rtos beside it runs its course.
local vmm = require "vmm"
local test = require "test"

local storm = vmm.start_vm{ id = 1, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb",
                            bootargs = "crash=boot", cpus = 0x2,
                            restart = { on = { "crash" }, max = 5, window_s = 10,
                                        backoff_ms = 5, backoff_factor = 2 } }
local rtos = vmm.start_vm{ id = 2, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb",
                           bootargs = "seconds=2", cpus = 0x1, prio = 20 }

local gave_up = test.wait_event(storm, "gave-up", 10)
test.equal(gave_up.restarts, 5)
test.check(gave_up.cause:find("limit 5 in 10 s", 1, true), gave_up.cause)
local entries = storm:journal{ event = { "crash", "restart" } }
test.equal(#entries, 11, "6 crashes and 5 restarts")
for i = 1, 5 do
  local crash, restart = entries[2 * i - 1], entries[2 * i]
  test.equal(crash.event, "crash")
  test.equal(restart.event, "restart")
  local backoff = 0.005 * 2 ^ (i - 1)
  test.check(restart.time - crash.time >= backoff * 0.95,
             string.format("restart %d after %.3f s, backoff %.3f s", i,
                           restart.time - crash.time, backoff))
end
test.equal(storm:wait(), 1)
test.expect(rtos, "rtos: done ticks=2000", 10)
test.equal(rtos:wait(), 0)
test.pass()
