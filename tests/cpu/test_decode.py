import pytest

from pyned.cpu.decode import decode_access

REGS = {0: 0x1000, 2: 0x2000, 4: 0x4000, 5: 3, 31: 0x8000}


def reg(n):
    return REGS.get(n, 0)


@pytest.mark.parametrize("insn,addr,size,load", [
    (0xB9400801, 0x1008, 4, True),     # ldr w1, [x0, #8]
    (0x381FDC41, 0x1FFD, 1, False),    # strb w1, [x2, #-3]!
    (0xF8410483, 0x4000, 8, True),     # ldr x3, [x4], #16 (post-index: old base)
    (0xA9BF0BE1, 0x7FF0, 16, False),   # stp x1, x2, [sp, #-16]!
    (0x29410801, 0x1008, 8, True),     # ldp w1, w2, [x0, #8]
    (0x78A57801, 0x1006, 2, True),     # ldrsh x1, [x0, x5, lsl #1]
    (0xB81FC001, 0x0FFC, 4, False),    # stur w1, [x0, #-4]
    (0x580000A9, 0x100 + 0x14, 8, True),  # ldr x9, literal (pc 0x100)
])
def test_decoded_accesses(insn, addr, size, load):
    acc = decode_access(insn, reg, 0x100)
    assert (acc.address, acc.size, acc.is_load) == (addr, size, load)


@pytest.mark.parametrize("insn", [0xC85FFC01, 0xF9800000, 0x3DC00000, 0x00000000, 0x14000000])
def test_not_decoded(insn):
    # exclusives, prefetch, SIMD&FP, udf, branch
    assert decode_access(insn, reg, 0) is None
