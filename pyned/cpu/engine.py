"""Which Unicorn library pyned runs on, and building the one it should run on.

Stock Unicorn 2.1.4 checks for a stop request after every guest load and
store, and when an asynchronous ``uc_emu_stop`` (a timer tick, another
vCPU's interrupt) is seen there it reports the PC of that access although the
access, and a load's destination register, have already taken effect. The
guest then runs the instruction twice: ``ldr x0, [x0]`` loads through its own
result, an MMIO read pops a FIFO twice (unicorn-aarch64.md; measured: three
asynchronous stops in four land there in a load loop).

pyned carries a small patch that drops that check (asynchronous stops wait
for the next block boundary, where the PC and registers agree; an invalid
access leaves the block by itself) and builds the library for AArch64 alone
from Unicorn's source release: ``pyned unicorn build``. The build lands in
pyned's cache folder and is picked up before Unicorn is first imported.
Without it pyned still runs, with the replay guard of ``vmm.bus`` covering
MMIO, and warns that guests may misbehave when the host is loaded.

Patch level 2 adds what a Python VMM needs to read cheaply: pointers to the
pending exception's syndrome and fault address (a hypercall then needs no
12 KiB context copy), and a count of guest instructions, kept by three TCG
ops at the start of each translation block, for instructions per second.

Patch level 3 adds two fixes that real operating systems need:

* Self-modifying code through an alias. Unicorn has no dirty-memory
  tracking: after one store through a non-executable mapping of a page it
  stops checking that mapping's stores for code, for good. A guest that
  writes code through such an alias (Linux patches its text through the
  linear map and a fixmap) then runs stale translations. Now a mapping's
  stores skip the check only while its page holds no translated code, and
  translating code on a page re-arms the check for every mapping of it (what
  QEMU's ``tlb_protect_code`` does with its dirty bitmap). Stores to pages
  without code, the MMU off included, then take the fast path.
* A block that returns "not started" gets its PC back even while code hooks
  exist. Unicorn skipped that restore whenever any code hook existed,
  assuming the hooks keep the PC in step; pyned's hooks cover one address
  (the instruction after a guest unmasks interrupts), so elsewhere nothing
  would. (Reached by a block that falls off its end, as after a trapped
  system register; not shown to matter otherwise.)
* Dropping translations by guest-physical address, for instruction-cache
  maintenance one vCPU broadcasts to the others (each vCPU is an instance
  with its own translations, and its own view of virtual addresses).
* A per-instance filter for the MRS/MSR/SYS instruction hook: only the
  encodings pyned traps call into Python; every other system-register access
  (Linux reads SP_EL0 and TPIDR_EL1 all the time) runs at native speed.

Patch level 4: a hooked access to a system register QEMU does not implement
(the GIC's ICC_* CPU interface) that the hook handled continues at the next
instruction. Unicorn placed the hook's "handled" branch after the undefined
instruction exception and so fell off the block's end with the PC still on
the access; pyned had to end the slice there and step over it from outside,
an exit and a re-entry for every interrupt acknowledge and end of interrupt.

Patch level 5: a stop that hands the GIL over. The vCPU leaves the engine
within about a microsecond of ``uc_emu_stop``, but the thread that stopped it
holds the GIL again by then, so the vCPU's thread sleeps on the GIL and the
host takes 15-30 µs to wake it once the GIL is free. ``uc_pyned_stop_and_wait``
stops and then spins (yielding the host CPU), its caller's GIL released,
until the vCPU's thread says it is back in Python or a time limit passes;
the stopping thread is then the one that waits for the GIL. That is what a
deadline that preempts a running vCPU wants: the vCPU has the urgent work.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterable

UNICORN_VERSION = "2.1.4"
PATCH_LEVEL = 5
LIB_NAME = "libunicorn.so.2"


def cache_root() -> Path:
    """pyned's cache folder: ``$PYNED_CACHE``, else ``$XDG_CACHE_HOME/pyned`` or ``~/.cache/pyned``."""
    return Path(os.environ.get("PYNED_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pyned"))


def cache_dir() -> Path:
    return cache_root() / f"unicorn-{UNICORN_VERSION}-pyned{PATCH_LEVEL}"


