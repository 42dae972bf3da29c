"""The vCPU on real Unicorn: boot state, identity, exception entry, faults, hypercalls.

Guest code is hand-encoded A64 so these tests need no cross compiler.
"""

import ctypes
import mmap
import struct

import pytest

from pyned.cpu.sysregs import SysRegTable, identity_registers
from pyned.cpu.vcpu import Exit, ExitKind, Vcpu
from pyned.platform.board import R82_MIDR

BASE = 0x100000
SIZE = 0x10000


def svc(i): return 0xD4000001 | i << 5
def hvc(i): return 0xD4000002 | i << 5
def brk(i): return 0xD4200000 | i << 5
def movz(rd, imm): return 0xD2800000 | imm << 5 | rd


UDF = 0x00000000
WFI = 0xD503207F
ERET = 0xD69F03E0
MRS_MIDR = 0xD5380001           # mrs x1, midr_el1
MRS_MPIDR = 0xD53800A2          # mrs x2, mpidr_el1
MRS_MMFR0 = 0xD5380703          # mrs x3, id_aa64mmfr0_el1
MRS_CURRENTEL = 0xD5384244      # mrs x4, CurrentEL
MRS_ESR = 0xD538520A           # mrs x10, esr_el1
MRS_ELR = 0xD538402B           # mrs x11, elr_el1
MRS_SPSR = 0xD538400C          # mrs x12, spsr_el1
MOV_X13_SP = 0x910003ED             # mov x13, sp


class Traps:
    def __init__(self):
        self.calls = []

    def hypercall(self, vcpu, conduit, imm):
        self.calls.append((conduit, imm, vcpu.pc))
        if imm == 0x77:
            vcpu.request_exit(Exit(ExitKind.STOP, "done"))
        else:
            vcpu.set_x(0, 0x1234)

    def vector_ok(self, first, last):
        return BASE <= first and last < BASE + SIZE


@pytest.fixture
def cpu(syndrome):
    mem = mmap.mmap(-1, SIZE)
    ptr = ctypes.addressof(ctypes.c_char.from_buffer(mem))
    table = SysRegTable()
    identity_registers(table, mmfr0_native=0x1124, mpu_regions=32, counter_hz=62_500_000)
    traps = Traps()
    v = Vcpu(0, mpidr=0x1, midr=R82_MIDR, syndrome=syndrome, sysregs=table, traps=traps)
    v.map_ram(BASE, SIZE, ptr)
    v.install_fault_hooks([(BASE, SIZE)])

    def load(addr, words):
        off = addr - BASE
        mem[off : off + 4 * len(words)] = struct.pack(f"<{len(words)}I", *words)

    v.load, v.traps, v._mem = load, traps, mem
    return v


def test_boot_state_and_r82_identity(cpu):
    cpu.load(BASE, [MRS_MIDR, MRS_MPIDR, MRS_MMFR0, MRS_CURRENTEL, hvc(0x77)])
    cpu.reset(entry=BASE, x0=0xD7B)
    assert cpu.x(0) == 0xD7B and cpu.pstate & 0x3FF == 0x1C5
    assert cpu.run().kind == ExitKind.STOP
    assert cpu.x(1) == R82_MIDR
    assert cpu.x(2) == 0x8000_0001
    assert (cpu.x(3) >> 48) & 0xFF == 0x2F       # MSA=0xF, MSA_frac=2: PMSA + VMSA
    assert cpu.x(4) == 1 << 2                    # EL1


def test_hypercall_returns_in_place(cpu):
    cpu.load(BASE, [movz(0, 5), hvc(3), hvc(0x77)])
    cpu.reset(entry=BASE)
    cpu.run()
    assert cpu.traps.calls[0] == ("hvc", 3, BASE + 8)
    assert cpu.x(0) == 0x1234


def run_past_exceptions(cpu):
    """Run as the VM's loop does: a synchronous exception ends a slice, entered."""
    while True:
        exit_ = cpu.run()
        if not (exit_.kind == ExitKind.STOP and exit_.payload == "exception"):
            return exit_


def setup_vectors(cpu, offset):
    vbar = BASE + 0x8000
    cpu.load(vbar + offset, [MRS_ESR, MRS_ELR, MRS_SPSR, MOV_X13_SP, hvc(0x77)])
    cpu.uc.reg_write(__import__("unicorn").arm64_const.UC_ARM64_REG_VBAR_EL1, vbar)


@pytest.mark.parametrize("insn,esr,ret_off", [
    (svc(0x42), 0x56000042, 4),   # EC 0x15; preferred return after the svc
    (brk(0x55), 0xF2000055, 0),   # EC 0x3C; return to the brk
    (UDF, 0x02000000, 0),         # EC 0x00
])
def test_sync_exception_from_el1h(cpu, insn, esr, ret_off):
    cpu.load(BASE, [insn])
    cpu.reset(entry=BASE)
    setup_vectors(cpu, 0x200)
    cpu.set_x(0, 0)
    from unicorn.arm64_const import UC_ARM64_REG_SP
    cpu.uc.reg_write(UC_ARM64_REG_SP, BASE + 0x7000)
    assert run_past_exceptions(cpu).kind == ExitKind.STOP
    assert cpu.x(10) == esr
    assert cpu.x(11) == BASE + ret_off
    assert cpu.x(12) & 0x3FF == 0x1C5
    assert cpu.x(13) == BASE + 0x7000            # EL1h keeps its stack


