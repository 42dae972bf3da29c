"""cons's multiplexer commands and pyned's lifecycle commands (which uvmm lacks).

cons (l4re-uvmm-ned.md §6.3): ``list``, ``cat``, ``tail``, ``show``/``hide``
(what pyned's terminal prints), ``timestamp``, ``connect`` and ``send``.
pyned: ``ps``, ``pause``, ``resume``, ``reset``, ``kill``, ``inject``,
``events``, ``stats``, and session commands (``use``, ``subscribe``, ``quit``).
Control actions are written to the lifecycle journal, like every start and end.
"""

from __future__ import annotations

import codecs
import fnmatch
import time
from typing import TYPE_CHECKING

from pyned.kernel.task import Task, TaskState
from pyned.monitor.registry import (
    Command,
    CommandError,
    Context,
    Registry,
    Reply,
    expect,
    number,
)
from pyned.vmm.vm import Injection

if TYPE_CHECKING:
    from pyned.services.cons import Channel
    from pyned.services.uvmm import Guest
    from pyned.vmm.vm import Vm

TAIL_LINES = 10
EVENTS_SHOWN = 20
STATS_WINDOW_MAX_S = 60.0
# How long reset and kill wait to report the outcome.
SETTLE_S = 2.0


def _channel(ctx: Context, name: str) -> Channel:
    ch = ctx.system.cons.channels.get(name)
    if ch is None:
        raise CommandError(f"no channel {name!r}; 'list' shows them")
    return ch


def _session(ctx: Context, what: str):  # -> Session
    if ctx.session is None:
        raise CommandError(f"{what} is not available on a VM's monitor channel")
    return ctx.session


def _channels(ctx: Context, _words: list[str]) -> list[str]:
    return list(ctx.system.cons.channels)


# -- cons --------------------------------------------------------------------

def _list(ctx: Context, args: list[str]) -> Reply:
    rows = []
    for ch in list(ctx.system.cons.channels.values()):
        if args and not any(fnmatch.fnmatchcase(ch.name, p) for p in args):
            continue
        rows.append({"name": ch.name, "shown": ch.show, "timestamp": ch.timestamp, "key": ch.key,
                     "out_bytes": ch.out_bytes, "in_bytes": ch.in_bytes, "dead": ch.dead})
    lines = [f"{'channel':<12} {'flags':<10} {'out':>10} {'in':>8}"]
    for r in rows:
        flags = ("S" if r["shown"] else "-") + ("T" if r["timestamp"] else "-")
        if r["key"]:
            flags += f" key={r['key']}"
        lines.append(f"{r['name']:<12} {flags:<10} {r['out_bytes']:>10} {r['in_bytes']:>8}"
                     + (" [X]" if r["dead"] else ""))
    lines.append("flags: S shown on pyned's terminal, T timestamps; [X] its program has ended")
    return Reply("\n".join(lines), rows)


def _cat(ctx: Context, args: list[str]) -> Reply:
    if len(args) != 1:
        raise CommandError("usage: cat CHANNEL")
    text = _channel(ctx, args[0]).text()
    return Reply(text.rstrip("\n"), {"channel": args[0], "text": text})


def _tail(ctx: Context, args: list[str]) -> Reply:
    if not 1 <= len(args) <= 2:
        raise CommandError("usage: tail CHANNEL [LINES]")
    n = number(args[1], "line count") if len(args) > 1 else TAIL_LINES
    if n < 0:
        raise CommandError("the line count must not be negative")
    lines = _channel(ctx, args[0]).text().splitlines()[-n:] if n else []
    return Reply("\n".join(lines), {"channel": args[0], "lines": lines})


def _show_hide(show: bool):
    def run(ctx: Context, args: list[str]) -> Reply:
        if len(args) != 1:
            raise CommandError(f"usage: {'show' if show else 'hide'} CHANNEL|all")
        chans = (list(ctx.system.cons.channels.values()) if args[0] == "all"
                 else [_channel(ctx, args[0])])
        for ch in chans:
            ch.show = show
        names = [ch.name for ch in chans]
        return Reply(f"{'shown' if show else 'hidden'} on pyned's terminal: {', '.join(names)}",
                     {"channels": names, "shown": show})
    return run


