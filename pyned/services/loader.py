"""Starting programs: what ned's ``L4.default_loader:start`` does, for built-in services.

A start request arrives here already typed (``StartSpec``); the ned layer
converted the Lua tables. Each ``rom/NAME`` program is a Python service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pyned.errors import ConfigError
from pyned.kernel.task import Task
from pyned.services import gpio_blink, io, uvmm, virtio_servers
from pyned.services.spec import StartSpec

if TYPE_CHECKING:
    from pyned.system import System

Service = Callable[["System", Task, StartSpec], None]

PROGRAMS: dict[str, Service] = {
    "uvmm": uvmm.start,
    "l4vio_switch": virtio_servers.start_switch,
    "l4vio_net_p2p": virtio_servers.start_switch,  # a two-port switch serves the same purpose
    "virtio-block": virtio_servers.start_block,
    "virtio-rng": virtio_servers.start_rng,
    "io": io.start,
    "gpio-blink": gpio_blink.start,
}


def start(system: "System", spec: StartSpec) -> Task:
    name = spec.program[4:] if spec.program.startswith("rom/") else spec.program
    service = PROGRAMS.get(name)
    if service is None:
        system.rom.resolve(spec.program)  # a missing file is the clearer error
        raise ConfigError(f"{spec.program}: not a program pyned can start "
                          f"(built-in programs: {', '.join('rom/' + p for p in PROGRAMS)})")
    task = system.tasks.create(name)
    task.channel = spec.log.name if spec.log is not None else None
    try:
        service(system, task, spec)
    except BaseException:
        task.exit(1, "failed to start")
        raise
    return task
