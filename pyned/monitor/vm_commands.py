"""uvmm's monitor commands for one VM (l4re-uvmm-ned.md §6.2).

Names, arguments and defaults follow uvmm: ``cpu``, ``dev``, ``ram``, ``dt``,
``gic``, ``verbose``; ``help`` is the registry's. Registers are read with the
VM paused for the moment of the read, so they are one consistent snapshot.
"""

from __future__ import annotations

import struct
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from pyned.devices.virtio.mmio import TRANSPORT_FEATURES, DeviceStatus, VirtioMmio
from pyned.monitor.registry import (
    Command,
    CommandError,
    Context,
    Registry,
    Reply,
    expect,
    number,
)
from pyned.vmm.devicetree import node_path
from pyned.vmm.options import LEVELS

if TYPE_CHECKING:
    from fdt.items import Node

    from pyned.vmm.devicetree import DeviceTree
    from pyned.vmm.vm import VcpuThread, Vm

# uvmm's Mem_dumper: at most this many entries per dump.
DUMP_MAX_ENTRIES = 1024
_WIDTHS = {"b": 1, "w": 2, "d": 4, "q": 8}
_STRUCT = {1: "B", 2: "H", 4: "I", 8: "Q"}
# VIRTIO 1.2 §5: virtqueue names per device id.
_QUEUE_NAMES = {1: ("receiveq1", "transmitq1"), 2: ("requestq",),
                3: ("receiveq0", "transmitq0"), 4: ("requestq",)}


@contextmanager
def stopped(ctx: Context) -> Iterator[Vm]:
    """The VM with no vCPU executing; a VM the user paused stays paused."""
    guest = ctx.vm()
    with ctx.monitor.control_lock(guest):
        vm = guest.vm
        was = vm.paused
        if not was:
            vm.pause()
        try:
            yield vm
        finally:
            if not was:
                vm.resume()


# -- verbose -----------------------------------------------------------------

def _verbose(ctx: Context, args: list[str]) -> Reply:
    opts = ctx.vm().options
    if args and args[0] == "show":
        expect(args, 2, "verbose show [all]")
        _component(args[1:])
        return Reply(f"all: {LEVELS[opts.verbosity]}", {"all": LEVELS[opts.verbosity]})
    if args and args[0] == "set":
        rest = args[1:]
        if len(rest) == 2:
            _component(rest[:1])
            rest = rest[1:]
        if len(rest) != 1 or rest[0] not in LEVELS:
            raise CommandError(f"usage: verbose set [all] {'|'.join(LEVELS)}")
        opts.verbosity = LEVELS.index(rest[0])
        return Reply(f"all: {rest[0]}", {"all": rest[0]})
    raise CommandError("usage: verbose show [all] | verbose set [all] LEVEL")


def _component(args: list[str]) -> None:
    if args and args[0] != "all":
        raise CommandError(f"no log component {args[0]!r}: pyned's uvmm logs as one "
                           f"component, 'all'")


# -- cpu ---------------------------------------------------------------------

def _thread_state(vm: Vm, t: VcpuThread) -> str:
    if not t.powered:
        return "off"
    if vm.hung:
        return "hung"
    if vm.paused:
        return "paused"
    return "executing" if t.executing else "waiting"


