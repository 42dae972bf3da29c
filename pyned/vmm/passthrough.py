"""Pass-through: board devices the VM owns through its vbus, bound to DT nodes as uvmm does.

uvmm's rules (server/src/vm.cc, io_proxy.cc, virt_bus.cc):

1. A node with ``l4vmm,vbus-dev = "NAME"`` takes the first unassigned vbus
   device whose hid or compatible is NAME; its resources bind by name:
   ``regN`` to the node's Nth ``reg`` entry (same size), ``irqN`` to its Nth
   interrupt. Every ``reg`` and interrupt of the node must be covered.
2. The MMIO of every other vbus device is mapped 1:1 (guest-physical =
   host-physical, as on any MPU system).
3. Every other node with ``reg`` or interrupts binds 1:1 when each ``reg``
   range lies in that MMIO (or in guest RAM) and each interrupt is on the
   vbus; its interrupts are then bound to the virtual GIC.
4. Otherwise the node is disabled with the reason, unless it carries
   ``l4vmm,force-enable``.

The VM's loads and stores reach the board's device model directly (the bus
window calls its MMIO protocol, nothing per VM in between), and its
interrupt reaches the virtual GIC through the kernel's IRQ object, which
the VM owns until it ends. An MPU system cannot move device memory, so a
``vbus-dev`` ``reg`` must name the device's own address; interrupts may be
renumbered. A node that a vbus covers entirely is passed through even when
pyned has a model for its compatible (a UART the VM owns is not shadowed by
an emulated one).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, Sequence

from fdt.items import Node

from pyned.errors import ConfigError, ImageError
from pyned.kernel.irq import Irq, IrqBusy
from pyned.kernel.mpu import Access, MpuRegion
from pyned.platform.board import MemRange
from pyned.vmm.devicetree import Unbacked, node_path
from pyned.vmm.vm import DeviceEntry

if TYPE_CHECKING:
    from pyned.vmm.factory import FactoryContext


class Resource(Protocol):
    id: str          # io's four letters: regN / irqN bind by name
    start: int


class VbusMmio(Protocol):
    resource: Resource
    device: object
    offset: int

    @property
    def range(self) -> MemRange: ...


class VbusDevice(Protocol):
    name: str
    mmio: Sequence[VbusMmio]
    irqs: Sequence[tuple[Resource, Irq]]

    def matches(self, name: str) -> bool: ...


class Vbus(Protocol):
    """What a VM needs from io's vbus (``pyned.services.io.Vbus``)."""

    name: str
    devices: Sequence[VbusDevice]

    def claim(self, owner: str) -> None: ...

    def release(self, owner: str) -> None: ...


class Shifted:
    """A board device seen through a resource that starts inside its window."""

    def __init__(self, device: object, offset: int) -> None:
        self._device = device
        self._offset = offset

    def read(self, offset: int, size: int, cpu: int) -> int:
        return self._device.read(offset + self._offset, size, cpu)  # type: ignore[attr-defined]

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        self._device.write(offset + self._offset, size, value, cpu)  # type: ignore[attr-defined]

    def reset(self) -> None:
        pass


def _res_index(resource: Resource, prefix: str) -> int | None:
    rid = resource.id
    if len(rid) == 4 and rid.startswith(prefix) and rid[3].isdigit():
        return int(rid[3])
    return None


