"""A typed request to start a program: what ned's Lua tables become."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyned.services.cons import Channel


@dataclass(frozen=True)
class SchedSpec:
    prio: int
    cpus: int  # bit mask of platform cores


@dataclass
class StartSpec:
    program: str
    args: list[str]
    caps: dict[str, object] = field(default_factory=dict)
    log: Channel | None = None
    scheduler: SchedSpec | None = None
    # A configuration the ned layer read for the program (io's Lua files).
    config: object | None = None
