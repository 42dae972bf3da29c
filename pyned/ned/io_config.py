"""io's configuration files (Lua) read into a typed ``IoConfig``, in a Lua state of their own.

io runs its configuration in its own interpreter, so a configuration sees
only io's API (``lua/io_config.lua``: ``Io.Hw.Device``, ``Io.Res``,
``Io.Vi.System_bus``, ``wrap``, ``Io.add_vbusses``), never the ned script's
globals. Files run in command-line order in one state, so a later file may
use devices an earlier one described.

``vmm.start_io`` appends ``rom/NAME.vbus`` for every bus, as uvmm's vmm.lua
does (on L4Re each vbus comes from its own file). pyned also accepts a vbus
defined in the main configuration: then a missing ``NAME.vbus`` is no error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from lupa.lua54 import LuaError, LuaRuntime, lua_type

from pyned.errors import ConfigError, PynedError
from pyned.services.io import IoConfig, IoDevice, IoResource, IoVbusSpec

LUA_API = Path(__file__).resolve().parents[2] / "lua" / "io_config.lua"


def _deny(_obj: object, attr: object, _is_setting: bool) -> object:
    raise AttributeError(f"no attribute {attr!r}")


def split_io_args(args: list[str]) -> tuple[list[str], list[str]]:
    """(options, configuration files) of io's command line."""
    return [a for a in args if a.startswith("-")], [a for a in args if not a.startswith("-")]


def read_io_config(names: list[str], resolve: Callable[[str], Path]) -> IoConfig:
    """Run io's configuration files ``names`` (rom/ names or paths)."""
    notes: list[str] = []
    lua = LuaRuntime(unpack_returned_tuples=True, register_eval=False, register_builtins=False,
                     attribute_filter=_deny)
    api_path = str(LUA_API)
    natives = lua.table_from({"is_library": lambda source: str(source) == "@" + api_path})
    io_api = lua.execute("local path, N = ...; return assert(loadfile(path))(N)",
                         api_path, natives)
    g = lua.globals()
    g.Io = io_api
    g.print = lambda *a: notes.append(" ".join(str(x) for x in a))
    run = lua.eval("function(path) local f, e = loadfile(path); if not f then return false, e end "
                   "local ok, err = pcall(f); if not ok then return false, tostring(err) end "
                   "return true, false end")
    files: list[str] = []
    missing_vbus: list[str] = []
    for name in names:
        try:
            path = resolve(name)
        except PynedError:
            if name.endswith(".vbus"):
                missing_vbus.append(name)
                continue
            raise ConfigError(f"io: configuration {name} not found") from None
        try:
            ok, err = run(str(path))
        except LuaError as exc:
            ok, err = False, str(exc)
        if not ok:
            raise ConfigError(f"io: {err}")
        files.append(str(path))
    root, vbusses = lua.eval("Io._result")()
    config = _convert(root, vbusses, files, notes)
    defined = {b.name for b in config.vbusses}
    for name in missing_vbus:
        bus = Path(name).name[: -len(".vbus")]
        if bus not in defined:
            raise ConfigError(f"io: {name} not found, and no other configuration file defines "
                              f"vbus '{bus}' (Io.add_vbusses)")
    return config


def _get(table: object, key: str) -> object:
    return table[key]  # type: ignore[index]


def _list(table: object) -> list[object]:
    if table is None or lua_type(table) != "table":
        return []
    return [table[i] for i in range(1, len(table) + 1)]  # type: ignore[index]


def _convert(root: object, vbusses: object, files: list[str], notes: list[str]) -> IoConfig:
    by_uid: dict[int, IoDevice] = {}

    def device(t: object, prefix: str) -> IoDevice:
        name = str(_get(t, "name"))
        hid = _get(_get(t, "props"), "hid")
        res = tuple(IoResource(str(_get(r, "id")), str(_get(r, "kind")), int(_get(r, "start")),
                               int(_get(r, "stop")), int(_get(r, "flags")))
                    for r in _list(_get(t, "resources")))
        dev = IoDevice(name, tuple(str(c) for c in _list(_get(t, "cids"))),
                       None if hid is None else str(hid), res, path=f"{prefix}{name}")
        by_uid[int(_get(t, "uid"))] = dev
        dev.children = [device(c, f"{dev.path}.") for c in _list(_get(t, "children"))]
        return dev

    top = [device(c, "") for c in _list(_get(root, "children"))]
    specs = []
    for bus in _list(vbusses):
        bus_name = str(_get(bus, "name"))
        members = []
        for v in _list(_get(bus, "children")):
            hw = _get(v, "hw")
            if hw is None:
                raise ConfigError(f"io: vbus '{bus_name}': member '{_get(v, 'name')}' is not a "
                                  f"wrapped device (use wrap(...))")
            dev = by_uid.get(int(_get(hw, "uid")))
            if dev is None:
                raise ConfigError(f"io: vbus '{bus_name}': device '{_get(hw, 'name')}' was never "
                                  f"added to the hardware (Io.hw_add_devices or "
                                  f"Io.Dt.add_children(Io.system_bus(), ...))")
            members.append((str(_get(v, "name")), dev))
        specs.append(IoVbusSpec(bus_name, members))
    return IoConfig(top, specs, files, notes)
