"""The servers that hand out virtio device ports: ``rom/l4vio_switch`` and pyned's
``rom/virtio-block`` and ``rom/virtio-rng``.

As on L4Re, a server is started with a channel as its ``svr`` capability and
the script creates ports on that channel (``svr:create(0, "name=net0")``).
A port is a capability a VM names with ``l4vmm,virtiocap``; when the VM is
built, the port makes the device model for that VM (``open``), and when the
VM ends the port takes it back (``release``). So a restarted VM gets a fresh
device on the same port: the same switch port and MAC, the same disk file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pyned.devices.virtio.block import VirtioBlock
from pyned.devices.virtio.mmio import VirtioDevice
from pyned.devices.virtio.net import VirtioNet
from pyned.devices.virtio.rng import VirtioRng
from pyned.errors import ConfigError
from pyned.kernel.task import Task
from pyned.services.gate import IpcGate
from pyned.services.spec import StartSpec
from pyned.services.switch import VirtioSwitch

if TYPE_CHECKING:
    from pyned.system import System

Log = Callable[[str], None]


class PortUnavailable(Exception):
    """The port cannot serve this VM now; the message says why."""


class VirtioPort:
    """A capability naming one virtio device a server provides to one VM at a time."""

    kind = "virtio"

    def __init__(self, server: str, name: str) -> None:
        self.server = server
        self.name = name
        self.device: VirtioDevice | None = None
        self.alive = True

    def open(self, log: Log) -> VirtioDevice:
        if not self.alive:
            raise PortUnavailable(f"{self.server} port {self.name!r}: the server has exited")
        if self.device is not None:
            raise PortUnavailable(f"{self.server} port {self.name!r} is in use by another VM")
        self.device = self._make(log)
        return self.device

    def release(self, device: VirtioDevice) -> None:
        if self.device is device:
            self._unmake(device)
            self.device = None

    def _make(self, log: Log) -> VirtioDevice:
        raise NotImplementedError

    def _unmake(self, device: VirtioDevice) -> None:
        pass

    def __repr__(self) -> str:
        return f"<{self.server} port {self.name}>"


def _port_options(args: list[str], allowed: set[str]) -> dict[str, str]:
    """``key=value`` words as l4vio_switch's port creation takes them."""
    out: dict[str, str] = {}
    for word in args:
        key, eq, value = word.partition("=")
        if not eq:
            raise ConfigError(f"port option {word!r} is not key=value")
        if key not in allowed:
            raise ConfigError(f"unknown port option {key!r} (known: {', '.join(sorted(allowed))})")
        out[key] = value
    return out


def _host_path(system: "System", name: str) -> Path:
    """A file a script names: relative to the script's folder, as rom/ names are."""
    return system.rom.host_path(name)


def _serve(task: Task, spec: StartSpec, program: str, create: Callable[[list[str]], VirtioPort],
           on_stop: Callable[[], None] = lambda: None) -> list[VirtioPort]:
    """Answer ``create`` on the ``svr`` channel until killed; returns the live port list."""
    gate = spec.caps.get("svr")
    if not isinstance(gate, IpcGate):
        raise ConfigError(f"{program}: needs a channel as capability 'svr'")
    ports: list[VirtioPort] = []

    def create_port(_proto: int, words: list[str]) -> VirtioPort:
        port = create(words)
        ports.append(port)
        return port

    def stop() -> None:
        for port in ports:
            port.alive = False  # a VM built later cannot open them
        on_stop()
        task.exit(None, "killed", killed=True)

    gate.bind(program, create_port)
    task.server = True
    task.set_kill(stop)
    task.running()
    return ports


# -- the switch -------------------------------------------------------------------------


class SwitchPort(VirtioPort):
    kind = "net"

    def __init__(self, switch: VirtioSwitch, name: str) -> None:
        super().__init__(switch.name, name)
        self.switch = switch

    def _make(self, log: Log) -> VirtioDevice:
        dev = VirtioNet(self.switch.port(self.name).mac)
        self.switch.attach(self.name, dev)
        return dev

    def _unmake(self, device: VirtioDevice) -> None:
        self.switch.detach(self.name, device)  # type: ignore[arg-type]


