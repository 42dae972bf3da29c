"""Devices made from device-tree nodes, by ``compatible``, from one explicit table.

A factory reads its own node and builds its device with only the ports it
needs. When it cannot back the node it raises ``Unbacked`` and the builder
disables the node with that reason, as uvmm does, instead of letting the
guest probe hardware that is not there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from fdt.items import Node

from pyned.devices.base import IrqLine, WriteSink
from pyned.devices.cfi_flash import CfiFlash, FlashStorage
from pyned.devices.gic import Gic
from pyned.devices.pl011 import Pl011
from pyned.devices.psci import Psci
from pyned.devices.sysctl import SysCtl
from pyned.devices.timer import GenericTimer
from pyned.devices.virtio.console import VirtioConsole
from pyned.devices.virq import VirqSender
from pyned.devices.virtio.mmio import VirtioDevice, VirtioMmio
from pyned.devices.watchdog import SbsaGwdt
from pyned.errors import ConfigError, ImageError
from pyned.kernel.irq import IrqBusy
from pyned.platform.board import Board, MemRange
from pyned.vmm.devicetree import DeviceTree, Unbacked, node_path
from pyned.vmm.passthrough import Binder
from pyned.vmm.vm import CpuDeadlines, DeviceEntry, RomdWindow, Vm

# SPIs of the virtual GIC: INTIDs 32..255. Enough for the board's UARTs
# (SPIs 5-8) and the virtio slots; Linux and uvmm guests need no more.
NUM_SPIS = 224


@dataclass
class FactoryContext:
    vm: Vm
    dt: DeviceTree
    board: Board
    console_write: Callable[[bytes], None]
    notes: list[str]
    num_cpus: int = 1
    caps: dict[str, object] = field(default_factory=dict)
    log: Callable[[str], None] = lambda text: None
    mpidrs: list[int] = field(default_factory=lambda: [0])
    built: dict[int, object] = field(default_factory=dict)   # id(node) -> device
    # Flash bank contents by bank number (cfi-flash reg entries in tree order):
    # an image loaded into an erased bank, or a file the bank keeps in sync.
    flash_images: dict[int, bytes] = field(default_factory=dict)
    flash_files: dict[int, Path] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)     # id(node) -> why not

    def build(self, node: Node) -> object | None:
        """Build ``node``'s device now (interrupt parents are needed before their users)."""
        key = id(node)
        if key in self.built:
            return self.built[key]
        if key in self.failed:
            return None
        factory = _factory_for(self.dt, node)
        if factory is None or not self.dt.is_enabled(node):
            return None
        before = {id(r) for r in self.vm.bus.regions}
        try:
            device = factory(self, node)
        except Unbacked as why:
            self.failed[key] = str(why)
            self.dt.disable(node, str(why))
            return None
        self.built[key] = device
        windows = [r.range for r in self.vm.bus.regions if id(r) not in before]
        self.vm.devices.append(DeviceEntry(node_path(node), self.dt.compatible(node)[0], device,
                                           windows))
        return device

    def controller(self, node: Node, index: int) -> tuple[Gic, tuple[int, ...]]:
        """The virtual GIC behind interrupt ``index`` of ``node``, and the specifier."""
        irqs = self.dt.interrupts(node)
        if index >= len(irqs):
            raise Unbacked(f"needs interrupt {index}, has {len(irqs)}")
        ctrl = irqs[index].controller
        if not self.dt.is_enabled(ctrl):
            raise Unbacked(f"interrupt parent {node_path(ctrl)} is disabled")
        gic = self.build(ctrl)
        if not isinstance(gic, Gic):
            why = self.failed.get(id(ctrl), "it is not a virtual interrupt controller")
            raise Unbacked(f"interrupt parent {node_path(ctrl)} cannot be used: {why}")
        return gic, irqs[index].cells

    def intid(self, node: Node, index: int) -> tuple[Gic, int]:
        gic, cells = self.controller(node, index)
        try:
            intid, _trigger = gic.parse_dt_interrupt(cells)
        except ValueError as err:
            raise ImageError(f"{self.dt.source}: {node_path(node)}: interrupt {index}: {err}") from None
        return gic, intid

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
        """The node's shared interrupt ``index`` as a line into the virtual GIC."""
        gic, intid = self.intid(node, index)
        if intid < 32:
            raise Unbacked(f"interrupt {index} is a per-CPU interrupt (INTID {intid}), "
                           f"not one a shared device can raise")
        return gic.irq_line(intid)

    def add_mmio(self, node: Node, rng: MemRange, device: object, label: str | None = None) -> None:
        name = label or node_path(node)
        self.vm.bus.add(rng, name, device)  # type: ignore[arg-type]


