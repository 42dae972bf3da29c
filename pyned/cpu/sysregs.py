"""System-register traps: one table, dispatched from the MRS/MSR hooks.

Unicorn calls the instruction hook for every register-form MRS/MSR. A table
entry emulates the access; anything not in the table runs natively (and
UNDEFs in the guest if QEMU does not implement it, as on hardware). Entries
for registers QEMU lacks must also step the PC, because returning "handled"
does not skip an unimplemented register (unicorn-aarch64.md, Q3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple


class SysRegKey(NamedTuple):
    op0: int
    op1: int
    crn: int
    crm: int
    op2: int

    def __str__(self) -> str:
        return f"S{self.op0}_{self.op1}_C{self.crn}_C{self.crm}_{self.op2}"


ReadFn = Callable[[int], int]          # (cpu index) -> value
WriteFn = Callable[[int, int], None]   # (cpu index, value)


@dataclass
class SysReg:
    name: str
    read: ReadFn | None = None
    write: WriteFn | None = None
    # True when QEMU implements the register, so the hook must not step the PC.
    native: bool = True


class SysRegTable:
    def __init__(self) -> None:
        self._regs: dict[SysRegKey, SysReg] = {}

    def add(self, key: SysRegKey, reg: SysReg) -> None:
        if key in self._regs:
            raise ValueError(f"system register {reg.name} ({key}) registered twice")
        self._regs[key] = reg

    def get(self, key: SysRegKey) -> SysReg | None:
        return self._regs.get(key)

    def __len__(self) -> int:
        return len(self._regs)

    def keys(self) -> list[SysRegKey]:
        return list(self._regs)

    def names(self) -> list[str]:
        return sorted(r.name for r in self._regs.values())


# Encodings (ARM ARM D23 / Armv8-R AArch64 supplement).
ID_AA64MMFR0_EL1 = SysRegKey(3, 0, 0, 7, 0)
ID_AA64PFR0_EL1 = SysRegKey(3, 0, 0, 4, 0)
MPUIR_EL1 = SysRegKey(3, 0, 0, 0, 4)
CNTFRQ_EL0 = SysRegKey(3, 3, 14, 0, 0)


def identity_registers(table: SysRegTable, *, mmfr0_native: int, mpu_regions: int,
                       counter_hz: int, pfr0_native: int = 0x2222) -> None:
    """The R82 identity beyond MIDR/MPIDR (which VPIDR/VMPIDR_EL2 provide natively)."""
    # CSV3 = 1 and CSV2 = 0b0011 (FEAT_CSV2_3): the emulated core executes
    # nothing speculatively, so data cannot leak from a faulting access or a
    # trained branch. Said so, a guest skips mitigations that cost it dearly
    # here (Linux's kernel page-table isolation flushes the whole TLB on every
    # kernel entry and exit).
    pfr0 = (pfr0_native & ~(0xFF << 56)) | (0x1 << 60) | (0x3 << 56)
    table.add(ID_AA64PFR0_EL1, SysReg("ID_AA64PFR0_EL1", read=lambda _cpu: pfr0))
    # MSA = 0b1111 (see MSA_frac) and MSA_frac = 0b0010: PMSAv8-64 and VMSAv8-64 at EL1.
    mmfr0 = (mmfr0_native & ~(0xFF << 48)) | (0xF << 48) | (0x2 << 52)
    table.add(ID_AA64MMFR0_EL1, SysReg("ID_AA64MMFR0_EL1", read=lambda _cpu: mmfr0))
    table.add(MPUIR_EL1, SysReg("MPUIR_EL1", read=lambda _cpu: mpu_regions, native=False))
    table.add(CNTFRQ_EL0, SysReg("CNTFRQ_EL0", read=lambda _cpu: counter_hz,
                                 write=lambda _cpu, _v: None))
