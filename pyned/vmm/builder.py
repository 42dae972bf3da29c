"""Build a VM from uvmm options, in uvmm's boot order (server/src/main.cc).

1. device tree (+ overlays, + ``-m`` edits); 2. RAM from memory nodes with
``l4vmm,dscap`` (guest-physical = host-physical: the dataspace's address);
3. kernel into the first memory node; 4. bootargs and ramdisk (high);
5. devices from the tree, unbacked nodes disabled with the reason;
6. vCPUs from cpu nodes, placed on the next cores of the VM's CPU set;
7. the DTB as high as possible in the first memory node; 8. boot registers.

pyned's firmware boot (``--firmware``, start_vm's ``firmware``; QEMU's
``-bios``): no kernel is loaded; the image goes into the first cfi-flash bank,
``--nvram`` names a file behind the second, the vCPU starts at the first
bank and the DTB lies at the start of the first memory node, where firmware
for QEMU's virt board looks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fdt.items import Node

from pyned.cpu.syndrome import SyndromeLayout
from pyned.cpu.sysregs import SysReg, SysRegKey, SysRegTable, identity_registers
from pyned.devices.gic import ICC_REGISTERS
from pyned.devices.timer import GenericTimer, TimerKind
from pyned.kernel.clock import Clock
from pyned.cpu.vcpu import Vcpu
from pyned.errors import ConfigError, ImageError, MemoryLayoutError
from pyned.kernel.memory import Dataspace
from pyned.kernel.mpu import Access, MpuMap, MpuRegion
from pyned.kernel.scheduler import Core
from pyned.platform.board import Board, MemRange
from pyned.vmm import factory
from pyned.vmm.bus import MmioBus, ReplayGuard
from pyned.vmm.devicetree import DeviceTree, node_path
from pyned.vmm.loader import KernelSpec, LoadedImage, load_kernel
from pyned.vmm.memory import GuestMemory, RamRegion
from pyned.vmm.options import UvmmOptions
from pyned.vmm.vm import VcpuThread, Vm

PAGE = 0x1000
# Linux reads the DTB through a 2 MiB fixmap window and wants it 8-byte
# aligned; a page boundary satisfies both and keeps it off the ramdisk.
DTB_ALIGN = PAGE


@dataclass
class BuildInputs:
    name: str
    options: UvmmOptions
    caps: dict[str, object]
    resolve: Callable[[str], Path]          # rom/NAME -> host path
    board: Board
    syndrome: SyndromeLayout
    cores: list[Core]                       # the VM's CPU set, in order
    prio: int
    console_write: Callable[[bytes], None]
    log: Callable[[str], None]
    clock: Clock
    exact_stops: bool = False               # the engine never replays an access (engine.py)
    dt_cache: dict[Path, bytes] | None = None   # DTBs kept across one VM's restarts
    host_path: Callable[[str], Path] = Path     # a file the script names for writing
    timer_advance: bool = True              # deliver blocked vCPUs' timer interrupts early


def _align_up(v: int, a: int) -> int:
    return (v + a - 1) & ~(a - 1)


def _read(resolve: Callable[[str], Path], name: str, what: str) -> tuple[bytes, str]:
    path = resolve(name)
    try:
        return path.read_bytes(), str(name)
    except OSError as err:
        raise ImageError(f"{name}: cannot read {what}: {err.strerror}") from None


def build_vm(inp: BuildInputs) -> Vm:
    opts = inp.options
    if not opts.dtbs:
        raise ConfigError(f"{inp.name}: no device tree (start_vm needs fdt = ...)")
    dt = DeviceTree.load([inp.resolve(d) for d in opts.dtbs], inp.dt_cache)
    for mod in opts.dt_mods:
        _apply_dt_mod(dt, mod)
    memory = GuestMemory()
    mpu = MpuMap(inp.board.mpu_regions_per_vm, inp.name)
    vm = Vm(inp.name, memory=memory, bus=MmioBus(), mpu=mpu, dt=dt,
            console_write=inp.console_write, log=inp.log, clock=inp.clock,
            counter_hz=inp.board.counter_hz)
    vm.fault_mode = opts.fault_mode
    vm.hang_timeout_ns = int(opts.hang_timeout * 1e9)
    vm.timer_advance = inp.timer_advance

    first = _setup_ram(inp, dt, memory, mpu)

    # Kernel, or firmware for the flash
    flash_images: dict[int, bytes] = {}
    flash_files: dict[int, Path] = {}
    if opts.firmware is not None:
        if opts.kernel is not None:
            raise ConfigError(f"{inp.name}: firmware and kernel exclude each other (the "
                              f"firmware loads what it boots)")
        flash_images[0], kname = _read(inp.resolve, opts.firmware, "firmware")
        image = LoadedImage(0, (), "firmware")   # the entry is the bank, known after the scan
    else:
        kernel = opts.kernel or "rom/zImage"
        spec = KernelSpec.parse(kernel)
        kdata, kname = (b"", kernel) if spec.kind == "rom" else _read(inp.resolve, spec.path,
                                                                       "kernel")
        image = load_kernel(kdata, kname, memory, first, spec)
    if opts.nvram is not None:
        flash_files[1] = inp.host_path(opts.nvram)
    used = list(image.ranges)

    # Bootargs and ramdisk
    chosen = dt.node("/chosen")
    if chosen is None:
        chosen = dt.ensure_node("/chosen")
    if opts.cmdline is not None:
        # The fdt package refuses an empty string; "" in a DTB is its terminator alone.
        chosen.set_property("bootargs", opts.cmdline or b"\0")
    top = first.end
    if opts.dtb_limit is not None:
        top = min(top, opts.dtb_limit)
    if opts.ramdisk:
        rd, rdname = _read(inp.resolve, opts.ramdisk, "ramdisk")
        rd_base = (top - len(rd)) & ~(PAGE - 1)
        _place(rdname, MemRange(rd_base, len(rd)), first, used)
        memory.write(rd_base, rd)
        used.append(MemRange(rd_base, len(rd)))
        top = rd_base
        _set_initrd(dt, chosen, rd_base, rd_base + len(rd))

    # vCPU count first: the GIC and the timer are per CPU.
    notes: list[str] = []
    mpidrs = _cpu_mpidrs(dt, notes)
    if len(mpidrs) > len(inp.cores):
        notes.append(f"{len(mpidrs)} cpu nodes but the VM's CPU set has {len(inp.cores)} cores: "
                     f"cpus beyond that get no vCPU")
        mpidrs = mpidrs[: len(inp.cores)]

    # Devices
    ctx = factory.FactoryContext(vm, dt, inp.board, inp.console_write, notes,
                                 num_cpus=len(mpidrs), mpidrs=list(mpidrs), caps=inp.caps,
                                 log=lambda text: inp.log(text, 1), flash_images=flash_images,
                                 flash_files=flash_files)
    try:
        factory.scan(ctx)
        if opts.firmware is not None or opts.nvram is not None:
            image = _flash_boot(inp.name, vm, dt, image, bool(flash_files))
        _finish(inp, vm, dt, memory, image, kname, first, used, top, notes, mpidrs)
    except BaseException:
        vm.abandon()  # devices that hold host resources (a disk, a switch port) let go
        raise
    return vm


def _flash_boot(name: str, vm: Vm, dt: DeviceTree, image: LoadedImage,
                nvram: bool) -> LoadedImage:
    """Check that the flash banks firmware and nvram name exist; the firmware's entry."""
    need = 2 if nvram else 1
    if len(vm.romd) < need:
        what = "nvram needs a second" if nvram else "firmware needs a"
        why = "; ".join(f"{path}: {reason}" for path, reason in dt.disabled.items()
                        if "flash" in path)
        raise ConfigError(f"{name}: {what} cfi-flash bank in the device tree, which has "
                          f"{len(vm.romd)}" + (f" ({why})" if why else ""))
    if image.format != "firmware":
        return image
    return LoadedImage(vm.romd[0].range.base, (), "firmware")


