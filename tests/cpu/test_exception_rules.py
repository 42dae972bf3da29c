"""Exception entry against the ARM ARM rules (D1.10), without an emulator."""

import pytest

from pyned.cpu.exceptions import (PSTATE_A, PSTATE_D, PSTATE_F, PSTATE_I, ExceptionKind,
                                  can_take, plan_entry)

EL0T = 0b0000
EL1T = 0b0100
EL1H = 0b0101
DAIF = PSTATE_D | PSTATE_A | PSTATE_I | PSTATE_F


@pytest.mark.parametrize("mode,group,switch", [
    (EL1T, 0x000, True),    # current EL with SP_EL0
    (EL1H, 0x200, False),   # current EL with SP_ELx
    (EL0T, 0x400, True),    # lower EL, AArch64
    (0x10, 0x600, True),    # lower EL, AArch32 (M[4] set)
])
@pytest.mark.parametrize("kind", list(ExceptionKind))
def test_vector_offset_and_stack(mode, group, switch, kind):
    plan = plan_entry(mode | 0x6000_0000, kind)
    assert plan.vector_offset == group + 0x80 * kind
    assert plan.switch_stack is switch
    assert plan.new_pstate & 0xF == EL1H
    assert plan.new_pstate & DAIF == DAIF
    assert plan.new_pstate & (1 << 21) == 0 and plan.new_pstate & (1 << 20) == 0


def test_masking():
    assert can_take(EL1H, ExceptionKind.IRQ)
    assert not can_take(EL1H | PSTATE_I, ExceptionKind.IRQ)
    assert not can_take(EL1H | PSTATE_F, ExceptionKind.FIQ)
    assert not can_take(EL1H | PSTATE_A, ExceptionKind.SERROR)
    assert can_take(EL1H | DAIF, ExceptionKind.SYNC)
