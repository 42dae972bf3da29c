"""ned: run a Lua 5.4 script that starts programs and VMs, then serve its events.

Lua runs on one thread, this one. Programs report their end (and VMs their
lifecycle events) from other threads; those reports reach Lua through a
queue and run as exit handlers and ``on`` callbacks once the script has
returned (ned runs callbacks only from its server loop, never while the
script is blocked in ``wait`` or ``sleep``).
"""

from __future__ import annotations

import itertools
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Callable

from lupa.lua54 import LuaRuntime

from pyned.errors import ConfigError, PynedError, ScriptError
from pyned.kernel.irq import Irq
from pyned.kernel.task import Task, TaskState
from pyned.ned.convert import lua_list, restart_policy, start_spec
from pyned.ned.io_config import read_io_config, split_io_args
from pyned.services import loader
from pyned.services.gate import IpcGate
from pyned.services.journal import JournalEntry
from pyned.services.rom import PROJECT_ROOT
from pyned.system import System, settle_process
from pyned.vmm.vm import Injection

LUA_DIR = PROJECT_ROOT / "lua"
# pyned's own Lua modules: an error raised in them points at the user's line.
_LIBRARY_FILES = ("L4.lua", "vmm.lua", "test.lua")
# What task:on() accepts: a VM's journal events, and "exit" for any task.
LIFECYCLE_EVENTS = ("crash", "reboot", "shutdown", "killed", "restart", "gave-up", "watchdog",
                    "exit")


class TestEnded(Exception):
    """test.pass()/test.fail(): the run of a test script ends with this verdict."""

    def __init__(self, passed: bool, message: str) -> None:
        super().__init__(message)
        self.passed = passed
        self.message = message


class ExitMode(Enum):
    SERVE = "serve"                  # ned's default: serve while anything can still happen
    EXIT = "exit"                    # --exit: quit right after the script
    WAIT_AND_EXIT = "wait-and-exit"  # --wait-and-exit: quit once every task has exited


@dataclass
class NedOptions:
    script: Path | None
    args: list[str] = field(default_factory=list)
    execute: list[str] = field(default_factory=list)
    mode: ExitMode = ExitMode.SERVE
    debug: bool = False


def _is_user_source(source: str, lib: str) -> bool:
    """A frame of the user's script or -e statement, not pyned's own Lua or glue."""
    if source.startswith("=(command line"):
        return True
    return source.startswith("@") and source[1:] not in {f"{lib}/{f}" for f in _LIBRARY_FILES}


def _deny(_obj: object, attr: object, _is_setting: bool) -> object:
    raise AttributeError(f"pyned handles are opaque (no attribute {attr!r})")