def _finish(inp: BuildInputs, vm: Vm, dt: DeviceTree, memory: GuestMemory, image: LoadedImage,
            kname: str,
            first: MemRange, used: list[MemRange], top: int, notes: list[str],
            mpidrs: list[int]) -> None:

    # vCPUs
    sysregs = SysRegTable()
    identity_registers(sysregs, mmfr0_native=0x1124, mpu_regions=inp.board.mpu_regions,
                       counter_hz=inp.board.counter_hz)
    _timer_registers(sysregs, vm)
    _gic_registers(sysregs, vm)
    mapped = [(r.range.base, r.range.size) for r in memory.regions]
    mapped += [(r.range.base, r.range.size) for r in vm.bus.regions]
    for index, mpidr in enumerate(mpidrs):
        vcpu = Vcpu(index, mpidr=mpidr, midr=inp.board.midr, syndrome=inp.syndrome,
                    sysregs=sysregs, traps=vm, broadcast=len(mpidrs) > 1)
        for region in memory.regions:
            vcpu.map_ram(region.range.base, region.range.size, region.dataspace.host_address())
        thread = VcpuThread(vm, vcpu, inp.cores[index], inp.prio,
                            None if inp.exact_stops else ReplayGuard())
        romd = {w.range.base: w for w in vm.romd}
        for i, bus_region in enumerate(vm.bus.regions):
            rd, wr = vm.bus.callbacks(i, index, thread.guard, vm.device_failed)
            window = romd.get(bus_region.range.base)
            if window is not None:
                window.attach(vcpu, rd, wr)
            else:
                vcpu.map_mmio(bus_region.range.base, bus_region.range.size, rd, wr)
        vcpu.install_fault_hooks(mapped)
        vm.threads.append(thread)

    # DTB, last, so it shows every change made above. Firmware finds it at
    # the start of RAM (QEMU's convention for its virt board).
    blob = dt.to_dtb()
    if image.format == "firmware":
        dtb_base = first.base
    else:
        dtb_base = (top - len(blob)) & ~(DTB_ALIGN - 1)
    _place("device tree", MemRange(dtb_base, len(blob)), first, used)
    memory.write(dtb_base, blob)
    vm.dtb_addr = dtb_base
    vm.entry = image.entry
    vm.threads[0].vcpu.reset(entry=image.entry, x0=dtb_base)
    for note in notes:
        inp.log(note)
    for path, why in dt.disabled.items():
        inp.log(f"{path}: disabled: {why}")
    what = (f"firmware {kname} in {vm.romd[0].name}" if image.format == "firmware"
            else f"kernel {kname} ({image.format})")
    inp.log(f"{what} entry {image.entry:#x}, dtb at {dtb_base:#x}, RAM {first}")


