"""One VM: its vCPUs on the kernel's cores, its traps, power actions and end.

The run loop of a vCPU maps every exit to a handler (``_EXIT_HANDLERS``).
Nothing a guest does raises into the host: a fault the guest cannot take, a
fetch outside its memory or a failing device model ends this VM with exit
code 1 and a ``FaultReport``; other VMs are separate objects on their own
threads and never notice. A data access outside the VM's memory and devices
is resolved by uvmm's fault mode (``--fault-mode``): ``ignore`` (the default:
a load reads 0, the instruction is skipped, a warning names it), ``halt``
(fatal) or ``inject`` (a synchronous external abort the guest takes).
A fetch cannot be skipped, so outside ``inject`` it is always fatal.

Two detectors end a VM that stops making progress: the SBSA watchdog device
(the guest's own, WS1 resets the VM with uvmm's reboot code) and, when
``hang_timeout_ns`` is set, the host-side rule in ``_check_progress``.
"""

from __future__ import annotations

import collections
import ctypes
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable

from pyned.cpu.exceptions import (EC, ESR_IL, PSTATE_A, PSTATE_F, PSTATE_I, ExceptionKind,
                                  esr_ec, pstate_el)

# The DAIFSet/DAIFClr immediate's bits for IRQ and FIQ.
DAIF_I, DAIF_F = 0b0010, 0b0001
from pyned.cpu.vcpu import Exit, ExitKind, FaultReport, Vcpu
from pyned.devices.base import RomDevice, WriteSink
from pyned.devices.gic import Gic
from pyned.devices.psci import AffinityState, Psci, PsciRet
from pyned.devices.timer import GenericTimer
from pyned.devices.vm_print import VM_PRINT_FID, VmPrint
from pyned.kernel.clock import Clock, TimerHandle, now_ns, spin_until
from pyned.kernel.mpu import MpuMap
from pyned.kernel.scheduler import REKICK_NS, Core, RunResult, urgent_kick
from pyned.platform.board import MemRange
from pyned.vmm.bus import MmioBus, ReplayGuard
from pyned.vmm.devicetree import DeviceTree
from pyned.vmm.memory import GuestMemory

SMCCC_NOT_SUPPORTED = 0xFFFF_FFFF_FFFF_FFFF  # -1
FATAL_EXIT = 1
REBOOT_EXIT = 0x66
# How long one vCPU may keep the VM while another of its vCPUs waits to run.
VM_SLICE_NS = 2_000_000
# ESR ISS for an injected data abort: synchronous external abort (DFSC 0b010000),
# FAR not valid (FnV), since no address caused it.
_DFSC_SYNC_EXTERNAL = 0x10
_ESR_FNV = 1 << 10
_ESR_WNR = 1 << 6
# How long pause() waits for a vCPU to leave the emulator.
PAUSE_WAIT_S = 1.0
# The no-progress detector looks this often (at most; a quarter of its timeout).
PROGRESS_CHECK_NS = 250_000_000


class Injection(Enum):
    """Faults the monitor and scripts can inject into a running VM."""

    DATA_ABORT = "data-abort"    # synchronous external abort at the current PC
    UNDEFINED = "undefined"      # the current instruction raises Undefined Instruction
    SERROR = "serror"            # an SError, taken once PSTATE.A is clear
    HANG = "hang"                # the vCPUs stop executing, as a guest livelocked with IRQs masked


