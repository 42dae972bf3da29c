"""The composition root of one pyned process: board, kernel, services, consoles.

Everything a running system shares is built here once and passed down; no
module keeps state of its own, so two Systems in one process (as tests make)
are fully independent.
"""

from __future__ import annotations

import ctypes
import gc
import queue
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable

from pyned.cpu.engine import patched
from pyned.cpu.syndrome import SyndromeLayout, probe_syndrome_layout
from pyned.devices.hardware import Hardware
from pyned.kernel.clock import Clock, now_ns
from pyned.kernel.irq import Icu
from pyned.kernel.memory import PhysicalMemory
from pyned.kernel.scheduler import DEFAULT_SLICE_NS, Scheduler
from pyned.kernel.task import TaskTable
from pyned.platform.board import Board
from pyned.services.cons import Cons
from pyned.services.journal import Journal
from pyned.services.rom import Rom, shipped_dirs
from pyned.services.switch import VirtioSwitch

if TYPE_CHECKING:
    from pyned.services.uvmm import Guest



@dataclass
class SystemOptions:
    board: Board = field(default_factory=Board)
    rom_dirs: list[Path] = field(default_factory=list)
    out: BinaryIO | None = None
    colour: bool | None = None
    slice_ns: int = DEFAULT_SLICE_NS
    reserve: bool = True   # Core.reserve: clear a core ahead of a higher priority's deadline
    timer_advance: bool = True   # vm.TimerAdvance: deliver a blocked vCPU's timer early


def _libc_trim() -> Callable[[], None]:
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return lambda: None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0) and None


# A VM torn down frees megabytes that glibc keeps in its arenas; a long-running
# system that restarts VMs gives them back to the OS after each rebuild.
_return_free_heap = _libc_trim()


SWITCH_INTERVAL_S = 0.0005


def settle_process() -> None:
    """Tune the interpreter for running guests, once a system is set up, before its VMs start.

    Collect, then exempt what exists now from future garbage collections: the interpreter,
    the imported modules and the Lua runtime live as long as the process, yet
    every full collection walked them all, about two thirds of the heap, a
    pause of tens of milliseconds for every thread (an rtos VM's ticks
    included) each time VMs were rebuilt often enough to trigger one.
    """
    gc.collect()
    gc.freeze()
    # A thread waiting for the interpreter lock (the clock at a guest's timer
    # deadline, a core thread leaving the emulator) gets it after at most this
    # long, instead of the default 5 ms, from one that runs Python on (a Lua
    # script, a monitor command, a device model with a large request).
    sys.setswitchinterval(SWITCH_INTERVAL_S)


class System:
    def __init__(self, options: SystemOptions | None = None,
                 syndrome: SyndromeLayout | None = None) -> None:
        opts = options or SystemOptions()
        self.board = opts.board
        self.syndrome = syndrome or probe_syndrome_layout()
        self.clock = Clock()
        self.memory = PhysicalMemory(self.board.dram, (self.board.kernel_reserved,))
        self.scheduler = Scheduler(self.board.cores, self.clock, opts.slice_ns, opts.reserve)
        self.tasks = TaskTable()
        self.cons = Cons(self.clock, opts.out, opts.colour)
        self.icu = Icu(32, self.board.spis)
        self.hardware = Hardware(self.board, self.icu.line, self.clock, now_ns,
                                 lambda name: self.cons.create(name, "y"))
        self.rom = Rom(list(opts.rom_dirs) + shipped_dirs())
        self.guests: dict[int, Guest] = {}   # by task id: running uvmm instances
        self.journal = Journal()
        self.switches: list[VirtioSwitch] = []
        # The monitor (pyned.monitor.Monitor, a layer above) once one is started.
        self.monitor: Any = None
        self._work: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._ned_channel = self.cons.create("ned", "")
        self.exact_stops = patched()
        self.timer_advance = opts.timer_advance
        if not self.exact_stops:
            self.ned_log("warning: stock Unicorn library: a stop can land after a load has "
                         "taken effect, and guests may then fail under host load; build the "
                         "fixed one with 'pyned unicorn build'")

    def ned_log(self, text: str) -> None:
        self._ned_channel.write(text.encode() + b"\n")

    def background(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the system's worker thread: work too long for a core or the
        clock thread (a VM being rebuilt). One long-lived thread, so that the C
        heap it allocates from stays one arena instead of a new one per restart."""
        with self._worker_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._serve_work, name="pyned-worker",
                                                daemon=True)
                self._worker.start()
        self._work.put(fn)

    def _serve_work(self) -> None:
        while True:
            fn = self._work.get()
            if fn is None:
                return
            try:
                fn()
            except Exception:  # a host bug: report it, keep serving the others
                traceback.print_exc()
            _return_free_heap()

    def shutdown(self) -> None:
        """Kill every task and stop the cores and the clock."""
        if self.monitor is not None:
            self.monitor.close()
        for task in self.tasks.alive():
            task.kill()
        with self._worker_lock:
            worker = self._worker
        if worker is not None:  # let a rebuild in progress finish, then stop
            self._work.put(None)
            worker.join(5.0)
        self.scheduler.stop()   # returns once no core is inside the emulator
        self.clock.stop()
        for switch in self.switches:
            switch.close()
