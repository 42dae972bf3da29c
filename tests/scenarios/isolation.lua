-- Freedom from interference: an rtos (1 kHz, core 0, high priority) runs 8 s;
-- after its first 3 s, a VM beside it (core 1) starts crashing and being
-- restarted as fast as its policy allows. The rtos keeps every tick, keeps
-- pace with the clock, and its lateness with the storm stays
-- within bounds taken from its own first seconds alone. (This is a gross
-- check of a timing property on a shared host; the figures are measured by
-- benchmarks/run.py --only isolation.)
local vmm = require "vmm"
local test = require "test"

local SECONDS, BASELINE = 8, 3
local rtos = vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb",
                           bootargs = "seconds=" .. SECONDS, cpus = 0x1, prio = 20 }
local LINE = "rtos: tick=(\\d+) worst_late_us=(\\d+) mean_late_us=(\\d+) taskA=(\\d+) taskB=(\\d+)\n"

local seconds = {}
local function next_second(timeout)
  local _, tick, worst, mean, a, b = test.expect(rtos, LINE, timeout)
  local s = { tick = tonumber(tick), worst = tonumber(worst), mean = tonumber(mean),
              a = tonumber(a), b = tonumber(b) }
  seconds[#seconds + 1] = s
  return s
end

for _ = 1, BASELINE do next_second(10) end
local storm = vmm.start_vm{ id = 2, kernel = "rom/crash.elf", fdt = "rom/virt-r82.dtb",
                            bootargs = "crash=udf", cpus = 0x2, prio = 1,
                            restart = { on = { "crash" }, backoff_ms = 100 } }
for _ = BASELINE + 1, SECONDS do next_second(10) end
test.expect(rtos, "rtos: done ticks=" .. SECONDS * 1000, 5)
test.equal(rtos:wait(), 0, "the rtos powers off by itself")

local base_worst, base_mean = 0, 0
for i = 1, BASELINE do
  base_worst = math.max(base_worst, seconds[i].worst)
  base_mean = math.max(base_mean, seconds[i].mean)
end
local worst_bound = math.max(4 * base_worst, base_worst + 50000)
local mean_bound = math.max(4 * base_mean, base_mean + 10000)
for i, s in ipairs(seconds) do
  test.equal(s.tick, i * 1000, "ticks after second " .. i)
  if i > BASELINE + 1 then   -- the storm runs for all of these seconds
    test.check(s.worst <= worst_bound, string.format(
      "second %d: worst lateness %d us beside the storm, bound %d us (alone: %d us)",
      i, s.worst, worst_bound, base_worst))
    test.check(s.mean <= mean_bound, string.format(
      "second %d: mean lateness %d us beside the storm, bound %d us (alone: %d us)",
      i, s.mean, mean_bound, base_mean))
  end
end

-- The rtos kept pace with time, and the storm was real.
local run = rtos:journal()
test.check(run[#run].time - run[1].time < SECONDS + 2, string.format(
  "the rtos took %.1f s for %d s of ticks", run[#run].time - run[1].time, SECONDS))
local restarts = #storm:journal{ event = "restart" }
test.check(restarts >= 15, "only " .. restarts .. " restarts beside the rtos")
test.equal(#rtos:journal{ event = { "crash", "restart" } }, 0, "the rtos was never touched")
storm:kill()
test.pass(string.format("%d restarts beside it; worst %d us alone, %d us with the storm",
                        restarts, base_worst, math.max(table.unpack((function()
                          local w = {} for i = BASELINE + 2, SECONDS do w[#w + 1] = seconds[i].worst end
                          return w end)()))))
