"""``rom/uvmm``: one VM per started instance, configured by uvmm's command line.

The VM's console is the program's log channel (uvmm's default Vcon), its RAM
the ``ram`` dataspace capability, as vmm.lua arranges. When the guest ends,
the task exits with uvmm's code: 0 power-off, 0x66 reboot, 1 fatal state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from pyned.devices.pl011 import Pl011
from pyned.devices.virtio.console import VirtioConsole
from pyned.devices.virtio.mmio import DeviceStatus, VirtioMmio
from pyned.errors import ConfigError
from pyned.kernel.task import Task
from pyned.services.spec import StartSpec
from pyned.vmm.builder import BuildInputs, build_vm
from pyned.vmm.options import LEVELS, parse_uvmm_args
from pyned.vmm.vm import Vm, VmEnd

if TYPE_CHECKING:
    from pyned.system import System


def start(system: "System", task: Task, spec: StartSpec) -> None:
    options = parse_uvmm_args(spec.args)
    channel = spec.log or system.cons.create(f"uvmm{task.tid}", "w")
    prio = spec.scheduler.prio if spec.scheduler else 0
    cpus = spec.scheduler.cpus if spec.scheduler else (1 << system.board.cores) - 1
    cores = [c for c in system.scheduler.cores if cpus >> c.index & 1]
    if not cores:
        raise ConfigError(f"{channel.name}: CPU set {cpus:#x} contains no core of the platform "
                          f"({system.board.cores} cores)")
    verbosity = options.verbosity

    def log(text: str, level: int = 2) -> None:
        if verbosity >= level:
            channel.write(f"[uvmm] {text}\n".encode())

    vm = build_vm(BuildInputs(
        name=channel.name, options=options, caps=spec.caps, resolve=system.rom.resolve,
        board=system.board, syndrome=system.syndrome, cores=cores, prio=prio,
        console_write=channel.write, log=log, clock=system.clock,
        exact_stops=system.exact_stops))
    channel.attach_input(_console_input(vm))

    def ended(end: VmEnd) -> None:
        if end.fault is not None:
            _report_fault(channel.write, vm, end)
        elif verbosity >= LEVELS.index("info"):
            log(f"exit {end.code} ({end.reason})")
        system.vms.pop(task.tid, None)
        vm.threads.clear()
        channel.mark_dead()
        task.exit(end.code, end.reason, killed=end.killed)
        system.ned_log(f"{channel.name} {'killed' if end.killed else f'exited with {end.code:#x}'}"
                       f" ({end.reason})")

    vm.on_end(ended)
    task.set_kill(vm.kill)
    system.vms[task.tid] = vm
    vm.start()
    task.running()


def _console_input(vm: Vm) -> Callable[[bytes], int]:
    """Typed input goes to the virtio console once its driver runs, else to the UART.

    Both show the same channel (uvmm's default Vcon), and a guest reads its
    console on one of them (Linux: console=hvc0 or ttyAMA0); the driver state
    says which one is in use.
    """
    uarts = [d.device for d in vm.devices if isinstance(d.device, Pl011)]
    vcons = [d.device for d in vm.devices if isinstance(d.device, VirtioMmio)
             and isinstance(d.device.device, VirtioConsole)]

    def push(data: bytes) -> int:
        for transport in vcons:
            if transport.status & DeviceStatus.DRIVER_OK:
                return transport.device.push_input(data)  # type: ignore[attr-defined]
        return uarts[0].push_input(data) if uarts else 0

    return push


def _report_fault(write, vm: Vm, end: VmEnd) -> None:
    report = end.fault
    assert report is not None
    lines = ["VM entered a fatal state. Halting.", report.summary()]
    lines += [f"  recent: {r}" for r in report.recent_exits[-8:]]
    write("".join(f"[uvmm] {ln}\n" for ln in lines).encode())
