"""The composition root of one pyned process: board, kernel, services, consoles.

Everything a running system shares is built here once and passed down; no
module keeps state of its own, so two Systems in one process (as tests make)
are fully independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

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


# How long shutdown waits for the cores to leave their vCPUs.
SHUTDOWN_WAIT_S = 2.0


@dataclass
class SystemOptions:
    board: Board = field(default_factory=Board)
    rom_dirs: list[Path] = field(default_factory=list)
    out: BinaryIO | None = None
    colour: bool | None = None
    slice_ns: int = DEFAULT_SLICE_NS


class System:
    def __init__(self, options: SystemOptions | None = None,
                 syndrome: SyndromeLayout | None = None) -> None:
        opts = options or SystemOptions()
        self.board = opts.board
        self.syndrome = syndrome or probe_syndrome_layout()
        self.clock = Clock()
        self.memory = PhysicalMemory(self.board.dram, (self.board.kernel_reserved,))
        self.scheduler = Scheduler(self.board.cores, self.clock, opts.slice_ns)
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
        self._ned_channel = self.cons.create("ned", "")
        self.exact_stops = patched()
        if not self.exact_stops:
            self.ned_log("warning: stock Unicorn library: a stop can land after a load has "
                         "taken effect, and guests may then fail under host load; build the "
                         "fixed one with 'pyned unicorn build'")

    def ned_log(self, text: str) -> None:
        self._ned_channel.write(text.encode() + b"\n")

    def shutdown(self) -> None:
        """Kill every task and stop the cores and the clock."""
        if self.monitor is not None:
            self.monitor.close()
        for task in self.tasks.alive():
            task.kill()
        self.scheduler.stop()
        # No vCPU may still be inside Unicorn when the process exits: the
        # interpreter's teardown under a running emulator crashes.
        self.scheduler.join(SHUTDOWN_WAIT_S)
        self.clock.stop()
        for switch in self.switches:
            switch.close()