class Turns:
    """Which vCPU of a VM executes: one at a time, taking turns.

    Unicorn instances share guest RAM but not atomicity (exclusives and LSE
    are plain loads and stores across instances), so the vCPUs of an SMP VM
    never execute at the same instant. A vCPU that finds the VM taken does
    not keep its core while it waits: it joins the queue and blocks, like a
    thread waiting for a kernel lock, and other threads on its core run. When
    the holder leaves, the turn is kept for the first in the queue (first
    come, first served: one that leaves cannot simply take the VM back) and
    that vCPU's core is woken to run it.

    While others wait, a turn lasts one VM slice from its start (a timer per
    turn, never more than one chain: it ends with the turn), and ends at once
    when a waiting vCPU has an interrupt to take, as a physical CPU would take
    it at once; the holder is kicked until it has left. A turn kept for a
    vCPU whose core does not run it within a slice (something more urgent
    runs there) passes to the next in the queue.
    """

    def __init__(self, clock: Clock, slice_ns: int = VM_SLICE_NS) -> None:
        self._clock = clock
        self._slice_ns = slice_ns
        self._lock = threading.Lock()
        self.holder: VcpuThread | None = None
        self.queue: collections.deque[VcpuThread] = collections.deque()
        self.ending = False     # the holder is to leave at its next exit
        self._number = 0        # counts turns, so that a timer knows whether its own is on
        self._started = 0
        self._timed = -1        # the turn whose slice timer is armed
        # Turns begun, and ended early: at the end of a slice, for a waiter's interrupt.
        self.counts: collections.Counter[str] = collections.Counter()

    def take(self, thread: VcpuThread) -> bool:
        """Begin ``thread``'s turn; False: it is queued (block it until its core is woken)."""
        with self._lock:
            took = self.holder is None and (not self.queue or self.queue[0] is thread)
            if took:
                if self.queue:
                    self.queue.popleft()
                self.holder = thread
                self._next_turn()
                self.counts["turns"] += 1
            elif thread not in self.queue:
                self.queue.append(thread)
            number, deadline = self._number, self._arm()
        if deadline is not None:
            self._clock.at(deadline, lambda: self._slice_over(number))
        return took

    def leave(self, thread: VcpuThread, result: RunResult) -> RunResult:
        """End ``thread``'s turn; the turn goes to the first waiter.

        A vCPU that yields while others wait queues behind them right away,
        so it returns blocked: its core wakes it when its turn comes.
        """
        with self._lock:
            self.holder = None
            if result is RunResult.YIELD and self.queue:
                self.queue.append(thread)
                result = RunResult.BLOCK
            self._next_turn()
            head = self.queue[0] if self.queue else None
            number, deadline = self._number, self._arm()
        if deadline is not None:
            self._clock.at(deadline, lambda: self._slice_over(number))
        if head is not None:
            head.core.wake(head)
        return result

    def hurry(self, thread: VcpuThread) -> bool:
        """``thread`` has an interrupt to take: if it waits for its turn, end the current one."""
        with self._lock:
            if thread not in self.queue:
                return False
            number = self._number
        self._end(number, "interrupt")
        return True

    def _next_turn(self) -> None:
        self._number += 1
        self._started = time.monotonic_ns()
        self.ending = False

    def _arm(self) -> int | None:
        """The current turn's slice deadline, if it needs a timer not yet armed (lock held)."""
        if not self.queue or self._timed == self._number:
            return None
        self._timed = self._number
        return self._started + self._slice_ns

    def _slice_over(self, number: int) -> None:
        with self._lock:
            if number != self._number or not self.queue:
                return
            head, deadline = None, None
            if self.holder is None:
                # Kept for a vCPU whose core has not run it for a slice: pass it on.
                self.queue.rotate(-1)
                self._next_turn()
                head, number, deadline = self.queue[0], self._number, self._arm()
        if head is None:
            self._end(number, "slice")
            return
        head.core.wake(head)
        if deadline is not None:
            self._clock.at(deadline, lambda: self._slice_over(number))

    def _end(self, number: int, why: str | None = None) -> None:
        """Make the holder of turn ``number`` leave: kick it until the turn is over.

        A kick between two slices is lost, and one that coincides with another
        exit is taken for that exit; the run loop checks ``ending`` at every exit.
        """
        with self._lock:
            holder = self.holder if number == self._number else None
            if holder is None:
                return
            if why is not None and not self.ending:
                self.counts[why] += 1
            self.ending = True
            # Under the lock (a kick is quick and takes no lock of ours): a
            # kick made after it could reach the holder in a later turn of
            # its own, which must not be cut short.
            holder.kick()
        self._clock.after(REKICK_NS, lambda: self._end(number))


class CounterDeadlines:
    """Timer deadlines in counter ticks on the kernel clock (CNTVCT = ns / 16).

    A device's deadline callback runs on the clock thread; if it raises, the
    VM that owns the device crashes (``on_error``), not the clock.
    """

    def __init__(self, clock: Clock, counter_hz: int,
                 on_error: Callable[[str, Exception], None] | None = None) -> None:
        self._clock = clock
        self.ns_per_tick = 1_000_000_000 // counter_hz
        self.on_error = on_error

    def at_count(self, count: int, callback: Callable[[], None]) -> TimerHandle:
        return self.at_ns(count * self.ns_per_tick, callback)

    def at_ns(self, deadline_ns: int, callback: Callable[[], None]) -> TimerHandle:
        def guarded() -> None:
            try:
                callback()
            except Exception as exc:
                if self.on_error is None:
                    raise
                self.on_error(getattr(callback, "__qualname__", "timer"), exc)
        return self._clock.at(deadline_ns, guarded)

    def cancel(self, handle: object) -> None:
        assert isinstance(handle, TimerHandle)
        handle.cancel()


# A blocked vCPU's timer interrupt is delivered ahead of its deadline by what
# delivering it takes (the clock's callback, the core's wake-up and dispatch,
# the exception entry), and the vCPU then waits out the rest before it enters
# the guest: the handler starts at the deadline instead of that long after it,
# whether the core was idle or cleared of a lower priority. KVM advances the
# LAPIC timer the same way. The advance is learned per vCPU as TCP learns its
# retransmission timeout: the mean delivery time plus four mean deviations.
MAX_TIMER_ADVANCE_NS = 300_000
INITIAL_DELIVERY_NS = 60_000


class TimerAdvance:
    """How far ahead of a deadline one vCPU's timer interrupts are delivered."""

    def __init__(self) -> None:
        self.mean_ns = INITIAL_DELIVERY_NS
        self.dev_ns = INITIAL_DELIVERY_NS // 4
        self.early = 0     # interrupts delivered ahead of their deadline
        self.late = 0      # of those, how many reached the guest after it all the same

    @property
    def ns(self) -> int:
        return min(self.mean_ns + 4 * self.dev_ns, MAX_TIMER_ADVANCE_NS)

    def learn(self, took_ns: int) -> None:
        """One delivery's time, early delivery to the guest's entry."""
        if took_ns > MAX_TIMER_ADVANCE_NS:
            return   # no advance could hide it (the VM was paused, say)
        err = took_ns - self.mean_ns
        self.mean_ns += err // 8
        self.dev_ns += (abs(err) - self.dev_ns) // 4


