"""One virtual Cortex-R82 core on a Unicorn AArch64 instance.

Unicorn is a fast instruction engine with no exception, interrupt or timer
machinery (see shared/reference/unicorn-aarch64.md). This class supplies the
parts of the core a VMM needs from it:

* reset state as uvmm sets it, plus SCR_EL3/HCR_EL2 so that EL1 is AArch64
  and NS (otherwise ``eret`` sets PSTATE.IL and ``hvc`` is UNDEF);
* the R82 identity: MIDR/MPIDR through VPIDR_EL2/VMPIDR_EL2 (free: QEMU
  returns them to NS EL1 natively), the rest through the sysreg trap table;
* synchronous exceptions the guest takes itself, delivered to its vector
  table with ESR/FAR recovered from Unicorn's discarded exception state;
* hypercalls (hvc/smc) handed to the VM's trap handler inside the hook;
* stage-2 faults (accesses outside every mapped region) reported exactly,
  from range-limited unmapped-memory hooks that never cover RAM, for the VM
  to resolve by its fault mode (``skip_access`` steps over an ignored one);
* ``run()``, one ``emu_start``, classified into an ``Exit``.
"""

from __future__ import annotations

import collections
import ctypes
import struct
import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Protocol

from unicorn import (UC_ARCH_ARM64, UC_HOOK_CODE, UC_HOOK_MEM_FETCH_PROT,
                     UC_HOOK_MEM_UNMAPPED, UC_HOOK_MEM_WRITE_PROT, UC_MEM_FETCH_UNMAPPED,
                     UC_MEM_WRITE_UNMAPPED, UC_MODE_ARM, UC_PROT_ALL, UC_PROT_EXEC,
                     UC_PROT_READ, Uc, UcError)
from unicorn.unicorn_const import UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH
from unicorn import arm64_const as A
from unicorn.unicorn_py3.unicorn import uclib

from pyned.cpu import engine
from pyned.cpu.decode import MemAccess, decode_access
from pyned.cpu.hooks import CpReg, RawHooks
from pyned.cpu.exceptions import (BOOT_PSTATE, EC, ESR_IL, ExceptionKind, esr_ec, plan_entry,
                                  pstate_el)
from pyned.cpu.syndrome import SyndromeLayout
from pyned.cpu.sysregs import SysRegTable

# QEMU EXCP_* numbers passed to the interrupt hook.
EXCP_UDEF = 1
EXCP_SWI = 2
EXCP_PREFETCH_ABORT = 3
EXCP_DATA_ABORT = 4
EXCP_BKPT = 7
EXCP_HVC = 11
EXCP_SMC = 13

WFI_INSN = 0xD503207F
WFE_INSN = 0xD503205F
# MSR DAIFClr, #imm: 0xD50340FF with the immediate (D A I F) in CRm, bits 11:8.
DAIFCLR_MASK, DAIFCLR_BITS = 0xFFFFF0FF, 0xD50340FF
_B_MASK, _B_BITS = 0xFC000000, 0x14000000
_RET_MASK, _RET_BITS = 0xFFFFFC1F, 0xD65F0000
# (op0, op1, CRn, CRm, op2) of the maintenance that is broadcast to the inner
# shareable domain: IC IALLUIS, IC IVAU, and TLBI VMALLE1IS, VAE1IS,
# ASIDE1IS, VAAE1IS, VALE1IS, VAALE1IS.
IC_IVAU = (1, 3, 7, 5, 1)
BROADCAST_OPS = frozenset([(1, 0, 7, 1, 0), (1, 3, 7, 5, 1)]
                          + [(1, 0, 8, 3, op2) for op2 in (0, 1, 2, 3, 5, 7)])
# How far ahead (in instructions) to look for the unmask.
_UNMASK_SCAN = 64
# Reset VBAR_EL1 (architecturally UNKNOWN) to an address that is never RAM,
# so "the guest has no vector table yet" is simply "VBAR is not in RAM".
VBAR_RESET = 0xFFFF_FFFF_FFFF_F800
# A hand-over kick waits this long at most for the vCPU to be back in Python.
HAND_OVER_NS = 50_000
# emu_start needs an end address; one the guest can never reach.
_UNTIL = 0xFFFF_FFFF_FFFF_FFFC
# The same exception at the same PC this many times in a row is a fault loop.
_FAULT_LOOP_LIMIT = 64

SCTLR_M = 1 << 0
SCR_EL3_VALUE = 0x531    # NS | HCE | RW (+RES1): EL1 below runs AArch64, non-secure

_X_REGS = [getattr(A, f"UC_ARM64_REG_X{i}") for i in range(29)] + [A.UC_ARM64_REG_X29,
                                                                    A.UC_ARM64_REG_X30]