def select_library() -> None:
    """Point Unicorn's loader at the patched build if there is one (before ``import unicorn``)."""
    if "LIBUNICORN_PATH" in os.environ or "unicorn" in sys.modules:
        return
    if (cache_dir() / LIB_NAME).is_file():
        os.environ["LIBUNICORN_PATH"] = str(cache_dir())


def patch_level() -> int:
    """The running library's patch level (0: stock Unicorn)."""
    from unicorn.unicorn_py3.unicorn import uclib

    try:
        return int(uclib.uc_pyned_patch_level())
    except AttributeError:
        return 0


def patched() -> bool:
    """Whether asynchronous stops are exact (patch level 1 and later)."""
    return patch_level() >= 1


def exception_pointers(uc: object) -> tuple[int, int] | None:
    """Addresses of the pending exception's ESR (u32) and FAR (u64), if the engine has them."""
    if patch_level() < 2:
        return None
    lib = _raw_lib()
    handle = ctypes.c_void_p(uc._uch.value)  # type: ignore[attr-defined]
    esr, far = lib.uc_pyned_syndrome_ptr(handle), lib.uc_pyned_far_ptr(handle)
    return (esr, far) if esr and far else None


def insn_counter(uc: object) -> int | None:
    """Address of the instance's executed-instruction count (u64), if the engine keeps one."""
    if patch_level() < 2:
        return None
    return _raw_lib().uc_pyned_insn_counter(ctypes.c_void_p(uc._uch.value))  # type: ignore


def trap_sysregs(uc: object, keys: Iterable[tuple[int, int, int, int, int]]) -> bool:
    """Let only these (op0, op1, CRn, CRm, op2) reach ``uc``'s MRS/MSR/SYS hooks.

    Returns False on an engine without the filter: there every system
    register instruction calls the hook.
    """
    if patch_level() < 3:
        return False
    lib = _raw_lib()
    handle = ctypes.c_void_p(uc._uch.value)  # type: ignore[attr-defined]
    for op0, op1, crn, crm, op2 in keys:
        key = (op0 & 3) << 14 | op1 << 11 | crn << 7 | crm << 3 | op2
        if lib.uc_pyned_trap_sysreg(handle, key, 1) != 0:
            raise ValueError(f"cannot trap system register S{op0}_{op1}_C{crn}_C{crm}_{op2}")
    return True


def invalidate_phys(uc: object, pa: int, length: int) -> bool:
    """Drop ``uc``'s translations of [pa, pa+length); False if the engine cannot."""
    if patch_level() < 3:
        return False
    lib = _raw_lib()
    return lib.uc_pyned_invalidate_phys(ctypes.c_void_p(uc._uch.value), pa, length) == 0  # type: ignore


def stop_and_wait(uc: object) -> Callable[[ctypes.c_int32, int], bool] | None:
    """``fn(back, max_ns)``: stop ``uc``, then wait until ``back`` is non-zero (patch level 5).

    The wait releases the GIL; True if ``back`` was set within ``max_ns``.
    """
    if patch_level() < 5:
        return None
    fn = _raw_lib().uc_pyned_stop_and_wait
    handle = ctypes.c_void_p(uc._uch.value)  # type: ignore[attr-defined]
    return lambda back, max_ns: fn(handle, ctypes.addressof(back), max_ns) == 1


def _raw_lib() -> ctypes.CDLL:
    from unicorn.unicorn_py3.unicorn import uclib

    lib = ctypes.CDLL(uclib._name)
    for name in ("uc_pyned_syndrome_ptr", "uc_pyned_far_ptr", "uc_pyned_insn_counter"):
        fn = getattr(lib, name)
        fn.argtypes = [ctypes.c_void_p]
        fn.restype = ctypes.c_void_p
    if hasattr(lib, "uc_pyned_invalidate_phys"):
        lib.uc_pyned_invalidate_phys.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint64]
        lib.uc_pyned_invalidate_phys.restype = ctypes.c_int
    if hasattr(lib, "uc_pyned_stop_and_wait"):
        lib.uc_pyned_stop_and_wait.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        lib.uc_pyned_stop_and_wait.restype = ctypes.c_int
    if hasattr(lib, "uc_pyned_trap_sysreg"):
        lib.uc_pyned_trap_sysreg.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int]
        lib.uc_pyned_trap_sysreg.restype = ctypes.c_int
    return lib