class _Deadline:
    """One armed deadline of a vCPU's timer: the clock timers that serve it."""

    __slots__ = ("_timers", "_cancelled", "_lock")

    def __init__(self) -> None:
        self._timers: list[TimerHandle] = []
        self._cancelled = False
        self._lock = threading.Lock()

    def add(self, timer: TimerHandle) -> None:
        with self._lock:   # one added by a callback that raced cancel() is cancelled too
            if self._cancelled:
                timer.cancel()
            else:
                self._timers.append(timer)

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            for timer in self._timers:
                timer.cancel()


class CpuDeadlines:
    """One vCPU's timer deadlines, with the two ways the kernel prepares for them.

    The deadline reserves the vCPU's core (``Core.reserve``): a guest blocked in
    ``wfi`` until its timer finds the core cleared of lower priorities. And the
    interrupt is delivered ahead of the deadline (``TimerAdvance``) if the vCPU
    is not running guest code then; otherwise at the deadline.
    """

    def __init__(self, vm: "Vm", cpu: int) -> None:
        self._vm = vm
        self._cpu = cpu

    def at_count(self, count: int, callback: Callable[[], None]) -> _Deadline:
        vm = self._vm
        handle = _Deadline()
        if self._cpu >= len(vm.threads):
            handle.add(vm.deadlines.at_count(count, callback))
            return handle
        thread = vm.threads[self._cpu]
        deadline = count * vm.deadlines.ns_per_tick
        advance = thread.advance.ns if vm.timer_advance else 0
        if advance:
            handle.add(vm.deadlines.at_ns(deadline - advance, lambda: self._early(
                handle, thread, count, deadline, callback)))
        else:
            handle.add(vm.deadlines.at_count(count, callback))
        lead = thread.core.reserve(thread, deadline - advance)
        if lead is not None:
            handle.add(lead)
        return handle

    def _early(self, handle: _Deadline, thread: "VcpuThread", count: int, deadline: int,
               callback: Callable[[], None]) -> None:
        if thread.executing:
            # Guest code running now could see the timer fire before its count.
            handle.add(self._vm.deadlines.at_count(count, callback))
            return
        # Before the line rises: a vCPU dispatched from now on waits for the count.
        thread.enter_at = max(thread.enter_at, deadline)
        thread.delivered_at = now_ns()
        thread.advance.early += 1
        callback()

    def cancel(self, handle: object) -> None:
        assert isinstance(handle, _Deadline)
        handle.cancel()


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

    @property
    def event(self) -> str:
        """The lifecycle event this end is: killed, crash, reboot or shutdown."""
        if self.killed:
            return "killed"
        if self.fault is not None or self.code == FATAL_EXIT:
            return "crash"
        return "reboot" if self.code == REBOOT_EXIT else "shutdown"


@dataclass
class DeviceEntry:
    path: str
    compatible: str
    device: object
    windows: list = field(default_factory=list)
    kind: str = "virtual"       # or "pass-through": a board device the VM owns


# Read-mode reads through the device after which a window is memory again. A
# remapping of a 64 MiB bank costs about as much as 8000 such reads; twice
# that keeps a driver that alternates commands and long reads within about 2x
# of staying MMIO, and a long read (firmware's 256 KiB of variables) fast.
ARRAY_READS = 16384


