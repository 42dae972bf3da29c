"""Regression test for Unicorn's replayed MMIO access (unicorn-aarch64.md, pitfall 1).

A guest loops over an MMIO load and store while another thread stops the
vCPU every 100 µs. Without the bus's replay guard, a stop that lands on an
access makes the device see it twice.
"""

import ctypes
import mmap
import struct
import threading
import time

from pyned.cpu.engine import patched
from pyned.cpu.sysregs import SysRegTable
from pyned.cpu.vcpu import ExitKind, Vcpu
from pyned.platform.board import MemRange
from pyned.vmm.bus import MmioBus, ReplayGuard

RAM = 0x100000
DEV = 0x9C090000
LOOP = [
    0xB9400001,  # ldr w1, [x0]
    0x91000442,  # add x2, x2, #1
    0xB9000402,  # str w2, [x0, #4]
    0x17FFFFFD,  # b loop
]


class Counter:
    def __init__(self):
        self.reads = 0
        self.writes = []

    def reset(self):
        pass

    def read(self, offset, size, cpu):
        self.reads += 1
        return self.reads

    def write(self, offset, size, value, cpu):
        self.writes.append(value)


class Traps:
    def hypercall(self, vcpu, conduit, imm):
        pass

    def vector_ok(self, first, last):
        return False


def test_interrupted_slices_never_duplicate_device_accesses(syndrome):
    mem = mmap.mmap(-1, 0x10000)
    mem[0:16] = struct.pack("<4I", *LOOP)
    vcpu = Vcpu(0, mpidr=0, midr=0, syndrome=syndrome, sysregs=SysRegTable(), traps=Traps())
    vcpu.map_ram(RAM, 0x10000, ctypes.addressof(ctypes.c_char.from_buffer(mem)))
    dev = Counter()
    bus = MmioBus()
    bus.add(MemRange(DEV, 0x1000), "counter", dev)
    # The patched engine never replays, so it runs without the guard (as pyned does);
    # stock Unicorn needs it.
    guard = None if patched() else ReplayGuard()
    errors = []
    rd, wr = bus.callbacks(0, 0, guard, lambda name, exc: errors.append(exc))
    vcpu.map_mmio(DEV, 0x1000, rd, wr)
    vcpu.reset(entry=RAM, x0=DEV)

    stop = threading.Event()

    def kicker():
        while not stop.is_set():
            time.sleep(0.0001)
            vcpu.kick()

    t = threading.Thread(target=kicker)
    t.start()
    slices = 0
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            exit_ = vcpu.run()
            assert exit_.kind == ExitKind.PREEMPT
            if guard is not None:
                acc = vcpu.access_at_pc()
                guard.slice_ended(None if acc is None else (acc.address, acc.size, acc.is_load))
            slices += 1
    finally:
        stop.set()
        t.join()
    iterations = vcpu.x(2)
    assert not errors
    assert slices > 200
    if guard is not None:
        assert guard.replays > slices // 2  # the hazard really happened
    # A slice may end between the load and the add: then one read is ahead.
    assert dev.reads - iterations in (0, 1)
    assert dev.writes == list(range(1, len(dev.writes) + 1))