# The patch, as exact edits of Unicorn's source: each must match once, so a
# different release fails loudly instead of building something unknown.
_MEM_CHECK = '''// pyned: nothing is checked after a guest load or store. An asynchronous
// stop seen there would report the access's PC after the access had taken
// effect; such stops wait for the next block. An access to unmapped memory
// leaves the block from the access itself (cputlb.c), so the check, a helper
// call after every load and store, is not needed for that either.
static void check_exit_request_mem(TCGContext *tcg_ctx)
{
}

static void tcg_gen_req_mo(TCGContext *tcg_ctx, TCGBar type)'''

# Counting at the start of a block counts a block left early (an exception) in
# full; that is the error of an instruction count per block, well under 1 %.
_COUNT_START = '''static inline void gen_tb_start(TCGContext *tcg_ctx, TranslationBlock *tb)
{
    // pyned: uc->pyned_insns += this block's instruction count, patched in by
    // gen_tb_end once the count is known (as QEMU's icount does).
    {
        TCGv_ptr pcount = tcg_const_ptr(tcg_ctx, &tcg_ctx->uc->pyned_insns);
        TCGv_i64 count = tcg_temp_new_i64(tcg_ctx);
        TCGv_i64 n = tcg_temp_new_i64(tcg_ctx);
        tcg_gen_movi_i64(tcg_ctx, n, 0);
        tcg_ctx->pyned_count_insn = tcg_last_op(tcg_ctx);
        tcg_gen_ld_i64(tcg_ctx, count, pcount, 0);
        tcg_gen_add_i64(tcg_ctx, count, count, n);
        tcg_gen_st_i64(tcg_ctx, count, pcount, 0);
        tcg_temp_free_i64(tcg_ctx, n);
        tcg_temp_free_i64(tcg_ctx, count);
        tcg_temp_free_ptr(tcg_ctx, pcount);
    }'''

_COUNT_END = '''    if (tcg_ctx->pyned_count_insn != NULL) {
        tcg_set_insn_param(tcg_ctx->pyned_count_insn, 1, num_insns);
        tcg_ctx->pyned_count_insn = NULL;
    }
    tcg_gen_exit_tb(tcg_ctx, tb, TB_EXIT_REQUESTED);'''

_AARCH64_EXPORTS = '''

// pyned: where the pending exception's syndrome and fault address live, so an
// interrupt hook reads them without copying the whole CPU context.
UNICORN_EXPORT
uint32_t *uc_pyned_syndrome_ptr(uc_engine *uc)
{
    if (uc->cpu == NULL) {
        return NULL;
    }
    return &((CPUARMState *)uc->cpu->env_ptr)->exception.syndrome;
}

UNICORN_EXPORT
uint64_t *uc_pyned_far_ptr(uc_engine *uc)
{
    if (uc->cpu == NULL) {
        return NULL;
    }
    return &((CPUARMState *)uc->cpu->env_ptr)->exception.vaddress;
}
'''
_PROTECT_OLD = """void tlb_protect_code(struct uc_struct *uc, ram_addr_t ram_addr)
{
    cpu_physical_memory_test_and_clear_dirty(ram_addr, TARGET_PAGE_SIZE,
                                             DIRTY_MEMORY_CODE);
}"""
_PROTECT_NEW = """void tlb_protect_code(struct uc_struct *uc, ram_addr_t ram_addr)
{
    // pyned: the page now holds code, so stores through any mapping of it
    // must take the notdirty path (and invalidate) again.
    if (uc->cpu) {
        tlb_reset_dirty(uc->cpu, (uintptr_t)qemu_map_ram_ptr(uc, NULL, ram_addr),
                        TARGET_PAGE_SIZE);
    }
}"""
_PAGE_FIND = """static inline PageDesc *page_find(struct uc_struct *uc, tb_page_addr_t index)
{
    return page_find_alloc(uc, index, 0);
}
"""
_PAGE_HAS_CODE = """// pyned: whether translated code still lives on this page of RAM.
bool pyned_page_has_code(struct uc_struct *uc, ram_addr_t ram_addr)
{
    PageDesc *p = page_find(uc, ram_addr >> TARGET_PAGE_BITS);
    return p != NULL && p->first_tb != (uintptr_t)NULL;
}

// pyned: drop the translations of a guest-physical range (another vCPU's
// instruction-cache maintenance; Unicorn's own call takes a virtual address).
UNICORN_EXPORT
int uc_pyned_invalidate_phys(struct uc_struct *uc, uint64_t pa, uint64_t len)
{
    MemoryRegion *mr = uc->memory_mapping(uc, pa);
    ram_addr_t start;

    if (mr == NULL || mr->ram_block == NULL || len == 0) {
        return -1;
    }
    start = memory_region_get_ram_addr(mr) + (pa - mr->addr);
    tb_invalidate_phys_range(uc, start, start + len);
    return 0;
}

"""
_HOOK_LOOP_OLD = """        if (!HOOK_BOUND_CHECK(hook, s->pc_curr)) {
            continue;
        }

        switch (hook->insn) {
            case UC_ARM64_INS_MRS: {"""
