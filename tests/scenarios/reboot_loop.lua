-- A guest that asks for a reboot every time it boots (PSCI SYSTEM_RESET): the
-- policy restarts it four times in its task, then gives up, and the task
-- exits with uvmm's reboot code 0x66, as ned's exit handler sees it.
local vmm = require "vmm"
local test = require "test"

local vm = vmm.start_vm{ id = 1, kernel = "rom/reboot.elf", fdt = "rom/virt-r82.dtb",
                         restart = { on = { "reboot" }, max = 4 } }
for run = 1, 5 do
  test.expect(vm, "reboot: resetting", 10)
end
test.equal(vm:wait(), 0x66, "code after the policy gave up")
test.equal(vm:state(), nil, "a waited-for task is reaped")

local reboots = vm:journal{ event = "reboot" }
test.equal(#reboots, 5, "reboot entries")
for i, r in ipairs(reboots) do
  test.equal(r.code, 0x66)
  test.equal(r.cause, "PSCI SYSTEM_RESET")
  test.equal(r.restarts, i - 1)
end
local gave_up = vm:journal{ event = "gave-up" }
test.equal(#gave_up, 1, "one gave-up entry")
test.check(gave_up[1].cause:find("limit 4", 1, true), gave_up[1].cause)
test.equal(#vm:journal{ event = "crash" }, 0, "no crash")
test.pass()