class _RawRegs:
    """General registers through the C API directly.

    The binding's ``reg_read``/``reg_write`` cost about 2 µs each; the raw call
    about 0.6 µs. Hypercalls touch several registers, so this is most of
    their cost (unicorn-aarch64.md, Q10).
    """

    def __init__(self, uc: Uc) -> None:
        # The same library, without the binding's argument prototypes, whose
        # conversions cost as much again as the call; and keeping the GIL
        # (PyDLL), since these calls never block and take less time than
        # releasing and re-taking it.
        lib = ctypes.PyDLL(uclib._name)
        self._uch = ctypes.c_void_p(uc._uch.value)
        self._buf = ctypes.c_uint64()
        self._ref = ctypes.byref(self._buf)
        self._read = lib.uc_reg_read
        self._write = lib.uc_reg_write
        self._ctx_save = lib.uc_context_save
        self._vmem_read = lib.uc_vmem_read
        self._vmem_translate = lib.uc_vmem_translate
        self._mem_read = lib.uc_mem_read
        for fn in (self._read, self._write, self._ctx_save, self._vmem_read,
                   self._vmem_translate, self._mem_read):
            fn.argtypes = None
            fn.restype = ctypes.c_int
        self._word = ctypes.c_uint32()
        self._pa = ctypes.c_uint64()
        self._cp = CpReg()
        self._cp_ref = ctypes.byref(self._cp)
        # Exception entry reads four registers and writes up to nine: one
        # batch call each instead of a call per register.
        self._read_batch = lib.uc_reg_read_batch
        self._write_batch = lib.uc_reg_write_batch
        for fn in (self._read_batch, self._write_batch):
            fn.argtypes = None
            fn.restype = ctypes.c_int
        self._in_ids = (ctypes.c_int * 4)(A.UC_ARM64_REG_PSTATE, A.UC_ARM64_REG_SP,
                                          A.UC_ARM64_REG_SP_EL1, A.UC_ARM64_REG_VBAR_EL1)
        self._in = (ctypes.c_uint64 * 4)()
        self._in_ptrs = (ctypes.c_void_p * 4)(*(ctypes.addressof(self._in) + 8 * i
                                                for i in range(4)))
        self._out_ids = (ctypes.c_int * 9)()
        self._out = (ctypes.c_uint64 * 9)()
        self._out_ptrs = (ctypes.c_void_p * 9)()
        self._spsr = CpReg(op0=3, op1=0, crn=4, crm=0, op2=0)     # SPSR_EL1
        # Any coprocessor-register write rebuilds QEMU's cached hflags, which
        # a PSTATE write leaves stale; SCR_EL3 gets its constant value again.
        self._rebuild = CpReg(op0=3, op1=6, crn=1, crm=1, op2=0, val=SCR_EL3_VALUE)
        self._out_base = ctypes.addressof(self._out)
        self._spsr_at = ctypes.addressof(self._spsr)
        self._rebuild_at = ctypes.addressof(self._rebuild)

    def save_context(self, ctx: object) -> None:
        """``context_update`` without the binding's wrapper."""
        self._ctx_save(self._uch, ctx)

    def read_word_virt(self, va: int, prot: int) -> int | None:
        """A 32-bit word at a virtual address through the guest's MMU, or None if unmapped."""
        if self._vmem_read(self._uch, ctypes.c_uint64(va), prot, ctypes.byref(self._word), 4):
            return None
        return self._word.value

    def read_word_phys(self, pa: int) -> int | None:
        if self._mem_read(self._uch, ctypes.c_uint64(pa), ctypes.byref(self._word), 4):
            return None
        return self._word.value

    def translate(self, va: int, prot: int) -> int | None:
        if self._vmem_translate(self._uch, ctypes.c_uint64(va), prot, ctypes.byref(self._pa)):
            return None
        return self._pa.value

    def read(self, reg: int) -> int:
        # Some registers (PSTATE, for one) are written as 32 bits: clear the rest.
        self._buf.value = 0
        self._read(self._uch, reg, self._ref)
        return self._buf.value

    def write(self, reg: int, value: int) -> None:
        self._buf.value = value & 0xFFFF_FFFF_FFFF_FFFF
        self._write(self._uch, reg, self._ref)

    def cpr_read(self, op0: int, op1: int, crn: int, crm: int, op2: int) -> int:
        """A system register by encoding (the binding's ``cpr_read`` costs several µs)."""
        cp = self._cp
        cp.op0, cp.op1, cp.crn, cp.crm, cp.op2, cp.val = op0, op1, crn, crm, op2, 0
        self._read(self._uch, A.UC_ARM64_REG_CP_REG, self._cp_ref)
        return cp.val

    def cpr_write(self, op0: int, op1: int, crn: int, crm: int, op2: int, value: int) -> None:
        cp = self._cp
        cp.op0, cp.op1, cp.crn, cp.crm, cp.op2, cp.val = op0, op1, crn, crm, op2, value
        self._write(self._uch, A.UC_ARM64_REG_CP_REG, self._cp_ref)

    def entry_state(self) -> tuple[int, int, int, int]:
        """PSTATE, SP, SP_EL1 and VBAR_EL1, in one call."""
        regs = self._in
        regs[0] = 0    # PSTATE is written as 32 bits
        self._read_batch(self._uch, self._in_ids, self._in_ptrs, 4)
        return regs[0], regs[1], regs[2], regs[3]

    def write_entry(self, spsr: int, elr: int, esr: int | None, far: int | None,
                    sp_el0: int | None, sp: int | None, pstate: int, pc: int) -> None:
        """Exception entry's writes in one call, in this order (None: left as it is).

        SP_EL0 and SP come before PSTATE, which changes which stack SP is; the
        hflags rebuild comes after it.
        """
        ids, out, ptrs, base = self._out_ids, self._out, self._out_ptrs, self._out_base
        self._spsr.val = spsr
        ids[0], ptrs[0] = A.UC_ARM64_REG_CP_REG, self._spsr_at
        n = 1
        for reg, value in ((A.UC_ARM64_REG_ELR_EL1, elr), (A.UC_ARM64_REG_ESR_EL1, esr),
                           (A.UC_ARM64_REG_FAR_EL1, far), (A.UC_ARM64_REG_SP_EL0, sp_el0),
                           (A.UC_ARM64_REG_SP, sp), (A.UC_ARM64_REG_PSTATE, pstate)):
            if value is not None:
                ids[n], out[n], ptrs[n] = reg, value & 0xFFFF_FFFF_FFFF_FFFF, base + 8 * n
                n += 1
        ids[n], ptrs[n] = A.UC_ARM64_REG_CP_REG, self._rebuild_at
        ids[n + 1], out[n + 1], ptrs[n + 1] = A.UC_ARM64_REG_PC, pc, base + 8 * (n + 1)
        self._write_batch(self._uch, ids, ptrs, n + 2)