def start_switch(system: "System", task: Task, spec: StartSpec) -> None:
    """``rom/l4vio_switch [-v] [-p PORTS] [--pcap FILE]``."""
    max_ports, pcap, verbose = 256, None, False
    args = list(spec.args)
    while args:
        a = args.pop(0)
        if a == "-v":
            verbose = True
        elif a in ("-p", "--size") or a.startswith("-p"):
            val = a[2:] if a.startswith("-p") and len(a) > 2 else (args.pop(0) if args else "")
            try:
                max_ports = int(val, 0)
            except ValueError:
                raise ConfigError(f"l4vio_switch: -p needs a number of ports, not {val!r}") from None
        elif a.startswith("--pcap="):
            pcap = a.split("=", 1)[1]
        elif a == "--pcap":
            pcap = args.pop(0) if args else None
        else:
            raise ConfigError(f"l4vio_switch: unknown argument {a!r}")
    channel = spec.log or system.cons.create("switch", "B")

    def log(text: str) -> None:
        channel.write(f"{text}\n".encode())

    try:
        switch = VirtioSwitch(f"switch{task.tid}", max_ports=max_ports,
                              pcap=_host_path(system, pcap) if pcap else None,
                              log=log if verbose else None)
    except OSError as err:
        raise ConfigError(f"l4vio_switch: cannot write the capture {pcap}: {err.strerror}") from None
    def create(words: list[str]) -> SwitchPort:
        opts = _port_options(words, {"ds-max", "name", "type", "mac", "vlan"})
        name = opts.get("name") or f"port{len(ports)}"
        try:
            switch.add_port(name, mac=opts.get("mac"), port_type=opts.get("type", "none"),
                            vlan=opts.get("vlan"))
        except ValueError as err:
            raise ConfigError(f"l4vio_switch: {err}") from None
        if verbose:
            log(f"port {name}: MAC {switch.port(name).mac.hex(':')}")
        return SwitchPort(switch, name)

    try:
        ports = _serve(task, spec, "l4vio_switch", create, on_stop=switch.close)
    except ConfigError:
        switch.close()
        raise
    system.switches.append(switch)


# -- block devices ------------------------------------------------------------------------


class DiskPort(VirtioPort):
    kind = "blk"

    def __init__(self, server: str, name: str, path: Path, read_only: bool,
                 serial: str | None) -> None:
        super().__init__(server, name)
        self.path, self.read_only, self.serial = path, read_only, serial

    def _make(self, log: Log) -> VirtioDevice:
        try:
            return VirtioBlock(self.path, read_only=self.read_only, serial=self.serial, log=log)
        except OSError as err:
            raise PortUnavailable(f"disk {self.name!r}: cannot open {self.path}: "
                                  f"{err.strerror}") from None

    def _unmake(self, device: VirtioDevice) -> None:
        device.close()  # type: ignore[attr-defined]


def start_block(system: "System", task: Task, spec: StartSpec) -> None:
    """``rom/virtio-block``: ports are disks, ``create(0, "name=", "file=", "ro", "serial=")``."""
    if spec.args:
        raise ConfigError(f"virtio-block: unknown argument {spec.args[0]!r}")
    disks: dict[str, DiskPort] = {}

    def create(words: list[str]) -> DiskPort:
        flags = {w for w in words if w in ("ro", "rw")}
        opts = _port_options([w for w in words if w not in flags],
                             {"name", "file", "serial", "ds-max"})
        name = opts.get("name") or f"disk{len(disks)}"
        if "file" not in opts:
            raise ConfigError(f"virtio-block: disk {name!r} needs file=PATH")
        # A rom/ name is looked up like any ROM, and a ROM is never written.
        rom = opts["file"].startswith("rom/")
        path = system.rom.resolve(opts["file"]) if rom else _host_path(system, opts["file"])
        if not path.is_file():
            raise ConfigError(f"virtio-block: disk {name!r}: no such image file {path}")
        if name in disks:
            raise ConfigError(f"virtio-block: disk {name!r} exists already")
        ro = rom or "ro" in flags or not os.access(path, os.W_OK)
        disk = DiskPort("virtio-block", name, path, ro, opts.get("serial"))
        disks[name] = disk
        return disk

    _serve(task, spec, "virtio-block", create)


# -- entropy ------------------------------------------------------------------------------


class EntropyPort(VirtioPort):
    kind = "rng"

    def __init__(self, server: str, name: str, seed: int | None) -> None:
        super().__init__(server, name)
        self.seed = seed

    def _make(self, log: Log) -> VirtioDevice:
        # A seeded port restarts its stream with each VM: a rerun sees the same bytes.
        return VirtioRng(self.seed)


def start_rng(system: "System", task: Task, spec: StartSpec) -> None:
    """``rom/virtio-rng``: ports are entropy sources, ``create(0, "name=", "seed=N")``."""
    if spec.args:
        raise ConfigError(f"virtio-rng: unknown argument {spec.args[0]!r}")
    def create(words: list[str]) -> EntropyPort:
        opts = _port_options(words, {"name", "seed"})
        seed = None
        if "seed" in opts:
            try:
                seed = int(opts["seed"], 0)
            except ValueError:
                raise ConfigError(f"virtio-rng: seed={opts['seed']!r} is not a number") from None
        return EntropyPort("virtio-rng", opts.get("name") or f"rng{len(ports) + 1}", seed)

    ports = _serve(task, spec, "virtio-rng", create)
