-- io's configuration language (kernkonzept/io: io/server/src/io.lua), as pyned reads it.
-- A configuration describes the hardware (Io.Hw.Device with compatible, Property.hid,
-- Resource.<name> = Io.Res.mmio(start, end) / Io.Res.irq(n, type)) and the virtual buses
-- that hand devices to clients (Io.add_vbusses{ name = Io.Vi.System_bus(function()
-- dev = wrap(Io.system_bus():match("compatible")) end) }). This file builds plain
-- tables; pyned's io service checks them against the board and assigns the devices.
local N = ...
local Io = {}

-- Errors name the configuration file and line, not this file.
local function config_pos()
  local level = 2
  while true do
    local info = debug.getinfo(level, "Sl")
    if not info then return "" end
    if info.what ~= "C" and not N.is_library(info.source) then
      local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
      return src .. ":" .. (info.currentline or 0) .. ": "
    end
    level = level + 1
  end
end
local function fail(msg) error(config_pos() .. msg, 0) end

---------------------------------------------------------------------------
-- Resources. Names are cut to four letters, as io keeps them in a 32-bit id.
local Resource = {}
Resource.__index = Resource
local function resource(kind, start, stop, flags)
  if math.type(start) ~= "integer" or math.type(stop) ~= "integer" then
    fail("Io.Res." .. kind .. ": addresses and numbers must be integers")
  end
  if start > stop then fail("Io.Res." .. kind .. ": start " .. start .. " > end " .. stop) end
  return setmetatable({ kind = kind, start = start, stop = stop, flags = flags or 0 }, Resource)
end
local function is_resource(v) return getmetatable(v) == Resource end

-- L4_IRQ_F_* (l4sys icu.h) times io's Resource::Irq_type_base.
local IRQ_BASE = 0x100000
Io.Resource = {
  Irq_type_none = 0, Irq_type_level_high = 0x3 * IRQ_BASE, Irq_type_level_low = 0x13 * IRQ_BASE,
  Irq_type_raising_edge = 0x1 * IRQ_BASE, Irq_type_falling_edge = 0x11 * IRQ_BASE,
  Irq_type_both_edges = 0x21 * IRQ_BASE, Mem_type_r = 1, Mem_type_w = 2,
}
Io.Hw_device_DF_dma_supported = 1 << 2

Io.Res = {}
local function mmio(rights)
  return function(start, stop, flags)
    return resource("mmio", start, stop or start, (flags or 0) | rights)
  end
end
Io.Res.mmio_r = mmio(Io.Resource.Mem_type_r)
Io.Res.mmio_w = mmio(Io.Resource.Mem_type_w)
Io.Res.mmio_rw = mmio(Io.Resource.Mem_type_r | Io.Resource.Mem_type_w)
Io.Res.mmio = Io.Res.mmio_rw
function Io.Res.irq(start, flags)
  if flags ~= nil and type(flags) ~= "number" then
    fail("second argument of Io.Res.irq() must be a flags value")
  end
  if type(start) == "table" then return resource("irq", start[1], start[2], flags) end
  return resource("irq", start, start, flags)
end
function Io.Res.io() fail("Io.Res.io: I/O ports exist on x86 only; this board has none") end

---------------------------------------------------------------------------
-- Devices: hardware ("hw") and virtual ("vi"), as tables with io's methods.
local Device = {}
local uid = 0
local function device(kind)
  uid = uid + 1
  return setmetatable({ kind = kind, uid = uid, cids = {}, props = {}, resources = {},
                        children = {} }, Device)
end
local function is_device(v) return getmetatable(v) == Device end

-- A child is reachable as a field, by its name (Io.system_bus().uart1).
function Device.__index(dev, key)
  local method = Device[key]
  if method ~= nil then return method end
  for _, c in ipairs(rawget(dev, "children")) do
    if c.name == key then return c end
  end
  return nil
end

function Device:match_cid(cid)
  if self.props.hid == cid then return true end
  for _, c in ipairs(self.cids) do if c == cid then return true end end
  return false
end

function Device:match_cids(...)
  for _, cid in ipairs({ ... }) do if self:match_cid(cid) then return true end end
  return false
