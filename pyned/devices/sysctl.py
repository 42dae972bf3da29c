"""uvmm's ``syscon-l4vmm`` exit register.

A 32-bit write of V to register 0 ends the VM with exit code V; the
standard ``syscon-poweroff`` (value 0) and ``syscon-reboot`` (value 0x66) DT
nodes point at it, so Linux's generic drivers power off and reboot through it.
Reads return 0.
"""

from __future__ import annotations

from pyned.devices.base import PowerControl


class SysCtl:
    def __init__(self, power: PowerControl) -> None:
        self._power = power

    def reset(self) -> None:
        pass

    def read(self, offset: int, size: int, cpu: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        if offset == 0:
            self._power.system_exit(value & 0xFFFF_FFFF, f"syscon-l4vmm write {value:#x}")