def _setup_ram(inp: BuildInputs, dt: DeviceTree, memory: GuestMemory, mpu: MpuMap) -> MemRange:
    """Fill memory nodes with their dataspaces; returns the first RAM range."""
    nodes = [n for n in dt.walk() if dt.string(n, "device_type") == "memory"
             and dt.is_enabled(n)]
    backed: list[tuple[Node, Dataspace]] = []
    for node in nodes:
        if dt.raw(node, "l4vmm,physmap") is not None:
            raise ImageError(f"{dt.source}: {node_path(node)}: l4vmm,physmap is deprecated "
                             f"and no longer supported by uvmm")
        cap = dt.string(node, "l4vmm,dscap")
        if cap is None:
            continue
        ds = inp.caps.get(cap)
        if not isinstance(ds, Dataspace):
            dt.disable(node, f"l4vmm,dscap {cap!r} names no dataspace capability of this VM")
            continue
        if dt.raw(node, "reg") is None:
            raise ImageError(f"{dt.source}: {node_path(node)}: memory node without reg")
        backed.append((node, ds))
    if not backed:
        ds = inp.caps.get("ram")
        if not isinstance(ds, Dataspace):
            raise ConfigError(f"{inp.name}: no RAM: neither a memory node with l4vmm,dscap "
                              f"nor a 'ram' dataspace")
        node = dt.ensure_node(f"/memory@{ds.base:x}")
        node.set_property("device_type", "memory")
        node.set_property("l4vmm,dscap", "ram")
        dt.set_reg(node, [(ds.base, ds.size)])
        backed.append((node, ds))
    first: MemRange | None = None
    for node, ds in backed:
        if inp.options.rambase is not None and node is backed[0][0] and ds.base != inp.options.rambase:
            raise MemoryLayoutError(
                f"{inp.name}: ram_base {inp.options.rambase:#x} but the RAM dataspace is at "
                f"{ds.base:#x}; on the MPU platform guest-physical equals host-physical")
        chunks = []
        offset = 0
        regs = dt.reg(node)
        if regs and regs[0][0] and regs[0][0] != ds.base:
            # The tree asks for RAM at a fixed address (a board's layout that
            # firmware relies on); the dataspace decides where it is.
            inp.log(f"{node_path(node)}: reg asks for RAM at {regs[0][0]:#x} but the "
                    f"{dt.string(node, 'l4vmm,dscap')!r} dataspace is at {ds.base:#x} "
                    f"(start_vm's ram_base places it)", 1)
        for _addr, size in regs:
            if offset >= ds.size:
                break
            size = ds.size - offset if size == 0 else min(size, ds.size - offset)
            chunks.append((ds.base + offset, size))
            offset += size
        if offset < ds.size:
            inp.log(f"{node_path(node)}: reg covers only {offset >> 20} of "
                    f"{ds.size >> 20} MiB of RAM; the rest is not mapped")
        dt.set_reg(node, chunks)
        for base, size in chunks:
            rng = MemRange(base, size)
            memory.add(RamRegion(rng, ds, node_path(node)))
            # A dataspace other than the VM's own RAM is memory it shares (uvmm's
            # second memory node with l4vmm,dscap).
            kind = "ram" if dt.string(node, "l4vmm,dscap") == "ram" else "shm"
            mpu.add(MpuRegion(rng, Access.RWX, kind, node_path(node)))
            if first is None:
                first = rng
    assert first is not None
    return first


