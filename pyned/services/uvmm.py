"""``rom/uvmm``: one VM per started instance, configured by uvmm's command line.

The VM's console is the program's log channel (uvmm's default Vcon), its RAM
the ``ram`` dataspace capability, as vmm.lua arranges. When the guest ends,
the task exits with uvmm's code: 0 power-off, 0x66 reboot, 1 fatal state.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable

from pyned.devices.pl011 import Pl011
from pyned.devices.virtio.console import VirtioConsole
from pyned.devices.virtio.mmio import DeviceStatus, VirtioMmio
from pyned.errors import ConfigError, PynedError
from pyned.kernel.task import Task
from pyned.services.gate import IpcGate
from pyned.services.cons import Channel
from pyned.services.spec import StartSpec
from pyned.vmm.builder import BuildInputs, build_vm
from pyned.vmm.options import LEVELS, parse_uvmm_args
from pyned.vmm.vm import FATAL_EXIT, Vm, VmEnd

if TYPE_CHECKING:
    from pyned.system import System


# Console lines a journal entry keeps of the VM's last output.
JOURNAL_CONSOLE_LINES = 10
REBOOT_CODE = 0x66


class Guest:
    """One uvmm instance: its task, console and current VM, which a reset replaces.

    The task lives as long as the guest does; a reset (the monitor's, or a
    restart policy's) builds a fresh VM from the same configuration on the same
    console, with RAM zeroed, and the task stays running.
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
        self._reset_cause: str | None = None
        self._lock = threading.Lock()
        self.vm = self._build()

    def log(self, text: str, level: int = 2) -> None:
        if self.options.verbosity >= level:
            self.channel.write(f"[uvmm] {text}\n".encode())

    def _build(self) -> Vm:
        system = self.system
        # A channel io serves stands for its vbus (the object behind the gate).
        caps = {k: v.object if isinstance(v, IpcGate) and v.object is not None else v
                for k, v in self.spec.caps.items()}
        vm = build_vm(BuildInputs(
            name=self.name, options=self.options, caps=caps,
            resolve=system.rom.resolve, board=system.board, syndrome=system.syndrome,
            cores=self.cores, prio=self.prio, console_write=self.channel.write, log=self.log,
            clock=system.clock, exact_stops=system.exact_stops))
        self.channel.attach_input(_console_input(vm))
        vm.on_end(lambda end: self._ended(vm, end))
        return vm

    def start(self) -> None:
        self.task.set_kill(self.kill)
        self.system.guests[self.task.tid] = self
        self.vm.start()
        self.task.running()
        self.system.journal.record(self.name, "start", restarts=self.restarts)

    def kill(self) -> None:
        self.vm.kill()

    def reset(self, cause: str = "reset") -> None:
        """Stop the current VM and start a fresh one from the same configuration."""
        with self._lock:
            if not self.task.alive:
                return
            self._reset_cause = cause
        self.vm.request_end(VmEnd(None, cause, killed=True))

    def _ended(self, vm: Vm, end: VmEnd) -> None:
        vm.threads.clear()
        self.last_end = end
        with self._lock:
            cause, self._reset_cause = self._reset_cause, None
        if cause is not None:
            self._restart(cause)
            return
        self._report(end)
        self.system.guests.pop(self.task.tid, None)
        self._mark_dead()
        self.task.exit(end.code, end.reason, killed=end.killed)
        self.system.ned_log(f"{self.name} "
                            f"{'killed' if end.killed else f'exited with {end.code:#x}'}"
                            f" ({end.reason})")

    def _report(self, end: VmEnd) -> None:
        if end.fault is not None:
            _report_fault(self.channel.write, end)
        elif self.options.verbosity >= LEVELS.index("info"):
            self.log(f"exit {end.code} ({end.reason})")
        fault = end.fault
        event = ("killed" if end.killed else "crash" if fault is not None or end.code == 1
                 else "reboot" if end.code == REBOOT_CODE else "shutdown")
        self.system.journal.record(
            self.name, event, cause=end.reason, code=end.code,
            pc=fault.pc if fault else None, esr=fault.esr if fault else None,
            far=fault.far if fault else None, restarts=self.restarts,
            console=tuple(self.console_tail()))

    def _mark_dead(self) -> None:
        """The program is gone: so are its console and its monitor channel, as cons shows."""
        self.channel.mark_dead()
        mon = self.spec.caps.get("mon")
        if isinstance(mon, Channel):
            mon.mark_dead()

    def console_tail(self, lines: int = JOURNAL_CONSOLE_LINES) -> list[str]:
        return self.channel.text().splitlines()[-lines:]

    def _restart(self, cause: str) -> None:
        """Build and start a fresh VM; a failure to build ends the task like a crash."""
        self.restarts += 1
        self.system.journal.record(self.name, "restart", cause=cause, restarts=self.restarts)
        self._clear_ram()
        try:
            self.vm = self._build()
        except PynedError as err:
            self.system.journal.record(self.name, "crash", cause=f"restart failed: {err}",
                                       code=FATAL_EXIT, restarts=self.restarts)
            self.system.guests.pop(self.task.tid, None)
            self._mark_dead()
            self.task.exit(FATAL_EXIT, f"restart failed: {err}")
            return
        self.vm.start()
        self.log(f"restarted ({cause}), restart {self.restarts}", 1)

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
        for transport in vcons:
            if transport.status & DeviceStatus.DRIVER_OK:
                return transport.device.push_input(data)  # type: ignore[attr-defined]
        return uarts[0].push_input(data) if uarts else 0

    return push


def _report_fault(write: Callable[[bytes], None], end: VmEnd) -> None:
    report = end.fault
    assert report is not None
    lines = ["VM entered a fatal state. Halting.", report.summary()]
    lines += [f"  recent: {r}" for r in report.recent_exits[-8:]]
    write("".join(f"[uvmm] {ln}\n" for ln in lines).encode())
