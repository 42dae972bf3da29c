"""Devices made from device-tree nodes, by ``compatible``, from one explicit table.

A factory reads its own node and builds its device with only the ports it
needs. When it cannot back the node it raises ``Unbacked`` and the builder
disables the node with that reason, as uvmm does, instead of letting the
guest probe hardware that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from fdt.items import Node

from pyned.devices.base import IrqLine, UnconnectedIrq
from pyned.devices.pl011 import Pl011
from pyned.devices.psci import Psci
from pyned.devices.sysctl import SysCtl
from pyned.platform.board import Board, MemRange
from pyned.vmm.devicetree import DeviceTree, node_path
from pyned.vmm.vm import DeviceEntry, Vm


class Unbacked(Exception):
    """The node describes something this VM cannot provide; the message says why."""


@dataclass
class FactoryContext:
    vm: Vm
    dt: DeviceTree
    board: Board
    console_write: Callable[[bytes], None]
    notes: list[str]

    def windows(self, node: Node, count: int | None = None) -> list[MemRange]:
        regs = self.dt.reg(node)
        if not regs:
            raise Unbacked("no reg")
        if count is not None and len(regs) < count:
            raise Unbacked(f"needs {count} reg entries, has {len(regs)}")
        out = []
        for base, size in regs:
            if base % 0x1000 or size == 0:
                raise Unbacked(f"reg [{base:#x}, +{size:#x}) is not a page-aligned window")
            out.append(MemRange(base, (size + 0xFFF) & ~0xFFF))
        return out

    def irq(self, node: Node, index: int = 0) -> IrqLine:
        """The node's interrupt ``index`` as a line; unconnected while no vGIC backs it."""
        irqs = self.dt.interrupts(node)
        if index >= len(irqs):
            return UnconnectedIrq()
        ctrl = irqs[index].controller
        if not self.dt.is_enabled(ctrl):
            self.notes.append(f"{node_path(node)}: interrupt {index} goes to disabled "
                              f"{node_path(ctrl)}; the device works polled")
        return UnconnectedIrq()

    def add_mmio(self, node: Node, rng: MemRange, device: object, label: str | None = None) -> None:
        name = label or node_path(node)
        self.vm.bus.add(rng, name, device)  # type: ignore[arg-type]


def make_pl011(ctx: FactoryContext, node: Node) -> object:
    (window, *_) = ctx.windows(node, 1)
    uart = Pl011(_Console(ctx.console_write), ctx.irq(node, 0))
    ctx.add_mmio(node, window, uart)
    return uart


def make_psci(ctx: FactoryContext, node: Node) -> object:
    method = ctx.dt.string(node, "method") or "hvc"
    if method not in ("hvc", "smc"):
        raise Unbacked(f"method {method!r} is neither hvc nor smc")
    if ctx.vm.psci is not None:
        raise Unbacked("a second PSCI node")
    psci = Psci(ctx.vm, method)
    ctx.vm.psci = psci
    return psci


def make_sysctl(ctx: FactoryContext, node: Node) -> object:
    (window, *_) = ctx.windows(node, 1)
    dev = SysCtl(ctx.vm)
    ctx.add_mmio(node, window, dev)
    return dev


class _Console:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


Factory = Callable[[FactoryContext, Node], object]

# The registry: compatible string -> factory. Matched in the order a node lists
# its compatibles, so the most specific one wins.
DEVICE_TYPES: dict[str, Factory] = {
    "arm,pl011": make_pl011,
    "arm,sbsa-uart": make_pl011,
    "arm,psci": make_psci,
    "arm,psci-0.2": make_psci,
    "arm,psci-1.0": make_psci,
    "syscon-l4vmm": make_sysctl,
}

# Nodes that describe the VM itself rather than a device, handled elsewhere.
STRUCTURAL = {"memory", "cpu"}
# Compatibles that need no model: they only describe facts to the guest.
PASSIVE = {"fixed-clock", "simple-bus", "syscon-poweroff", "syscon-reboot", "l4vmm,l4vmm",
           "linux,dummy-virt", "arm,cortex-r82", "arm,armv8"}


def scan(ctx: FactoryContext) -> None:
    """uvmm's virtual-device pass: build what is known, disable what cannot be backed."""
    dt = ctx.dt
    for node in list(dt.walk()):
        if node is dt.root or not dt.is_enabled(node):
            continue
        device_type = dt.string(node, "device_type")
        if device_type in STRUCTURAL:
            continue
        compats = dt.compatible(node)
        if not compats:
            continue
        vdev = dt.string(node, "l4vmm,vdev")
        factory = None
        for c in compats:
            factory = DEVICE_TYPES.get(f"{c}:{vdev}" if vdev else c) or DEVICE_TYPES.get(c)
            if factory is not None:
                break
        path = node_path(node)
        if factory is None:
            if any(c in PASSIVE for c in compats):
                continue
            if dt.raw(node, "reg") is None and dt.raw(node, "interrupts") is None:
                continue
            dt.disable(node, _unknown_reason(compats, vdev))
            continue
        try:
            device = factory(ctx, node)
        except Unbacked as why:
            dt.disable(node, str(why))
            continue
        except Exception as err:
            dt.disable(node, f"cannot be built: {err}")
            continue
        windows = [r.range for r in ctx.vm.bus.regions if r.device is device]
        ctx.vm.devices.append(DeviceEntry(path, compats[0], device, windows))


def _unknown_reason(compats: list[str], vdev: str | None) -> str:
    what = ", ".join(compats) + (f" (l4vmm,vdev = {vdev})" if vdev else "")
    if any(c.startswith("arm,gic") or c.endswith("-gic") for c in compats):
        return f"no interrupt-controller model for {what} in this pyned"
    if any("timer" in c for c in compats):
        return f"no model for {what} in this pyned"
    return f"no virtual device model for {what} and no vbus to pass it through"
