"""The Lua boundary: Lua values become typed Python objects here and nowhere else."""

from __future__ import annotations

from lupa.lua54 import lua_type

from pyned.errors import ConfigError
from pyned.kernel.irq import Irq
from pyned.kernel.memory import Dataspace
from pyned.services.cons import Channel
from pyned.services.gate import IpcGate
from pyned.services.spec import RestartPolicy, SchedSpec, StartSpec
from pyned.services.virtio_servers import VirtioPort


def lua_list(value: object, what: str) -> list[object]:
    if value is None:
        return []
    if lua_type(value) != "table":
        raise ConfigError(f"{what} must be a list")
    return [value[i] for i in range(1, len(value) + 1)]  # type: ignore[index]


def lua_dict(value: object, what: str) -> dict[str, object]:
    if value is None:
        return {}
    if lua_type(value) != "table":
        raise ConfigError(f"{what} must be a table")
    return {str(k): v for k, v in value.items()}  # type: ignore[attr-defined]


def start_spec(prog: object, args: object, caps: object, log: object, prio: object,
               cpus: object) -> StartSpec:
    if not isinstance(prog, str):
        raise ConfigError("start: program name must be a string")
    argv = [str(a) for a in lua_list(args, "arguments")]
    capmap: dict[str, object] = {}
    for name, value in lua_dict(caps, "caps").items():
        if isinstance(value, (Dataspace, Channel, IpcGate, VirtioPort, Irq)):
            capmap[name] = value
        elif isinstance(value, str):
            capmap[name] = value  # a capability pyned does not model, kept by kind
        else:
            raise ConfigError(f"caps.{name}: not a capability")
    if log is not None and not isinstance(log, Channel):
        raise ConfigError("log: not a log capability")
    sched = None
    if prio is not None or cpus is not None:
        try:
            p = int(prio or 0)  # type: ignore[arg-type]
            mask = None if cpus is None else int(cpus)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError("scheduler: prio and cpus must be numbers") from None
        if not 0 <= p <= 255:
            raise ConfigError(f"scheduler: priority {p} is outside 0..255")
        sched = SchedSpec(p, mask if mask is not None else -1)
    return StartSpec(prog, argv, capmap, log, sched)


_RESTART_NUMBERS = {"max": int, "backoff_ms": float, "backoff_factor": float,
                    "backoff_max_ms": float, "window_s": float}


def restart_policy(value: object) -> RestartPolicy | None:
    """``restart = { on = {...}, max = N, backoff_ms = T, ... }`` of start_vm."""
    if value is None:
        return None
    fields: dict[str, object] = {}
    for key, v in lua_dict(value, "restart").items():
        if key == "on":
            kinds = [v] if isinstance(v, str) else lua_list(v, "restart.on")
            if not all(isinstance(k, str) for k in kinds):
                raise ConfigError("restart.on must list event names")
            fields["on"] = tuple(kinds)  # type: ignore[arg-type]
        elif key in _RESTART_NUMBERS:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise ConfigError(f"restart.{key} must be a number")
            if key == "max" and v != int(v):
                raise ConfigError("restart.max must be a whole number")
            fields[key] = _RESTART_NUMBERS[key](v)
        else:
            raise ConfigError(f"restart: unknown key {key!r} (known: on, "
                              f"{', '.join(_RESTART_NUMBERS)})")
    return RestartPolicy(**fields)  # type: ignore[arg-type]