def _cpu(ctx: Context, args: list[str]) -> Reply:
    vm = ctx.vm().vm
    if args == ["list"]:
        rows = [{"cpu": t.vcpu.index, "mpidr": t.vcpu.mpidr, "core": t.core.index,
                 "state": _thread_state(vm, t), "irqs_taken": t.irqs_taken}
                for t in vm.threads]
        text = "\n".join(f"cpu{r['cpu']}  mpidr {r['mpidr']:#x}  core {r['core']}  "
                         f"{r['state']:<9}  irqs taken {r['irqs_taken']}" for r in rows)
        return Reply(text, rows)
    if len(args) == 2 and args[1] == "regs":
        if args[0] == "all":
            indices = list(range(len(vm.threads)))
        else:
            n = number(args[0], "cpu")
            if not 0 <= n < len(vm.threads):
                raise CommandError(f"{ctx.vm().name} has no cpu {n} (cpus 0-{len(vm.threads) - 1})")
            indices = [n]
        with stopped(ctx) as vm:
            running = any(t.executing for t in vm.threads)
            regs = [vm.threads[i].vcpu.registers() for i in indices]
        text = "\n".join(_format_regs(i, r) for i, r in zip(indices, regs))
        if running:
            text += "\n(a vCPU did not stop within 1 s: the values may be from different moments)"
        return Reply(text, [dict(r, cpu=i) for i, r in zip(indices, regs)])
    raise CommandError("usage: cpu list | cpu N regs | cpu all regs")


def _pstate_text(p: int) -> str:
    el, sp = p >> 2 & 3, p & 1
    daif = "".join(f if p >> b & 1 else "-" for f, b in (("D", 9), ("A", 8), ("I", 7), ("F", 6)))
    nzcv = "".join(f if p >> b & 1 else "-" for f, b in (("N", 31), ("Z", 30), ("C", 29), ("V", 28)))
    return f"EL{el}{'h' if sp else 't'} {daif} {nzcv}"


def _format_regs(index: int, r: dict[str, int]) -> str:
    lines = [f"cpu{index}: pc {r['pc']:#018x}  {_pstate_text(r['pstate'])}"]
    for row in range(0, 31, 4):
        lines.append("  ".join(f"x{i:<2} {r[f'x{i}']:016x}" for i in range(row, min(row + 4, 31))))
    lines.append(f"sp  {r['sp']:016x}  pc  {r['pc']:016x}  psr {r['pstate']:08x}  "
                 f"sctlr {r['sctlr_el1']:08x}")
    lines.append("  ".join(f"{n} {r[n]:x}" for n in ("elr_el1", "spsr_el1", "esr_el1", "far_el1",
                                                     "vbar_el1", "sp_el0", "sp_el1")))
    return "\n".join(lines)


def _cpu_complete(ctx: Context, words: list[str]) -> list[str]:
    if not words:
        n = len(ctx.guest.vm.threads) if ctx.guest else 0
        return ["list", "all"] + [str(i) for i in range(n)]
    return ["regs"] if len(words) == 1 and words[0] != "list" else []


# -- dev ---------------------------------------------------------------------

def _dev(ctx: Context, args: list[str]) -> Reply:
    vm = ctx.vm().vm
    if args == ["list"]:
        rows = [{"path": d.path, "compatible": d.compatible, "model": _model(d.device)}
                for d in vm.devices]
        width = max((len(r["path"]) for r in rows), default=0)
        return Reply("\n".join(f"{r['path']:<{width}}  {r['compatible']:<20} {r['model']}"
                               for r in rows), rows)
    if args == ["memmap"]:
        rows = [{"base": r.range.base, "end": r.range.base + r.range.size - 1, "kind": "ram",
                 "name": r.name} for r in vm.memory.regions]
        rows += [{"base": r.range.base, "end": r.range.base + r.range.size - 1, "kind": "mmio",
                  "name": r.name} for r in vm.bus.regions]
        rows.sort(key=lambda r: r["base"])
        return Reply("\n".join(f"[{r['base']:#010x} - {r['end']:#010x}]  {r['kind']:<4}  "
                               f"{r['name']}" for r in rows), rows)
    if not args:
        raise CommandError("usage: dev list | dev memmap | dev PATH config|queues")
    entry = _find_device(vm, args[0])
    transport = entry.device
    if not isinstance(transport, VirtioMmio):
        raise CommandError(f"{entry.path} ({type(transport).__name__}) has no commands; "
                           f"virtio devices have 'config' and 'queues'")
    sub = args[1:]
    if sub == ["config"]:
        return _virtio_config(entry.path, transport)
    if sub == ["queues"]:
        return _virtio_queues(entry.path, transport)
    raise CommandError(f"usage: dev {args[0]} config|queues")


