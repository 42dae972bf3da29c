"""Decoding the memory access of an A64 load/store (ARM ARM C4.1.4, C6).

The run loop needs to know which guest-physical bytes the instruction at PC
touches when a slice ends on it, to tell a replayed MMIO access from a new
one. Covered: LDR/STR (all sizes, signed loads) with unsigned offset,
unscaled, pre/post-index, unprivileged and register offset; LDP/STP
(including LDPSW) with offset, pre- and post-index; literal loads.
Exclusives, atomics and SIMD&FP are reported as None (not decoded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

RegRead = Callable[[int], int]  # register number (31 = SP for a base) -> value

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class MemAccess:
    address: int
    size: int      # total bytes touched
    is_load: bool
    rt: int
    rt2: int | None = None   # the second register of a pair


def _sext(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def _extend(value: int, option: int) -> int:
    if option == 0b010:    # UXTW
        return value & 0xFFFF_FFFF
    if option == 0b110:    # SXTW
        return _sext(value, 32)
    return value           # LSL / UXTX / SXTX


def decode_access(insn: int, reg: RegRead, pc: int) -> MemAccess | None:
    rt = insn & 0x1F
    rn = (insn >> 5) & 0x1F
    # Load register (literal): opc 011 V 00
    if insn & 0x3B00_0000 == 0x1800_0000 and not insn & (1 << 26):
        opc = insn >> 30
        size = {0: 4, 1: 8, 2: 4}.get(opc)
        if size is None:
            return None
        return MemAccess((pc + (_sext((insn >> 5) & 0x7FFFF, 19) << 2)) & _MASK64, size, True, rt)
    # Single register: size 111 V 0x opc ...
    if insn & 0x3B00_0000 == 0x3800_0000 or insn & 0x3B00_0000 == 0x3900_0000:
        if insn & (1 << 26):  # SIMD&FP
            return None
        size = 1 << (insn >> 30)
        opc = (insn >> 22) & 3
        if opc == 0b10 and size == 8:
            return None  # PRFM
        is_load = opc != 0
        base = reg(rn)
        if insn & (1 << 24):  # unsigned immediate
            ea = base + (((insn >> 10) & 0xFFF) * size)
        elif insn & (1 << 21):
            if (insn >> 10) & 3 != 0b10:
                return None  # atomics and friends
            option = (insn >> 13) & 7
            shift = (insn >> 30) if insn & (1 << 12) else 0
            ea = base + (_extend(reg((insn >> 16) & 0x1F) if ((insn >> 16) & 0x1F) != 31 else 0,
                                 option) << shift)
        else:
            imm9 = _sext((insn >> 12) & 0x1FF, 9)
            mode = (insn >> 10) & 3
            ea = base if mode == 0b01 else base + imm9   # post-index uses the old base
        return MemAccess(ea & _MASK64, size, is_load, rt)
    # Register pair: opc 101 V mode L imm7 Rt2 Rn Rt
    if insn & 0x3A00_0000 == 0x2800_0000:
        if insn & (1 << 26):
            return None
        mode = (insn >> 23) & 3
        if mode == 0:
            return None  # no-allocate pair: treated as not decoded
        opc = insn >> 30
        regsize = 8 if opc == 0b10 else 4
        is_load = bool(insn & (1 << 22))
        imm7 = _sext((insn >> 15) & 0x7F, 7) * regsize
        base = reg(rn)
        ea = base if mode == 0b01 else base + imm7
        return MemAccess(ea & _MASK64, 2 * regsize, is_load, rt, (insn >> 10) & 0x1F)
    return None