_HOOK_LOOP_NEW = """        if (!HOOK_BOUND_CHECK(hook, s->pc_curr)) {
            continue;
        }

        // pyned: with a filter set, only the encodings it names reach the hook.
        if (uc->pyned_sysreg_traps) {
            uint32_t key = ((op0 & 3) << 14) | (op1 << 11) | (crn << 7) | (crm << 3) | op2;
            if (!(uc->pyned_sysreg_traps[key >> 3] & (1 << (key & 7)))) {
                continue;
            }
        }

        switch (hook->insn) {
            case UC_ARM64_INS_MRS: {"""
_SYSREG_FILTER_API = """// pyned: trap (on != 0) or stop trapping one system-register encoding
// (op0:2 op1:3 CRn:4 CRm:4 op2:3) through the MRS/MSR/SYS/SYSL hook. The first
// call turns the filter on: encodings never named run natively.
UNICORN_EXPORT
uc_err uc_pyned_trap_sysreg(uc_engine *uc, uint32_t key, int on)
{
    if (key > 0xffff) {
        return UC_ERR_ARG;
    }
    if (uc->pyned_sysreg_traps == NULL) {
        uc->pyned_sysreg_traps = g_malloc0(0x10000 / 8);
    }
    if (on) {
        uc->pyned_sysreg_traps[key >> 3] |= 1 << (key & 7);
    } else {
        uc->pyned_sysreg_traps[key >> 3] &= ~(1 << (key & 7));
    }
    // Hooks are chosen when code is translated.
    if (uc->init_done) {
        uc->tb_flush(uc);
    }
    return UC_ERR_OK;
}

"""

_STOP_AND_WAIT_API = """#include <sched.h>

// pyned: uc_emu_stop, then wait (spinning: this is for microseconds) until
// the emulating thread has set *back, or max_ns have passed. 1: it did.
UNICORN_EXPORT
int uc_pyned_stop_and_wait(uc_engine *uc, volatile int32_t *back, uint64_t max_ns)
{
    struct timespec t0, t;
    int64_t waited;

    uc_emu_stop(uc);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!__atomic_load_n(back, __ATOMIC_ACQUIRE)) {
        // The stopped thread may be waiting for this host CPU.
        sched_yield();
        clock_gettime(CLOCK_MONOTONIC, &t);
        waited = (int64_t)(t.tv_sec - t0.tv_sec) * 1000000000 + (t.tv_nsec - t0.tv_nsec);
        if (waited >= (int64_t)max_ns) {
            return 0;
        }
    }
    return 1;
}

"""

_HANDLED_OLD = """static void may_gen_set_label(DisasContext *s, TCGLabel *label) {
    if (label) {
        gen_set_label(s->uc->tcg_ctx, label);
    }
}
"""
_HANDLED_NEW = _HANDLED_OLD + """
// pyned: the hook handled an access QEMU would refuse: leave the block at the
// next instruction (what follows the refusal is never reached otherwise).
static void pyned_gen_handled(DisasContext *s, TCGLabel *label)
{
    if (label) {
        gen_set_label(s->uc->tcg_ctx, label);
        gen_a64_set_pc_im(s->uc->tcg_ctx, s->base.pc_next);
        tcg_gen_exit_tb(s->uc->tcg_ctx, NULL, 0);
    }
}
"""
_REFUSED_OLD = "        unallocated_encoding(s);\n        may_gen_set_label(s, label);\n        return;"