def _model(device: object) -> str:
    if isinstance(device, list):  # one model per vCPU (the timers)
        return f"{len(device)} x {type(device[0]).__name__}" if device else "none"
    return type(device).__name__


def _find_device(vm: Vm, name: str):  # -> DeviceEntry
    for d in vm.devices:
        if d.path == name:
            return d
    hits = [d for d in vm.devices if d.path.rsplit("/", 1)[-1] == name]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise CommandError(f"{name!r} names several devices: "
                           f"{', '.join(d.path for d in hits)}")
    raise CommandError(f"no device {name!r}; 'dev list' shows them")


def _status_text(status: int) -> str:
    names = [s.name for s in DeviceStatus if status & s]
    return f"{status:#x} ({'|'.join(names) or 'reset'})"


def _config_fields(device_id: int, cfg: bytes) -> dict[str, object]:
    """The fields of a configuration space pyned's devices fill (VIRTIO 1.2 §5)."""
    def u(off: int, size: int) -> int | None:
        if off + size > len(cfg):
            return None
        return struct.unpack_from("<" + _STRUCT[size], cfg, off)[0]

    if device_id == 1:
        fields = {"mac": ":".join(f"{b:02x}" for b in cfg[:6]) if len(cfg) >= 6 else None,
                  "status": u(6, 2), "max_virtqueue_pairs": u(8, 2), "mtu": u(10, 2)}
    elif device_id == 2:
        fields = {"capacity": u(0, 8), "size_max": u(8, 4), "seg_max": u(12, 4),
                  "blk_size": u(20, 4)}
    elif device_id == 3:
        fields = {"cols": u(0, 2), "rows": u(2, 2), "max_nr_ports": u(4, 4)}
    else:
        fields = {}
    return {k: v for k, v in fields.items() if v is not None}


def _virtio_config(path: str, t: VirtioMmio) -> Reply:
    info = t.info()
    cfg = t.device.config_bytes()
    offered = t.device.device_features | TRANSPORT_FEATURES
    fields = _config_fields(t.device.device_id, cfg)
    data = {"path": path, "device": info["device"], "device_id": info["device_id"],
            "status": info["status"], "device_features": offered,
            "driver_features": info["driver_features"], "generation": t.config_generation,
            "interrupt_status": info["interrupt_status"], "failure": info["failure"],
            "notifications": info["notifications"], "interrupts": info["interrupts"],
            "config": cfg.hex(), "fields": fields}
    lines = [f"{path}: virtio-{info['device']} (device id {info['device_id']}), virtio-mmio v2",
             f"status {_status_text(int(info['status']))}",  # type: ignore[call-overload]
             f"device features {offered:#018x}  driver features {info['driver_features']:#018x}",
             (f"config generation {t.config_generation}  interrupt status "
             f"{info['interrupt_status']:#x}  notifications {info['notifications']}  "
             f"interrupts {info['interrupts']}")]
    if info["failure"]:
        lines.append(f"failure: {info['failure']}")
    lines.append(f"config space ({len(cfg)} bytes): {cfg.hex(' ') or '-'}")
    lines += [f"  {k} = {v:#x}" if isinstance(v, int) else f"  {k} = {v}"
              for k, v in fields.items()]
    return Reply("\n".join(lines), data)


