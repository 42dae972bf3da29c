-- The L4 module as ned's embedded ned.lua builds it: constants, capabilities,
-- loaders and task handles on top of a few native primitives (N) that pyned
-- provides. Errors raised here point at the user's script line, not at this file.
local N = ...
local L4 = {}

-- Walk the stack to the first frame outside pyned's own Lua files, so that an
-- error names the line of the script that caused it.
local function caller_pos()
  local level = 2
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return "" end
    if info.what ~= "C" and not N.is_library(info.source) then
      -- the full path: short_src abbreviates long ones with "..."
      local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
      return src .. ":" .. (info.currentline or 0) .. ": "
    end
    level = level + 1
  end
end

L4.caller_pos = caller_pos

function L4.user_error(msg)
  error(caller_pos() .. tostring(msg), 0)
end
local user_error = L4.user_error

-- Call a native primitive; a Python error becomes a Lua error at the script line.
local function native(fn, ...)
  local res = table.pack(pcall(fn, ...))
  if not res[1] then
    if not N.is_user_error(res[2]) then error(res[2], 0) end  -- a host bug: keep it whole
    user_error(N.error_text(res[2]))
  end
  return table.unpack(res, 2, res.n)
end

L4.Proto = {
  Dataspace = 0x4000, Namespace = 0x4001, Goos = 0x4003, Mem_alloc = 0x4004, Rm = 0x4005,
  Event = 0x4006, Inhibitor = 0x4007, Sigma0 = -6, Log = -13, Scheduler = -14, Factory = -15,
  Vm = -16, Dma_space = -17, Irq_sender = -18, Irq_muxer = -19, Semaphore = -20, Iommu = -22,
  Ipc_gate = 0,
}
L4.Rights = { s = 2, w = 1, r = 4, d = 8, n = 16, c = 32, ro = 4, rw = 5, rws = 7 }
L4.Ldr_flags = { eager_map = 1, all_segs_cow = 2, pinned_segs = 4 }
L4.Mem_alloc_flags = { Continuous = 1, Pinned = 2, Super_pages = 4 }
L4.Dbg = { Info = 1, Warn = 2, Boot = 4, Server = 0x10, Exceptions = 0x20, Cmd_line = 0x40,
           Loader = 0x80, Name_space = 0x400, All = 0xffffffff }
L4.Info = {
  arch = function() return "arm64" end,
  platform = function() return N.platform_name() end,
  mword_bits = function() return 64 end,
  Kip = { str = function() return N.platform_name() end },
}

function L4.sleep(s) native(N.sleep_ms, math.floor((tonumber(s) or 0) * 1000)) end
function L4.msleep(ms) native(N.sleep_ms, tonumber(ms) or 0) end

-- pyned: serve the monitor on an address ("unix:PATH", "tcp:127.0.0.1:PORT");
-- `vm` names the VM its VM commands go to. Returns the address served.
function L4.monitor_listen(address, vm)
  if type(address) ~= "string" then user_error("monitor_listen: address must be a string") end
  return native(N.monitor_listen, address, vm and tostring(vm) or nil)
end

---------------------------------------------------------------------------
-- CPU sets: a bit per platform core.
local Cpu_set = {}
Cpu_set.__index = Cpu_set

local function parse_cpus(spec, mask)
  if type(spec) == "number" then
    return mask | (1 << math.floor(spec))
  elseif type(spec) == "string" then
    for part in spec:gmatch("[^,]+") do
      local a, b = part:match("^%s*(%d+)%s*%-%s*(%d+)%s*$")
      if a then
        for c = tonumber(a), tonumber(b) do mask = mask | (1 << c) end
      elseif part:match("^%s*%d+%s*$") then
        mask = mask | (1 << tonumber(part))
      else
        user_error("Cpu_set: bad CPU range '" .. part .. "'")
      end
    end
    return mask
  elseif type(spec) == "table" then
    for _, v in ipairs(spec) do mask = parse_cpus(v, mask) end
    return mask
  end
  user_error("Cpu_set: cannot make a CPU set from a " .. type(spec))
end

function Cpu_set:new(spec)
  local mask
  if spec == nil then mask = (1 << N.core_count()) - 1 else mask = parse_cpus(spec, 0) end
  return setmetatable({ mask = mask }, Cpu_set)
