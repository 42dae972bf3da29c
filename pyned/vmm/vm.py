"""One VM: its vCPUs on the kernel's cores, its traps, power actions and end.

The run loop of a vCPU maps every exit to a handler (``_EXIT_HANDLERS``).
Nothing a guest does raises into the host: a fault the guest cannot take, a
stage-2 fault or a failing device model ends this VM with exit code 1 and a
``FaultReport``; other VMs are separate objects on their own threads and
never notice.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from pyned.cpu.vcpu import Exit, ExitKind, FaultReport, Vcpu
from pyned.devices.psci import AffinityState, Psci, PsciRet
from pyned.devices.vm_print import VM_PRINT_FID, VmPrint
from pyned.kernel.mpu import MpuMap
from pyned.kernel.scheduler import Core, RunResult
from pyned.vmm.bus import MmioBus, ReplayGuard
from pyned.vmm.devicetree import DeviceTree
from pyned.vmm.memory import GuestMemory

SMCCC_NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
FATAL_EXIT = 1


class VmState(Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass
class VmEnd:
    code: int | None
    reason: str
    killed: bool = False
    fault: FaultReport | None = None


@dataclass
class DeviceEntry:
    path: str
    compatible: str
    device: object
    windows: list = field(default_factory=list)


class VcpuThread:
    """A vCPU as the kernel schedules it."""

    def __init__(self, vm: "Vm", vcpu: Vcpu, core: Core, prio: int) -> None:
        self.vm = vm
        self.vcpu = vcpu
        self.core = core
        self.prio = prio
        self.name = f"{vm.name}/cpu{vcpu.index}"
        self.powered = False
        self.on_pending = False
        self.guard = ReplayGuard()

    def kick(self) -> None:
        self.vcpu.kick()

    def run(self) -> RunResult:
        return self.vm._run_vcpu(self)


class Vm:
    def __init__(self, name: str, *, memory: GuestMemory, bus: MmioBus, mpu: MpuMap,
                 dt: DeviceTree, console_write: Callable[[bytes], None],
                 log: Callable[[str], None]) -> None:
        self.name = name
        self.memory = memory
        self.bus = bus
        self.mpu = mpu
        self.dt = dt
        self.log = log
        self.devices: list[DeviceEntry] = []
        self.threads: list[VcpuThread] = []
        self.psci: Psci | None = None
        self.vm_print = VmPrint(_Sink(console_write))
        self.state = VmState.CREATED
        self.end: VmEnd | None = None
        self.started = 0.0
        self.fault_mode = "ignore"
        self._exec_lock = threading.Lock()
        self._executing = False
        self._end_lock = threading.Lock()
        self._finished = False
        self._end_listeners: list[Callable[[VmEnd], None]] = []
        self.dtb_addr = 0
        self.entry = 0

    # -- lifecycle ------------------------------------------------------------

    def on_end(self, fn: Callable[[VmEnd], None]) -> None:
        self._end_listeners.append(fn)

    def start(self) -> None:
        self.state = VmState.RUNNING
        self.started = time.monotonic()
        boot = self.threads[0]
        boot.powered = True
        boot.core.add(boot)

    def request_end(self, end: VmEnd) -> None:
        """End the VM (any thread, also from inside a hook): first request wins."""
        with self._end_lock:
            if self.end is not None:
                return
            self.end = end
        for t in self.threads:
            t.core.remove(t)
        self._finish_if_idle()

    def system_exit(self, code: int, reason: str) -> None:
        self.request_end(VmEnd(code, reason))

    def halt(self, report: FaultReport) -> None:
        """uvmm's "VM entered a fatal state": stop, report, exit code 1."""
        self.request_end(VmEnd(FATAL_EXIT, report.cause, fault=report))

    def kill(self) -> None:
        self.request_end(VmEnd(None, "killed", killed=True))

    def _finish_if_idle(self) -> None:
        with self._end_lock:
            if self._finished or self.end is None or self._executing:
                return
            self._finished = True
        self.vm_print.flush()
        self.state = VmState.STOPPED
        end = self.end
        for fn in self._end_listeners:
            fn(end)

    # -- the run loop ---------------------------------------------------------

    def _run_vcpu(self, thread: VcpuThread) -> RunResult:
        with self._exec_lock:
            self._executing = True
            try:
                return self._run_locked(thread)
            finally:
                self._executing = False
        # unreachable

    def _run_locked(self, thread: VcpuThread) -> RunResult:
        try:
            while True:
                if self.end is not None:
                    return RunResult.EXIT
                if not thread.powered:
                    return RunResult.BLOCK
                exit_ = thread.vcpu.run()
                thread.guard.slice_ended(self._pending_access(thread.vcpu))
                result = _EXIT_HANDLERS[exit_.kind](self, thread, exit_)
                if result is not None:
                    return result
        except Exception as exc:  # a host-side model failure ends this VM only
            self.halt(FaultReport(cause=f"internal error in the VMM: {type(exc).__name__}: {exc}",
                                  pc=_safe_pc(thread.vcpu)))
            return RunResult.EXIT
        finally:
            if self.end is not None:
                self._executing = False
                self._finish_if_idle()

    def _pending_access(self, vcpu: Vcpu) -> tuple[int, int, bool] | None:
        """What the instruction a slice stopped on would access, if it is MMIO."""
        access = vcpu.access_at_pc()
        if access is None or self.bus.find(access.address) is None:
            return None
        return access.address, access.size, access.is_load

    def _on_wfi(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        # Nothing can signal an interrupt yet unless a device model can; the core
        # keeps the vCPU blocked until something wakes it.
        return RunResult.BLOCK

    def _on_preempt(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        return RunResult.YIELD

    def _on_stop(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        what = exit_.payload
        if what == "cpu_off":
            thread.powered = False
            return RunResult.BLOCK
        if what == "standby":
            return RunResult.BLOCK
        return None

    def _on_fatal(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        report = exit_.payload
        assert isinstance(report, FaultReport)
        self.halt(report)
        return RunResult.EXIT

    # -- traps (called from the vCPU's hooks) ---------------------------------

    def hypercall(self, vcpu: Vcpu, conduit: str, imm: int) -> None:
        fid = vcpu.x0 & 0xFFFF_FFFF
        psci = self.psci
        if imm == 0 and psci is not None and psci.conduit == conduit and psci.owns(fid):
            vcpu.x0 = psci.call(vcpu.index, fid, vcpu.x)
        elif conduit == "hvc" and imm == 1 and fid == VM_PRINT_FID:
            self.vm_print.putc(vcpu.index, vcpu.x(1))
        else:
            vcpu.x0 = SMCCC_NOT_SUPPORTED

    def vector_ok(self, vbar: int) -> bool:
        return self.memory.contains(vbar, 0x800)

    def device_failed(self, name: str, exc: Exception) -> None:
        pc = 0
        for t in self.threads:
            pc = _safe_pc(t.vcpu)
            break
        self.halt(FaultReport(cause=f"device model {name} failed: {type(exc).__name__}: {exc}",
                              pc=pc))

    # -- PSCI platform ----------------------------------------------------------

    def _thread_by_mpidr(self, mpidr: int) -> VcpuThread | None:
        for t in self.threads:
            if t.vcpu.mpidr == mpidr & 0xFF_00FF_FFFF:
                return t
        return None

    def cpu_on(self, target_mpidr: int, entry: int, context: int) -> int:
        t = self._thread_by_mpidr(target_mpidr)
        if t is None:
            return PsciRet.INVALID_PARAMETERS
        if t.powered:
            return PsciRet.ALREADY_ON
        t.vcpu.reset(entry=entry, x0=context)
        t.powered = True
        t.core.add(t)
        return PsciRet.SUCCESS

    def cpu_off(self, cpu: int) -> None:
        self.threads[cpu].vcpu.request_exit(Exit(ExitKind.STOP, "cpu_off"))

    def cpu_standby(self, cpu: int) -> None:
        self.threads[cpu].vcpu.request_exit(Exit(ExitKind.STOP, "standby"))

    def affinity_state(self, target_mpidr: int) -> int | None:
        t = self._thread_by_mpidr(target_mpidr)
        if t is None:
            return None
        return AffinityState.ON if t.powered else AffinityState.OFF

    def ram_contains(self, addr: int) -> bool:
        return self.memory.contains(addr, 4)

    # -- inspection -------------------------------------------------------------

    def uptime(self) -> float:
        return time.monotonic() - self.started if self.started else 0.0


class _Sink:
    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.write = write


def _safe_pc(vcpu: Vcpu) -> int:
    try:
        return vcpu.pc
    except Exception:
        return 0


_EXIT_HANDLERS: dict[ExitKind, Callable[[Vm, VcpuThread, Exit], RunResult | None]] = {
    ExitKind.WFI: Vm._on_wfi,
    ExitKind.PREEMPT: Vm._on_preempt,
    ExitKind.STOP: Vm._on_stop,
    ExitKind.FATAL: Vm._on_fatal,
}
