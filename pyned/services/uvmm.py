"""``rom/uvmm``: one VM per started instance, configured by uvmm's command line.

The VM's console is the program's log channel (uvmm's default Vcon), its RAM
the ``ram`` dataspace capability, as vmm.lua arranges. When the guest ends,
the task exits with uvmm's code: 0 power-off, 0x66 reboot, 1 fatal state.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pyned.devices.pl011 import Pl011
from pyned.devices.virtio.console import VirtioConsole
from pyned.devices.virtio.mmio import DeviceStatus, VirtioMmio
from pyned.errors import ConfigError, PynedError
from pyned.kernel.clock import TimerHandle
from pyned.kernel.memory import Dataspace
from pyned.kernel.task import Task
from pyned.services.cons import Channel
from pyned.services.gate import IpcGate
from pyned.services.journal import JournalEntry
from pyned.services.spec import RestartBudget, StartSpec
from pyned.vmm.builder import BuildInputs, build_vm
from pyned.vmm.options import LEVELS, parse_uvmm_args
from pyned.vmm.vm import FATAL_EXIT, REBOOT_EXIT, Vm, VmEnd

if TYPE_CHECKING:
    from pyned.system import System


# Console lines a journal entry keeps of the VM's last output.
JOURNAL_CONSOLE_LINES = 10
REBOOT_CODE = REBOOT_EXIT


class Guest:
    """One uvmm instance: its task, console and current VM, which a restart replaces.

    The task lives as long as the guest does; a reset (the monitor's, a
    script's) or a restart policy builds a fresh VM from the same
    configuration on the same console, with RAM zeroed, and the task stays
    running. Restarts are built on the system's worker thread, never on a core
    or the clock thread, so other VMs keep their timing while one is rebuilt.
    """

    def __init__(self, system: "System", task: Task, spec: StartSpec) -> None:
        self.system = system
        self.task = task
        self.spec = spec
        self.options = parse_uvmm_args(spec.args)
        self.channel = spec.log or system.cons.create(f"uvmm{task.tid}", "w")
        self.name = self.channel.name
        task.channel = self.name
        self.prio = spec.scheduler.prio if spec.scheduler else 0
        cpus = spec.scheduler.cpus if spec.scheduler else (1 << system.board.cores) - 1
        self.cores = [c for c in system.scheduler.cores if cpus >> c.index & 1]
        if not self.cores:
            raise ConfigError(f"{self.name}: CPU set {cpus:#x} contains no core of the "
                              f"platform ({system.board.cores} cores)")
        self.restarts = 0
        self.last_end: VmEnd | None = None
        self.run_start = self.channel.out_bytes   # where this run's console output begins
        self.budget = RestartBudget(spec.restart) if spec.restart is not None else None
        self.gave_up = False
        self._reset_for: tuple[Vm, str] | None = None    # a reset asked of this VM
        self._pending: TimerHandle | None = None         # a restart waiting out its backoff
        self._restarting = False                         # a restart being built
        self._killed = False
        self._lock = threading.Lock()
        self._dt_cache: dict[Path, bytes] = {}
        self.vm = self._build()

    def log(self, text: str, level: int = 2) -> None:
        if self.options.verbosity >= level:
            self.channel.write(f"[uvmm] {text}\n".encode())

    def record(self, event: str, **fields: object) -> JournalEntry:
        """A journal entry about this VM, also told to whoever started it."""
        fields.setdefault("restarts", self.restarts)
        entry = self.system.journal.record(self.name, event, **fields)
        if self.spec.observer is not None:
            self.spec.observer(entry)
        return entry

    def _build(self) -> Vm:
        system = self.system
        # A channel io serves stands for its vbus (the object behind the gate).
        caps = {k: v.object if isinstance(v, IpcGate) and v.object is not None else v
                for k, v in self.spec.caps.items()}
        self._vm_caps = caps    # what the VM's devices hold on to
        vm = build_vm(BuildInputs(
            name=self.name, options=self.options, caps=caps,
            resolve=system.rom.resolve, board=system.board, syndrome=system.syndrome,
            cores=self.cores, prio=self.prio, console_write=self.channel.write, log=self.log,
            clock=system.clock, exact_stops=system.exact_stops, dt_cache=self._dt_cache,
            host_path=system.rom.host_path, timer_advance=system.timer_advance))
        self.channel.attach_input(_console_input(vm))
        vm.on_end(lambda end: self._ended(vm, end))
        vm.on_event(lambda event, cause: self.record(event, cause=cause))
        return vm

    def start(self) -> None:
        self.task.set_kill(self.kill)
        self.system.guests[self.task.tid] = self
        self.vm.start()
        self.task.running()
        self.record("start")

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            pending, self._pending = self._pending, None
            between = pending is not None or self._restarting
        if pending is not None:
            pending.cancel()
        if between:  # no VM is running: end the task here
            end = VmEnd(None, "killed", killed=True)
            self._report(end)
            self._finish(end)
        else:
            self.vm.kill()

    def reset(self, cause: str = "reset") -> None:
        """Stop the current VM and start a fresh one from the same configuration."""
        with self._lock:
            if not self.task.alive or self._killed or self._restarting:
                return
            pending, self._pending = self._pending, None
            if pending is None:
                self._reset_for = (self.vm, cause)
        if pending is not None:
            pending.cancel()
            self._spawn_restart(cause)
            return
        self.vm.request_end(VmEnd(None, cause, killed=True))

    def _ended(self, vm: Vm, end: VmEnd) -> None:
        vm.threads.clear()
        if vm is not self.vm:   # built but never run (abandoned after a kill)
            return
        self.last_end = end
        with self._lock:
            reset = self._reset_for if self._reset_for and self._reset_for[0] is vm else None
            self._reset_for = None
        if reset is not None:
            self._spawn_restart(reset[1])
            return
        self._report(end)
        if self.budget is not None and not end.killed:
            delay = self.budget.next_delay(end.event)
            if delay is not None and self._schedule_restart(end.event, delay):
                return
            if delay is None and end.event in self.budget.policy.on:
                self.gave_up = True
                self.record("gave-up", code=end.code, cause=f"{end.event} ({end.reason}) after "
                            f"{self.restarts} restarts: {self._limit()}")
        self._finish(end)

    def _schedule_restart(self, event: str, delay: float) -> bool:
        """Restart after ``delay`` seconds; False if the task was killed meanwhile."""
        with self._lock:
            if self._killed:
                return False
            if delay > 0:
                self._pending = self.system.clock.after(int(delay * 1e9),
                                                        lambda: self._backoff_over(event))
                return True
            self._restarting = True   # from here a kill ends the task itself
        self._spawn_restart(f"policy: {event}")
        return True

    def _limit(self) -> str:
        p = self.budget.policy if self.budget else None
        if p is None or p.max is None:
            return "no limit"
        return f"limit {p.max}" + (f" in {p.window_s:g} s" if p.window_s else "")

    def _finish(self, end: VmEnd) -> None:
        """The task ends with the VM's end."""
        self.system.guests.pop(self.task.tid, None)
        self._mark_dead()
        self._drop_memory()
        if self.task.exit(end.code, end.reason, killed=end.killed):
            self.system.ned_log(f"{self.name} "
                                f"{'killed' if end.killed else f'exited with {end.code:#x}'}"
                                f" ({end.reason})")

    def _report(self, end: VmEnd) -> None:
        console = tuple(self.console_tail())   # the guest's last lines, before uvmm's report
        if end.fault is not None:
            _report_fault(self.channel.write, end)
        elif self.options.verbosity >= LEVELS.index("info"):
            self.log(f"exit {end.code} ({end.reason})")
        fault = end.fault
        self.record(end.event, cause=end.reason, code=end.code,
                    pc=fault.pc if fault else None, esr=fault.esr if fault else None,
                    far=fault.far if fault else None, console=console)

    def _mark_dead(self) -> None:
        """The program is gone: so are its console and its monitor channel, as cons shows."""
        self.channel.mark_dead()
        mon = self.spec.caps.get("mon")
        if isinstance(mon, Channel):
            mon.mark_dead()

    def _drop_memory(self) -> None:
        """Let go of the dataspaces: in L4Re they go with uvmm's task, so memory only it
        held is freed (once the script's Lua collects its own handle, which a failing
        fixed allocation does), and the exit handler can start a successor at the same
        fixed RAM base."""
        for key in [k for k, v in self.spec.caps.items() if isinstance(v, Dataspace)]:
            del self.spec.caps[key]
        self._vm_caps.clear()
        self.vm.memory.regions.clear()

    def console_tail(self, lines: int = JOURNAL_CONSOLE_LINES) -> list[str]:
        """The last lines the current run (since its start or restart) wrote."""
        return self.channel.text_since(self.run_start).splitlines()[-lines:]

    def _backoff_over(self, event: str) -> None:
        with self._lock:
            if self._pending is None:  # cancelled by a kill or a reset in the meantime
                return
            self._pending = None
            self._restarting = True
        self._spawn_restart(f"policy: {event}")

    def _spawn_restart(self, cause: str) -> None:
        with self._lock:
            self._restarting = True
        self.system.background(lambda: self._restart(cause))

    def _restart(self, cause: str) -> None:
        """Build and start a fresh VM; a failure to build ends the task like a crash."""
        self.restarts += 1
        self.record("restart", cause=cause)
        self._clear_ram()
        try:
            vm = self._build()
        except Exception as err:  # a bad ROM file, or a host bug: this VM's end only
            with self._lock:
                self._restarting = False
            why = str(err) if isinstance(err, PynedError) else f"{type(err).__name__}: {err}"
            end = VmEnd(FATAL_EXIT, f"restart failed: {why}")
            self.record("crash", cause=end.reason, code=FATAL_EXIT)
            self._finish(end)
            return
        with self._lock:
            self._restarting = False
            killed = self._killed
            if not killed:
                self.vm = vm
        if killed:
            vm.abandon()
            return
        self.log(f"restarted ({cause}), restart {self.restarts}", 1)
        self.run_start = self.channel.out_bytes
        vm.start()

    def _clear_ram(self) -> None:
        """Zero the VM's RAM, except dataspaces another running VM also maps (shared memory)."""
        shared = {id(r.dataspace) for g in list(self.system.guests.values()) if g is not self
                  for r in g.vm.memory.regions}
        for region in self.vm.memory.regions:
            if id(region.dataspace) not in shared:
                region.dataspace.clear()


def start(system: "System", task: Task, spec: StartSpec) -> None:
    Guest(system, task, spec).start()


def _console_input(vm: Vm) -> Callable[[bytes], int]:
    """Typed input goes to the virtio console once its driver runs, else to the UART.

    Both show the same channel (uvmm's default Vcon), and a guest reads its
    console on one of them (Linux: console=hvc0 or ttyAMA0); the driver state
    says which one is in use.
    """
    uarts = [d.device for d in vm.devices if isinstance(d.device, Pl011) and d.kind == "virtual"]
    vcons = [d.device for d in vm.devices if isinstance(d.device, VirtioMmio)
             and isinstance(d.device.device, VirtioConsole)]

    def push(data: bytes) -> int:
        # A UART whose driver takes receive interrupts is a console in use
        # (Linux enables them when the tty is opened), even if a virtio
        # console driver is loaded as well.
        if uarts and uarts[0].reading:
            return uarts[0].push_input(data)
        for transport in vcons:
            if transport.status & DeviceStatus.DRIVER_OK:
                return transport.device.push_input(data)  # type: ignore[attr-defined]
        return uarts[0].push_input(data) if uarts else 0

    return push


def _report_fault(write: Callable[[bytes], None], end: VmEnd) -> None:
    report = end.fault
    assert report is not None
    lines = ["VM entered a fatal state. Halting." if end.code == FATAL_EXIT
             else f"VM ends with code {end.code:#x}", report.summary()]
    lines += [f"  recent: {r}" for r in report.recent_exits[-8:]]
    write("".join(f"[uvmm] {ln}\n" for ln in lines).encode())