_EDITS: list[tuple[str, str, str, int]] = [
    # (file, old, new, occurrences of old); tcg-op.c's call sites are edited by line
    ("qemu/tcg/tcg-op.c", "static void tcg_gen_req_mo(TCGContext *tcg_ctx, TCGBar type)", _MEM_CHECK, 1),
    ("qemu/include/tcg/tcg.h", "void check_exit_request(TCGContext *tcg_ctx);",
     "void check_exit_request(TCGContext *tcg_ctx);\n#define UC_EXIT_CHECK_AFTER_MEM 2", 1),
    ("qemu/accel/tcg/tcg-runtime.c",
     "void HELPER(check_exit_request)(void *p, uint32_t in_delay_slot) {\n    uc_engine *uc = p;\n",
     "void HELPER(check_exit_request)(void *p, uint32_t in_delay_slot) {\n    uc_engine *uc = p;\n"
     "\n    if (in_delay_slot & UC_EXIT_CHECK_AFTER_MEM) {\n"
     "        if (uc->invalid_error == UC_ERR_OK) {\n            return;\n        }\n"
     "        in_delay_slot &= ~UC_EXIT_CHECK_AFTER_MEM;\n    }\n", 1),
    ("uc.c", "UNICORN_EXPORT\nuc_err uc_hook_del(uc_engine *uc, uc_hook hh)",
     f"UNICORN_EXPORT\nint uc_pyned_patch_level(void)\n{{\n    return {PATCH_LEVEL};\n}}\n\n"
     "UNICORN_EXPORT\nuint64_t *uc_pyned_insn_counter(uc_engine *uc)\n{\n"
     "    return &uc->pyned_insns;\n}\n\n"
     + _SYSREG_FILTER_API + _STOP_AND_WAIT_API
     + "UNICORN_EXPORT\nuc_err uc_hook_del(uc_engine *uc, uc_hook hh)", 1),
    ("include/uc_priv.h", "    bool init_done;       // Whether the initialization is done.\n",
     "    bool init_done;       // Whether the initialization is done.\n"
     "    uint64_t pyned_insns; // pyned: guest instructions executed\n", 1),
    ("qemu/include/tcg/tcg.h", "    TCGOp *icount_start_insn;\n",
     "    TCGOp *icount_start_insn;\n    TCGOp *pyned_count_insn;\n", 1),
    ("qemu/include/exec/gen-icount.h",
     "static inline void gen_tb_start(TCGContext *tcg_ctx, TranslationBlock *tb)\n{",
     _COUNT_START, 1),
    ("qemu/include/exec/gen-icount.h",
     "    tcg_gen_exit_tb(tcg_ctx, tb, TB_EXIT_REQUESTED);", _COUNT_END, 1),
    ("qemu/target/arm/unicorn_aarch64.c", "static void reg_reset(struct uc_struct *uc)\n",
     _AARCH64_EXPORTS.lstrip("\n") + "\nstatic void reg_reset(struct uc_struct *uc)\n", 1),
    # With no check after stores, an unhandled store to unmapped memory leaves
    # the block itself, as an unhandled load already does.
    ("qemu/accel/tcg/cputlb.c",
     '            // printf("***** Invalid memory write at " TARGET_FMT_lx "\\n", addr);\n'
     "            cpu_exit(uc->cpu);\n            return;",
     '            // printf("***** Invalid memory write at " TARGET_FMT_lx "\\n", addr);\n'
     "            cpu_exit(uc->cpu);\n            cpu_loop_exit_restore(uc->cpu, retaddr);", 1),
    # Stale code through aliases (see the module docstring).
    ("qemu/accel/tcg/cputlb.c", _PROTECT_OLD, _PROTECT_NEW, 1),
    ("qemu/accel/tcg/cputlb.c", "            !(tlbe->addr_code != -1) &&\n",
     "            !pyned_page_has_code(cpu->uc, ram_addr) &&\n", 1),
    ("qemu/accel/tcg/cputlb.c", "static void notdirty_write(CPUState *cpu, vaddr mem_vaddr,",
     "bool pyned_page_has_code(struct uc_struct *uc, ram_addr_t ram_addr);\n\n"
     "static void notdirty_write(CPUState *cpu, vaddr mem_vaddr,", 1),
    ("qemu/accel/tcg/translate-all.c", _PAGE_FIND, _PAGE_FIND + "\n" + _PAGE_HAS_CODE, 1),
    # The system-register hook filter.
    ("include/uc_priv.h", "    bool skip_sync_pc_on_exit;\n};",
     "    bool skip_sync_pc_on_exit;\n    uint8_t *pyned_sysreg_traps; // bit per encoding\n};", 1),
    ("uc.c", "    g_free(uc->l1_map);\n", "    g_free(uc->l1_map);\n    g_free(uc->pyned_sysreg_traps);\n", 1),
    ("qemu/target/arm/translate-a64.c", _HOOK_LOOP_OLD, _HOOK_LOOP_NEW, 1),
    # Handled accesses to registers QEMU lacks go on in the same slice.
    ("qemu/target/arm/translate-a64.c", _HANDLED_OLD, _HANDLED_NEW, 1),
    ("qemu/target/arm/translate-a64.c", _REFUSED_OLD,
     _REFUSED_OLD.replace("may_gen_set_label", "pyned_gen_handled"), 2),
    ("qemu/accel/tcg/cpu-exec.c",
     "        if (!HOOK_EXISTS(env->uc, UC_HOOK_CODE)) {\n            // We should sync pc for R/W error.",
     "        {   // pyned: also with code hooks; none ran, the block never started\n"
     "            // We should sync pc for R/W error.", 1),
]
# The six checks after loads and stores in tcg-op.c, and nothing else.
_MEM_CHECKS = 6