def _virtio_queues(path: str, t: VirtioMmio) -> Reply:
    queues = t.info()["queues"]
    names = _QUEUE_NAMES.get(t.device.device_id, ())
    lines, data = [], []
    for i, q in enumerate(queues):  # type: ignore[arg-type]
        name = names[i] if i < len(names) else f"queue{i}"
        data.append(dict(q, index=i, name=name))
        if "desc" not in q:
            lines.append(f"{i} {name}: not ready (size {q['num']})")
            continue
        lines.append(f"{i} {name}: size {q['size']}  desc {q['desc']:#x}  avail {q['avail']:#x}  "
                     f"used {q['used']:#x}  avail.idx {q['avail_idx']}  used.idx {q['used_idx']}"
                     f"  last seen {q['last_avail_idx']}  popped {q['popped']}")
    return Reply(f"{path}:\n" + "\n".join(lines), data)


def _dev_complete(ctx: Context, words: list[str]) -> list[str]:
    vm = ctx.guest.vm if ctx.guest else None
    if not words:
        return ["list", "memmap"] + ([d.path for d in vm.devices] if vm else [])
    if len(words) == 1 and vm is not None:
        try:
            entry = _find_device(vm, words[0])
        except CommandError:
            return []
        return ["config", "queues"] if isinstance(entry.device, VirtioMmio) else []
    return []


# -- ram ---------------------------------------------------------------------

def _ram(ctx: Context, args: list[str]) -> Reply:
    vm = ctx.vm().vm
    if args == ["ds"]:
        rows = [{"name": r.name, "dataspace": r.dataspace.name, "base": r.range.base,
                 "size": r.range.size} for r in vm.memory.regions]
        text = "Dataspace  Guest area                 Size        Node\n" + "\n".join(
            f"{r['dataspace']:<9}  {r['base']:#010x}-{r['base'] + r['size'] - 1:#010x}  "
            f"{r['size']:#010x}  {r['name']}" for r in rows)
        return Reply(text + "\n(guest-physical is host-physical on the MPU platform)", rows)
    if args and args[0] == "dump":
        return _ram_dump(vm, args[1:])
    raise CommandError("usage: ram ds | ram dump ADDR [N [b|w|d|q]]")


def _ram_dump(vm: Vm, args: list[str]) -> Reply:
    if not 1 <= len(args) <= 3:
        raise CommandError("usage: ram dump ADDR [N [b|w|d|q]] (N entries, default 1; "
                           "b/w/d/q = 8/16/32/64 bits, default q)")
    addr = number(args[0], "address")
    n = number(args[1], "entry count") if len(args) > 1 else 1
    width = _WIDTHS.get(args[2]) if len(args) > 2 else 8
    if width is None:
        raise CommandError(f"width {args[2]!r} is not one of b, w, d, q")
    if n <= 0:
        raise CommandError("nothing to dump")
    note = ""
    if n > DUMP_MAX_ENTRIES:
        n, note = DUMP_MAX_ENTRIES, f" (at most {DUMP_MAX_ENTRIES} entries)"
    addr &= ~(width - 1)
    region = next((r for r in vm.memory.regions
                   if r.range.base <= addr < r.range.base + r.range.size), None)
    if region is None:
        ram = ", ".join(f"[{r.range.base:#x}-{r.range.base + r.range.size - 1:#x}]"
                        for r in vm.memory.regions)
        raise CommandError(f"{addr:#x} is not in guest RAM ({ram or 'none'})")
    room = (region.range.base + region.range.size - addr) // width
    if n > room:
        n, note = room, f" (stops at the end of {region.name})"
    raw = vm.memory.read(addr, n * width)
    values = list(struct.unpack(f"<{n}{_STRUCT[width]}", raw))
    per_line = 16 // width
    lines = []
    for i in range(0, n, per_line):
        chunk = values[i:i + per_line]
        lines.append(f"{addr + i * width:#018x}: " + " ".join(f"{v:0{2 * width}x}" for v in chunk))
    return Reply("\n".join(lines) + note, {"address": addr, "width": width, "values": values})


# -- dt, gic -----------------------------------------------------------------