def make_pl011(ctx: FactoryContext, node: Node) -> object:
    (window, *_) = ctx.windows(node, 1)
    uart = Pl011(WriteSink(ctx.console_write), ctx.irq(node, 0))
    ctx.add_mmio(node, window, uart)
    return uart


def make_cfi_flash(ctx: FactoryContext, node: Node) -> object:
    """One CfiFlash per reg entry (a bank), mapped as memory while it reads as memory."""
    width = ctx.dt.u32(node, "bank-width")
    if width is None:
        raise Unbacked("no bank-width")
    device_width = ctx.dt.u32(node, "device-width")
    read_only = ctx.dt.raw(node, "read-only") is not None
    regs = ctx.dt.reg(node)
    windows = ctx.windows(node)
    for (_base, size), window in zip(regs, windows):
        try:
            CfiFlash.check_geometry(size, width, device_width)
        except ValueError as err:
            raise Unbacked(str(err)) from None
    where = node_path(node)
    banks = []
    for i, ((base, size), window) in enumerate(zip(regs, windows)):
        index = len(ctx.vm.romd)
        try:
            storage = FlashStorage(size, image=ctx.flash_images.get(index),
                                   path=ctx.flash_files.get(index))
        except (ValueError, OSError) as err:
            why = err.strerror if isinstance(err, OSError) else str(err)
            raise ConfigError(f"{where}: flash bank {index} at {base:#x}: {why}") from None
        ctx.vm.on_end(lambda _end, s=storage: s.close())
        flash = CfiFlash(storage.memory, bank_width=width, device_width=device_width,
                         read_only=read_only, log=lambda text: ctx.log(f"{where}: {text}"))
        label = where if len(regs) == 1 else f"{where} bank {i}"
        ctx.add_mmio(node, window, flash, label)
        ctx.vm.romd.append(RomdWindow(window, flash, label))
        banks.append(flash)
    return banks


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


def make_gic(ctx: FactoryContext, node: Node) -> object:
    compats = ctx.dt.compatible(node)
    version = 3 if any(c in ("arm,gic-v3",) for c in compats) else 2
    if ctx.vm.gic is not None:
        raise Unbacked("a second interrupt controller; a VM has one virtual GIC")
    regs = ctx.windows(node)
    gic = Gic(version, ctx.num_cpus, NUM_SPIS, ctx.vm.signal_cpu, affinities=ctx.mpidrs)
    if version == 3:
        if len(regs) < 2:
            raise Unbacked("GICv3 needs reg entries for GICD and GICR")
        gicr = regs[1]
        need = ctx.num_cpus * 0x20000
        if gicr.base % 0x10000 or gicr.size < need:
            raise Unbacked(f"GICR window {gicr} must be 64 KiB aligned and hold {ctx.num_cpus} "
                           f"redistributors ({need:#x} bytes)")
        ctx.add_mmio(node, MemRange(regs[0].base, 0x10000), gic.distributor, f"{node_path(node)} GICD")
        ctx.add_mmio(node, MemRange(gicr.base, need), gic.redistributors, f"{node_path(node)} GICR")
    else:
        if len(regs) < 2:
            raise Unbacked("GICv2 needs reg entries for GICD and GICC")
        ctx.add_mmio(node, MemRange(regs[0].base, 0x1000), gic.distributor, f"{node_path(node)} GICD")
        ctx.add_mmio(node, MemRange(regs[1].base, 0x2000), gic.cpu_interface_mmio,
                     f"{node_path(node)} GICC")
        # uvmm sizes GICC to what it emulates.
        ctx.dt.set_reg(node, [(regs[0].base, 0x1000), (regs[1].base, 0x2000)])
    ctx.vm.gic = gic
    return gic


def make_timer(ctx: FactoryContext, node: Node) -> object:
    names = ctx.dt.strings(node, "interrupt-names")
    # Without interrupt-names the binding's order is sec-phys, phys, virt, hyp.
    phys_i = names.index("phys") if "phys" in names else 1
    virt_i = names.index("virt") if "virt" in names else 2
    gic, phys = ctx.intid(node, phys_i)
    _, virt = ctx.intid(node, virt_i)
    if not (16 <= phys < 32 and 16 <= virt < 32):
        raise Unbacked(f"timer interrupts must be PPIs, got INTIDs {phys} and {virt}")
    freq = ctx.dt.u32(node, "clock-frequency")
    if freq is not None and freq != ctx.board.counter_hz:
        ctx.notes.append(f"{node_path(node)}: clock-frequency {freq} rewritten to the counter's "
                         f"{ctx.board.counter_hz}")
        node.set_property("clock-frequency", ctx.board.counter_hz)
    timers = [GenericTimer(ctx.vm.counter, CpuDeadlines(ctx.vm, cpu), gic.ppi_line(cpu, phys),
                           gic.ppi_line(cpu, virt)) for cpu in range(ctx.num_cpus)]
    ctx.vm.timers = timers
    return timers