class RomdWindow:
    """A device window that is read-only memory while its device reads as memory.

    QEMU's "romd" mode, for flash that firmware executes in place (Unicorn
    cannot execute from MMIO). While the device is in its read mode the
    window is mapped over the device's storage: loads and fetches run at
    memory speed, and a store traps, goes to the device, and if the device
    left its read mode the window becomes MMIO right there, so a load after
    the store in the same block already reads status or query data. The way
    back is lazy: the window stays MMIO (the device serves reads from its
    storage) until the guest fetches an instruction from it, because a
    remapping costs milliseconds for a 64 MiB bank (the engine drops every
    page of it) and a flash driver switches modes hundreds of times in a row,
    or until it has served ``ARRAY_READS`` reads through the device in read
    mode without a write in between (firmware reading its variables).

    Each vCPU is its own engine instance with its own mapping; the vCPUs of a
    VM never run at the same instant, so a sibling catches up (``sync``) when
    its slice starts. uvmm's cfi-flash does the same with a read-only mapping
    of its dataspace; on a real MPU that mapping would need the dataspace at
    the window's address, which an emulated device does not need.
    """

    def __init__(self, rng: MemRange, device: RomDevice, name: str) -> None:
        self.range = rng
        self.device = device
        self.name = name
        # The temporary ctypes object releases the buffer at once, so the
        # storage can still be closed when the VM ends.
        self._host = ctypes.addressof(ctypes.c_char.from_buffer(device.storage))
        self._as_rom: dict[int, bool | None] = {}     # vCPU index -> mapped as memory
        self._mmio: dict[int, tuple[Callable, Callable]] = {}
        self._array_reads = 0
        self.remaps = 0

    def attach(self, vcpu: Vcpu, read_cb: Callable, write_cb: Callable) -> None:
        """Map the window for ``vcpu``, with the bus callbacks it uses as MMIO."""
        def read(uc: object, offset: int, size: int, ud: object) -> int:
            if self.device.array_mode:
                self._array_reads += 1
                if self._array_reads == ARRAY_READS:
                    vcpu.request_exit(Exit(ExitKind.STOP, "romd"))
            return read_cb(uc, offset, size, ud)

        def write(uc: object, offset: int, size: int, value: int, ud: object) -> None:
            self._array_reads = 0
            write_cb(uc, offset, size, value, ud)

        self._mmio[vcpu.index] = (read, write)
        self._as_rom[vcpu.index] = None
        vcpu.trap_rom(self.range.base, self.range.size,
                      lambda addr, size, value: self._store(vcpu, addr, size, value))
        self._map(vcpu, self.device.array_mode)

    def _map(self, vcpu: Vcpu, as_rom: bool) -> None:
        was = self._as_rom[vcpu.index]
        if was is as_rom:
            return
        base, size = self.range.base, self.range.size
        if was is not None:
            vcpu.unmap(base, size)
            self.remaps += 1
        if as_rom:
            self._array_reads = 0
            vcpu.map_rom(base, size, self._host)
        else:
            read_cb, write_cb = self._mmio[vcpu.index]
            vcpu.map_mmio(base, size, read_cb, write_cb)
        self._as_rom[vcpu.index] = as_rom

    def _store(self, vcpu: Vcpu, addr: int, size: int, value: int) -> None:
        # An unaligned store is repeated by the engine byte by byte, and each
        # byte traps here again: only aligned ones go to the device.
        if addr % size:
            return
        self._mmio[vcpu.index][1](None, addr - self.range.base, size, value, None)
        if not self.device.array_mode:
            self._map(vcpu, False)

    def sync(self, vcpu: Vcpu) -> None:
        """Before ``vcpu`` runs: no memory mapping of a device a sibling took out of read mode."""
        if self._as_rom.get(vcpu.index) and not self.device.array_mode:
            self._map(vcpu, False)
        elif self._array_reads >= ARRAY_READS:
            self.settle(vcpu)

    def settle(self, vcpu: Vcpu) -> None:
        """After a stop "romd": memory again if the guest has been reading it through the device."""
        if self._array_reads >= ARRAY_READS and self.device.array_mode:
            self._map(vcpu, True)

    def fetched(self, vcpu: Vcpu) -> bool:
        """``vcpu`` fetched from the window as MMIO: map memory again if the device reads so."""
        if not self.device.array_mode:
            return False
        self._map(vcpu, True)
        return True


class VcpuThread:
    """A vCPU as the kernel schedules it."""

    def __init__(self, vm: "Vm", vcpu: Vcpu, core: Core, prio: int,
                 guard: ReplayGuard | None) -> None:
        self.vm = vm
        self.vcpu = vcpu
        self.core = core
        self.prio = prio
        self.name = f"{vm.name}/cpu{vcpu.index}"
        self.powered = False
        self.guard = guard  # None: the engine never replays an access
        self.executing = False
        self.rekick: TimerHandle | None = None
        self.irqs_taken = 0
        # Broadcast maintenance by siblings since this vCPU last ran: TLB, and
        # the physical pages whose translations are stale (None: all).
        self.stale_tlb = False
        self.stale_code: set[int] | None = set()
        self.exec_ns = 0          # time spent running (in the emulator and its exits)
        self.run_since: int | None = None   # when the time not yet in exec_ns began
        self.injections: list[Injection] = []  # to deliver at the next slice start
        self.serror_pending = False
        self.advance = TimerAdvance()
        self.enter_at = 0         # a timer delivered early: not to enter the guest before this
        self.delivered_at = 0     # when it was delivered
        # The no-progress detector's view: progress count and execution time
        # when an interrupt was first seen pending without progress since.
        self.watch: tuple[int, int] | None = None

    def progress(self) -> int:
        """Events that show the guest is alive on this vCPU (see Vm._check_progress)."""
        exits = self.vcpu.exits
        return (self.irqs_taken + self.vcpu.hypercalls + self.vcpu.exceptions
                + self.vcpu.sysreg_traps + exits["wfi"] + self.vm.bus.accesses)

    def kick(self, hand_over: bool = False) -> None:
        self.vcpu.kick(hand_over)

    def run(self) -> RunResult:
        return self.vm._run_vcpu(self)