def test_svc_from_el0_uses_lower_el_vector_and_banks_sp(cpu):
    from unicorn.arm64_const import UC_ARM64_REG_SP, UC_ARM64_REG_SP_EL0, UC_ARM64_REG_SP_EL1
    cpu.load(BASE, [svc(1)])
    cpu.reset(entry=BASE, pstate=0x0)            # EL0t, interrupts unmasked
    setup_vectors(cpu, 0x400)
    cpu.uc.reg_write(UC_ARM64_REG_SP_EL1, BASE + 0x6000)
    cpu.uc.reg_write(UC_ARM64_REG_SP, BASE + 0x5000)
    assert run_past_exceptions(cpu).kind == ExitKind.STOP
    assert cpu.x(10) == 0x56000001
    assert cpu.x(12) == 0x0
    assert cpu.x(13) == BASE + 0x6000
    assert cpu.uc.reg_read(UC_ARM64_REG_SP_EL0) == BASE + 0x5000


def test_fault_without_vector_table_is_fatal(cpu):
    cpu.load(BASE, [UDF])
    cpu.reset(entry=BASE)
    exit_ = cpu.run()
    assert exit_.kind == ExitKind.FATAL
    assert "no vector table" in exit_.payload.cause and exit_.payload.pc == BASE


def test_recursive_fault_loop_is_fatal(cpu):
    cpu.load(BASE, [UDF])
    cpu.load(BASE + 0x8200, [UDF])   # the handler faults on its own first instruction
    cpu.reset(entry=BASE)
    setup_vectors(cpu, 0x1000)       # vectors elsewhere; 0x200 slot is the udf above
    exit_ = run_past_exceptions(cpu)
    assert exit_.kind == ExitKind.FATAL and "loop" in exit_.payload.cause


# EL0: add x5, #1; svc #0; add x6, #1; b -12 -- EL1 lower-EL sync vector:
# add x7, #1; eret. At every stop the counters say where the guest must be.
_SVC_LOOP = [0x910004A5, 0xD4000001, 0x910004C6, 0x17FFFFFD]
_SVC_HANDLER = [0x910004E7, 0xD69F03E0]


def test_system_calls_under_asynchronous_stops_never_repeat_or_lose_instructions(cpu):
    # Entering an exception from inside Unicorn's interrupt hook raced with
    # asynchronous stops: the guest resumed a later block at an earlier PC.
    import threading
    import time
    from unicorn.arm64_const import UC_ARM64_REG_SP_EL1

    cpu.load(BASE, _SVC_LOOP)
    cpu.reset(entry=BASE, pstate=0x0)
    setup_vectors(cpu, 0x400)
    cpu.load(BASE + 0x8400, _SVC_HANDLER)
    cpu.uc.reg_write(UC_ARM64_REG_SP_EL1, BASE + 0x6000)
    expected = {BASE: (0, 0), BASE + 0x8400: (1, 1), BASE + 8: (1, 0)}
    done = threading.Event()

    def kicker():
        while not done.is_set():
            time.sleep(0.0001)
            cpu.kick()

    thread = threading.Thread(target=kicker, daemon=True)
    thread.start()
    wrong, slices, deadline = [], 0, time.monotonic() + 1.0
    try:
        while time.monotonic() < deadline:
            exit_ = cpu.run()
            assert exit_.kind in (ExitKind.PREEMPT, ExitKind.STOP)
            slices += 1
            x5, x6, x7 = cpu.x(5), cpu.x(6), cpu.x(7)
            want = expected.get(cpu.pc)
            if want is not None and want != (x5 - x6, x5 - x7):
                wrong.append((hex(cpu.pc), x5 - x6, x5 - x7))
    finally:
        done.set()
        thread.join()
    assert slices > 100 and cpu.x(7) > 100
    assert wrong == []


@pytest.mark.skipif(__import__("pyned.cpu.engine").cpu.engine.patch_level() < 5,
                    reason="the engine has no stop that waits")
def test_a_hand_over_kick_returns_once_the_vcpu_is_out_of_the_engine(cpu):
    import threading
    import time

    cpu.load(BASE, [0x14000000])                 # b .
    cpu.reset(entry=BASE)
    exits = []
    thread = threading.Thread(target=lambda: exits.append(cpu.run()), daemon=True)
    thread.start()
    time.sleep(0.05)
    t0 = time.perf_counter()
    cpu.kick(hand_over=True)
    waited = time.perf_counter() - t0
    # The kick returned once the vCPU's thread was out of the engine, back in
    # Python. (That thread may give the GIL back before run() ends, at any
    # call that releases it, so the exit itself is only certain after join.)
    assert cpu._back.value == 1
    assert waited < 1.0
    thread.join(1)
    assert exits and exits[0].kind == ExitKind.PREEMPT and exits[0].payload is True


