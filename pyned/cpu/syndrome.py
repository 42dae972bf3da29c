"""Reading the syndrome of an exception Unicorn has just discarded.

Unicorn calls the interrupt hook and throws the exception away, but the
pending ``env->exception`` (syndrome, fsr, vaddress, target_el) is still in
the CPU state that ``context_update`` copies out. Its offset in that blob is a
property of the Unicorn build, so it is found, and proven, at start-up by
making a scratch core raise exceptions whose syndromes are known.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Callable
from dataclasses import dataclass

from unicorn import UC_ARCH_ARM64, UC_HOOK_INTR, UC_MODE_ARM, Uc
from unicorn.unicorn import UcContext
from unicorn.arm64_const import UC_ARM64_REG_PC

from pyned.errors import SelfTestError

# Measured for the unicorn==2.1.4 x86_64 wheel; tried first, then searched.
KNOWN_SYNDROME_OFFSET = 3064

# svc #0x5a5a; brk #0xa5; b .
_PROBE_CODE = struct.pack("<III", 0xD40B4B41, 0xD42014A0, 0x14000000)
_PROBE_BASE = 0x1000
_EXPECTED = (0x56005A5A, 0xF20000A5)


@dataclass(frozen=True)
class SyndromeLayout:
    """Where ESR and FAR of the pending exception sit in a context blob."""

    esr_offset: int

    @property
    def far_offset(self) -> int:
        return self.esr_offset + 8

    def read(self, blob: bytes | bytearray | memoryview) -> tuple[int, int]:
        esr = struct.unpack_from("<I", blob, self.esr_offset)[0]
        far = struct.unpack_from("<Q", blob, self.far_offset)[0]
        return esr, far

    def reader(self, ctx: UcContext) -> Callable[[], tuple[int, int]]:
        """Read ESR/FAR straight from a context Unicorn updates in place (no 12 KiB copy)."""
        base = ctypes.cast(ctx.context, ctypes.c_void_p).value or 0
        esr = ctypes.c_uint32.from_address(base + self.esr_offset)
        far = ctypes.c_uint64.from_address(base + self.far_offset)
        return lambda: (esr.value, far.value)


def probe_syndrome_layout() -> SyndromeLayout:
    """Run the self-test; raise SelfTestError if Unicorn's layout is not understood."""
    uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
    uc.mem_map(0, 0x2000)
    uc.mem_write(_PROBE_BASE, _PROBE_CODE)
    ctx = uc.context_save()
    blobs: list[bytes] = []

    def on_intr(uc: Uc, intno: int, _ud: object) -> None:
        uc.context_update(ctx)
        blobs.append(bytes(ctx))
        pc = uc.reg_read(UC_ARM64_REG_PC)
        # brk leaves PC on the instruction; step over it so the probe ends.
        if intno == 7:
            uc.reg_write(UC_ARM64_REG_PC, pc + 4)
        if len(blobs) == len(_EXPECTED):
            uc.emu_stop()

    uc.hook_add(UC_HOOK_INTR, on_intr)
    uc.emu_start(_PROBE_BASE, _PROBE_BASE + len(_PROBE_CODE), count=10)
    if len(blobs) != len(_EXPECTED):
        raise SelfTestError(f"unicorn self-test: expected {len(_EXPECTED)} exceptions, saw {len(blobs)}")
    candidates = [KNOWN_SYNDROME_OFFSET] + list(range(0, len(blobs[0]) - 4, 4))
    for off in candidates:
        if all(struct.unpack_from("<I", b, off)[0] == want for b, want in zip(blobs, _EXPECTED)):
            return SyndromeLayout(off)
    raise SelfTestError(
        "unicorn self-test: the exception syndrome is not in the saved CPU context; "
        "pyned needs unicorn==2.1.4")