def _sign_extend(value: int, bits: int) -> int:
    sign = 1 << (bits - 1)
    return (value & (sign - 1)) - (value & sign)


def _is_control_flow(insn: int) -> bool:
    """Whether execution may not simply fall through to the next instruction."""
    return (insn & 0x7C000000 == 0x14000000        # B, BL
            or insn & 0x7E000000 == 0x34000000     # CBZ, CBNZ
            or insn & 0x7E000000 == 0x36000000     # TBZ, TBNZ
            or insn & 0xFF000010 == 0x54000000     # B.cond
            or insn & 0xFE000000 == 0xD6000000     # BR, BLR, RET, ERET
            or insn & 0xFF000000 == 0xD4000000     # SVC, HVC, SMC, BRK, HLT
            or insn in (WFI_INSN, WFE_INSN))


class ExitKind(Enum):
    WFI = "wfi"            # the guest executed wfi: idle until an event
    PREEMPT = "preempt"    # stopped from outside (kick): time slice, interrupt, pause
    STOP = "stop"          # a trap handler asked the run loop to act (payload says what)
    FATAL = "fatal"        # the guest is in a state it cannot leave: the VM must halt
    UNBACKED = "unbacked"  # an access outside the VM's memory (payload: FaultReport)


_EXIT_NAMES = {kind: kind.value for kind in ExitKind}   # Enum.value is a slow descriptor


@dataclass
class FaultReport:
    """Why a VM cannot continue: what uvmm prints before halting a VM."""

    cause: str
    pc: int
    esr: int = 0
    far: int = 0
    detail: str = ""
    recent_exits: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.cause}: pc={self.pc:#x} esr={self.esr:#010x} (EC {esr_ec(self.esr):#04x}) "
                f"far={self.far:#x}" + (f" - {self.detail}" if self.detail else ""))


@dataclass
class Exit:
    kind: ExitKind
    payload: object = None


class TrapHandler(Protocol):
    """What the VM does with traps the vCPU cannot resolve itself."""

    def hypercall(self, vcpu: "Vcpu", conduit: str, imm: int) -> None: ...

    def vector_ok(self, first: int, last: int) -> bool: ...

    def maintenance(self, cpu: int, what: str, page: int | None) -> None: ...