class BuildError(Exception):
    pass


def apply_patch(src: Path) -> None:
    """Edit an unpacked Unicorn ``src/`` tree in place."""
    tcg_op = src / "qemu/tcg/tcg-op.c"
    lines = tcg_op.read_text().split("\n")
    calls = [i for i, line in enumerate(lines) if line.strip() == "check_exit_request(tcg_ctx);"]
    if len(calls) != _MEM_CHECKS:
        raise BuildError(f"{tcg_op.name}: expected {_MEM_CHECKS} checks after loads and stores, "
                         f"found {len(calls)}")
    for i in calls:
        lines[i] = lines[i].replace("check_exit_request(", "check_exit_request_mem(")
    tcg_op.write_text("\n".join(lines))
    for rel, old, new, count in _EDITS:
        path = src / rel
        text = path.read_text()
        found = text.count(old)
        if count and found != count:
            raise BuildError(f"{rel}: expected {count} match(es) of a patch anchor, found {found}")
        path.write_text(text.replace(old, new))


def build(dest: Path | None = None, log=print) -> Path:
    """Fetch Unicorn's source release with pip, patch it, build it for AArch64 only."""
    dest = dest or cache_dir()
    for tool in ("cmake", "cc"):
        if shutil.which(tool) is None:
            raise BuildError(f"building Unicorn needs {tool} (Debian: apt-get install cmake gcc make)")
    with tempfile.TemporaryDirectory(prefix="pyned-unicorn-") as tmp:
        work = Path(tmp)
        log(f"fetching the unicorn {UNICORN_VERSION} source release")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", "-d", str(work), f"unicorn=={UNICORN_VERSION}"],
                       check=True)
        archive = next(work.glob("unicorn-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(work, filter="data")
        src = work / f"unicorn-{UNICORN_VERSION}" / "src"
        apply_patch(src)
        build_dir = work / "build"
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        log("building libunicorn for AArch64 (about two minutes on two cores)")
        subprocess.run(["cmake", "-S", str(src), "-B", str(build_dir), *generator,
                        "-DCMAKE_BUILD_TYPE=Release", "-DUNICORN_ARCH=aarch64",
                        "-DUNICORN_BUILD_TESTS=off"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "unicorn", "-j",
                        str(os.cpu_count() or 2)], check=True, stdout=subprocess.DEVNULL)
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build_dir / LIB_NAME, dest / (LIB_NAME + ".tmp"))
        os.replace(dest / (LIB_NAME + ".tmp"), dest / LIB_NAME)
    log(f"installed {dest / LIB_NAME}")
    return dest / LIB_NAME