end
function Cpu_set.__bor(a, b) return setmetatable({ mask = a.mask | b.mask }, Cpu_set) end
function Cpu_set.__band(a, b) return setmetatable({ mask = a.mask & b.mask }, Cpu_set) end
function Cpu_set.__eq(a, b) return a.mask == b.mask end
function Cpu_set.__tostring(s) return string.format("Cpu_set(0x%x)", s.mask) end
L4.Cpu_set = Cpu_set

local function cpu_mask(cpus)
  if cpus == nil then return nil end
  if getmetatable(cpus) == Cpu_set then return cpus.mask end
  if type(cpus) == "number" then return math.floor(cpus) end
  return Cpu_set:new(cpus).mask
end
L4.cpu_mask = cpu_mask

---------------------------------------------------------------------------
-- Capabilities: Lua tables around native handles, with ned's methods.
local Cap = {}
Cap.__index = Cap
local function cap(kind, handle, fields)
  local c = setmetatable(fields or {}, Cap)
  c.kind, c.handle = kind, handle
  return c
end
function Cap:is_valid() return self.handle ~= nil or self.kind == "factory" end
function Cap:svr() return self end
function Cap:m(_rights) return self end
Cap.mode, Cap.rights = Cap.m, Cap.m
function Cap:__tostring() return "L4::Cap<" .. self.kind .. ">" end

