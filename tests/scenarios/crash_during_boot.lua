-- A guest that faults on its way up, before its first console byte and before
-- it has a vector table: every run is caught with the same PC, the journal
-- shows an empty console tail, and the policy gives up after two restarts.
local vmm = require "vmm"
local test = require "test"

local vm = vmm.start_vm{ id = 1, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb",
                         bootargs = "crash=boot", restart = { on = { "crash" }, max = 2 } }
local gave_up = test.wait_event(vm, "gave-up", 10)
test.equal(gave_up.restarts, 2)
local crashes = vm:journal{ event = "crash" }
test.equal(#crashes, 3, "crash entries")
for _, c in ipairs(crashes) do
  test.equal(c.pc, crashes[1].pc, "same PC each run")
  test.equal(c.esr, 0x02000000, "ESR of udf")
  test.equal(#c.console, 0, "console tail before the guest printed anything")
  test.check(c.cause:find("no vector table", 1, true), c.cause)
end
test.equal(vm:wait(), 1)
test.pass()