def _timestamp(ctx: Context, args: list[str]) -> Reply:
    if not 1 <= len(args) <= 2 or (len(args) == 2 and args[1] not in ("on", "off")):
        raise CommandError("usage: timestamp CHANNEL [on|off]")
    ch = _channel(ctx, args[0])
    if len(args) == 2:
        ch.timestamp = args[1] == "on"
    state = "on" if ch.timestamp else "off"
    return Reply(f"{ch.name}: timestamps {state}", {"channel": ch.name, "timestamp": ch.timestamp})


def _connect(ctx: Context, args: list[str]) -> Reply:
    session = _session(ctx, "connect")
    if len(args) != 1:
        raise CommandError("usage: connect CHANNEL")
    ch = _channel(ctx, args[0])
    if ch.dead:
        raise CommandError(f"{ch.name} has ended; 'cat {ch.name}' shows its output")
    return session.connect(ch)


def _disconnect(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "disconnect")
    return _session(ctx, "disconnect").disconnect()


def _send(ctx: Context, args: list[str]) -> Reply:
    if len(args) < 2:
        raise CommandError("usage: send CHANNEL TEXT  (text mode understands \\n, \\r, \\xNN)")
    ch = _channel(ctx, args[0])
    if ctx.exact:
        data = "".join(args[1:]).encode()
    else:
        try:
            data = codecs.decode(" ".join(args[1:]), "unicode_escape").encode("latin-1")
        except (UnicodeDecodeError, UnicodeEncodeError) as err:
            raise CommandError(f"send: bad escape in the text: {err.reason}") from None
    if ch.dead:
        raise CommandError(f"{ch.name} has ended")
    taken = ch.send(data)
    note = "" if taken == len(data) else " (the device's input buffer is full)"
    return Reply(f"{ch.name}: {taken} of {len(data)} bytes taken{note}",
                 {"channel": ch.name, "sent": len(data), "taken": taken})


# -- pyned: tasks and VMs ----------------------------------------------------

def _vm_state(g: Guest) -> str:
    vm = g.vm
    if vm.hung:
        return "hung"
    if vm.paused:
        return "paused"
    return vm.state.value


def _exit_text(code: int | None, reason: str, killed: bool) -> str:
    if killed:
        return f"killed ({reason})" if reason and reason != "killed" else "killed"
    return f"{code:#x} ({reason})" if reason else f"{code:#x}"


def _ps(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "ps")
    now = time.monotonic()
    guests = {tid: g for tid, g in list(ctx.system.guests.items())}
    rows = []
    for t in list(ctx.system.tasks.tasks):
        g = guests.get(t.tid)
        row: dict[str, object] = {
            "tid": t.tid, "name": t.channel or "-", "program": t.name,
            "state": t.state.value, "uptime": (t.ended or now) - t.started,
            "restarts": None, "last_exit": None, "server": t.server}
        if g is not None:
            row.update(state=_vm_state(g), restarts=g.restarts, vm_uptime=g.vm.uptime())
            if g.last_end is not None:
                e = g.last_end
                # A living guest's last end was followed by a restart: a kill then was a reset.
                row["last_exit"] = (f"reset ({e.reason})" if e.killed
                                    else _exit_text(e.code, e.reason, e.killed))
        else:
            row["restarts"] = ctx.monitor.known_restarts(t.tid)
        if t.state == TaskState.ZOMBIE:
            row["state"] = "killed" if t.killed else "exited"
            row["last_exit"] = _exit_text(t.exit_code, t.exit_reason, t.killed)
        rows.append(row)
    lines = [(f"{'tid':>4}  {'name':<10} {'program':<14} {'state':<9} {'uptime':>9} "
             f"{'restarts':>8}  last exit")]
    for r in rows:
        restarts = "-" if r["restarts"] is None else str(r["restarts"])
        lines.append(f"{r['tid']:>4}  {r['name']:<10} {r['program']:<14} {r['state']:<9} "
                     f"{r['uptime']:>8.1f}s {restarts:>8}  {r['last_exit'] or '-'}")
    return Reply("\n".join(lines), rows)


