"""AArch64 exception entry to EL1 (ARM ARM D1.10), which Unicorn never performs.

The rules live here as pure functions so they can be checked against the
architecture without an emulator; ``Vcpu.take_exception`` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ExceptionKind(IntEnum):
    """Vector slot within a group of four (offset 0x80 each)."""

    SYNC = 0
    IRQ = 1
    FIQ = 2
    SERROR = 3


class EC(IntEnum):
    """ESR_ELx.EC values used by the VMM."""

    UNKNOWN = 0x00
    WFX = 0x01
    SVC64 = 0x15
    HVC64 = 0x16
    SMC64 = 0x17
    SYSREG = 0x18
    IABT_LOW = 0x20
    IABT_CUR = 0x21
    PC_ALIGN = 0x22
    DABT_LOW = 0x24
    DABT_CUR = 0x25
    SP_ALIGN = 0x26
    SERROR = 0x2F
    BRK64 = 0x3C


# PSTATE bits (SPSR layout).
PSTATE_SP = 1 << 0
PSTATE_EL_SHIFT = 2
PSTATE_F = 1 << 6
PSTATE_I = 1 << 7
PSTATE_A = 1 << 8
PSTATE_D = 1 << 9
PSTATE_IL = 1 << 20
PSTATE_SS = 1 << 21
PSTATE_NZCV = 0xF << 28
PSTATE_NRW = 1 << 4  # AArch32 state in SPSR
PSTATE_EL1H = (1 << PSTATE_EL_SHIFT) | PSTATE_SP
PSTATE_DAIF = PSTATE_D | PSTATE_A | PSTATE_I | PSTATE_F

# uvmm's boot state for a 64-bit guest: EL1h, D clear, A/I/F masked (0x1c5).
BOOT_PSTATE = PSTATE_EL1H | PSTATE_A | PSTATE_I | PSTATE_F

ESR_IL = 1 << 25


def pstate_el(pstate: int) -> int:
    return (pstate >> PSTATE_EL_SHIFT) & 3


@dataclass(frozen=True)
class EntryPlan:
    vector_offset: int
    new_pstate: int
    # True when the interrupted context ran on SP_EL0 (EL0, or EL1t): the
    # live SP must be saved to SP_EL0 and SP_EL1 loaded.
    switch_stack: bool


def plan_entry(pstate: int, kind: ExceptionKind) -> EntryPlan:
    """Where an exception taken to EL1 from ``pstate`` goes, and the PSTATE after it."""
    el = pstate_el(pstate)
    if pstate & PSTATE_NRW:
        group = 0x600  # lower EL, AArch32
        switch = True
    elif el == 0:
        group = 0x400  # lower EL, AArch64
        switch = True
    elif pstate & PSTATE_SP:
        group = 0x200  # current EL with SP_ELx
        switch = False
    else:
        group = 0x000  # current EL with SP_EL0
        switch = True
    # Entry masks all of DAIF, selects EL1h and clears SS and IL; NZCV is kept
    # only because the guest cannot observe it before saving SPSR, which holds
    # the original flags (clearing it would be just as correct).
    new = (pstate & PSTATE_NZCV) | PSTATE_EL1H | PSTATE_DAIF
    return EntryPlan(group + 0x80 * int(kind), new, switch)


def can_take(pstate: int, kind: ExceptionKind) -> bool:
    """Whether an asynchronous exception is unmasked at EL1/EL0 (no EL2 routing)."""
    if kind == ExceptionKind.IRQ:
        return not pstate & PSTATE_I
    if kind == ExceptionKind.FIQ:
        return not pstate & PSTATE_F
    if kind == ExceptionKind.SERROR:
        return not pstate & PSTATE_A
    return True


def esr_ec(esr: int) -> int:
    return (esr >> 26) & 0x3F