class Vm:
    def __init__(self, name: str, *, memory: GuestMemory, bus: MmioBus, mpu: MpuMap,
                 dt: DeviceTree, console_write: Callable[[bytes], None],
                 log: Callable[..., None], clock: Clock, counter_hz: int) -> None:
        self.name = name
        self.memory = memory
        self.bus = bus
        self.mpu = mpu
        self.dt = dt
        self.log = log
        self.devices: list[DeviceEntry] = []
        self.romd: list[RomdWindow] = []    # flash banks, in device-tree order
        self.threads: list[VcpuThread] = []
        self.psci: Psci | None = None
        self.gic: Gic | None = None
        self.timers: list[GenericTimer] = []
        self.clock = clock
        self.deadlines = CounterDeadlines(clock, counter_hz, self.device_failed)
        self.timer_advance = True   # deliver a blocked vCPU's timer interrupts early (TimerAdvance)
        self.vm_print = VmPrint(WriteSink(console_write))
        self.state = VmState.CREATED
        self.end: VmEnd | None = None
        self.paused = False
        self.hung = False
        self.started = 0.0
        self.fault_mode = "ignore"
        self.hang_timeout_ns = 0     # 0: no host-side no-progress detector
        self._progress_timer: TimerHandle | None = None
        self._hung_since: int | None = None
        self.turns = Turns(clock)
        # Broadcast TLB and instruction-cache maintenance its vCPUs passed on.
        self.broadcasts: collections.Counter[str] = collections.Counter()
        self._executing = False
        self._end_lock = threading.Lock()
        self._finished = False
        self._end_listeners: list[Callable[[VmEnd], None]] = []
        self._event_listeners: list[Callable[[str, str], None]] = []
        self.dtb_addr = 0
        self.entry = 0

    # -- lifecycle ------------------------------------------------------------

    def on_end(self, fn: Callable[[VmEnd], None]) -> None:
        self._end_listeners.append(fn)

    def on_event(self, fn: Callable[[str, str], None]) -> None:
        """``fn(event, cause)`` for things worth a journal entry that do not end the VM."""
        self._event_listeners.append(fn)

    def note(self, event: str, cause: str) -> None:
        for fn in self._event_listeners:
            fn(event, cause)

    def start(self) -> None:
        self.state = VmState.RUNNING
        self.started = time.monotonic()
        boot = self.threads[0]
        boot.powered = True
        boot.core.add(boot)
        if self.hang_timeout_ns:
            self._progress_timer = self.clock.after(self._progress_period(), self._check_progress)

    def request_end(self, end: VmEnd) -> None:
        """End the VM (any thread, also from inside a hook): first request wins."""
        with self._end_lock:
            if self.end is not None:
                return
            self.end = end
        for t in self.threads:
            t.core.remove(t)
        self._kick_out()
        self._finish_if_idle()

    def _kick_out(self) -> None:
        """Stop the vCPUs that are in the emulator, and again until none is.

        For an end, a pause or a hang: the run loop checks for them between
        slices, and a stop request that reaches Unicorn between two slices is
        lost, so one kick can leave a vCPU running on indefinitely.
        """
        if not (self.end is not None or self.paused or self.hung):
            return
        running = [t for t in self.threads if t.executing]
        for t in running:
            t.vcpu.kick()
        if running:
            self.clock.after(REKICK_NS, self._kick_out)

    def system_exit(self, code: int, reason: str) -> None:
        self.request_end(VmEnd(code, reason))

    def halt(self, report: FaultReport) -> None:
        """uvmm's "VM entered a fatal state": stop, report, exit code 1."""
        self.request_end(VmEnd(FATAL_EXIT, report.cause, fault=report))

    def kill(self) -> None:
        self.request_end(VmEnd(None, "killed", killed=True))

    def watchdog_bite(self, what: str) -> None:
        """The watchdog's last stage: uvmm shuts the VM down with the reboot code."""
        pc = _safe_pc(self.threads[0].vcpu) if self.threads else 0
        self.request_end(VmEnd(REBOOT_EXIT, what, fault=FaultReport(cause=what, pc=pc)))

    def abandon(self) -> None:
        """A VM that will never start: run the end listeners (device clean-up) once."""
        with self._end_lock:
            if self._finished:
                return
            self._finished = True
            self.end = VmEnd(None, "not started")
        for fn in self._end_listeners:
            fn(self.end)

    def _finish_if_idle(self) -> None:
        with self._end_lock:
            if self._finished or self.end is None or self._executing:
                return
            self._finished = True
        self.vm_print.flush()
        if self._progress_timer is not None:
            self._progress_timer.cancel()
        for timer in self.timers:
            timer.reset()  # no deadline of a dead VM stays on the clock
        for t in self.threads:
            if t.rekick is not None:
                t.rekick.cancel()
        self.state = VmState.STOPPED
        end = self.end
        for fn in self._end_listeners:
            fn(end)

    # -- the run loop ---------------------------------------------------------

    def _run_vcpu(self, thread: VcpuThread) -> RunResult:
        # A VM of one vCPU has nobody to take turns with.
        smp = len(self.threads) > 1
        if smp and not self.turns.take(thread):
            # Queued: its core wakes it when its turn comes, at once if it
            # has an interrupt to take (woken from wfi by an IPI, say).
            if self._signalled(thread.vcpu.index):
                self.turns.hurry(thread)
            return RunResult.BLOCK
        self._executing = True
        thread.executing = True
        result = RunResult.EXIT
        try:
            result = self._run_locked(thread)
        finally:
            thread.executing = False
            self._executing = False
            if smp:
                result = self.turns.leave(thread, result)
            if self.end is not None:
                self._finish_if_idle()
        return result

    def _run_locked(self, thread: VcpuThread) -> RunResult:
        # Its run time, exits handled included: what the no-progress detector counts.
        last = thread.run_since = time.monotonic_ns()
        try:
            while True:
                if self.end is not None:
                    return RunResult.EXIT
                if not thread.powered or self.paused or self.hung:
                    return RunResult.BLOCK
                if self.turns.ending:
                    return RunResult.YIELD
                if thread.injections and not self._deliver_injections(thread):
                    return RunResult.EXIT
                if thread.stale_tlb or thread.stale_code != set():
                    thread.vcpu.flush(thread.stale_tlb, thread.stale_code)
                    thread.stale_tlb, thread.stale_code = False, set()
                for window in self.romd:
                    window.sync(thread.vcpu)
                self._inject(thread)
                if thread.enter_at and not self._enter_on_time(thread):
                    return RunResult.YIELD
                exit_ = thread.vcpu.run()
                now = time.monotonic_ns()
                thread.run_since = now   # first: a reader in between under-counts
                thread.exec_ns += now - last
                last = now
                thread.vcpu.unwatch()
                if thread.guard is not None:
                    thread.guard.slice_ended(self._pending_access(thread.vcpu))
                result = _EXIT_HANDLERS[exit_.kind](self, thread, exit_)
                if result is not None:
                    return result
        except Exception as exc:  # a host-side model failure ends this VM only
            self.halt(FaultReport(cause=f"internal error in the VMM: {type(exc).__name__}: {exc}",
                                  pc=_safe_pc(thread.vcpu)))
            return RunResult.EXIT
        finally:
            since, thread.run_since = thread.run_since, None
            if since is not None:
                thread.exec_ns += time.monotonic_ns() - since

    def _enter_on_time(self, thread: VcpuThread) -> bool:
        """Wait for the deadline of a timer interrupt delivered ahead of it; False if
        the vCPU was asked to stop meanwhile (a higher priority wants the core)."""
        now = now_ns()
        if thread.delivered_at:
            thread.advance.learn(now - thread.delivered_at)
            thread.delivered_at = 0
        if now >= thread.enter_at:
            thread.advance.late += 1
        elif not spin_until(thread.enter_at, lambda: thread.vcpu.kick_pending and (
                self.turns.ending or thread.core.should_yield(thread))):
            return False
        thread.enter_at = 0
        return True

    def _pending_access(self, vcpu: Vcpu) -> tuple[int, int, bool] | None:
        """What the instruction a slice stopped on would access, if it is MMIO."""
        access = vcpu.access_at_pc()
        if access is None or self.bus.find(access.address) is None:
            return None
        return access.address, access.size, access.is_load

    def _on_wfi(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        # WFI completes when an interrupt is signalled to the CPU, masked or
        # not; otherwise the vCPU sleeps until signal_cpu() wakes it.
        if self._signalled(thread.vcpu.index):
            return None
        return RunResult.BLOCK

    def _on_preempt(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        # Stopped for the scheduler (time slice, higher priority) or for a
        # sibling's turn: leave. Otherwise (an interrupt to take, a kick that
        # came late) go on; the loop injects what is deliverable.
        if self.turns.ending or thread.core.should_yield(thread):
            return RunResult.YIELD
        return None

    # -- interrupts -------------------------------------------------------------

    def _signalled(self, cpu: int) -> bool:
        gic = self.gic
        return gic is not None and any(gic.signals(cpu))

    def _inject(self, thread: VcpuThread) -> None:
        """Take a signalled, unmasked interrupt before the slice starts (ARM ARM D1.3)."""
        if thread.serror_pending and not thread.vcpu.pstate & PSTATE_A:
            thread.serror_pending = False
            if self._take_async(thread, ExceptionKind.SERROR, (EC.SERROR << 26) | ESR_IL):
                return
        gic = self.gic
        if gic is None:
            return
        irq, fiq = gic.signals(thread.vcpu.index)
        if not (irq or fiq):
            return
        vcpu = thread.vcpu
        pstate = vcpu.pstate
        if fiq and not pstate & PSTATE_F:
            kind = ExceptionKind.FIQ
        elif irq and not pstate & PSTATE_I:
            kind = ExceptionKind.IRQ
        else:
            # Masked: end the slice where the guest unmasks (if that is in sight;
            # otherwise the re-kick finds the unmask within REKICK_NS). The re-kick
            # chain ends whenever the vCPU is off its core, so start it again here.
            if (not vcpu.watch_unmask((DAIF_I if irq else 0) | (DAIF_F if fiq else 0))
                    and thread.rekick is None):
                self._rekick_later(thread)
            return
        if self._take_async(thread, kind):
            thread.irqs_taken += 1

    def _take_async(self, thread: VcpuThread, kind: ExceptionKind, esr: int | None = None) -> bool:
        vcpu = thread.vcpu
        pc = vcpu.pc
        if not vcpu.enter(kind, pc, esr=esr):
            self.halt(FaultReport(cause=f"{kind.name.lower()} with no vector table", pc=pc,
                                  esr=esr or 0))
            return False
        return True

    def signal_cpu(self, cpu: int) -> None:
        """From the GIC (any thread): CPU ``cpu`` may have an interrupt to take."""
        if cpu >= len(self.threads) or self.end is not None:
            return
        thread = self.threads[cpu]
        if not thread.powered or self.turns.hurry(thread):
            return   # (waiting for its turn: it comes now)
        thread.core.wake(thread)
        if thread.executing:
            self._kick_until_taken(thread)

    def _kick_until_taken(self, thread: VcpuThread) -> None:
        # A stop requested between two emu_start calls is lost, and a guest
        # may unmask with msr daifclr, which cannot be trapped: kick again
        # every REKICK_NS while the interrupt is still signalled.
        urgent_kick(self.clock, thread, lambda: self._rekick_later(thread))

    def _rekick_later(self, thread: VcpuThread) -> None:
        if thread.rekick is not None:
            thread.rekick.cancel()

        def again() -> None:
            thread.rekick = None
            if self.end is None and thread.executing and self._signalled(thread.vcpu.index):
                self._kick_until_taken(thread)

        thread.rekick = self.clock.after(REKICK_NS, again)

    def counter(self) -> int:
        """CNTVCT as the guest reads it (Unicorn's counter is host monotonic time)."""
        return time.monotonic_ns() // self.deadlines.ns_per_tick

    def _on_stop(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        what = exit_.payload
        if what == "cpu_off":
            thread.powered = False
            return RunResult.BLOCK
        if what in ("unmasked", "sysreg"):
            return None
        if what == "standby":
            return None if self._signalled(thread.vcpu.index) else RunResult.BLOCK
        if what == "romd":
            return self._on_romd(thread)
        return None

    def _on_romd(self, thread: VcpuThread) -> RunResult | None:
        vcpu = thread.vcpu
        addr, vcpu.romd_fetch = vcpu.romd_fetch, None
        if addr is None:    # a window read in read mode long enough to be memory again
            for w in self.romd:
                w.settle(vcpu)
            return None
        window = next(w for w in self.romd if w.range.contains(addr))
        if window.fetched(vcpu):
            return None
        self.halt(FaultReport(cause=f"instruction fetch from {window.name} at {addr:#x} while "
                              f"the device does not read as memory", pc=vcpu.pc, far=addr))
        return RunResult.EXIT

    def _on_fatal(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        report = exit_.payload
        assert isinstance(report, FaultReport)
        self.halt(report)
        return RunResult.EXIT

    def _on_unbacked(self, thread: VcpuThread, exit_: Exit) -> RunResult | None:
        """An access outside every region: uvmm's handle_mmio with its fault mode."""
        report = exit_.payload
        assert isinstance(report, FaultReport)
        vcpu = thread.vcpu
        fetch = esr_ec(report.esr) == EC.IABT_LOW
        if self.fault_mode == "ignore" and not fetch:
            what = "write to" if report.esr & _ESR_WNR else "read from"
            self.log(f"Invalid {what} {report.far:#x}, ip {report.pc:#x}! Ignoring...", 1)
            vcpu.skip_access(report.pc)
            return None
        if self.fault_mode == "inject":
            lower = pstate_el(vcpu.pstate) == 0
            ec = ((EC.IABT_LOW if lower else EC.IABT_CUR) if fetch
                  else (EC.DABT_LOW if lower else EC.DABT_CUR))
            esr = (ec << 26) | ESR_IL | _DFSC_SYNC_EXTERNAL
            failed = vcpu.enter_sync(esr, report.far, report.pc,
                                     f"injected abort for {report.cause}")
            if failed is None:
                return None
            report = failed
        self.halt(report)
        return RunResult.EXIT

    # -- the no-progress detector ------------------------------------------------

    def _progress_period(self) -> int:
        return min(PROGRESS_CHECK_NS, max(1, self.hang_timeout_ns // 4))

    def _check_progress(self) -> None:
        """End the VM as hung when a vCPU spins without progress while it owes an interrupt.

        The rule, per vCPU: it has an interrupt signalled (pending at its CPU
        interface, masked or not) and has run for ``hang_timeout_ns`` (time on
        its core: in the emulator and handling its exits) since it was first
        seen that way, and in all
        that time took no interrupt or exception, made no hypercall, no trapped
        system-register access, no ``wfi`` and no device access (the VM's MMIO
        counts for all its vCPUs). Idling in ``wfi`` is progress and costs no
        execution time; a guest computing with nothing pending is never
        flagged; a vCPU waiting for its core (starved by a higher priority)
        does not execute, so its wait does not count. An injected ``hang``
        counts as execution.
        """
        self._progress_timer = None
        if self.end is not None:
            return
        now = time.monotonic_ns()
        if self.hung:
            if self._hung_since is None:
                self._hung_since = now
        else:
            self._hung_since = None
        for t in self.threads:
            if not t.powered or self.paused:
                t.watch = None
                continue
            since = t.run_since   # a slice in progress counts too
            spun = (t.exec_ns + (now - since if since is not None else 0)
                    + (now - self._hung_since if self._hung_since is not None else 0))
            progress = t.progress()
            if not self._signalled(t.vcpu.index) or (t.watch is not None
                                                      and t.watch[0] != progress):
                t.watch = None
            if t.watch is None:
                if self._signalled(t.vcpu.index):
                    t.watch = (progress, spun)
                continue
            if spun - t.watch[1] >= self.hang_timeout_ns:
                secs = self.hang_timeout_ns / 1e9
                self.request_end(VmEnd(FATAL_EXIT, f"hang: cpu{t.vcpu.index} made no progress "
                                       f"for {secs:g} s with an interrupt pending",
                                       fault=FaultReport(
                                           cause=f"hang: no progress for {secs:g} s",
                                           pc=_safe_pc(t.vcpu),
                                           recent_exits=t.vcpu.recent_exits())))
                return
        self._progress_timer = self.clock.after(self._progress_period(), self._check_progress)

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

    def maintenance(self, cpu: int, what: str, page: int | None) -> None:
        """A vCPU broadcast TLB or instruction-cache maintenance: its siblings catch up.

        Only one vCPU of a VM runs at a time, so applying it before a sibling
        next runs is as good as the hardware's broadcast.
        """
        self.broadcasts[what] += 1
        for t in self.threads:
            if t.vcpu.index == cpu:
                continue
            if what == "tlb":
                t.stale_tlb = True
            elif page is None or t.stale_code is None:
                t.stale_code = None
            elif len(t.stale_code) < 256:
                t.stale_code.add(page)
            else:
                t.stale_code = None

    def vector_ok(self, first: int, last: int) -> bool:
        """Both ends of the vector table (physical) lie in the VM's RAM."""
        return self.memory.contains(first, 4) and self.memory.contains(last, 4)

    def device_failed(self, name: str, exc: Exception) -> None:
        pc = _safe_pc(self.threads[0].vcpu) if self.threads else 0
        self.halt(FaultReport(cause=f"device model {name} failed: {type(exc).__name__}: {exc}",
                              pc=pc))

    # -- control (monitor, scripts) ----------------------------------------------

    def pause(self) -> None:
        """Stop executing guest code; timers and devices go on, interrupts stay pending.

        Returns once no vCPU is inside the emulator (or after PAUSE_WAIT_S),
        so that registers read afterwards are a consistent snapshot.
        """
        self.paused = True
        self._kick_out()
        deadline = time.monotonic() + PAUSE_WAIT_S
        while self._executing and time.monotonic() < deadline:
            time.sleep(REKICK_NS / 1e9)

    def resume(self) -> None:
        if not self.paused:
            return
        self.paused = False
        self._wake_all()

    def _wake_all(self) -> None:
        for t in self.threads:
            if t.powered and self.end is None:
                t.core.wake(t)

    def inject(self, kind: Injection, cpu: int = 0) -> None:
        """Deliver ``kind`` to vCPU ``cpu`` at its next slice (any thread)."""
        if not 0 <= cpu < len(self.threads):
            raise ValueError(f"{self.name} has no cpu {cpu} (it has {len(self.threads)})")
        if kind == Injection.HANG:
            self.hung = True
            self._kick_out()
            return
        thread = self.threads[cpu]
        thread.injections.append(kind)
        if thread.executing:
            self._kick_until(thread, lambda: not thread.injections or self.paused or self.hung
                             or self.end is not None)
        elif thread.powered:
            thread.core.wake(thread)

    def _kick_until(self, thread: VcpuThread, done: Callable[[], bool]) -> None:
        """Kick ``thread`` every REKICK_NS until ``done()``: a kick between slices is lost."""
        if done():
            return
        if thread.executing:
            thread.vcpu.kick()
        self.clock.after(REKICK_NS, lambda: self._kick_until(thread, done))

    def _deliver_injections(self, thread: VcpuThread) -> bool:
        """Take queued injections on this vCPU; False when the VM halted instead."""
        vcpu = thread.vcpu
        while thread.injections:
            kind = thread.injections.pop(0)
            if kind == Injection.SERROR:
                thread.serror_pending = True  # taken by _inject once unmasked
                continue
            at_el1 = pstate_el(vcpu.pstate) == 1
            if kind == Injection.DATA_ABORT:
                ec = EC.DABT_CUR if at_el1 else EC.DABT_LOW
                esr = (ec << 26) | ESR_IL | _ESR_FNV | _DFSC_SYNC_EXTERNAL
            else:
                esr = (EC.UNKNOWN << 26) | ESR_IL
            report = vcpu.enter_sync(esr, 0, vcpu.pc, f"injected {kind.value}")
            if report is not None:
                self.halt(report)
                return False
        return True

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


def _safe_pc(vcpu: Vcpu) -> int:
    try:
        return vcpu.pc_from_any_thread()
    except Exception:
        return 0


_EXIT_HANDLERS: dict[ExitKind, Callable[[Vm, VcpuThread, Exit], RunResult | None]] = {
    ExitKind.WFI: Vm._on_wfi,
    ExitKind.PREEMPT: Vm._on_preempt,
    ExitKind.STOP: Vm._on_stop,
    ExitKind.FATAL: Vm._on_fatal,
    ExitKind.UNBACKED: Vm._on_unbacked,
}