-- Factories create dataspaces, schedulers and log channels.
function Cap:create(proto, ...)
  local args = table.pack(...)
  if self.kind ~= "factory" and self.kind ~= "channel" then
    user_error("create: " .. self.kind .. " capability is not a factory")
  end
  if proto == L4.Proto.Dataspace then
    local size, flags, align, addr = args[1], args[2], args[3], args[4]
    if type(size) ~= "number" then user_error("create(Proto.Dataspace): size must be a number") end
    return cap("dataspace", native(N.ds_create, math.floor(size), flags or 0, align or 21, addr))
  elseif proto == L4.Proto.Irq_sender and self.kind == "factory" then
    -- A kernel IRQ object: one receiver binds it, its holders trigger it.
    return cap("irq", native(N.irq_create))
  elseif proto == L4.Proto.Scheduler then
    local prio, cpus = args[2], args[3]
    return cap("scheduler", nil, { prio = math.floor(prio or 0), cpus = cpu_mask(cpus) })
  elseif self.kind == "channel" and self.handle ~= nil and N.gate_bound(self.handle)
         and proto ~= L4.Proto.Log then
    -- A channel a server has taken: the server answers (a switch port, a disk).
    local words = {}
    for i = 1, args.n do words[#words + 1] = tostring(args[i]) end
    local obj = native(N.gate_create, self.handle, proto, words)
    return cap(N.cap_kind(obj), obj)
  elseif proto == L4.Proto.Log or proto == 1 then
    local opts = {}
    for i = 3, args.n do opts[#opts + 1] = tostring(args[i]) end
    return cap("log", native(N.log_create, tostring(args[1] or "app"), tostring(args[2] or ""), opts))
  elseif proto == L4.Proto.Ipc_gate then
    return cap("channel", N.gate_new())
  elseif proto == L4.Proto.Factory then
    return cap("factory", nil)
  end
  user_error("create: protocol " .. tostring(proto) .. " is not available in pyned")
end

L4.Env = {
  factory = cap("factory", nil),
  mem_alloc = cap("factory", nil),
  log = cap("log", N.ned_channel()),
  rom = cap("namespace", nil),
  parent = cap("parent", nil),
  rm = cap("rm", nil),
  scheduler = cap("scheduler", nil, { prio = 0 }),
}
L4.Env.user_factory = L4.Env.mem_alloc

---------------------------------------------------------------------------
-- Task handles (ned's _task_ops).
local Task = {}
Task.__index = Task
local function task(handle) return setmetatable({ handle = handle }, Task) end
function Task:state() return N.task_state(self.handle) end
function Task:exit_code() return N.task_exit_code(self.handle) end
function Task:wait() return N.task_wait(self.handle) end
function Task:kill() return N.task_kill(self.handle) end
function Task:exit_handler(fn)
  if type(fn) ~= "function" then user_error("exit_handler: expects a function") end
  local ok = N.task_exit_handler(self.handle, fn)
  if ok == nil then user_error("exit_handler callback already registered") end
  return ok
end
-- pyned: lifecycle callbacks, run from the event loop like exit handlers. `event`
-- is one of a VM's journal events (crash, reboot, shutdown, killed, restart,
-- gave-up, watchdog) or "exit" (any task); fn gets a table with the entry's
-- fields (event, vm, cause, code, pc, esr, far, restarts, console, time, ...).
function Task:on(event, fn)
  if type(event) ~= "string" then user_error("on: expects an event name") end
  if type(fn) ~= "function" then user_error("on: expects a function") end
  native(N.task_on, self.handle, event, fn)
  return self
end
-- pyned: this VM's journal entries (see L4.journal).
function Task:journal(filter)
  local vm = N.task_vm(self.handle)
  if vm == nil then user_error("journal: " .. tostring(self) .. " is not a VM") end
  return L4.journal(setmetatable({ vm = vm }, { __index = filter }))
end
function Task.__eq(a, b) return N.task_id(a.handle) == N.task_id(b.handle) end
function Task.__lt(a, b) return N.task_id(a.handle) < N.task_id(b.handle) end
function Task.__le(a, b) return N.task_id(a.handle) <= N.task_id(b.handle) end
function Task:__tostring() return "L4::Task<" .. N.task_name(self.handle) .. ">" end

---------------------------------------------------------------------------
-- The loader.
local Loader = {}
Loader.__index = Loader

function Loader.new(opts)
  opts = opts or {}
  local l = setmetatable({}, Loader)
  l.mem = opts.mem or opts.loader or L4.Env.mem_alloc
  l.factory = opts.factory or L4.Env.factory
  l.log_fab = opts.log_fab or l.mem
  return l
end

function Loader:new_channel()
  return cap("channel", N.gate_new())
end

local function resolve_log(self, env, prog)
  local log = env.log
  if log == nil then
    local tag = prog:match("([^/]+)$") or prog
    return native(N.log_create, tag, "", {})
  elseif type(log) == "table" and log.kind == "log" then
    return log.handle
  elseif type(log) == "table" then
    local l = self.log_fab:create(L4.Proto.Log, table.unpack(log))
    return l.handle
  elseif type(log) == "function" then
    return resolve_log(self, { log = log() }, prog)
  end
  user_error("start: log must be a table {tag, colour, ...} or a log capability")
end

function Loader:startv(env, prog, ...)
  env = env or {}
  if type(prog) ~= "string" then user_error("startv: program must be a string") end
  local args = {}
  for _, a in ipairs({ ... }) do
    if type(a) == "table" then break end  -- a trailing posix environment table
    args[#args + 1] = tostring(a)
  end
  local caps = {}
  for k, v in pairs(env.caps or {}) do
    if type(v) == "function" then v = v(env.caps) end
    if type(v) == "table" and v.handle ~= nil then caps[k] = v.handle
    elseif v ~= nil then caps[k] = type(v) == "table" and v.kind or tostring(v) end
  end
  local sched = env.scheduler
  local prio, cpus
  if type(sched) == "table" and sched.kind == "scheduler" then prio, cpus = sched.prio, sched.cpus end
  local log = resolve_log(self, env, prog)
  return task(native(N.exec, prog, args, caps, log, prio, cpus, env.restart))
end

function Loader:start(env, cmdline, posix_env)
  if type(cmdline) ~= "string" then user_error("start: command line must be a string") end
  local words = {}
  for w in cmdline:gmatch("%S+") do words[#words + 1] = w end
  if #words == 0 then user_error("start: empty command line") end
  return self:startv(env, table.unpack(words))
end

L4.Loader = Loader

-- pyned: the lifecycle journal as a list of tables, oldest first.
-- filter: { vm = "vm1", event = "crash" or {"crash", "restart"}, since = seq }
function L4.journal(filter)
  filter = filter or {}
  if type(filter) ~= "table" then user_error("journal: expects a table { vm, event, since }") end
  return native(N.journal, filter.vm, filter.event, filter.since)
end
L4.default_loader = Loader.new({ factory = L4.Env.factory, mem = L4.Env.mem_alloc })

return L4
