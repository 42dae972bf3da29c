-- A guest that powers off ends its task with 0 even under a restart policy
-- for crashes; with nothing left running, the run ends by itself (as
-- --wait-and-exit), which is how this script passes: it returns without a
-- verdict and its callbacks check what happened.
local vmm = require "vmm"
local test = require "test"

local vm = vmm.start_vm{ id = 1, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb",
                         restart = { on = { "crash", "reboot" }, max = 5 } }
local seen = false
vm:on("shutdown", function(e)
  seen = true
  test.equal(e.code, 0, "power-off code")
  test.equal(e.cause, "PSCI SYSTEM_OFF")
  test.check(e.console[#e.console] == "hello: powering off", "last console line")
end)
vm:on("restart", function() test.fail("a power-off must not restart the VM") end)
vm:on("exit", function(e)
  test.check(seen, "the shutdown callback ran before the exit")
  test.equal(e.code, 0)
end)
vm:exit_handler(function(code) test.equal(code, 0, "exit handler code") end)