def dts_text(dt: DeviceTree) -> str:
    """The tree as DTS, with pyned's reason beside every node it disabled."""
    out = ["/dts-v1/;", ""]
    for entry in dt.tree.entries:
        out.append(f"/memreserve/ {entry['address']:#x} {entry['size']:#x};")

    def node(n: Node, depth: int) -> None:
        pad = "    " * depth
        label = f"{n.label}: " if n.label else ""
        why = dt.disabled.get(node_path(n)) if n.parent is not None else None
        out.append(f"{pad}{label}{n.name} {{" + (f"  /* disabled by pyned: {why} */" if why else ""))
        out.extend(p.to_dts(4, depth + 1).rstrip("\n") for p in n.props
                   if not p.name.endswith("_with_references"))
        for child in n.nodes:
            node(child, depth + 1)
        out.append(f"{pad}}};")

    node(dt.root, 0)
    return "\n".join(out)


def _dt(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "dt")
    vm = ctx.vm().vm
    return Reply(dts_text(vm.dt), {"dts": dts_text(vm.dt), "disabled": dict(vm.dt.disabled)})


def _gic(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "gic")
    gic = ctx.vm().vm.gic
    if gic is None:
        raise CommandError(f"{ctx.vm().name} has no interrupt controller")
    rows = gic.dump()
    yn = {True: "y", False: "n"}
    lines = [(f"GICv{gic.version}, {gic.num_irqs} interrupt IDs, {gic.num_cpus} vCPU(s); "
             f"interrupts with any state:"),
             "IntID  cpu ena pen act lvl  pri  cfg   grp -> target"]
    for r in rows:
        cpu = "-" if r["cpu"] is None else str(r["cpu"])
        src = f" (from {','.join(map(str, r['sources']))})" if r.get("sources") else ""
        lines.append(f"{r['intid']:5}  {cpu:>3}  {yn[r['enabled']]}   {yn[r['pending']]}   "
                     f"{yn[r['active']]}   {yn[r['line']]}  {r['priority']:#04x} {r['config']:<5} "
                     f"{r['group']:>3} -> {r['target']}{src}")
    return Reply("\n".join(lines), {"version": gic.version, "irqs": rows})


def register(reg: Registry) -> None:
    for cmd in (
        Command("verbose", "uvmm", "show or set the VM's log level",
                f"verbose show [all] | verbose set [all] {'|'.join(LEVELS)}", _verbose, vm=True,
                needs_mon=True,
                complete=lambda c, w: ["show", "set"] if not w else
                ["all", *LEVELS] if w[0] == "set" else ["all"]),
        Command("cpu", "uvmm", "vCPUs: list them, dump registers",
                "cpu list | cpu N regs | cpu all regs", _cpu, vm=True, needs_mon=True,
                complete=_cpu_complete, waits=lambda args: "regs" in args),
        Command("dev", "uvmm", "devices: list, MMIO map, a device's own commands",
                "dev list | dev memmap | dev PATH config|queues (virtio devices)", _dev, vm=True,
                needs_mon=True, complete=_dev_complete,
                # a device's own commands take its lock, which a request may hold a while
                waits=lambda args: len(args) > 1),
        Command("ram", "uvmm", "RAM dataspaces and a hex dump of guest RAM",
                "ram ds | ram dump ADDR [N [b|w|d|q]]  (N entries, default 1; width default q)",
                _ram, vm=True, needs_mon=True,
                complete=lambda c, w: ["ds", "dump"] if not w else
                list(_WIDTHS) if w[0] == "dump" and len(w) == 3 else []),
        Command("dt", "uvmm", "the VM's final device tree as DTS, with why nodes are disabled",
                "dt", _dt, vm=True, needs_mon=True),
        Command("gic", "uvmm", "the interrupt controller's table", "gic", _gic, vm=True,
                needs_mon=True),
        Command("help", "uvmm", "list the commands, or show one's usage", "help [CMD]",
                lambda c, a: Reply(),
                complete=lambda c, w: sorted(c.monitor.registry.commands) if not w else []),
    ):
        reg.add(cmd)

