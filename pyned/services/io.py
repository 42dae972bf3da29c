"""``rom/io``: the platform's devices, handed to clients on virtual buses (vbusses).

As L4Re's io: the configuration (io's Lua language, read by the ned layer
into an ``IoConfig``) describes hardware devices with their MMIO ranges and
interrupts, and virtual buses that each wrap some of them. A client (a VM's
uvmm, a native service) receives a vbus as a capability on a channel
(``vmm.start_io``) and may then touch exactly the devices on it.

What io checks before any client runs, each a one-line error naming the
device: a vbus device must be hardware of this board (its MMIO inside one of
the board's device windows, in whole 4 KiB pages, its interrupts lines of
the board); a board device belongs to one vbus at most; an interrupt goes to
one vbus at most. A vbus serves one client at a time (``claim``); its
interrupts are bound to that client's receivers through the kernel's IRQ
objects, which refuse a second owner as well.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyned.errors import ConfigError
from pyned.kernel.irq import Irq
from pyned.kernel.task import Task
from pyned.platform.board import MemRange
from pyned.services.gate import IpcGate
from pyned.services.spec import StartSpec

if TYPE_CHECKING:
    from pyned.system import System

PAGE = 0x1000


# -- the configuration, as the ned layer reads it -----------------------------------------


@dataclass(frozen=True)
class IoResource:
    id: str            # io keeps four letters: "reg0", "irq0", "regs"
    kind: str          # "mmio" or "irq"
    start: int
    end: int           # inclusive, as io's
    flags: int = 0

    @property
    def range(self) -> MemRange:
        return MemRange(self.start, self.end - self.start + 1)


@dataclass(eq=False)
class IoDevice:
    """A hardware device of the configuration (``Io.Hw.Device``)."""

    name: str
    compatible: tuple[str, ...] = ()
    hid: str | None = None
    resources: tuple[IoResource, ...] = ()
    children: list["IoDevice"] = field(default_factory=list)
    path: str = ""

    def subtree(self) -> list["IoDevice"]:
        out = [self]
        for c in self.children:
            out += c.subtree()
        return out

    def matches(self, name: str) -> bool:
        return name == self.hid or name in self.compatible


@dataclass
class IoVbusSpec:
    name: str
    devices: list[tuple[str, IoDevice]]   # (name on the bus, the wrapped hardware device)


@dataclass
class IoConfig:
    devices: list[IoDevice]               # the hardware tree below the system bus
    vbusses: list[IoVbusSpec]
    files: list[str]
    notes: list[str] = field(default_factory=list)   # what the configuration printed


# -- what a client gets --------------------------------------------------------------------


@dataclass
class VbusMmio:
    resource: IoResource
    device: object          # the board device's model (its MMIO protocol)
    offset: int             # of the resource's start inside the board device's window

    @property
    def range(self) -> MemRange:
        return self.resource.range


@dataclass
class VbusDevice:
    name: str
    hw: IoDevice
    mmio: list[VbusMmio]
    irqs: list[tuple[IoResource, Irq]]

    def matches(self, name: str) -> bool:
        return self.hw.matches(name)

    @property
    def compatible(self) -> tuple[str, ...]:
        return self.hw.compatible


class VbusBusy(ConfigError):
    """The vbus serves another client."""


class Vbus:
    """One virtual bus: the devices, windows and interrupts one client may use."""

    kind = "vbus"

    def __init__(self, name: str, devices: list[VbusDevice]) -> None:
        self.name = name
        self.devices = devices
        self.owner: str | None = None
        self.alive = True
        self._lock = threading.Lock()

    def claim(self, owner: str) -> None:
        with self._lock:
            if not self.alive:
                raise VbusBusy(f"vbus '{self.name}': io has exited")
            if self.owner is not None and self.owner != owner:
                raise VbusBusy(f"vbus '{self.name}' is in use by {self.owner}; a vbus serves "
                               f"one client at a time")
            self.owner = owner

    def release(self, owner: str) -> None:
        with self._lock:
            if self.owner == owner:
                self.owner = None

    def __repr__(self) -> str:
        return f"<vbus {self.name}>"


# -- the service -----------------------------------------------------------------------------


def build_vbusses(system: "System", config: IoConfig) -> list[Vbus]:
    """Check the configuration against the board and build its vbusses (or raise ConfigError)."""
    device_bus: dict[int, str] = {}         # id(IoDevice) -> vbus
    board_bus: dict[str, tuple[str, str]] = {}   # board device -> (vbus, io device)
    irq_bus: dict[int, tuple[str, str]] = {}
    out = []
    for spec in config.vbusses:
        devices: list[VbusDevice] = []
        for vname, top in spec.devices:
            for hw in top.subtree():
                other = device_bus.get(id(hw))
                if other is not None and other != spec.name:
                    raise ConfigError(f"io: device '{hw.path}' is on vbus '{other}' and on vbus "
                                      f"'{spec.name}'; a device belongs to one vbus")
                if other == spec.name:
                    continue
                device_bus[id(hw)] = spec.name
                devices.append(_vbus_device(system, spec.name, vname if hw is top else hw.name,
                                            hw, board_bus, irq_bus))
        out.append(Vbus(spec.name, devices))
    return out


def _vbus_device(system: "System", bus: str, name: str, hw: IoDevice,
                 board_bus: dict[str, tuple[str, str]],
                 irq_bus: dict[int, tuple[str, str]]) -> VbusDevice:
    board = system.board
    mmio: list[VbusMmio] = []
    irqs: list[tuple[IoResource, Irq]] = []
    for res in hw.resources:
        what = f"io: device '{hw.path}' resource {res.id}"
        if res.kind == "mmio":
            rng = res.range
            dev = system.hardware.at(rng.base, rng.size)
            if dev is None:
                raise ConfigError(f"{what}: MMIO {rng} is no device of the board "
                                  f"({_board_list(system)})")
            if rng.base % PAGE or rng.size % PAGE:
                raise ConfigError(f"{what}: MMIO {rng} must cover whole 4 KiB pages "
                                  f"(a VM maps device memory page by page)")
            owner = board_bus.get(dev.spec.name)
            if owner is not None and owner[0] != bus:
                raise ConfigError(f"{what}: board device {dev.spec.name} is on vbus "
                                  f"'{owner[0]}' (as '{owner[1]}') already; it cannot also be "
                                  f"on vbus '{bus}'")
            board_bus[dev.spec.name] = (bus, hw.path)
            mmio.append(VbusMmio(res, dev.model, rng.base - dev.spec.window.base))
        else:
            for intid in range(res.start, res.end + 1):
                if not any(p.intid == intid for p in board.peripherals):
                    raise ConfigError(f"{what}: interrupt {intid} is no interrupt line of the "
                                      f"board's devices ({_board_list(system)})")
                owner = irq_bus.get(intid)
                if owner is not None and owner[0] != bus:
                    raise ConfigError(f"{what}: interrupt {intid} is routed to vbus "
                                      f"'{owner[0]}' ('{owner[1]}') already; an interrupt has "
                                      f"one owner")
                irq_bus[intid] = (bus, hw.path)
                single = IoResource(res.id, "irq", intid, intid, res.flags)
                irqs.append((single, system.icu.line(intid)))
    return VbusDevice(name, hw, mmio, irqs)


def _board_list(system: "System") -> str:
    return ", ".join(f"{p.name} {p.window} irq {p.intid}" for p in system.board.peripherals)


def start(system: "System", task: Task, spec: StartSpec) -> None:
    """``rom/io [-v] CONFIG...``: the vbusses of the configuration, each served on the
    channel that has its name."""
    config = spec.config
    if not isinstance(config, IoConfig):
        raise ConfigError("io: no configuration (start it with configuration files, "
                          "as vmm.start_io does)")
    for arg in spec.args:
        if arg not in ("-v", "--verbose"):
            raise ConfigError(f"io: unknown option {arg!r}")
    channel = spec.log or system.cons.create("io", "r")

    def log(text: str) -> None:
        channel.write(f"io: {text}\n".encode())

    vbusses = build_vbusses(system, config)
    gates = {name: cap for name, cap in spec.caps.items() if isinstance(cap, IpcGate)}
    by_name = {b.name: b for b in vbusses}
    for name in gates:
        if name not in by_name:
            raise ConfigError(f"io: channel '{name}' names no vbus of the configuration "
                              f"({', '.join(sorted(by_name)) or 'none'}; files "
                              f"{', '.join(config.files)})")
    for note in config.notes:
        log(note)
    for bus in vbusses:
        gate = gates.get(bus.name)
        if gate is None:
            log(f"vbus '{bus.name}': no channel of that name was given to io; nobody can use it")
            continue
        gate.serve("io", bus)
        log(f"vbus '{bus.name}': " + ("; ".join(_describe(d) for d in bus.devices) or "empty"))

    def stop() -> None:
        for bus in vbusses:
            bus.alive = False
        task.exit(None, "killed", killed=True)

    task.server = True
    task.set_kill(stop)
    task.running()


def _describe(d: VbusDevice) -> str:
    parts = [str(m.range) for m in d.mmio] + [f"irq {r.start}" for r, _ in d.irqs]
    return f"{d.name} ({', '.join(parts) or 'no resources'})"