class Binder:
    """One VM's vbus: claimed for the VM's life, its windows mapped, its IRQs bound."""

    def __init__(self, ctx: "FactoryContext", vbus: Vbus) -> None:
        self.ctx = ctx
        self.vbus = vbus
        vm = ctx.vm
        vbus.claim(vm.name)
        vm.on_end(lambda _end: vbus.release(vm.name))
        self._assigned: set[int] = set()          # id(VbusDevice) bound by l4vmm,vbus-dev
        self._mapped: list[MemRange] = []
        self._irqs = {res.start: irq for d in vbus.devices for res, irq in d.irqs}

    @classmethod
    def for_vm(cls, ctx: "FactoryContext") -> "Binder | None":
        cap = ctx.caps.get("vbus")
        if cap is None:
            return None
        if not callable(getattr(cap, "claim", None)):
            raise ConfigError(f"{ctx.vm.name}: capability 'vbus' is not a vbus (pass one of "
                              f"the channels vmm.start_io put into its table)")
        return cls(ctx, cap)  # type: ignore[arg-type]

    # -- checks ---------------------------------------------------------------

    def covers(self, node: Node) -> bool:
        """Whether every reg range and interrupt of ``node`` is on the vbus."""
        try:
            regs = self.ctx.dt.reg(node)
            irqs = [self._intid(node, i) for i in range(len(self.ctx.dt.interrupts(node)))]
        except (Unbacked, ImageError):
            return False
        windows = [m.range for d in self.vbus.devices for m in d.mmio]
        return bool(regs or irqs) and all(
            any(w.contains(a, max(s, 1)) for w in windows) for a, s in regs) and all(
            i in self._irqs for i in irqs)

    def _intid(self, node: Node, index: int) -> int:
        return self.ctx.intid(node, index)[1]

    # -- the three passes ---------------------------------------------------------

    def bind_by_name(self, node: Node) -> None:
        """``l4vmm,vbus-dev``: the node takes one named vbus device, resources by name."""
        want = self.ctx.dt.string(node, "l4vmm,vbus-dev") or ""
        dev = next((d for d in self.vbus.devices
                    if id(d) not in self._assigned and d.matches(want)), None)
        if dev is None:
            raise Unbacked(f"requested vbus device '{want}' is not available on vbus "
                          f"'{self.vbus.name}'")
        regs = self.ctx.dt.reg(node)
        nirqs = len(self.ctx.dt.interrupts(node))
        regs_left, irqs_left = set(range(len(regs))), set(range(nirqs))
        maps: list[VbusMmio] = []
        for m in dev.mmio:
            n = _res_index(m.resource, "reg")
            if n is None:
                continue  # uvmm: "has no recognisable name", skipped
            if n >= len(regs):
                raise Unbacked(f"vbus device '{dev.name}' resource reg{n} has no reg entry {n}")
            addr, size = regs[n]
            if size != m.range.size:
                raise Unbacked(f"reg {n} is {size:#x} bytes but vbus resource reg{n} of "
                              f"'{dev.name}' is {m.range.size:#x}")
            if addr != m.range.base:
                raise Unbacked(f"reg {n} at {addr:#x} but '{dev.name}' is at {m.range.base:#x}: "
                              f"an MPU system cannot move device memory")
            maps.append(m)
            regs_left.discard(n)
        binds: list[tuple[Irq, int]] = []
        for res, irq in dev.irqs:
            n = _res_index(res, "irq")
            if n is None:
                continue
            if n >= nirqs:
                raise Unbacked(f"vbus device '{dev.name}' resource irq{n} has no interrupt {n} "
                              f"in the node")
            binds.append((irq, self._intid(node, n)))
            irqs_left.discard(n)
        if regs_left or irqs_left:
            missing = [f"reg {i}" for i in sorted(regs_left)] + [
                f"interrupt {i}" for i in sorted(irqs_left)]
            raise Unbacked(f"vbus device '{dev.name}' has no resource for {', '.join(missing)}")
        windows = [self._map(m, f"{dev.name}.{m.resource.id}") for m in maps]
        for irq, intid in binds:
            self._bind_irq(irq, intid)
        self._assigned.add(id(dev))
        self._record(node, dev.mmio[0].device if dev.mmio else None, windows)

    def collect(self) -> None:
        """Map the MMIO of every vbus device no ``vbus-dev`` node took, 1:1."""
        for dev in self.vbus.devices:
            if id(dev) in self._assigned:
                continue
            for m in dev.mmio:
                self._map(m, f"{dev.name}.{m.resource.id}")

    def bind_one_to_one(self, node: Node) -> None:
        regs = self.ctx.dt.reg(node)
        for addr, size in regs:
            if self.ctx.vm.memory.contains(addr, max(size, 1)):
                continue  # uvmm accepts a reg range in guest RAM as RAM
            if not any(w.contains(addr, max(size, 1)) for w in self._mapped):
                raise Unbacked(f"reg [{addr:#x}, +{size:#x}) is not on vbus '{self.vbus.name}'")
        intids = [self._intid(node, i) for i in range(len(self.ctx.dt.interrupts(node)))]
        for intid in intids:
            if intid < 32:
                raise Unbacked(f"interrupt INTID {intid} is per CPU; only shared interrupts "
                              f"can be passed through")
            if intid not in self._irqs:
                raise Unbacked(f"interrupt {intid} is not on vbus '{self.vbus.name}'")
        for intid in intids:
            self._bind_irq(self._irqs[intid], intid)
        windows = [w for w in self._mapped if any(w.overlaps(MemRange(a, max(s, 1)))
                                                   for a, s in regs)]
        region = self.ctx.vm.bus.find(windows[0].base) if windows else None
        self._record(node, region.device if region else None, windows)

    # -- effects ---------------------------------------------------------------

    def _map(self, m: VbusMmio, label: str) -> MemRange:
        rng = m.range
        if rng in self._mapped:
            return rng
        device = m.device if m.offset == 0 else Shifted(m.device, m.offset)
        name = f"vbus {self.vbus.name}: {label}"
        self.ctx.vm.bus.add(rng, name, device)  # type: ignore[arg-type]
        self.ctx.vm.mpu.add(MpuRegion(rng, Access.RW, "mmio", name))
        self._mapped.append(rng)
        return rng

    def _bind_irq(self, irq: Irq, intid: int) -> None:
        vm = self.ctx.vm
        assert vm.gic is not None
        try:
            irq.bind(vm.name, vm.gic.irq_line(intid))
        except IrqBusy as err:
            raise Unbacked(str(err)) from None
        vm.on_end(lambda _end: irq.unbind(vm.name))

    def _record(self, node: Node, device: object, windows: list[MemRange]) -> None:
        compats = self.ctx.dt.compatible(node)
        self.ctx.vm.devices.append(DeviceEntry(node_path(node), compats[0] if compats else "",
                                               device, windows, kind="pass-through"))
        self.ctx.built[id(node)] = device
