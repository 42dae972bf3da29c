-- A VM that crashes is restarted by its policy, three times, from fresh RAM;
-- the fourth crash exhausts the policy and the task exits with uvmm's 1.
local vmm = require "vmm"
local test = require "test"

local vm = vmm.start_vm{ id = 1, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb",
                         bootargs = "crash=udf",
                         restart = { on = { "crash" }, max = 3, backoff_ms = 10 } }

for run = 1, 4 do
  test.expect(vm, "crash: pyned guest up", 10)
  test.expect(vm, "crash: RAM clean")          -- nothing of the last run is left
  test.expect(vm, "crash: executing udf")
end
local gave_up = test.wait_event(vm, "gave-up", 10)
test.equal(gave_up.restarts, 3, "restarts when the policy gave up")

local crashes = vm:journal{ event = "crash" }
test.equal(#crashes, 4, "crash entries")
for i, c in ipairs(crashes) do
  test.equal(c.restarts, i - 1, "restart count of crash " .. i)
  test.equal(c.code, 1, "exit code of a fatal guest state")
  test.equal(c.esr, 0x02000000, "ESR of the udf")     -- EC 0: unknown / undefined
  test.equal(c.pc, crashes[1].pc, "the same faulting PC every run")
  test.check(c.console[#c.console] == "crash: executing udf", "console tail: " .. c.console[#c.console])
end
test.equal(#vm:journal{ event = "restart" }, 3, "restart entries")

-- ned's view: the task is a zombie with the last code. An exit handler on a
-- dead task runs at once; event callbacks run from the event loop after the
-- script, and see every event since the start.
test.equal(vm:state(), "zombie")
test.equal(vm:exit_code(), 1)
test.equal(vm:exit_handler(function(code) test.equal(code, 1, "exit handler code") end), false)
local seen = 0
vm:on("crash", function(e) seen = seen + 1 end)
vm:on("exit", function(e)
  test.equal(seen, 4, "crash callbacks")
  test.equal(e.code, 1)
  test.equal(e.restarts, 3)
  test.pass()
end)