def _record(ctx: Context, event: str, cause: str = "") -> None:
    g = ctx.vm()
    who = ctx.session.label if ctx.session is not None else "monitor channel"
    ctx.system.journal.record(g.name, event, cause=f"{cause + ', ' if cause else ''}by {who}",
                              restarts=g.restarts)


def _pause(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "pause [VM]")
    g = ctx.vm()
    with ctx.monitor.control_lock(g):
        if g.vm.paused:
            raise CommandError(f"{g.name} is already paused")
        g.vm.pause()
    _record(ctx, "pause")
    return Reply(f"{g.name} paused", {"vm": g.name, "state": "paused"})


def _resume(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "resume [VM]")
    g = ctx.vm()
    with ctx.monitor.control_lock(g):
        if not g.vm.paused:
            raise CommandError(f"{g.name} is not paused")
        g.vm.resume()
    _record(ctx, "resume")
    hung = " (still hung: only 'reset' recovers from an injected hang)" if g.vm.hung else ""
    return Reply(f"{g.name} resumed{hung}", {"vm": g.name, "state": _vm_state(g)})


def _reset(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "reset [VM]")
    g = ctx.vm()
    before = g.restarts
    g.reset("monitor reset")
    deadline = time.monotonic() + SETTLE_S
    while g.restarts == before and g.task.alive and time.monotonic() < deadline:
        time.sleep(0.005)
    if g.restarts == before:
        state = "ended" if not g.task.alive else "reset requested"
        return Reply(f"{g.name}: {state}", {"vm": g.name, "restarts": g.restarts})
    return Reply(f"{g.name} reset: a fresh VM runs (restart {g.restarts})",
                 {"vm": g.name, "restarts": g.restarts})


def _kill(ctx: Context, args: list[str]) -> Reply:
    expect(args, 1, "kill [VM|TID|NAME]")
    target = args[0] if args else ctx.named
    task: Task | None = None
    if target is not None:
        task = ctx.monitor.find_task(target)
    if task is None:
        task = ctx.monitor.target(ctx.session, target).task
    if not task.alive:
        raise CommandError(f"task {task.tid} ({task.channel or task.name}) has already ended")
    task.kill()
    task.wait(SETTLE_S)
    name = task.channel or task.name
    return Reply(f"{name} (task {task.tid}) killed" if not task.alive
                 else f"{name} (task {task.tid}): kill requested",
                 {"tid": task.tid, "name": name, "alive": task.alive})


def _inject(ctx: Context, args: list[str]) -> Reply:
    kinds = {k.value: k for k in Injection}
    usage = f"inject [VM] {'|'.join(kinds)} [CPU]"
    if not 1 <= len(args) <= 2 or args[0] not in kinds:
        raise CommandError(f"usage: {usage}")
    cpu = number(args[1], "cpu") if len(args) > 1 else 0
    g = ctx.vm()
    try:
        g.vm.inject(kinds[args[0]], cpu)
    except ValueError as err:
        raise CommandError(str(err)) from None
    _record(ctx, "inject", f"{args[0]} on cpu {cpu}")
    return Reply(f"{g.name}: {args[0]} injected into cpu {cpu}",
                 {"vm": g.name, "kind": args[0], "cpu": cpu})


def _events(ctx: Context, args: list[str]) -> Reply:
    vm, n = ctx.named, EVENTS_SHOWN
    for a in args:
        if a.isdigit():
            n = int(a)
        elif vm is None:
            vm = a
        else:
            raise CommandError("usage: events [VM] [N]")
    entries = ctx.system.journal.entries(vm=vm)[-n:] if n else []
    return Reply("\n".join(e.line() for e in entries) or "(no events)",
                 [e.to_dict() for e in entries])


