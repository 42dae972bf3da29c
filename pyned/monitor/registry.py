"""The command registry: every monitor command with its usage, handler and completion.

One registry holds three groups (l4re-uvmm-ned.md §6): cons's multiplexer
commands, uvmm's per-VM monitor commands and pyned's lifecycle commands, which
uvmm lacks. A handler returns a ``Reply``: text for people and, where it has
structure, data for the JSON-lines mode. Anything a client gets wrong raises
``CommandError``, one line for that client only.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from pyned.monitor.server import Monitor, Session
    from pyned.services.uvmm import Guest
    from pyned.system import System

GROUPS = (("cons", "consoles (cons)"), ("uvmm", "one VM (uvmm's monitor)"),
          ("pyned", "lifecycle and inspection (pyned)"))


class CommandError(Exception):
    """A bad command, argument or target: one line for the client that sent it."""


@dataclass
class Reply:
    text: str = ""
    data: Any = None


@dataclass
class Context:
    monitor: Monitor
    session: Session | None        # None on a VM's own monitor channel (monN)
    guest: Guest | None = None     # the VM a VM command works on
    exact: bool = False              # JSON list arguments: no escapes, no re-quoting
    named: str | None = None         # the VM named before the command, if any

    @property
    def system(self) -> System:
        return self.monitor.system

    def vm(self) -> Guest:
        assert self.guest is not None
        return self.guest


Handler = Callable[[Context, list[str]], Reply]
Completer = Callable[[Context, list[str]], list[str]]


@dataclass(frozen=True)
class Command:
    name: str
    group: str
    summary: str
    usage: str
    run: Handler
    # "vm": works on one VM, named before it (``vm1 cpu list``), by ``use``, or the only one.
    vm: bool = False
    # uvmm's inspection commands need the VM's monitor (start_vm's ``mon``); control does not.
    needs_mon: bool = False
    complete: Completer | None = None
    aliases: tuple[str, ...] = ()
    # Whether it may block (pause a VM, sleep, wait for a device or an end): such
    # commands run on a worker thread; all others are answered at once.
    waits: bool | Callable[[list[str]], bool] = False


@dataclass
class Registry:
    commands: dict[str, Command] = field(default_factory=dict)
    _aliases: dict[str, str] = field(default_factory=dict)

    def add(self, cmd: Command) -> None:
        self.commands[cmd.name] = cmd
        for a in cmd.aliases:
            self._aliases[a] = cmd.name

    def get(self, name: str) -> Command | None:
        return self.commands.get(self._aliases.get(name, name))

    # -- running ----------------------------------------------------------------

    def waits(self, words: list[str]) -> bool:
        if len(words) > 1 and self.get(words[0]) is None:
            words = words[1:]  # a VM named first
        cmd = self.get(words[0]) if words else None
        if cmd is None:
            return False
        return cmd.waits(words[1:]) if callable(cmd.waits) else cmd.waits

    def run(self, monitor: Monitor, session: Session | None, words: list[str], *,
            vm: str | None = None, fixed: Guest | None = None, exact: bool = False) -> Reply:
        """Run one command line (already split into words).

        ``fixed`` is the VM of a VM's own monitor channel: there only VM
        commands exist, as in uvmm's monitor.
        """
        if not words:
            return Reply()
        if fixed is None and self.get(words[0]) is None and monitor.find_vm_name(words[0]):
            vm, words = words[0], words[1:]
            if not words:
                raise CommandError(f"{vm}: which command? ('help' lists them)")
        name, args = words[0], words[1:]
        cmd = self.get(name)
        if cmd is None or (fixed is not None and not cmd.vm and cmd.name != "help"):
            raise CommandError(f"unknown command {name!r}; 'help' lists the commands")
        if cmd.name == "help":
            return self.help(args, vm_only=fixed is not None)
        ctx = Context(monitor, session, exact=exact, named=vm)
        if cmd.vm:
            if fixed is not None:
                ctx.guest = fixed
            else:
                if vm is None and args and cmd.group == "pyned" and monitor.find_vm_name(args[0]):
                    vm, args = args[0], args[1:]  # pyned's own form: ``pause vm1``
                ctx.guest = monitor.target(session, vm)
            if cmd.needs_mon and ctx.guest.spec.caps.get("mon") is None:
                raise CommandError(f"{ctx.guest.name} was started with mon = false: "
                                   f"its monitor is off")
        return cmd.run(ctx, args)

    def help(self, args: list[str], vm_only: bool = False) -> Reply:
        if args:
            cmd = self.get(args[0])
            if cmd is None:
                raise CommandError(f"help: no command {args[0]!r}")
            text = f"{cmd.name}: {cmd.summary}\n{cmd.usage}"
            return Reply(text, {"name": cmd.name, "summary": cmd.summary, "usage": cmd.usage})
        lines, data = [], []
        for group, title in GROUPS:
            cmds = [c for c in self.commands.values()
                    if c.group == group and (c.vm or not vm_only)]
            if not cmds:
                continue
            lines.append(f"{title}:")
            lines += [f"  {c.name:<10} {c.summary}" for c in cmds]
            data += [{"name": c.name, "group": group, "summary": c.summary, "vm": c.vm}
                     for c in cmds]
        if not vm_only:
            lines.append("A VM command runs on the VM named before it ('vm1 cpu list'), the one "
                         "chosen with 'use', or the only VM. 'help CMD' shows the usage.")
        return Reply("\n".join(lines), data)

    # -- completion -----------------------------------------------------------

    def complete(self, monitor: Monitor, session: Session | None, line: str) -> list[str]:
        """Candidates for the last (partial) word of ``line``."""
        try:
            words = shlex.split(line)
        except ValueError:
            return []
        if not line or line[-1].isspace():
            words.append("")
        partial = words.pop()
        ctx = Context(monitor, session)
        if words and self.get(words[0]) is None and monitor.find_vm_name(words[0]):
            ctx.guest = monitor.find_guest(words[0])
            words = words[1:]
        if not words:
            cands = set(self.commands) | set(self._aliases)
            if ctx.guest is None:
                cands |= set(monitor.vm_names())
        else:
            cmd = self.get(words[0])
            if cmd is None or cmd.complete is None:
                return []
            if cmd.vm and ctx.guest is None:
                try:
                    ctx.guest = monitor.target(session, None)
                except CommandError:
                    ctx.guest = None
            try:
                cands = set(cmd.complete(ctx, words[1:]))
            except CommandError:
                return []
        return sorted(c for c in cands if c.startswith(partial))


def split_line(line: str) -> list[str]:
    """Words of a command line, with shell-like quoting."""
    try:
        return shlex.split(line)
    except ValueError as err:
        raise CommandError(f"cannot split the line: {err}") from None


def number(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise CommandError(f"{what} {text!r} is not a number (decimal or 0x hex)") from None


def expect(args: list[str], most: int, usage: str) -> None:
    if len(args) > most:
        raise CommandError(f"too many arguments; usage: {usage}")