def make_sbsa_gwdt(ctx: FactoryContext, node: Node) -> object:
    control, refresh = ctx.windows(node, 2)[:2]
    stages = ctx.dt.u32(node, "l4vmm,stages")
    if stages is not None and stages not in (1, 2):
        raise ImageError(f"{ctx.dt.source}: {node_path(node)}: l4vmm,stages must be 1 or 2, "
                         f"not {stages}")
    # uvmm's l4vmm,stages configures its vWatchdog backend (how many timeouts it
    # reports); the guest-visible WS0-then-WS1 sequence is the same, and here the
    # VM's own clock is the backend, so l4vmm,ctrlcap names nothing needed.
    vm = ctx.vm
    wdt = SbsaGwdt(vm.counter, vm.deadlines, ctx.irq(node, 0),
                   on_ws0=lambda: vm.note("watchdog", "WS0: refresh overdue, interrupt raised"),
                   on_ws1=lambda: vm.watchdog_bite("watchdog WS1: not refreshed after WS0"))
    ctx.add_mmio(node, control, wdt.control, f"{node_path(node)} control")
    ctx.add_mmio(node, refresh, wdt.refresh, f"{node_path(node)} refresh")
    vm.on_end(lambda _end: wdt.reset())
    return wdt


class VirtioBackend(Protocol):
    """A capability that makes a virtio device model for one VM (a switch port, a disk)."""

    kind: str

    def open(self, log: Callable[[str], None]) -> VirtioDevice: ...

    def release(self, device: VirtioDevice) -> None: ...


def _virtio_transport(ctx: FactoryContext, node: Node, device: VirtioDevice) -> VirtioMmio:
    (window, *_) = ctx.windows(node, 1)
    irq = ctx.irq(node, 0)
    where = node_path(node)
    transport = VirtioMmio(device, ctx.vm.memory, irq,
                           lambda text: ctx.log(f"{where}: virtio-{device.name}: {text}"))
    ctx.add_mmio(node, window, transport)
    # Queues hold views of guest RAM: drop them when the VM ends, under the
    # transport's lock, so a frame arriving late from another VM is dropped
    # rather than written into RAM that is no longer this VM's.
    ctx.vm.on_end(lambda _end: transport.reset())
    return transport


def make_virtio_console(ctx: FactoryContext, node: Node) -> object:
    return _virtio_transport(ctx, node, VirtioConsole(WriteSink(ctx.console_write)))


def make_virtio_proxy(ctx: FactoryContext, node: Node) -> object:
    name = ctx.dt.string(node, "l4vmm,virtiocap")
    if not name:
        raise Unbacked("virtio proxy without l4vmm,virtiocap")
    backend = ctx.caps.get(name)
    if backend is None:
        raise Unbacked(f"no capability {name!r} (l4vmm,virtiocap) was given to the VM")
    if not callable(getattr(backend, "open", None)):
        raise Unbacked(f"capability {name!r} is not a virtio device port")
    port: VirtioBackend = backend  # type: ignore[assignment]
    try:
        device = port.open(ctx.log)
    except Exception as err:  # the port says why it cannot serve this VM
        raise Unbacked(str(err)) from None
    try:
        transport = _virtio_transport(ctx, node, device)
    except BaseException:
        port.release(device)
        raise
    ctx.vm.on_end(lambda _end: port.release(device))
    return transport


def _virq_cap(ctx: FactoryContext, node: Node):
    name = ctx.dt.string(node, "l4vmm,virqcap")
    if not name:
        raise Unbacked("no l4vmm,virqcap")
    irq = ctx.caps.get(name)
    if irq is None:
        raise Unbacked(f"no capability {name!r} (l4vmm,virqcap) was given to the VM")
    if not callable(getattr(irq, "trigger", None)) or not callable(getattr(irq, "bind", None)):
        raise Unbacked(f"capability {name!r} is not an IRQ (factory:create(L4.Proto.Irq_sender))")
    return irq


def make_virq_snd(ctx: FactoryContext, node: Node) -> object:
    irq = _virq_cap(ctx, node)
    (window, *_) = ctx.windows(node, 1)
    dev = VirqSender(irq.trigger)
    ctx.add_mmio(node, window, dev)
    return dev