# -- pyned: cores ------------------------------------------------------------

def _cores(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "cores")
    rows, lines = [], []
    for core in ctx.system.scheduler.cores:
        running = core.current
        threads = [{"name": n, "prio": p, "state": s} for n, p, s in core.threads()]
        rows.append({"core": core.index, "running": running.name if running else None,
                     "switches": core.switches, "holds": core.holds,
                     "clear_us": round(core.clear_ns / 1e3, 1), "threads": threads})
        lines.append(f"core{core.index}: running {running.name if running else 'nothing'}, "
                     f"switches {core.switches}, cleared ahead of a timer deadline "
                     f"{core.holds} times (clearing takes about {core.clear_ns / 1e3:.0f} us)")
        lines += [f"  {t['name']:<16} prio {t['prio']:<4} {t['state']}"
                  for t in sorted(threads, key=lambda t: -t["prio"])]
    return Reply("\n".join(lines), rows)


# -- pyned: stats ------------------------------------------------------------

def _sample(vm: Vm) -> dict[str, object]:
    cpus = []
    for t in list(vm.threads):
        v = t.vcpu
        cpus.append({"cpu": v.index, "run_ns": v.run_time_ns(), "insns": v.instructions,
                     "slices": sum(v.exits.values()),
                     "exits": dict(v.exits), "hypercalls": v.hypercalls,
                     "sysreg_traps": v.sysreg_traps, "irqs_taken": t.irqs_taken,
                     "timer_early": t.advance.early, "timer_late": t.advance.late,
                     "timer_advance_us": round(t.advance.ns / 1e3, 1)})
    return {"time": time.monotonic(), "uptime": vm.uptime(), "mmio": vm.bus.accesses,
            "cpus": cpus}


def _delta(a: dict, b: dict) -> dict:
    """Counters of ``b`` minus those of ``a`` (same VM incarnation)."""
    out = dict(b, mmio=b["mmio"] - a["mmio"], seconds=b["time"] - a["time"])
    out["cpus"] = []
    for ca, cb in zip(a["cpus"], b["cpus"]):
        exits = {k: cb["exits"].get(k, 0) - ca["exits"].get(k, 0) for k in cb["exits"]}
        insns = None if cb["insns"] is None else cb["insns"] - ca["insns"]
        out["cpus"].append(dict(cb, run_ns=cb["run_ns"] - ca["run_ns"], insns=insns,
                                slices=cb["slices"] - ca["slices"], exits=exits,
                                hypercalls=cb["hypercalls"] - ca["hypercalls"],
                                sysreg_traps=cb["sysreg_traps"] - ca["sysreg_traps"],
                                irqs_taken=cb["irqs_taken"] - ca["irqs_taken"],
                                timer_early=cb["timer_early"] - ca["timer_early"],
                                timer_late=cb["timer_late"] - ca["timer_late"]))
    return out


def _stats_text(name: str, s: dict, window: bool) -> str:
    span = s["seconds"] if window else s["uptime"]
    span = max(span, 1e-9)
    head = (f"{name}: last {span:.2f}s" if window else f"{name}: up {span:.2f}s "
            f"(since its last start)")
    lines = [head + f", mmio accesses {s['mmio']} ({s['mmio'] / span:.0f}/s)"]
    for c in s["cpus"]:
        exits = ", ".join(f"{k} {v} ({v / span:.0f}/s)" for k, v in sorted(c["exits"].items()))
        lines.append(f"  cpu{c['cpu']}: in guest code {c['run_ns'] / 1e9:.3f}s "
                     f"({100 * c['run_ns'] / 1e9 / span:.1f}% of one host core), "
                     f"slices {c['slices']} ({c['slices'] / span:.0f}/s)")
        if c["insns"] is not None:
            lines.append(f"        instructions {c['insns']} ({c['insns'] / span / 1e6:.1f} M/s)")
        lines.append(f"        exits: {exits or 'none'}; hypercalls {c['hypercalls']} "
                     f"({c['hypercalls'] / span:.0f}/s), interrupts taken {c['irqs_taken']} "
                     f"({c['irqs_taken'] / span:.0f}/s), system-register traps "
                     f"{c['sysreg_traps']} ({c['sysreg_traps'] / span:.0f}/s)")
        if c["timer_early"]:
            lines.append(f"        timer interrupts delivered ahead of their deadline "
                         f"{c['timer_early']} ({c['timer_early'] / span:.0f}/s), of them after "
                         f"it all the same {c['timer_late']}; advance now "
                         f"{c['timer_advance_us']:.0f} us")
    return "\n".join(lines)


