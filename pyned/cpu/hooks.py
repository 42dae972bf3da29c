"""Unicorn hooks registered through the C API instead of the Python binding.

The binding wraps every callback in two Python layers, and for the MRS/MSR
hook builds a named tuple from the register descriptor; measured on this
project's machine, a trapped system-register read costs about 10 µs through
the binding and 1.2 µs through a plain ``ctypes`` callback. Hypercalls, the
GIC's system registers and MMIO are hot paths (an interrupt is an acknowledge
and an end of interrupt), so pyned registers those hooks itself.

A callback must not raise into C (``ctypes`` would print the error and go
on); each one here records the first exception, stops the emulation, and
``raise_pending`` hands it to the run loop once ``emu_start`` has returned,
which is what the binding does too.
"""

from __future__ import annotations

import ctypes
from typing import Callable

from unicorn import UC_HOOK_INSN, UC_HOOK_INTR, UcError
from unicorn.unicorn_py3.unicorn import uclib


class CpReg(ctypes.Structure):
    """Unicorn's ``uc_arm64_cp_reg``: the encoding of the accessed register and its value."""
    _fields_ = [("crn", ctypes.c_uint32), ("crm", ctypes.c_uint32), ("op0", ctypes.c_uint32),
                ("op1", ctypes.c_uint32), ("op2", ctypes.c_uint32), ("val", ctypes.c_uint64)]


_INTR = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint32, ctypes.c_void_p)
_SYSREG = ctypes.CFUNCTYPE(ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int,
                           ctypes.POINTER(CpReg), ctypes.c_void_p)
_MMIO_READ = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint,
                              ctypes.c_void_p)
_MMIO_WRITE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_uint,
                               ctypes.c_uint64, ctypes.c_void_p)

# Callback signatures as pyned's handlers see them.
IntrFn = Callable[[int], None]                     # (intno)
SysregFn = Callable[[int, CpReg], int]             # (destination register, encoding) -> handled
MmioReadFn = Callable[[object, int, int, object], int]        # (_, offset, size, _) -> value
MmioWriteFn = Callable[[object, int, int, int, object], None]  # (_, offset, size, value, _)


class RawHooks:
    """The hooks of one Unicorn instance that bypass the binding."""

    def __init__(self, uc: object) -> None:
        lib = ctypes.CDLL(uclib._name)
        self._uch = ctypes.c_void_p(uc._uch.value)  # type: ignore[attr-defined]
        self._hook_add = lib.uc_hook_add
        self._hook_add.restype = ctypes.c_int
        self._mmio_map = lib.uc_mmio_map
        self._mmio_map.restype = ctypes.c_int
        self._stop = lib.uc_emu_stop
        self._stop.argtypes = [ctypes.c_void_p]
        # The C function pointers must live as long as the instance uses them;
        # MMIO callbacks by base, since a window may be unmapped and mapped again.
        self._keep: list[object] = []
        self._mmio: dict[int, tuple[object, object]] = {}
        self.error: BaseException | None = None

    def _failed(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stop()

    def stop(self) -> None:
        """``uc_emu_stop`` with the GIL released and no binding layer (any thread)."""
        self._stop(self._uch)

    def raise_pending(self) -> None:
        """Re-raise the first exception a callback hit during the last ``emu_start``."""
        if self.error is not None:
            exc, self.error = self.error, None
            raise exc

    def _add(self, htype: int, cfn: object, *extra: object) -> None:
        handle = ctypes.c_size_t()
        err = self._hook_add(self._uch, ctypes.byref(handle), ctypes.c_int(htype), cfn, None,
                             ctypes.c_uint64(1), ctypes.c_uint64(0), *extra)
        if err:
            raise UcError(err)
        self._keep.append(cfn)

    def intr(self, fn: IntrFn) -> None:
        def cb(_uc: int, intno: int, _ud: object) -> None:
            try:
                fn(intno)
            except BaseException as exc:  # noqa: BLE001 - handed to the run loop
                self._failed(exc)
        self._add(UC_HOOK_INTR, _INTR(cb))

    def sysreg(self, insn: int, fn: SysregFn) -> None:
        """``fn(reg, cp)`` for MRS/MSR/SYS (``insn``); ``cp`` is only valid during the call."""
        def cb(_uc: int, reg: int, cp: object, _ud: object) -> int:
            try:
                return fn(reg, cp[0])  # type: ignore[index]
            except BaseException as exc:  # noqa: BLE001
                self._failed(exc)
                return 0
        self._add(UC_HOOK_INSN, _SYSREG(cb), ctypes.c_int(insn))

    def mmio(self, base: int, size: int, read: MmioReadFn, write: MmioWriteFn) -> None:
        def rd(uc: int, offset: int, size: int, ud: object) -> int:
            try:
                return read(uc, offset, size, ud)
            except BaseException as exc:  # noqa: BLE001
                self._failed(exc)
                return 0

        def wr(uc: int, offset: int, size: int, value: int, ud: object) -> None:
            try:
                write(uc, offset, size, value, ud)
            except BaseException as exc:  # noqa: BLE001
                self._failed(exc)

        cbs = (_MMIO_READ(rd), _MMIO_WRITE(wr))
        err = self._mmio_map(self._uch, ctypes.c_uint64(base), ctypes.c_size_t(size),
                             cbs[0], None, cbs[1], None)
        if err:
            raise UcError(err)
        self._mmio[base] = cbs
