-- pyned's helpers for test scripts (`pyned test SCRIPT.lua ...`): wait for console
-- output, inject faults, read the lifecycle journal, and end with a verdict.
--
--   local test = require "test"
--   local vm = vmm.start_vm{ ..., restart = { on = {"crash"}, max = 3 } }
--   test.expect(vm, "rtos: tick=1000 ", 5)     -- a Python regular expression
--   test.inject(vm, "undefined")
--   local e = test.wait_event(vm, "restart", { timeout = 5 })
--   test.check(e.restarts == 1, "one restart")
--   test.pass()
--
-- Like ned's wait(), these block the script while the VMs run on. A failed
-- check ends the run at once with the script line that failed; so does
-- test.pass(). A script that returns without a verdict passes once every task
-- it started has ended (pyned test waits as --wait-and-exit does).
local N, L4 = ...
local M = {}
local DEFAULT_TIMEOUT = 10

-- "script.lua:12: " for the line that called a helper of this module.
local where = L4.caller_pos

local function fail_at(pos, msg)
  N.test_verdict(false, pos .. tostring(msg))
end

-- A VM as the natives take it: a task handle's native object, or a console name.
local function vm_of(vm)
  if type(vm) == "table" and vm.handle ~= nil then return vm.handle end
  return vm
end

-- A native call whose user errors (a bad pattern, a VM not running) fail the test.
local function call(pos, fn, ...)
  local res = table.pack(pcall(fn, ...))
  if not res[1] then
    if not N.is_user_error(res[2]) then error(res[2], 0) end
    fail_at(pos, N.error_text(res[2]))
  end
  return table.unpack(res, 2, res.n)
end

function M.pass(msg) N.test_verdict(true, msg ~= nil and tostring(msg) or nil) end

function M.fail(msg) fail_at(where(), msg ~= nil and msg or "failed") end

function M.check(cond, msg)
  if not cond then fail_at(where(), msg ~= nil and msg or "check failed") end
  return cond
end

function M.equal(actual, expected, msg)
  if actual ~= expected then
    fail_at(where(), (msg and (msg .. ": ") or "") .. "expected " .. tostring(expected)
            .. ", got " .. tostring(actual))
  end
  return actual
end

-- Wait for `pattern` (a Python regular expression) on the VM's console, in
-- output after the previous expect's match on that console. Returns the
-- matched text and the captures (false for a group that did not take part).
-- Output arrives as the guest writes it, byte by byte: end a pattern whose
-- last part could grow (a number) with "\n".
function M.expect(vm, pattern, timeout)
  local pos = where()
  if type(pattern) ~= "string" then fail_at(pos, "expect: pattern must be a string") end
  local m, why = call(pos, N.test_expect, vm_of(vm), pattern, timeout or DEFAULT_TIMEOUT)
  if m == nil then fail_at(pos, why) end
  return table.unpack(m)
end

-- A fault into the running VM: "data-abort", "undefined", "serror" or "hang".
function M.inject(vm, kind, cpu)
  call(where(), N.test_inject, vm_of(vm), kind, cpu or 0)
end

-- Stop the VM and start a fresh one in the same task (RAM zeroed).
function M.reset(vm)
  call(where(), N.test_reset, vm_of(vm))
end

-- Wait until the VM's journal holds `count` entries of `event` (counted
-- from the system's start); returns the count-th. opts: a timeout in seconds,
-- or { timeout = s, count = n }.
function M.wait_event(vm, event, opts)
  local pos = where()
  if type(opts) ~= "table" then opts = { timeout = opts } end
  local timeout = opts.timeout or DEFAULT_TIMEOUT
  local e = call(pos, N.test_wait_event, vm_of(vm), event, opts.count or 1, timeout)
  if e == nil then
    local name = call(pos, N.vm_name, vm_of(vm))
    fail_at(pos, string.format("%s: no %s%s within %g s", name, tostring(event),
                               (opts.count or 1) > 1 and (" #" .. opts.count) or "", timeout))
  end
  return e
end

M.journal = L4.journal

return M