# Stock Unicorn counts nothing, and a per-instruction hook would slow every
# guest many-fold; the patched engine counts per translation block.
INSTRUCTIONS_NOTE = ("instructions/s: not counted on stock Unicorn (build the patched engine: "
                     "'pyned unicorn build'); 'in guest code' is host time inside the emulator")


def _stats(ctx: Context, args: list[str]) -> Reply:
    vm_name, window = ctx.named, 0.0
    for a in args:
        try:
            window = float(a)
        except ValueError:
            if vm_name is not None:
                raise CommandError("usage: stats [VM] [SECONDS]") from None
            vm_name = a
    if not 0 <= window <= STATS_WINDOW_MAX_S:
        raise CommandError(f"the window must be 0 to {STATS_WINDOW_MAX_S:.0f} seconds")
    guests = ([ctx.monitor.target(ctx.session, vm_name)] if vm_name is not None
              else sorted(ctx.system.guests.values(), key=lambda g: g.name))
    if not guests:
        raise CommandError("no VM is running")
    first = [(g, g.vm, _sample(g.vm)) for g in guests]
    if window:
        time.sleep(window)
    texts, data = [], []
    for g, vm, s0 in first:
        if g.vm is not vm:
            texts.append(f"{g.name}: was reset during the window")
            continue
        s = _delta(s0, _sample(vm)) if window else dict(s0, seconds=0.0)
        texts.append(_stats_text(g.name, s, bool(window)))
        data.append(dict(s, vm=g.name, window=bool(window)))
    counted = all(c["insns"] is not None for d in data for c in d["cpus"])
    note = [] if counted else [INSTRUCTIONS_NOTE]
    return Reply("\n".join(texts + note),
                 {"vms": data, "instructions": counted, "note": " ".join(note)})


# -- session -----------------------------------------------------------------

def _use(ctx: Context, args: list[str]) -> Reply:
    session = _session(ctx, "use")
    expect(args, 1, "use [VM|none]")
    if args and args[0] == "none":
        session.current = None
    elif args:
        session.current = ctx.monitor.target(session, args[0]).name
    cur = session.current
    return Reply(f"VM commands go to {cur}" if cur else "no VM chosen (the only VM, if one runs)",
                 {"vm": cur})


def _subscribe(ctx: Context, args: list[str]) -> Reply:
    return _session(ctx, "subscribe").subscribe(args)


def _unsubscribe(ctx: Context, args: list[str]) -> Reply:
    expect(args, 0, "unsubscribe")
    return _session(ctx, "unsubscribe").unsubscribe()


def _complete(ctx: Context, args: list[str]) -> Reply:
    line = " ".join(args) if not ctx.exact else (args[0] if args else "")
    cands = ctx.monitor.registry.complete(ctx.monitor, ctx.session, line)
    return Reply(" ".join(cands), cands)


def _quit(ctx: Context, args: list[str]) -> Reply:
    _session(ctx, "quit").close_after_reply()
    return Reply("bye")


def _vm_names(ctx: Context, words: list[str]) -> list[str]:
    return ctx.monitor.vm_names() if not words else []


