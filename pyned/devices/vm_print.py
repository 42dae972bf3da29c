"""uvmm's guest print hypercall: ``hvc #1`` with x0 = 0x86000000 prints x1's low byte.

Characters collect in a line buffer per vCPU and reach the console a line at
a time, so output from several vCPUs does not interleave mid-line.
"""

from __future__ import annotations

from pyned.devices.base import CharSink

VM_PRINT_FID = 0x8600_0000
_MAX_LINE = 4096


class VmPrint:
    def __init__(self, sink: CharSink) -> None:
        self._sink = sink
        self._lines: dict[int, bytearray] = {}

    def putc(self, cpu: int, char: int) -> None:
        line = self._lines.setdefault(cpu, bytearray())
        line.append(char & 0xFF)
        if char & 0xFF == 0x0A or len(line) >= _MAX_LINE:
            self._sink.write(bytes(line))
            line.clear()

    def flush(self) -> None:
        for line in self._lines.values():
            if line:
                self._sink.write(bytes(line))
                line.clear()