def make_virq_rcv(ctx: FactoryContext, node: Node) -> object:
    irq = _virq_cap(ctx, node)
    line = ctx.irq(node, 0)
    vm = ctx.vm
    try:
        irq.bind(vm.name, line)
    except IrqBusy as err:
        raise Unbacked(str(err)) from None
    vm.on_end(lambda _end: irq.unbind(vm.name))
    return irq


Factory = Callable[[FactoryContext, Node], object]

# The registry: compatible string -> factory. Matched in the order a node lists
# its compatibles, so the most specific one wins.
DEVICE_TYPES: dict[str, Factory] = {
    "arm,gic-v3": make_gic,
    "arm,gic-400": make_gic,
    "arm,cortex-a15-gic": make_gic,
    "arm,cortex-a9-gic": make_gic,
    "arm,cortex-a7-gic": make_gic,
    "arm,armv8-timer": make_timer,
    "arm,armv7-timer": make_timer,
    "arm,pl011": make_pl011,
    "cfi-flash": make_cfi_flash,
    "arm,sbsa-uart": make_pl011,
    "arm,psci": make_psci,
    "arm,psci-0.2": make_psci,
    "arm,psci-1.0": make_psci,
    "syscon-l4vmm": make_sysctl,
    "arm,sbsa-gwdt": make_sbsa_gwdt,
    "virtio,mmio:console": make_virtio_console,
    "virtio,mmio:proxy": make_virtio_proxy,
    "l4vmm,virq-snd": make_virq_snd,
    "l4vmm,virq-rcv": make_virq_rcv,
}

# Nodes that describe the VM itself rather than a device, handled elsewhere.
STRUCTURAL = {"memory", "cpu"}
# Compatibles that need no model: they only describe facts to the guest.
PASSIVE = {"fixed-clock", "simple-bus", "syscon-poweroff", "syscon-reboot", "l4vmm,l4vmm",
           "linux,dummy-virt", "arm,cortex-r82", "arm,armv8", "gpio-leds"}


def _factory_for(dt: DeviceTree, node: Node) -> Factory | None:
    vdev = dt.string(node, "l4vmm,vdev")
    for c in dt.compatible(node):
        factory = DEVICE_TYPES.get(f"{c}:{vdev}" if vdev else c) or DEVICE_TYPES.get(c)
        if factory is not None:
            return factory
    return None


def scan(ctx: FactoryContext) -> None:
    """uvmm's device passes: virtual devices, then ``l4vmm,vbus-dev`` nodes, then the vbus's
    MMIO, then 1:1 pass-through; a node nothing can back is disabled with the reason."""
    dt = ctx.dt
    binder = Binder.for_vm(ctx)
    nodes = [n for n in dt.walk() if n is not dt.root and dt.compatible(n)
             and dt.string(n, "device_type") not in STRUCTURAL]
    hardware: list[Node] = []
    for node in nodes:
        if not dt.is_enabled(node) or id(node) in ctx.built:
            continue
        compats = dt.compatible(node)
        factory = _factory_for(dt, node)
        owned = binder is not None and binder.covers(node)
        if factory is not None and not owned:
            ctx.build(node)
        elif owned or not any(c in PASSIVE for c in compats):
            if dt.raw(node, "reg") is not None or dt.raw(node, "interrupts") is not None \
                    or dt.raw(node, "interrupts-extended") is not None:
                hardware.append(node)
    if binder is not None:
        by_name = [n for n in hardware if dt.raw(n, "l4vmm,vbus-dev") is not None]
        for node in by_name:
            _pass_through(ctx, node, binder.bind_by_name)
        binder.collect()
        hardware = [n for n in hardware if n not in by_name]
    for node in hardware:
        if not dt.is_enabled(node) or id(node) in ctx.built:
            continue
        if binder is None:
            _pass_through(ctx, node, None)
        else:
            _pass_through(ctx, node, binder.bind_one_to_one)


def _pass_through(ctx: FactoryContext, node: Node, bind: Callable[[Node], None] | None) -> None:
    try:
        if bind is None:
            raise Unbacked(_unknown_reason(ctx.dt.compatible(node),
                                           ctx.dt.string(node, "l4vmm,vdev")))
        bind(node)
    except Unbacked as why:
        if ctx.dt.raw(node, "l4vmm,force-enable") is not None:
            ctx.notes.append(f"{node_path(node)}: kept enabled (l4vmm,force-enable) although "
                             f"nothing backs it: {why}")
            return
        ctx.failed[id(node)] = str(why)
        ctx.dt.disable(node, str(why))


def _unknown_reason(compats: list[str], vdev: str | None) -> str:
    what = ", ".join(compats) + (f" (l4vmm,vdev = {vdev})" if vdev else "")
    return f"no virtual device model for {what} and no vbus to pass it through"