def register(reg: Registry) -> None:
    kinds = [k.value for k in Injection]
    for cmd in (
        Command("list", "cons", "channels: output/input counters, flags, [X] when dead",
                "list [PATTERN...]", _list, aliases=("ls",), complete=_channels),
        Command("connect", "cons", "attach to a channel: type to the guest, Ctrl-E . returns",
                "connect CHANNEL", _connect, aliases=("c",),
                complete=lambda c, w: _channels(c, w) if not w else []),
        Command("cat", "cons", "a channel's whole buffer", "cat CHANNEL", _cat,
                complete=lambda c, w: _channels(c, w) if not w else []),
        Command("tail", "cons", "the last lines of a channel", "tail CHANNEL [LINES]", _tail,
                complete=lambda c, w: _channels(c, w) if not w else []),
        Command("show", "cons", "print a channel on pyned's terminal", "show CHANNEL|all",
                _show_hide(True), complete=lambda c, w: ["all", *_channels(c, w)] if not w else []),
        Command("hide", "cons", "stop printing a channel on pyned's terminal", "hide CHANNEL|all",
                _show_hide(False), complete=lambda c, w: ["all", *_channels(c, w)] if not w else []),
        Command("timestamp", "cons", "timestamps on a channel's terminal lines",
                "timestamp CHANNEL [on|off]", _timestamp,
                complete=lambda c, w: _channels(c, w) if not w else ["on", "off"]),
        Command("send", "cons", "type text into a channel without connecting",
                "send CHANNEL TEXT  (\\n, \\r, \\xNN escapes in text mode)", _send,
                complete=lambda c, w: _channels(c, w) if not w else [], waits=True),
        Command("ps", "pyned", "tasks and VMs: state, uptime, restarts, last exit", "ps", _ps),
        Command("cores", "pyned", "platform cores: their vCPUs and priorities, switches, "
                "clearings for a deadline", "cores", _cores),
        Command("pause", "pyned", "stop a VM's vCPUs (timers and devices go on)", "pause [VM]",
                _pause, vm=True, complete=_vm_names, waits=True),
        Command("resume", "pyned", "let a paused VM run again", "resume [VM]", _resume, vm=True,
                complete=_vm_names, waits=True),
        Command("reset", "pyned", "restart a VM from its configuration with zeroed RAM",
                "reset [VM]", _reset, vm=True, complete=_vm_names, waits=True),
        Command("kill", "pyned", "end a VM (or another task) as ned's kill() does",
                "kill [VM|TID|NAME]", _kill,
                complete=lambda c, w: [t.channel for t in c.system.tasks.alive() if t.channel]
                if not w else [], waits=True),
        Command("inject", "pyned", "inject a fault: " + ", ".join(kinds),
                f"inject [VM] {'|'.join(kinds)} [CPU]", _inject, vm=True,
                complete=lambda c, w: [*kinds, *c.monitor.vm_names()] if not w else
                kinds if w[0] in c.monitor.vm_names() and len(w) == 1 else [], waits=True),
        Command("events", "pyned", "the lifecycle journal (starts, ends, restarts, actions)",
                "events [VM] [N]", _events, complete=_vm_names),
        Command("stats", "pyned", "per vCPU: time in guest code, slices, exits, interrupts",
                "stats [VM] [SECONDS]  (with SECONDS: rates over that window)", _stats,
                complete=_vm_names, waits=True),
        Command("use", "pyned", "choose the VM that VM commands go to", "use [VM|none]", _use,
                complete=lambda c, w: ["none", *c.monitor.vm_names()] if not w else []),
        Command("subscribe", "pyned", "JSON mode: stream events (state, console, output)",
                "subscribe [state] [console] [output] [CHANNEL...]", _subscribe,
                complete=lambda c, w: ["state", "console", "output", *_channels(c, w)]),
        Command("unsubscribe", "pyned", "JSON mode: stop all streams", "unsubscribe",
                _unsubscribe),
        Command("disconnect", "pyned", "JSON mode: end a connect", "disconnect", _disconnect),
        Command("complete", "pyned", "completion candidates for a partial line",
                "complete LINE", _complete),
        Command("quit", "pyned", "end this session", "quit", _quit, aliases=("exit",)),
    ):
        reg.add(cmd)