class Vcpu:
    """A vCPU: Unicorn instance, reset state, trap hooks and exception entry."""

    def __init__(self, index: int, *, mpidr: int, midr: int, syndrome: SyndromeLayout,
                 sysregs: SysRegTable, traps: TrapHandler, broadcast: bool = False) -> None:
        self.index = index
        self.mpidr = mpidr
        self.uc = Uc(UC_ARCH_ARM64, UC_MODE_ARM)
        self._regs = _RawRegs(self.uc)
        self._syndrome = syndrome
        self._sysregs = sysregs
        self._traps = traps
        self._hypercall = traps.hypercall
        self.hypercalls = 0
        self.sysreg_traps = 0    # accesses the trap table emulated
        # Below patch level 4 a handled access to a register QEMU lacks ends the slice.
        self._step_unknown = engine.patch_level() < 4
        self.exceptions = 0      # exception entries made (synchronous and asynchronous)
        self.last_hypercall = 0
        self._ctx = self.uc.context_save()
        self._ctx_ptr = self._ctx.context
        self._read_syndrome = self._syndrome_reader(syndrome)
        counter = engine.insn_counter(self.uc)
        self._insns = ctypes.c_uint64.from_address(counter) if counter else None
        self._pending_exit: Exit | None = None
        self._kick_lock = threading.Lock()
        self._kicked = False
        # 0 while this vCPU is inside emu_start; a hand-over kick waits for 1.
        self._back = ctypes.c_int32(1)
        self._fault_key: tuple[int, int, int] | None = None
        self._fault_repeats = 0
        self._unmask_hook: int | None = None
        self._unmask_at = 0
        self._skip_at: int | None = None
        self._pending_sync: tuple[int, int, int, str] | None = None
        # (monotonic time, what, pc, esr): formatted only when a report needs it
        self.recent: collections.deque[tuple[float, str, int, int]] = collections.deque(maxlen=16)
        self.romd_fetch: int | None = None   # a fetch from a window mapped as MMIO went here
        self.exits: collections.Counter[str] = collections.Counter()
        # Host time inside emu_start: what the monitor can show of a guest's
        # work, since Unicorn counts no instructions.
        self.run_ns = 0
        self._run_since = 0
        self._init_el2_el3(midr)
        self._hooks = RawHooks(self.uc)
        self._stop_and_wait = engine.stop_and_wait(self.uc)
        self._hooks.intr(self._on_intr)
        if len(sysregs):
            self._hooks.sysreg(A.UC_ARM64_INS_MRS, self._on_mrs)
            self._hooks.sysreg(A.UC_ARM64_INS_MSR, self._on_msr)
            # Only the table's registers call into Python (where the engine can
            # filter); a guest's own MRS of SP_EL0 or TPIDR_EL1 stays native.
            engine.trap_sysregs(self.uc, sysregs.keys())
        if broadcast:
            # Each vCPU is its own Unicorn instance with its own TLB and
            # translations: the inner-shareable TLB and instruction-cache
            # maintenance a guest issues must reach its siblings.
            self._hooks.sysreg(A.UC_ARM64_INS_SYS, self._on_sys)
            engine.trap_sysregs(self.uc, BROADCAST_OPS)

    # -- set-up -------------------------------------------------------------

    def _syndrome_reader(self, layout: SyndromeLayout) -> Callable[[], tuple[int, int]]:
        """ESR and FAR of the exception being handled, as cheaply as the engine allows."""
        ptrs = engine.exception_pointers(self.uc)
        if ptrs is not None:
            esr = ctypes.c_uint32.from_address(ptrs[0])
            far = ctypes.c_uint64.from_address(ptrs[1])
            return lambda: (esr.value, far.value)
        # Stock engine: from a copy of the whole CPU context, at the offsets
        # the start-up self-test found.
        from_ctx = layout.reader(self._ctx)

        def read() -> tuple[int, int]:
            self._regs.save_context(self._ctx_ptr)
            return from_ctx()
        return read

    @property
    def instructions(self) -> int | None:
        """Guest instructions this vCPU has executed (None: the engine does not count)."""
        return self._insns.value if self._insns is not None else None

    def _init_el2_el3(self, midr: int) -> None:
        uc = self.uc
        uc.cpr_write(3, 6, 1, 1, 0, SCR_EL3_VALUE)
        uc.cpr_write(3, 4, 1, 1, 0, 1 << 31)      # HCR_EL2.RW: EL1 is AArch64
        uc.cpr_write(3, 4, 0, 0, 0, midr)         # VPIDR_EL2 -> MIDR_EL1 at EL1
        uc.cpr_write(3, 4, 0, 0, 5, self.mpidr | (1 << 31))  # VMPIDR_EL2 (bit 31 RES1)

    def map_ram(self, base: int, size: int, host_ptr: int) -> None:
        self.uc.mem_map_ptr(base, size, UC_PROT_ALL, host_ptr)

    def map_mmio(self, base: int, size: int, read_cb: Callable, write_cb: Callable) -> None:
        self._hooks.mmio(base, size, read_cb, write_cb)

    # -- windows that are memory or MMIO by turns (vm.py's romd windows) -------

    def map_rom(self, base: int, size: int, host_ptr: int) -> None:
        """Map host memory for loads and fetches; a store traps to ``trap_rom``'s callback."""
        self.uc.mem_map_ptr(base, size, UC_PROT_READ | UC_PROT_EXEC, host_ptr)
        # mem_map_ptr records the permissions but leaves the engine's view of
        # the memory writable; protecting it again makes it read-only there,
        # so that stores take the slow path and its WRITE_PROT hook.
        self.uc.mem_protect(base, size, UC_PROT_READ | UC_PROT_EXEC)

    def unmap(self, base: int, size: int) -> None:
        self.uc.mem_unmap(base, size)

    def trap_rom(self, base: int, size: int, on_store: Callable[[int, int, int], None]) -> None:
        """Hooks for a window that ``map_rom`` and ``map_mmio`` map by turns.

        ``on_store(address, size, value)`` runs inside a store to the
        read-only memory, which is then dropped; it may remap the window, and
        loads after the store in the same block already see the new mapping.
        A fetch from the window while it is MMIO (the engine cannot execute
        from MMIO) ends the slice with the stop "romd", ``romd_fetch`` = the
        address, and the PC on the instruction to fetch.
        """
        def store(_uc: Uc, _access: int, address: int, nbytes: int, value: int,
                  _ud: object) -> bool:
            on_store(address, nbytes, value)
            return True

        def fetch(_uc: Uc, _access: int, address: int, _nbytes: int, _value: int,
                  _ud: object) -> bool:
            self.romd_fetch = address
            self.request_exit(Exit(ExitKind.STOP, "romd"))
            return False

        end = base + size - 1
        self.uc.hook_add(UC_HOOK_MEM_WRITE_PROT, store, begin=base, end=end)
        self.uc.hook_add(UC_HOOK_MEM_FETCH_PROT, fetch, begin=base, end=end)

    def install_fault_hooks(self, mapped: list[tuple[int, int]]) -> None:
        """Hook every gap between mapped ranges: a guest access there is a stage-2 fault.

        The hooks are limited to the gaps because an unmapped-memory hook that
        spans RAM slows every guest store about seven-fold.
        """
        cursor = 0
        for base, size in sorted(mapped):
            if base > cursor:
                self.uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped, begin=cursor,
                                 end=base - 1)
            cursor = max(cursor, base + size)
        if cursor <= 0xFFFF_FFFF_FFFF_FFFF:
            self.uc.hook_add(UC_HOOK_MEM_UNMAPPED, self._on_unmapped, begin=cursor,
                             end=0xFFFF_FFFF_FFFF_FFFF)

    def reset(self, *, entry: int, x0: int = 0, x1: int = 0, x2: int = 0, x3: int = 0,
              pstate: int = BOOT_PSTATE) -> None:
        """uvmm's AArch64 boot state: x0..x3 as given, sp=0, EL1h with A/I/F masked."""
        uc = self.uc
        for reg in _X_REGS:
            uc.reg_write(reg, 0)
        for reg, val in ((A.UC_ARM64_REG_X0, x0), (A.UC_ARM64_REG_X1, x1),
                         (A.UC_ARM64_REG_X2, x2), (A.UC_ARM64_REG_X3, x3)):
            uc.reg_write(reg, val)
        uc.reg_write(A.UC_ARM64_REG_SP, 0)
        uc.reg_write(A.UC_ARM64_REG_SP_EL0, 0)
        uc.reg_write(A.UC_ARM64_REG_SP_EL1, 0)
        uc.reg_write(A.UC_ARM64_REG_VBAR_EL1, VBAR_RESET)
        uc.reg_write(A.UC_ARM64_REG_PC, entry)
        self.set_pstate(pstate)
        self._pending_exit = None
        self._fault_key = None
        self._fault_repeats = 0

    # -- registers ----------------------------------------------------------

    @property
    def pc(self) -> int:
        return self._regs.read(A.UC_ARM64_REG_PC)

    @pc.setter
    def pc(self, value: int) -> None:
        self._regs.write(A.UC_ARM64_REG_PC, value)

    def pc_from_any_thread(self) -> int:
        """PC for a report made on another thread (the clock's, while this vCPU may run).

        ``pc`` and the other fast accessors share one buffer with this vCPU's
        own thread: a read from elsewhere between its store into the buffer
        and Unicorn's use of it would write the wrong value into a register
        (measured: 63 of 200 000 register writes). The binding's call has a
        buffer of its own.
        """
        return self.uc.reg_read(A.UC_ARM64_REG_PC)

    def x(self, n: int) -> int:
        return self._regs.read(_X_REGS[n])

    @property
    def x0(self) -> int:
        return self._regs.read(A.UC_ARM64_REG_X0)

    @x0.setter
    def x0(self, value: int) -> None:
        self._regs.write(A.UC_ARM64_REG_X0, value)

    def set_x(self, n: int, value: int) -> None:
        self._regs.write(_X_REGS[n], value)

    @property
    def pstate(self) -> int:
        return self._regs.read(A.UC_ARM64_REG_PSTATE)

    @property
    def vbar(self) -> int:
        return self._regs.read(A.UC_ARM64_REG_VBAR_EL1)

    def set_pstate(self, value: int) -> None:
        self._regs.write(A.UC_ARM64_REG_PSTATE, value)
        # A PSTATE write leaves QEMU's cached hflags stale (CurrentEL keeps its
        # old value); any coprocessor-register write rebuilds them.
        self._regs.cpr_write(3, 6, 1, 1, 0, SCR_EL3_VALUE)

    def registers(self) -> dict[str, int]:
        """A snapshot for reports and the monitor (x0-x30, sp, pc, pstate, ...)."""
        uc = self.uc
        regs = {f"x{i}": uc.reg_read(r) for i, r in enumerate(_X_REGS)}
        regs.update(sp=uc.reg_read(A.UC_ARM64_REG_SP), pc=uc.reg_read(A.UC_ARM64_REG_PC),
                    pstate=uc.reg_read(A.UC_ARM64_REG_PSTATE),
                    elr_el1=uc.reg_read(A.UC_ARM64_REG_ELR_EL1),
                    esr_el1=uc.reg_read(A.UC_ARM64_REG_ESR_EL1),
                    far_el1=uc.reg_read(A.UC_ARM64_REG_FAR_EL1),
                    vbar_el1=uc.reg_read(A.UC_ARM64_REG_VBAR_EL1),
                    sp_el0=uc.reg_read(A.UC_ARM64_REG_SP_EL0),
                    sp_el1=uc.reg_read(A.UC_ARM64_REG_SP_EL1),
                    spsr_el1=uc.cpr_read(3, 0, 4, 0, 0),
                    # no named register ids for these in the binding
                    sctlr_el1=uc.cpr_read(3, 0, 1, 0, 0),
                    ttbr0_el1=uc.reg_read(A.UC_ARM64_REG_TTBR0_EL1),
                    ttbr1_el1=uc.reg_read(A.UC_ARM64_REG_TTBR1_EL1))
        return regs

    # -- running ------------------------------------------------------------

    def run(self) -> Exit:
        """Run until the guest idles, is stopped, or needs the run loop."""
        self._pending_exit = None
        start = self.pc
        self._run_since = time.perf_counter_ns()
        try:
            self._back.value = 0
            try:
                self.uc.emu_start(start, _UNTIL)
            finally:
                self._back.value = 1
            self._hooks.raise_pending()
        except UcError as err:
            if self._pending_exit is None:
                self._pending_exit = Exit(ExitKind.FATAL, self._report(
                    f"emulator error: {err}", self.pc))
        self.run_ns += time.perf_counter_ns() - self._run_since
        self._run_since = 0
        with self._kick_lock:
            kicked, self._kicked = self._kicked, False
        if self._skip_at is not None:
            # Unicorn reports the block's start after a stop from an
            # instruction hook; the hook saw the true PC.
            self._regs.write(A.UC_ARM64_REG_PC, self._skip_at + 4)
            self._skip_at = None
        if self._pending_sync is not None:
            esr, far, pc, cause = self._pending_sync
            self._pending_sync = None
            self._regs.write(A.UC_ARM64_REG_PC, pc)
            report = self.enter_sync(esr, far, pc, cause)
            if report is not None:
                self._pending_exit = Exit(ExitKind.FATAL, report)
        if self._pending_exit is not None:
            exit_ = self._pending_exit
        elif not kicked and self._after_wfi():
            # A kicked slice that also reached a wfi counts as preempted: the
            # wfi completes early, which the architecture allows.
            exit_ = Exit(ExitKind.WFI)
        else:
            exit_ = Exit(ExitKind.PREEMPT, kicked)
        # By reason: a stop counts as what it was for (sysreg, unmasked, cpu_off, standby).
        self.exits[exit_.payload if exit_.kind is ExitKind.STOP else _EXIT_NAMES[exit_.kind]] += 1
        return exit_

    def run_time_ns(self) -> int:
        """Host time spent inside the emulator so far, the running slice included (any thread).

        A vCPU alone on its core can stay in one slice for seconds. Read from
        another thread, the sum may briefly miss a slice that just ended.
        """
        total, since = self.run_ns, self._run_since
        return total + (time.perf_counter_ns() - since if since else 0)

    def watch_unmask(self, daif_bits: int) -> bool:
        """Stop right after the guest's next ``msr daifclr`` that clears ``daif_bits``.

        MSR-immediate cannot be hooked, so an interrupt that is pending while
        masked would otherwise wait for the next slice boundary. Straight-line
        code (following unconditional branches) is scanned from PC for the
        unmask, and a code hook on the single instruction after it ends the
        slice there. The path may also leave the current function once
        through ``ret``: an idle routine (``wfi; ret``) returns to the caller
        that unmasks. Returns False if no unmask is in reach.
        """
        self.unwatch()
        addr = self.pc
        returned = False
        for _ in range(_UNMASK_SCAN):
            insn = self.fetch(addr)
            if insn is None:
                return False
            if insn & _RET_MASK == _RET_BITS and not returned:
                addr = self.x((insn >> 5) & 31) if (insn >> 5) & 31 != 31 else 0
                returned = True
                continue
            if insn & DAIFCLR_MASK == DAIFCLR_BITS and (insn >> 8) & daif_bits:
                after = addr + 4
                self._unmask_hook = self.uc.hook_add(UC_HOOK_CODE, self._on_unmasked,
                                                     begin=after, end=after)
                # Code hooks are compiled into translations: code that already
                # ran (an idle loop) must be translated again to see it.
                self._unmask_at = after
                self._drop_translation(after)
                return True
            if insn & _B_MASK == _B_BITS:
                addr += _sign_extend(insn & 0x3FF_FFFF, 26) * 4
                continue
            if _is_control_flow(insn):
                return False
            addr += 4
        return False

    def unwatch(self) -> None:
        if self._unmask_hook is not None:
            self.uc.hook_del(self._unmask_hook)
            self._unmask_hook = None
            self._drop_translation(self._unmask_at)

    def _drop_translation(self, va: int) -> None:
        try:
            self.uc.ctl_remove_cache(va, va + 4)
        except UcError:
            pass  # not mapped now: nothing translated there either

    def _on_unmasked(self, uc: Uc, address: int, size: int, _ud: object) -> None:
        self.request_exit(Exit(ExitKind.STOP, "unmasked"))

    def _after_wfi(self) -> bool:
        return self.fetch(self.pc - 4) == WFI_INSN

    @property
    def mmu_on(self) -> bool:
        return bool(self._regs.cpr_read(3, 0, 1, 0, 0) & SCTLR_M)   # SCTLR_EL1

    def fetch(self, va: int) -> int | None:
        """The instruction word at ``va`` as the guest sees it (through its MMU if on)."""
        if self.mmu_on:
            return self._regs.read_word_virt(va, UC_PROT_EXEC)
        return self._regs.read_word_phys(va)

    def translate(self, va: int) -> int | None:
        """The physical address a load at ``va`` reaches now (current EL), or None if it faults."""
        if not self.mmu_on:
            return va
        return self._regs.translate(va, UC_PROT_READ)

    def access_at_pc(self) -> MemAccess | None:
        """The memory access of the instruction at PC (address physical), if a load/store."""
        pc = self.pc
        insn = self.fetch(pc)
        if insn is None:
            return None
        access = decode_access(insn, self._base_reg, pc)
        if access is None:
            return None
        pa = self.translate(access.address)
        return None if pa is None else replace(access, address=pa)

    def _base_reg(self, n: int) -> int:
        return self.uc.reg_read(A.UC_ARM64_REG_SP if n == 31 else _X_REGS[n])

    def kick(self, hand_over: bool = False) -> None:
        """Ask a running vCPU to return from ``run()`` soon (any thread).

        ``hand_over``: the caller's work is done and the vCPU's is urgent (a
        deadline that preempts it). The caller then waits, its GIL released,
        until the vCPU's thread is back in Python (at most HAND_OVER_NS), so
        that thread finds the GIL free instead of sleeping on it (engine.py,
        patch level 5).
        """
        with self._kick_lock:
            self._kicked = True
        if hand_over and self._stop_and_wait is not None and not self._back.value:
            self._stop_and_wait(self._back, HAND_OVER_NS)
        else:
            self._hooks.stop()

    @property
    def kick_pending(self) -> bool:
        """A kick that the next ``run()`` will answer by returning at once."""
        return self._kicked

    def request_exit(self, exit_: Exit) -> None:
        """From a hook: end this ``run()`` with ``exit_`` (first request wins)."""
        if self._pending_exit is None:
            self._pending_exit = exit_
        self._hooks.stop()

    # -- hooks --------------------------------------------------------------

    def _on_intr(self, intno: int) -> None:
        esr, far = self._read_syndrome()
        if intno == EXCP_HVC or intno == EXCP_SMC:
            # Hot path (a guest's hypercalls): no PC read, no clock, no formatting;
            # only the latest one is kept for reports.
            self.last_hypercall = esr
            self.hypercalls += 1
            self._hypercall(self, "hvc" if intno == EXCP_HVC else "smc", esr & 0xFFFF)
            return
        pc = self.pc
        if intno in (EXCP_UDEF, EXCP_SWI, EXCP_BKPT, EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT):
            # svc's preferred return is the next instruction (where Unicorn left
            # PC); the others return to the faulting instruction itself.
            kind_note = {EXCP_UDEF: "undefined", EXCP_SWI: "svc", EXCP_BKPT: "brk",
                         EXCP_PREFETCH_ABORT: "prefetch abort", EXCP_DATA_ABORT: "data abort"}[intno]
            if intno not in (EXCP_PREFETCH_ABORT, EXCP_DATA_ABORT):
                far = 0
            self.recent.append((time.monotonic(), kind_note, pc, esr))
            # Entered after the slice, not here: registers written from this
            # hook (PC above all) race with an asynchronous stop in Unicorn,
            # which then resumes a later block at the PC of an earlier one
            # (measured: a guest's system call loop lost or repeated
            # instructions under a 100 us kick; tests/cpu/test_vcpu.py).
            self._pending_sync = (esr, far, pc, kind_note)
            self.request_exit(Exit(ExitKind.STOP, "exception"))
            return
        self.request_exit(Exit(ExitKind.FATAL, self._report(
            f"unexpected emulator exception {intno}", pc, esr, far)))

    def enter_sync(self, esr: int, far: int, return_pc: int, cause: str) -> FaultReport | None:
        """Deliver a synchronous exception; returns why not if the guest cannot take it."""
        # A guest that faults again and again on the same access (same PC,
        # syndrome and address) never gets past it. A system call returns past
        # itself, so one in a loop is progress, and is not counted.
        if esr_ec(esr) != EC.SVC64:
            key = (return_pc, esr, far)
            if key == self._fault_key:
                self._fault_repeats += 1
            else:
                self._fault_key, self._fault_repeats = key, 0
            if self._fault_repeats >= _FAULT_LOOP_LIMIT:
                return self._report(f"recursive fault loop ({cause})", return_pc, esr, far)
        if not self.enter(ExceptionKind.SYNC, return_pc, esr=esr, far=far):
            return self._report(f"{cause} with no vector table (VBAR_EL1={self.vbar:#x})",
                                return_pc, esr, far)
        return None

    def enter(self, kind: ExceptionKind, return_pc: int, *, esr: int | None = None,
              far: int | None = None) -> bool:
        """Exception entry if the guest has a vector table it can reach; False if not.

        With the MMU off VBAR_EL1 must lie in RAM. With it on, VBAR is a
        virtual address of the EL1 regime, which the guest may not map while
        it runs at EL0 (KPTI's trampoline), so the vector is translated after
        entry, at EL1; a guest that maps it wrongly gets the VM halted here
        rather than a loop of aborts on its vector.
        """
        if not self.mmu_on:
            vbar = self.vbar
            if not self._traps.vector_ok(vbar, vbar + 0x7FC):
                return False
            self.take_exception(kind, return_pc, esr=esr, far=far)
            return True
        vector = self.take_exception(kind, return_pc, esr=esr, far=far)
        pa = self._regs.translate(vector, UC_PROT_EXEC)
        return pa is not None and self._traps.vector_ok(pa, pa + 0x7C)

    def take_exception(self, kind: ExceptionKind, return_pc: int, *, esr: int | None = None,
                       far: int | None = None) -> int:
        """Exception entry to EL1; returns the vector address now in PC."""
        self.exceptions += 1
        pstate, sp, sp_el1, vbar = self._regs.entry_state()
        plan = plan_entry(pstate, kind)
        vector = vbar + plan.vector_offset
        # QEMU's PSTATE write does not bank SP: do what hardware would.
        sp_el0, sp = (sp, sp_el1) if plan.switch_stack else (None, None)
        self._regs.write_entry(pstate, return_pc, esr, far, sp_el0, sp, plan.new_pstate, vector)
        return vector

    def _on_mrs(self, reg: int, cp: CpReg) -> int:
        # Plain tuple: equal to the table's SysRegKey and cheaper to build.
        entry = self._sysregs.get((cp.op0, cp.op1, cp.crn, cp.crm, cp.op2))
        if entry is None or entry.read is None:
            return 0
        value = entry.read(self.index)
        self.sysreg_traps += 1
        if reg != A.UC_ARM64_REG_XZR:
            self._regs.write(reg, value)
        if not entry.native and self._step_unknown:
            self._step_over_sysreg()
        return 1

    def _on_msr(self, reg: int, cp: CpReg) -> int:
        entry = self._sysregs.get((cp.op0, cp.op1, cp.crn, cp.crm, cp.op2))
        if entry is None or entry.write is None:
            return 0
        entry.write(self.index, cp.val)
        self.sysreg_traps += 1
        if not entry.native and self._step_unknown:
            self._step_over_sysreg()
        return 1

    def _on_sys(self, reg: int, cp: CpReg) -> int:
        key = (cp.op0, cp.op1, cp.crn, cp.crm, cp.op2)
        if key == IC_IVAU:
            # Siblings see other virtual mappings (or none, at EL0 under KPTI):
            # pass on the physical page, translated here where the VA is valid.
            pa = self._regs.translate(cp.val, UC_PROT_READ)
            self._traps.maintenance(self.index, "code", None if pa is None else pa & ~0xFFF)
        elif key in BROADCAST_OPS:
            self._traps.maintenance(self.index, "tlb" if key[2] == 8 else "code", None)
        return 0  # and let it run here as well

    def flush(self, tlb: bool, code_pages: set[int] | None) -> None:
        """Apply siblings' broadcast maintenance before this vCPU runs again.

        ``code_pages``: physical pages whose translations go; None: all of them.
        """
        if tlb:
            self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
        if code_pages is None:
            self.uc.ctl_flush_tb()
            return
        for page in code_pages:
            if not engine.invalidate_phys(self.uc, page, 0x1000):
                self.uc.ctl_flush_tb()
                return

    def _step_over_sysreg(self) -> None:
        """End the slice on a register QEMU does not implement; run() steps over it.

        Returning "handled" does not move the PC past such a register, and
        writing the PC from inside the hook leaves QEMU's state inconsistent:
        a later asynchronous stop in the same run then reports that PC with
        registers from further on (measured: every stop after an ICC access
        in a loop lost one instruction). So the slice ends here, before the
        instruction re-runs, and the PC is stepped outside emulation.
        """
        self._skip_at = self._regs.read(A.UC_ARM64_REG_PC)
        self.request_exit(Exit(ExitKind.STOP, "sysreg"))

    def _on_unmapped(self, uc: Uc, access: int, address: int, size: int, value: int,
                     _ud: object) -> bool:
        pc = uc.reg_read(A.UC_ARM64_REG_PC)
        if access == UC_MEM_FETCH_UNMAPPED:
            esr = (EC.IABT_LOW << 26) | ESR_IL | 0x0F  # level-3 permission (MPU) fault
            cause = "stage-2 fault: instruction fetch outside the VM's memory"
        else:
            wnr = 1 << 6 if access == UC_MEM_WRITE_UNMAPPED else 0
            sas = {1: 0, 2: 1, 4: 2, 8: 3}.get(size, 2)
            esr = (EC.DABT_LOW << 26) | ESR_IL | (sas << 22) | wnr | 0x0F
            what = "write" if wnr else "read"
            cause = f"stage-2 fault: {what} of {size} bytes outside the VM's memory"
        self._pending_exit = Exit(ExitKind.UNBACKED, self._report(cause, pc, esr, address))
        return False

    def skip_access(self, pc: int) -> None:
        """Step over the load/store at ``pc`` as uvmm's fault mode ``ignore`` does.

        A load the decoder understands reads as zero (both registers of a
        pair); other instructions are only stepped over, like uvmm, which
        can write back only what the syndrome describes. No base-register
        writeback happens.
        """
        try:
            insn = struct.unpack("<I", self.uc.mem_read(pc, 4))[0]
        except UcError:
            insn = 0
        access = decode_access(insn, self._base_reg, pc)
        if access is not None and access.is_load:
            for rt in (access.rt, access.rt2):
                if rt is not None and rt != 31:   # register 31 is XZR for a load's target
                    self._regs.write(_X_REGS[rt], 0)
        self._regs.write(A.UC_ARM64_REG_PC, pc + 4)

    # -- reporting ----------------------------------------------------------

    def recent_exits(self) -> list[str]:
        out = []
        if self.recent:
            last = self.recent[-1][0]
            out = [f"{t - last:+.6f}s {what} at {pc:#x} esr={esr:#010x}"
                   for t, what, pc, esr in self.recent]
        if self.hypercalls:
            out.append(f"{self.hypercalls} hypercalls, the last with esr={self.last_hypercall:#010x}")
        return out

    def _report(self, cause: str, pc: int, esr: int = 0, far: int = 0) -> FaultReport:
        el = pstate_el(self.uc.reg_read(A.UC_ARM64_REG_PSTATE))
        return FaultReport(cause=cause, pc=pc, esr=esr, far=far, detail=f"EL{el}",
                           recent_exits=self.recent_exits())
