-- uvmm's vmm.lua for pyned: start_vm builds uvmm's command line from a table
-- of options and starts rom/uvmm with the capabilities the VM needs.
-- Option names, defaults and the command-line order follow uvmm's configs/vmm.lua.
local L4 = require "L4"
local user_error = L4.user_error

local M = {}
M.loader = L4.Loader.new({ mem = L4.Env.user_factory })

function M.table_override(...)
  local out = {}
  for _, t in ipairs({ ... }) do
    for k, v in pairs(t or {}) do out[k] = v end
  end
  return out
end

function M.new_sched(prio, cpus, ...)
  return L4.Env.user_factory:create(L4.Proto.Scheduler, prio + 10, prio, cpus, ...)
end

function M.set_sched(opts, prio, cpus, ...)
  if prio == nil and cpus == nil then return end
  opts.scheduler = M.new_sched(prio or 0, cpus, ...)
end

-- A server that hands out virtio ports on a channel (svr), as vmm.lua starts
-- l4vio_switch: every key of `ports` becomes a port; the table is rewritten in
-- place to hold the port capabilities. `port_words(key, value)` gives the
-- create() arguments for one entry. `opts` may give ext_caps, scheduler and log.
local function start_port_server(what, ports, opts, log, prog, args, port_words)
  if type(ports) ~= "table" then user_error(what .. ": expects a table of ports") end
  local svr = M.loader:new_channel()
  local env = { caps = M.table_override({ svr = svr:svr() }, opts.ext_caps),
                log = opts.log or log, scheduler = opts.scheduler }
  local task = M.loader:startv(env, prog, table.unpack(args))
  local names = {}
  for k in pairs(ports) do names[#names + 1] = k end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(names) do
    ports[k] = svr:create(0, table.unpack(port_words(k, ports[k])))
  end
  return task
end

local function switch_port_words(key, value)
  local words = { "ds-max=4", "name=" .. tostring(key) }
  if type(value) == "table" then
    for _, w in ipairs(value) do words[#words + 1] = tostring(w) end
  end
  return words
end

function M.start_virtio_switch_tbl(opts)
  if type(opts) ~= "table" then user_error("start_virtio_switch_tbl: expects a table") end
  local ports = opts.ports
  local args = { "-v" }
  local nports = 0
  for _ in pairs(ports or {}) do nports = nports + 1 end
  if opts.port_limit then
    if not opts.svr_cap then user_error("start_virtio_switch_tbl: port_limit needs svr_cap") end
    nports = nports + opts.port_limit
  end
  args[#args + 1] = "-p"
  args[#args + 1] = tostring(nports)
  if opts.pcap then args[#args + 1] = "--pcap=" .. tostring(opts.pcap) end
  local prog = (opts.switch_type or "switch") == "switch" and "rom/l4vio_switch"
               or "rom/l4vio_net_p2p"
  return start_port_server("start_virtio_switch", ports, opts, { "switch", "Blue" }, prog, args,
                           switch_port_words)
end

function M.start_virtio_switch(ports, prio, cpus, switch_type, ext_caps)
  local opts = { ports = ports, switch_type = switch_type, ext_caps = ext_caps }
  M.set_sched(opts, prio, cpus)
  -- pyned: the lifecycle journal (L4.journal).
M.journal = L4.journal

return M.start_virtio_switch_tbl(opts)
end

-- pyned's block server: disks = { name = "file.img" | { file = ..., ro = true, serial = ... } }
function M.start_virtio_block(disks, opts)
  opts = opts or {}
  return start_port_server("start_virtio_block", disks, opts, { "blk", "Cyan" },
                           "rom/virtio-block", {}, function(key, value)
    local words = { "name=" .. tostring(key) }
    if type(value) == "string" then value = { file = value } end
    if type(value) ~= "table" then
      user_error("start_virtio_block: disk '" .. tostring(key) .. "' must be a file name or a table")
    end
    if value.file ~= nil then words[#words + 1] = "file=" .. tostring(value.file) end
    if value.serial ~= nil then words[#words + 1] = "serial=" .. tostring(value.serial) end
    if value.ro then words[#words + 1] = "ro" end
    return words
  end)
end

-- pyned's entropy server: sources = { name = true | { seed = N } }
function M.start_virtio_rng(sources, opts)
  opts = opts or {}
  return start_port_server("start_virtio_rng", sources, opts, { "rng", "Cyan" },
                           "rom/virtio-rng", {}, function(key, value)
    local words = { "name=" .. tostring(key) }
    if type(value) == "table" and value.seed ~= nil then
      words[#words + 1] = "seed=" .. tostring(value.seed)
    end
    return words
  end)
end

-- io: `busses` names the vbusses (keys); each key gets a channel, io serves the
-- vbus of that name on it, and the table is rewritten to hold the channels for
-- start_vm{ vbus = ... } or a native program's caps. As uvmm's vmm.lua, io is
-- started with `cmdline` plus rom/<key>.vbus for every bus. (uvmm's version warns
-- without opts.scheduler; pyned's io runs no threads, so there is nothing to warn of.)
function M.start_io(busses, cmdline, opts)
  if type(busses) ~= "table" then user_error("start_io: expects a table of vbus names") end
  if type(cmdline) ~= "string" then user_error("start_io: the command line must be a string") end
  opts = opts or {}
  if opts.caps ~= nil then
    print("Warning: use opts.ext_caps to pass custom/additional capabilities.")
  end
  local caps = {}
  local names = {}
  for k in pairs(busses) do names[#names + 1] = k end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  local files = ""
  for _, k in ipairs(names) do
    local c = M.loader:new_channel()
    busses[k] = c
    caps[k] = c:svr()
    files = files .. " rom/" .. tostring(k) .. ".vbus"
  end
  local env = { caps = M.table_override(caps, opts.caps, opts.ext_caps),
                log = opts.log or { "io", "red" }, scheduler = opts.scheduler }
  return M.loader:start(env, "rom/io " .. cmdline .. files)
end

local known = {
  id = "number", mem = true, mem_align = "number", ram_base = "number", kernel = "string",
  rd = "string", fdt = true, bootargs = "string", cpus = true, prio = "number", log = true,
  mon = true, ext_args = "table", ext_caps = "table", net = true, vbus = true, jdb = true,
  scheduler = "table",
  -- pyned's own: a restart policy, the no-progress detector's timeout (s), and
  -- a firmware boot from flash (the image, and a file behind the second bank)
  restart = "table", hang_timeout = "number", firmware = "string", nvram = "string",
}

local function check_options(options)
  if type(options) ~= "table" then user_error("start_vm: expects a table of options") end
  for k, v in pairs(options) do
    local want = known[k]
    if want == nil then
      user_error("start_vm: unknown option '" .. tostring(k) .. "'")
    elseif want ~= true and type(v) ~= want then
      user_error("start_vm: option '" .. k .. "' must be a " .. want .. ", not a " .. type(v))
    end
  end
end

function M.start_vm(options)
  check_options(options)
  local nr = options.id
  local align = options.mem_align or 21
  local cmdline = {}

  if type(options.fdt) ~= "table" then options.fdt = { options.fdt } end
  -- Long forms: with ned's "-c" .. bootargs, an empty bootargs would make uvmm
  -- take the next argument (the kernel, say) as the command line.
  for _, fdt in ipairs(options.fdt) do
    if type(fdt) ~= "string" then user_error("start_vm: option 'fdt' must name DTB files") end
    cmdline[#cmdline + 1] = "--dtb=" .. fdt
  end
  if options.bootargs then cmdline[#cmdline + 1] = "--cmdline=" .. options.bootargs end
  if options.rd then cmdline[#cmdline + 1] = "--ramdisk=" .. options.rd end
  if options.kernel then cmdline[#cmdline + 1] = "--kernel=" .. options.kernel end
  if options.ram_base then
    cmdline[#cmdline + 1] = string.format("-b0x%x", options.ram_base)
  end
  if options.hang_timeout then
    cmdline[#cmdline + 1] = "--hang-timeout=" .. tostring(options.hang_timeout)
  end
  if options.firmware then cmdline[#cmdline + 1] = "--firmware=" .. options.firmware end
  if options.nvram then cmdline[#cmdline + 1] = "--nvram=" .. options.nvram end
  for _, a in ipairs(options.ext_args or {}) do cmdline[#cmdline + 1] = tostring(a) end

  local mem = options.mem or 16
  if type(mem) == "string" then
    print("start_vm: mem given as a string; use a number of MiB")
    mem = tonumber(mem)
    if mem == nil then user_error("start_vm: option 'mem' is not a number") end
  end
  local ram
  if type(mem) == "number" then
    if mem <= 0 then user_error("start_vm: option 'mem' must be a positive number of MiB") end
    local flags = L4.Mem_alloc_flags.Continuous | L4.Mem_alloc_flags.Pinned
                  | L4.Mem_alloc_flags.Super_pages
    -- On the MPU platform guest-physical is host-physical, so a fixed RAM base
    -- means a dataspace at that physical address (as the R82 demos allocate it).
    ram = L4.Env.user_factory:create(L4.Proto.Dataspace, math.floor(mem * 1024 * 1024), flags,
                                     align, options.ram_base)
  else
    ram = mem
  end

  local caps = M.table_override({ net = options.net, vbus = options.vbus, ram = ram,
                                  jdb = options.jdb and L4.Env.jdb or nil },
                                options.ext_caps)

  -- mon: nil/true is the VM's monitor channel "monN" (reached with 'connect monN'),
  -- false turns the monitor off; a string is uvmm_cli (pyned monitor is its
  -- counterpart) or an address on which to serve the monitor for this VM.
  local mon_address
  if options.mon ~= false then
    if type(options.mon) == "string" and options.mon ~= "uvmm_cli" then
      if not options.mon:match("^unix:") and not options.mon:match("^tcp:") then
        user_error("start_vm: mon = '" .. options.mon .. "': give true, false, \"uvmm_cli\", "
                   .. "\"unix:PATH\" or \"tcp:127.0.0.1:PORT\"")
      end
      mon_address = options.mon
    end
    caps.mon = M.loader.log_fab:create(L4.Proto.Log, "mon" .. tostring(nr), "g")
  end

  local opts = { caps = caps, scheduler = options.scheduler, restart = options.restart }
  if options.log then
    opts.log = options.log
  else
    if nr == nil then user_error("start_vm: give an 'id' (or a 'log')") end
    opts.log = M.loader.log_fab:create(L4.Proto.Log, "vm" .. nr, "w", "key=" .. nr)
  end
  if not opts.scheduler then M.set_sched(opts, options.prio, options.cpus) end

  local task = M.loader:startv(opts, "rom/uvmm", table.unpack(cmdline))
  if mon_address then L4.monitor_listen(mon_address, nr and ("vm" .. tostring(nr)) or nil) end
  return task
end

-- pyned: the lifecycle journal (L4.journal).
M.journal = L4.journal

return M