def test_a_system_call_loop_is_not_a_fault_loop(cpu):
    cpu.load(BASE, [svc(1), 0x17FFFFFF])         # svc #1; b .-4
    cpu.load(BASE + 0x8400, [0xD69F03E0])        # eret
    cpu.reset(entry=BASE, pstate=0x0)
    setup_vectors(cpu, 0x1000)
    cpu.uc.reg_write(__import__("unicorn").arm64_const.UC_ARM64_REG_VBAR_EL1, BASE + 0x8000)
    for _ in range(200):
        assert cpu.run().kind != ExitKind.FATAL


@pytest.mark.parametrize("code,cause,far", [
    ([movz(0, 0x10), 0xF9400001], "read of 8 bytes", 0x10),       # ldr x1, [x0]
    ([movz(0, 0x10), 0x39000001], "write of 1 bytes", 0x10),      # strb w1, [x0]
])
def test_stage2_data_fault_report(cpu, code, cause, far):
    cpu.load(BASE, code)
    cpu.reset(entry=BASE)
    exit_ = cpu.run()
    assert exit_.kind == ExitKind.UNBACKED
    rep = exit_.payload
    assert cause in rep.cause and rep.far == far and rep.pc == BASE + 4
    assert rep.esr >> 26 == 0x24


def test_skip_access_zeroes_a_loads_registers_and_steps_over_it(cpu):
    # ldp x1, x2, [x0] from an unmapped address; then hvc to stop
    cpu.load(BASE, [movz(0, 0x10), 0xA9400801, hvc(0x77)])
    cpu.reset(entry=BASE)
    cpu.set_x(1, 5)
    cpu.set_x(2, 6)
    exit_ = cpu.run()
    assert exit_.kind == ExitKind.UNBACKED
    cpu.skip_access(exit_.payload.pc)
    assert cpu.pc == BASE + 8 and cpu.x(1) == 0 and cpu.x(2) == 0
    assert cpu.run().kind == ExitKind.STOP


def test_stage2_fetch_fault(cpu):
    cpu.reset(entry=0x40000)
    exit_ = cpu.run()
    assert exit_.kind == ExitKind.UNBACKED and exit_.payload.esr >> 26 == 0x20
    assert exit_.payload.pc == 0x40000


def test_wfi_exit_and_resume(cpu):
    cpu.load(BASE, [WFI, hvc(0x77)])
    cpu.reset(entry=BASE)
    assert cpu.run().kind == ExitKind.WFI
    assert cpu.pc == BASE + 4
    assert cpu.run().kind == ExitKind.STOP


def test_kick_from_another_thread(cpu):
    import threading
    cpu.load(BASE, [0x14000000])  # b .
    cpu.reset(entry=BASE)
    t = threading.Timer(0.05, cpu.kick)
    t.start()
    exit_ = cpu.run()
    assert exit_.kind == ExitKind.PREEMPT and exit_.payload is True


def test_pstate_read_after_a_64_bit_register_read_has_no_stale_bits(cpu):
    # PSTATE is returned as 32 bits by the C API; the 64-bit buffer must not
    # keep the upper half of a previous read (that once leaked into SPSR_EL1).
    cpu.reset(entry=BASE, x1=0xDEADBEEF_CAFEF00D)
    assert cpu.x(1) == 0xDEADBEEF_CAFEF00D
    assert cpu.pstate >> 32 == 0


def test_unmask_watch_stops_in_code_that_already_ran(cpu):
    # A loop that masks and unmasks IRQs has been translated before the watch is
    # set (the masked wait idiom): the watch must still end the slice after the unmask.
    import threading
    daifset, nop, daifclr, back = 0xD50342DF, 0xD503201F, 0xD50342FF, 0x17FFFFFC
    cpu.load(BASE, [daifset, nop, daifclr, nop, back])
    cpu.reset(entry=BASE)
    threading.Timer(0.02, cpu.kick).start()
    assert cpu.run().kind == ExitKind.PREEMPT
    for _ in range(3):
        cpu.pc = BASE
        assert cpu.watch_unmask(0b0010)
        guard = threading.Timer(2.0, cpu.kick)
        guard.start()
        exit_ = cpu.run()
        guard.cancel()
        cpu.unwatch()
        assert (exit_.kind, exit_.payload, cpu.pc) == (ExitKind.STOP, "unmasked", BASE + 12)


def test_a_pc_read_on_another_thread_never_changes_what_the_vcpu_writes(cpu):
    # Reports (the watchdog, the hang detector) read PC on the clock thread
    # while the vCPU's own thread writes registers.
    import threading

    cpu.reset(entry=BASE)
    stop = threading.Event()

    def reports():
        while not stop.is_set():
            cpu.pc_from_any_thread()

    reader = threading.Thread(target=reports)
    reader.start()
    wrong = 0
    try:
        for _ in range(50_000):
            cpu.set_x(5, 0x1111)
            wrong += cpu.x(5) != 0x1111
    finally:
        stop.set()
        reader.join()
    assert wrong == 0