end

function Device:devices()
  local list = {}
  local function walk(d)
    list[#list + 1] = d
    for _, c in ipairs(d.children) do walk(c) end
  end
  walk(self)
  local i = 0
  return function() i = i + 1; return list[i] end
end

function Device:match(...)
  local found = {}
  for d in self:devices() do
    if d:match_cids(...) then found[#found + 1] = d end
  end
  return found
end

function Device:device(path)
  local d = self
  for part in path:gmatch("[^%./]+") do
    d = rawget(d, "children") and Device.__index(d, part)
    if d == nil or not is_device(d) then return nil end
  end
  return d
end

function Device:resources()
  local i = 0
  return function() i = i + 1; return self.resources[i] end
end

function Device:add_resource(res)
  if not is_resource(res) then fail("expected a resource (Io.Res...), got " .. tostring(res)) end
  self.resources[#self.resources + 1] = res
end

local function add_child(parent, name, dev, idx)
  if dev.parent ~= nil then
    fail("device " .. tostring(dev.name) .. " is added to the configuration twice")
  end
  if idx ~= nil then name = name .. "[" .. idx .. "]" end
  dev.name = tostring(name)
  dev.parent = parent
  parent.children[#parent.children + 1] = dev
end

local function key_order(a, b)
  if type(a) == "number" and type(b) == "number" then return a < b end
  if type(a) == "number" or type(b) == "number" then return type(a) == "number" end
  return tostring(a) < tostring(b)
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  return keys
end

local function set_property(dev, key, value)
  if key == "hid" and type(value) == "string" then dev.props.hid = value
  elseif key == "flags" and math.type(value) == "integer" then dev.props.flags = value
  else fail("Property." .. tostring(key) .. ": pyned knows Property.hid (a string) and "
            .. "Property.flags (a number)") end
end

local function member(dev, val, name)
  local vtype = type(val)
  if name == "compatible" then
    if vtype == "string" then val = { val } elseif vtype ~= "table" then
      fail("'compatible' must be a string or table of strings")
    end
    for _, v in ipairs(val) do dev.cids[#dev.cids + 1] = tostring(v) end
  elseif name == "Property" then
    if vtype ~= "table" then fail("'Property' must be a table") end
    for k, v in pairs(val) do set_property(dev, k, v) end
  elseif name == "Resource" then
    if vtype ~= "table" then fail("'Resource' must be a table") end
    for _, k in ipairs(sorted_keys(val)) do
      local v = val[k]
      if not is_resource(v) then fail("Resource." .. tostring(k) .. " is not a resource") end
      v.id = tostring(k):sub(1, 4)
      dev:add_resource(v)
    end
  elseif name == "Child" then
    if vtype ~= "table" then fail("'Child' must be a table") end
    for _, k in ipairs(sorted_keys(val)) do
      if not is_device(val[k]) then fail("Child." .. tostring(k) .. " is not a device") end
      add_child(dev, k, val[k])
    end
  elseif is_resource(val) then
    val.id = tostring(name):sub(1, 4)
    dev:add_resource(val)
  elseif is_device(val) then
    add_child(dev, name, val)
  elseif vtype == "table" then
    for _, i in ipairs(sorted_keys(val)) do
      member(dev, val[i], tostring(name) .. "[" .. tostring(i) .. "]")
    end
  else
    fail("cannot handle device member " .. tostring(name) .. ": " .. tostring(val))
  end
end

-- `entries`: { {key, value}, ... } in the order the configuration gave them.
local function add_device_data(dev, entries)
  for _, e in ipairs(entries) do member(dev, e[2], e[1]) end
end

-- A plain table's members: the list part in order, then the named ones by name.
local function table_entries(data)
  local entries, maxi = {}, 0
  for i, v in ipairs(data) do entries[#entries + 1] = { i, v }; maxi = i end
  local keys = {}
  for k in pairs(data) do
    if type(k) ~= "number" or k > maxi then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(keys) do entries[#entries + 1] = { k, data[k] } end
  return entries
end

-- io runs the body of a device with its own _ENV: assignments become members
-- (kept in the order they were made, so devices keep the file's order).
local function add_children(parent, fn)
  if not is_device(parent) then fail("expected a device, got " .. tostring(parent)) end
  if type(fn) ~= "function" then return parent end
  local idx, name, env = 0, nil, nil
  repeat
    idx = idx + 1
    name, env = debug.getupvalue(fn, idx)
  until name == "_ENV" or name == nil
  if name == nil then return parent end
  local members = { Property = {}, Resource = {} }
  local values, entries = {}, {}
  local proxy = setmetatable({}, {
    __index = function(_, k)
      if members[k] ~= nil then return members[k] end
      if values[k] ~= nil then return values[k] end
      return env[k]
    end,
    __newindex = function(_, k, v)
      if members[k] ~= nil then members[k] = v; return end
      if values[k] == nil then entries[#entries + 1] = k end
      values[k] = v
    end,
  })
  debug.upvaluejoin(fn, idx, function() return proxy end, 1)
  fn()
  local ordered = {}
  for _, k in ipairs(entries) do
    if values[k] ~= nil then ordered[#ordered + 1] = { k, values[k] } end
  end
  ordered[#ordered + 1] = { "Property", members.Property }
  ordered[#ordered + 1] = { "Resource", members.Resource }
  add_device_data(parent, ordered)
  return parent
end

local hw_root = device("hw")
hw_root.name = "System Bus"

Io.Dt = { add_children = add_children, add_child = add_child,
          add_resource = function(dev, res) dev:add_resource(res) end,
          match_cids = Device.match_cids, MAX_DEPTH = 1000 }
function Io.system_bus() return hw_root end
function Io.hw_add_devices(fn)
  if type(fn) == "function" then add_children(hw_root, fn) end
  return fn
end

Io.Hw = setmetatable({}, { __index = function(_, t)
  if t ~= "Device" then
    fail("Io.Hw." .. tostring(t) .. ": pyned models plain devices only (Io.Hw.Device)")
  end
  return function(data)
    local dev = device("hw")
    if type(data) == "function" then add_children(dev, data) end
    return dev
  end
end })

Io.Vi = setmetatable({}, { __index = function(_, t)
  if t ~= "System_bus" then
    fail("Io.Vi." .. tostring(t) .. ": pyned has virtual system buses only (Io.Vi.System_bus)")
  end
  return function(data)
    local bus = device("vi")
    if type(data) == "function" then add_children(bus, data)
    elseif type(data) == "table" then
      add_device_data(bus, table_entries(data))
    end
    return bus
  end
end })

-- A virtual device that hands one hardware device (and what hangs below it) to a bus.
function wrap(devs, filter)
  if filter ~= nil then
    fail("wrap: filters (GPIO pins, PCI functions) are not supported by pyned's io")
  end
  if is_device(devs) then devs = { devs } end
  if type(devs) ~= "table" then fail("wrap: expects a device or a list of devices") end
  local out = {}
  for _, d in ipairs(devs) do
    if not is_device(d) or d.kind ~= "hw" then
      fail("wrap: " .. tostring(d) .. " is not a hardware device")
    end
    local v = device("vi")
    v.hw = d
    out[#out + 1] = v
  end
  if #out == 1 then return out[1] end
  return out
end

local vbusses = {}
function Io.add_vbus(name, bus)
  if not is_device(bus) or bus.kind ~= "vi" or bus.hw ~= nil then
    fail("Io.add_vbus: '" .. tostring(name) .. "' is not a virtual bus (Io.Vi.System_bus)")
  end
  for _, b in ipairs(vbusses) do
    if b.name == name then fail("vbus '" .. tostring(name) .. "' is defined twice") end
  end
  bus.name = tostring(name)
  vbusses[#vbusses + 1] = bus
end
function Io.add_vbusses(busses)
  local names = {}
  for k in pairs(busses) do names[#names + 1] = k end
  table.sort(names, function(a, b) return tostring(a) < tostring(b) end)
  for _, k in ipairs(names) do Io.add_vbus(k, busses[k]) end
  return busses
end

Io._result = function() return hw_root, vbusses end
return Io
