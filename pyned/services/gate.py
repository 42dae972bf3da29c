"""IPC gates: the channels a script creates with ``loader:new_channel()``.

On L4Re a server receives a channel's server end as a capability and then
answers ``create`` calls made on the client end (the switch's ports, for
one). Here a gate is that rendezvous: a service binds its factory to the
gate it was handed, and ``create`` on the gate calls the factory. A service
may instead put one object behind the gate (io's vbus): whoever is given the
gate then talks to that object.
"""

from __future__ import annotations

from typing import Callable

from pyned.errors import ConfigError

# A server's answer to create(proto, args...): the new object, a capability.
GateFactory = Callable[[int, list[str]], object]


class IpcGate:
    def __init__(self) -> None:
        self.server: str | None = None
        self._factory: GateFactory | None = None
        self.object: object | None = None

    @property
    def bound(self) -> bool:
        return self._factory is not None

    def bind(self, server: str, factory: GateFactory) -> None:
        if self.server is not None:
            raise ConfigError(f"channel already served by {self.server}")
        self.server, self._factory = server, factory

    def serve(self, server: str, obj: object) -> None:
        if self.server is not None:
            raise ConfigError(f"channel already served by {self.server}")
        self.server, self.object = server, obj

    def create(self, proto: int, args: list[str]) -> object:
        if self._factory is None:
            raise ConfigError("create on a channel no server has taken yet")
        return self._factory(proto, args)