_TIMER_REGS = {  # (op0, op1, CRn, CRm) of CNTP_* / CNTV_*; op2 0 TVAL, 1 CTL, 2 CVAL
    TimerKind.PHYS: (3, 3, 14, 2),
    TimerKind.VIRT: (3, 3, 14, 3),
}


def _timer_registers(table: SysRegTable, vm: Vm) -> None:
    """CNTP/CNTV CTL, CVAL and TVAL: QEMU implements them (as stubs), so native=True."""
    timers = vm.timers
    if not timers:
        return
    for kind, (op0, op1, crn, crm) in _TIMER_REGS.items():
        name = "CNTP" if kind == TimerKind.PHYS else "CNTV"
        for op2, reg, read, write in (
                (0, "TVAL", GenericTimer.read_tval, GenericTimer.write_tval),
                (1, "CTL", GenericTimer.read_ctl, GenericTimer.write_ctl),
                (2, "CVAL", GenericTimer.read_cval, GenericTimer.write_cval)):
            table.add(SysRegKey(op0, op1, crn, crm, op2), SysReg(
                f"{name}_{reg}_EL0",
                read=lambda cpu, f=read, k=kind: f(timers[cpu], k),
                write=lambda cpu, v, f=write, k=kind: f(timers[cpu], k, v)))


def _gic_registers(table: SysRegTable, vm: Vm) -> None:
    """The GICv3 CPU interface: registers QEMU lacks here, so the hook steps the PC."""
    gic = vm.gic
    if gic is None or gic.version != 3:
        return
    for name, enc in ICC_REGISTERS.items():
        table.add(SysRegKey(*enc), SysReg(
            name, read=lambda cpu, n=name: gic.icc_read(cpu, n),
            write=lambda cpu, v, n=name: gic.icc_write(cpu, n, v), native=False))


def _place(what: str, rng: MemRange, ram: MemRange, used: list[MemRange]) -> None:
    if not ram.contains(rng.base, rng.size) or rng.base < ram.base:
        raise ImageError(f"{what} ({rng.size} bytes) does not fit in the first memory node {ram}")
    for u in used:
        if u.overlaps(rng):
            raise ImageError(f"{what} {rng} would overlap the loaded image at {u}; "
                             f"the VM needs more RAM")


def _set_initrd(dt: DeviceTree, chosen: Node, start: int, end: int) -> None:
    for name, value in (("linux,initrd-start", start), ("linux,initrd-end", end)):
        chosen.set_property(name, [value >> 32, value & 0xFFFF_FFFF])


def _cpu_mpidrs(dt: DeviceTree, notes: list[str]) -> list[int]:
    cpus = dt.node("/cpus")
    nodes = [] if cpus is None else [n for n in cpus.nodes
                                     if dt.string(n, "device_type") == "cpu"]
    if not nodes:
        return [0]
    out = []
    for n in nodes:
        regs = dt.cells(n, "reg") or [0]
        mpidr = 0
        for c in regs:
            mpidr = (mpidr << 32) | c
        out.append(mpidr & 0xFF_00FF_FFFF)
    if 0 not in out:
        raise ImageError(f"{dt.source}: /cpus has cpu nodes but none with reg = 0 (CPU0)")
    out.sort(key=lambda m: m != 0)
    return out


def _apply_dt_mod(dt: DeviceTree, mod: str) -> None:
    """uvmm's ``-m <path>/<prop>[=[type:]value]``."""
    target, eq, value = mod.partition("=")
    path, _, prop = target.rpartition("/")
    node = dt.node(path or "/")
    if node is None or not prop:
        raise ConfigError(f"uvmm -m {mod!r}: no node {path!r}")
    if not eq:
        node.set_property(prop, None)
        return
    kind, colon, text = value.partition(":")
    if not colon or kind not in ("str", "bool", "u32", "u64"):
        kind, text = "str", value
    try:
        if kind == "str":
            node.set_property(prop, text)
        elif kind == "bool":
            if text.lower() in ("1", "true", "yes"):
                node.set_property(prop, None)
            else:
                node.remove_property(prop)
        elif kind == "u32":
            node.set_property(prop, [int(text, 0) & 0xFFFF_FFFF])
        else:
            v = int(text, 0)
            node.set_property(prop, [v >> 32, v & 0xFFFF_FFFF])
    except ValueError:
        raise ConfigError(f"uvmm -m {mod!r}: {text!r} is not a {kind}") from None