class Ned:
    def __init__(self, system: System, options: NedOptions) -> None:
        self.system = system
        self.options = options
        self._events: queue.Queue[Callable[[], None]] = queue.Queue()
        self._handlers: dict[int, object] = {}
        self._on: dict[int, dict[str, list[object]]] = {}   # task id -> event -> callbacks
        self._vm_names: dict[int, str] = {}                  # task id -> VM (journal) name
        self._exited: set[int] = set()                       # exits already dispatched
        self._reaped: set[int] = set()
        self._undispatched: set[int] = set()   # started clients whose end is not yet handled
        self._cursors: dict[str, int] = {}                   # test.expect: read position
        self.last_exit: int | None = None
        self.verdict: TestEnded | None = None
        self.lua = LuaRuntime(unpack_returned_tuples=True, register_eval=False,
                              register_builtins=False, attribute_filter=_deny)
        self._install()

    # -- set-up ---------------------------------------------------------------

    def _install(self) -> None:
        lua = self.lua
        script_dir = self.options.script.parent if self.options.script else Path.cwd()
        package = lua.globals().package
        package.path = f"{script_dir}/?.lua;{LUA_DIR}/?.lua"
        native = lua.table_from(self._natives())
        l4_chunk = lua.execute(
            "local path = ...; return assert(loadfile(path))", str(LUA_DIR / "L4.lua"))
        l4 = l4_chunk(native)
        package.loaded["L4"] = l4
        test_chunk = lua.execute(
            "local path = ...; return assert(loadfile(path))", str(LUA_DIR / "test.lua"))
        package.preload["test"] = lua.eval(
            "function(chunk, N, L4) return function() return chunk(N, L4) end end")(
                test_chunk, native, l4)
        lua.execute("local N = ...; print = function(...) "
                    "local t = table.pack(...); for i = 1, t.n do t[i] = tostring(t[i]) end; "
                    "N.ned_print(table.concat(t, '\\t')) end", native)

    def _natives(self) -> dict[str, Callable[..., object]]:
        sysm = self.system
        lib = str(LUA_DIR)
        irq_ids = itertools.count(1)

        def exec_(prog, args, caps, log, prio, cpus, restart):
            spec = start_spec(prog, args, caps, log, prio, cpus)
            if spec.scheduler is not None and spec.scheduler.cpus == -1:
                spec.scheduler = type(spec.scheduler)(spec.scheduler.prio,
                                                      (1 << sysm.board.cores) - 1)
            if spec.program in ("rom/io", "io"):
                # io's configuration is Lua: it becomes typed here, at the one boundary.
                spec.args, files = split_io_args(spec.args)
                spec.config = read_io_config(files, sysm.rom.resolve)
            spec.restart = restart_policy(restart)
            if spec.restart is not None and spec.program.rpartition("/")[2] != "uvmm":
                raise ConfigError(f"restart: {spec.program} is not a VM; only rom/uvmm "
                                  f"tasks are restarted by a policy")
            # Events come from other threads, the first while the VM starts.
            box: dict[str, object] = {}

            def observe(entry: JournalEntry) -> None:
                box.setdefault("vm", entry.vm)
                self._events.put(lambda: self._dispatch_event(box.get("task"), entry))

            spec.observer = observe
            task = loader.start(sysm, spec)
            if not task.server:
                self._undispatched.add(task.tid)
            box["task"] = task
            if "vm" in box:
                self._vm_names[task.tid] = str(box["vm"])
            task.on_exit(self._task_ended)
            return task

        def ds_create(size, flags, align, addr):
            if size <= 0:
                raise ConfigError(f"dataspace size must be positive, not {size}")
            try:
                return sysm.memory.allocate(size, align_bits=int(align), fixed=addr, name="ds")
            except PynedError:
                # Dataspaces the script no longer references are freed by Lua's
                # collector; collect before declaring DRAM full.
                self.lua.execute("collectgarbage('collect')")
                return sysm.memory.allocate(size, align_bits=int(align), fixed=addr, name="ds")

        def monitor_listen(address: str, vm: str | None) -> str:
            from pyned.monitor import Monitor  # the layer beside ned; loaded when used
            return str(Monitor.of(sysm).serve(str(address), vm).address)

        def task_state(t: Task):
            if t.tid in self._reaped:
                return None
            return t.state.value

        def task_exit_code(t: Task):
            return t.exit_code if t.state == TaskState.ZOMBIE and t.tid not in self._reaped else None

        def task_wait(t: Task):
            if t.tid in self._reaped:
                return None
            while not t.wait(0.2):
                pass
            self._reaped.add(t.tid)
            return t.exit_code

        def task_kill(t: Task):
            # ned drops its reference either way: state() is nil afterwards.
            if t.tid in self._reaped:
                return None
            self._reaped.add(t.tid)
            if not t.alive:
                return t.exit_code
            t.kill()
            return "killed"

        def task_exit_handler(t: Task, fn):
            if t.tid in self._reaped:   # ned: a reaped task's handler runs at once with nil
                fn(None)
                return False
            if t.tid in self._handlers:
                return None
            self._handlers[t.tid] = fn
            if not t.alive:
                self._handlers.pop(t.tid)
                fn(t.exit_code)
                return False
            return True

        def task_on(t: Task, event, fn):
            if event not in LIFECYCLE_EVENTS:
                raise ConfigError(f"on: unknown event {event!r} (events: "
                                  f"{', '.join(LIFECYCLE_EVENTS)})")
            if event != "exit" and t.tid not in self._vm_names:
                raise ConfigError(f"on: {event!r} events come from VMs only, and "
                                  f"{t.name} is not a VM")
            if event == "exit" and t.tid in self._exited:
                fn(self._exit_table(t))
                return
            self._on.setdefault(t.tid, {}).setdefault(event, []).append(fn)

        def journal(vm, events, since):
            kinds = ((events,) if isinstance(events, str)
                     else tuple(str(e) for e in lua_list(events, "event")))
            try:
                after = int(since or 0)
            except (TypeError, ValueError):
                raise ConfigError("journal: since must be a sequence number") from None
            return self.lua.table_from([self._entry_table(e) for e in sysm.journal.entries(
                vm=None if vm is None else str(vm), since=after, events=kinds)])

        return {
            "exec": exec_,
            "ds_create": ds_create,
            "log_create": lambda tag, colour, opts: sysm.cons.create(
                tag, colour, [str(o) for o in opts.values()] if opts else []),
            "ned_channel": lambda: sysm._ned_channel,
            "gate_new": IpcGate,
            "irq_create": lambda: Irq(f"IRQ object {next(irq_ids)}"),
            "gate_bound": lambda gate: gate.bound,
            "gate_create": lambda gate, proto, args: gate.create(
                int(proto), [str(a) for a in lua_list(args, "create arguments")]),
            "cap_kind": lambda obj: getattr(obj, "kind", "cap"),
            "ned_print": lambda text: sysm.ned_log(str(text)),
            "sleep_ms": lambda ms: time.sleep(max(0.0, float(ms)) / 1000.0),
            "core_count": lambda: sysm.board.cores,
            "platform_name": lambda: sysm.board.name,
            "is_library": lambda source: not _is_user_source(str(source), lib),
            "is_user_error": lambda err: isinstance(err, PynedError) or not isinstance(
                err, BaseException),
            "error_text": lambda err: str(err.args[0]) if isinstance(err, BaseException)
            and err.args else str(err),
            "monitor_listen": monitor_listen,
            "task_state": task_state,
            "task_exit_code": task_exit_code,
            "task_wait": task_wait,
            "task_kill": task_kill,
            "task_exit_handler": task_exit_handler,
            "task_on": task_on,
            "task_vm": lambda t: self._vm_names.get(t.tid),
            "task_id": lambda t: t.tid,
            "task_name": lambda t: t.name,
            "journal": journal,
            **self._test_natives(),
        }

    def _test_natives(self) -> dict[str, Callable[..., object]]:
        """What lua/test.lua builds on: console expectations, faults, verdicts."""
        sysm = self.system

        def vm_name(target: object) -> str:
            if isinstance(target, str):
                return target
            if isinstance(target, Task) and target.tid in self._vm_names:
                return self._vm_names[target.tid]
            raise ConfigError("expected a VM (the task start_vm returned, or a console name)")

        def guest(target: object):
            name = vm_name(target)
            for g in list(sysm.guests.values()):
                if g.name == name:
                    return g
            raise ConfigError(f"{name} is not running")

        def expect(target, pattern, timeout):
            name = vm_name(target)
            ch = sysm.cons.channels.get(name)
            if ch is None:
                raise ConfigError(f"no console {name!r}")
            try:
                m, end = ch.expect(str(pattern), float(timeout),
                                   self._cursors.get(name, 0))
            except re.error as err:
                raise ConfigError(f"expect: bad pattern {pattern!r}: {err}") from None
            if m is None:
                tail = "\n".join(ch.text().splitlines()[-5:])
                return None, f"{name}: no {str(pattern)!r} within {float(timeout):g} s" + (
                    f"; last lines:\n{tail}" if tail else "; no output")
            self._cursors[name] = end
            return self.lua.table_from([g.decode(errors="replace") if g is not None else False
                                        for g in (m.group(0), *m.groups())]), None

        def inject(target, kind, cpu):
            names = [k.value for k in Injection]
            if kind not in names:
                raise ConfigError(f"inject: unknown fault {kind!r} (faults: {', '.join(names)})")
            g = guest(target)
            try:
                g.vm.inject(Injection(kind), int(cpu or 0))
            except ValueError as err:
                raise ConfigError(f"inject: {err}") from None

        def wait_event(target, event, count, timeout):
            name = vm_name(target)
            want = max(1, int(count or 1))
            cond = threading.Condition()

            def wake(_entry: JournalEntry) -> None:
                with cond:
                    cond.notify_all()

            cancel = sysm.journal.subscribe(wake)
            deadline = time.monotonic() + float(timeout)
            try:
                with cond:
                    while True:
                        found = sysm.journal.entries(vm=name, events=(str(event),))
                        if len(found) >= want:
                            return self._entry_table(found[want - 1])
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return None
                        cond.wait(left)
            finally:
                cancel()

        def verdict(passed, message):
            self.verdict = TestEnded(bool(passed), "" if message is None else str(message))
            raise self.verdict

        return {"test_expect": expect, "test_inject": inject, "test_wait_event": wait_event,
                "test_reset": lambda target: guest(target).reset("script"),
                "test_verdict": verdict, "vm_name": vm_name}

    def _entry_table(self, entry: JournalEntry) -> object:
        d = entry.to_dict()
        d["console"] = self.lua.table_from(d["console"])
        return self.lua.table_from({k: v for k, v in d.items() if v is not None})

    def _exit_table(self, task: Task) -> object:
        name = self._vm_names.get(task.tid, task.name)
        last = self.system.journal.entries(vm=name) if task.tid in self._vm_names else []
        d = {"event": "exit", "vm": name, "code": None if task.killed else task.exit_code,
             "cause": task.exit_reason, "killed": task.killed,
             "restarts": last[-1].restarts if last else 0}
        return self.lua.table_from({k: v for k, v in d.items() if v is not None})

    # -- events -----------------------------------------------------------------

    def _task_ended(self, task: Task) -> None:
        """From any thread: hand the end of a task to the Lua thread."""
        self._events.put(lambda: self._dispatch_exit(task))

    def _dispatch_exit(self, task: Task) -> None:
        self._undispatched.discard(task.tid)
        code = None if task.killed else task.exit_code
        self.last_exit = 0 if code is None else code
        self._exited.add(task.tid)
        for fn in self._on.get(task.tid, {}).pop("exit", []):
            self._call_lua(fn, self._exit_table(task))
        fn = self._handlers.pop(task.tid, None)
        if fn is not None:
            self._call_lua(fn, code)

    def _dispatch_event(self, task: Task | None, entry: JournalEntry) -> None:
        if task is None:
            return
        for fn in list(self._on.get(task.tid, {}).get(entry.event, [])):
            self._call_lua(fn, self._entry_table(entry))

    def _call_lua(self, fn: object, *args: object) -> None:
        runner = self.lua.eval("function(f, ...) local ok, e = xpcall(f, debug.traceback, ...); "
                               "if ok then return true, nil end; return false, e end")
        ok, err = runner(fn, *args)
        if not ok and isinstance(err, BaseException):
            raise err
        if not ok:
            raise ScriptError(self._lua_message(str(err)))

    # -- running ----------------------------------------------------------------

    def _lua_message(self, text: str) -> str:
        first, _, trace = text.partition("\nstack traceback:")
        if self.options.debug and trace:
            return first + "\nstack traceback:" + trace
        return first

    def run(self) -> int:
        """Run -e statements and the script, then serve; returns the exit status."""
        lua = self.lua
        settle_process()
        argv = [str(self.options.script or "")] + self.options.args
        arg = lua.table_from({i: a for i, a in enumerate(argv)})
        lua.globals().arg = arg
        for i, stmt in enumerate(self.options.execute):
            chunk, err = lua.execute("local f, e = load(...); return f or false, e or false",
                                     stmt, f"=(command line -e #{i + 1})")
            if not chunk:
                raise ScriptError(str(err))
            self._call_lua(chunk)
        if self.options.script is not None:
            path = self.options.script
            if not path.is_file():
                raise ScriptError(f"{path}: no such script")
            chunk, err = lua.execute("local f, e = loadfile(...); return f or false, e or false",
                                     str(path))
            if not chunk:
                raise ScriptError(str(err))
            self._call_lua(chunk, *self.options.args)
        if self.options.mode == ExitMode.EXIT or self.verdict is not None:
            return 0
        return self.serve()

    def serve(self) -> int:
        """ned's server loop: run exit handlers until nothing is left that could act."""
        while True:
            try:
                event = self._events.get(timeout=0.1)
            except queue.Empty:
                # A task is dead before its end is queued: until the end has
                # been handed to its exit handler, it may still start more.
                if (not self._undispatched and not self.system.tasks.clients_alive()
                        and self._events.empty()):
                    break
                continue
            event()
            if self.verdict is not None:   # test.pass()/fail() whose error a pcall swallowed
                break
        status = self.last_exit or 0
        return status if 0 <= status <= 255 else 255

