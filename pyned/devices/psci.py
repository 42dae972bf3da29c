"""PSCI 1.0 (Arm DEN 0022) as an SMCCC service, DT binding ``arm,psci*``.

The model decodes function IDs, checks arguments and produces the return
codes; what the calls *do* to vCPUs and the VM is the VMM's, reached through
the ``PsciPlatform`` port. As in uvmm, CPU_SUSPEND is treated as standby,
MIGRATE_INFO_TYPE says there is no trusted OS, SYSTEM_OFF exits the VM with
0 and SYSTEM_RESET with 0x66.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Callable, Protocol

SMC64 = 0x4000_0000
PSCI_BASE = 0x8400_0000
PSCI_VERSION_1_0 = 0x0001_0000


class PsciFn(IntEnum):
    VERSION = 0x0
    CPU_SUSPEND = 0x1
    CPU_OFF = 0x2
    CPU_ON = 0x3
    AFFINITY_INFO = 0x4
    MIGRATE = 0x5
    MIGRATE_INFO_TYPE = 0x6
    MIGRATE_INFO_UP_CPU = 0x7
    SYSTEM_OFF = 0x8
    SYSTEM_RESET = 0x9
    FEATURES = 0xA


class PsciRet(IntEnum):
    SUCCESS = 0
    NOT_SUPPORTED = -1
    INVALID_PARAMETERS = -2
    DENIED = -3
    ALREADY_ON = -4
    ON_PENDING = -5
    INTERNAL_FAILURE = -6
    NOT_PRESENT = -7
    DISABLED = -8
    INVALID_ADDRESS = -9


class AffinityState(IntEnum):
    ON = 0
    OFF = 1
    ON_PENDING = 2


# Functions callable in both conventions; the rest exist only as SMC32.
_BOTH = {PsciFn.CPU_SUSPEND, PsciFn.CPU_ON, PsciFn.AFFINITY_INFO, PsciFn.MIGRATE,
         PsciFn.MIGRATE_INFO_UP_CPU}
_IMPLEMENTED = {PsciFn.VERSION, PsciFn.CPU_SUSPEND, PsciFn.CPU_OFF, PsciFn.CPU_ON,
                PsciFn.AFFINITY_INFO, PsciFn.MIGRATE_INFO_TYPE, PsciFn.SYSTEM_OFF,
                PsciFn.SYSTEM_RESET, PsciFn.FEATURES}
MIGRATE_INFO_NO_TOS = 2
SHUTDOWN_EXIT = 0
REBOOT_EXIT = 0x66


class PsciPlatform(Protocol):
    """The VM operations PSCI calls turn into."""

    def cpu_on(self, target_mpidr: int, entry: int, context: int) -> int: ...

    def cpu_off(self, cpu: int) -> None: ...

    def cpu_standby(self, cpu: int) -> None: ...

    def affinity_state(self, target_mpidr: int) -> int | None: ...

    def ram_contains(self, addr: int) -> bool: ...

    def system_exit(self, code: int, reason: str) -> None: ...


# Function ID -> function, for both calling conventions; a dict because
# hypercalls are a hot path and building an enum member is not cheap.
_BY_FID = {PSCI_BASE | fn: fn for fn in PsciFn}
_BY_FID.update({PSCI_BASE | SMC64 | fn: fn for fn in _BOTH})


def _decode(fid: int) -> PsciFn | None:
    return _BY_FID.get(fid)


class Psci:
    """Handles one SMCCC call; ``call`` returns the value for x0."""

    def __init__(self, platform: PsciPlatform, conduit: str) -> None:
        self._platform = platform
        self.conduit = conduit
        self.calls = 0

    def owns(self, fid: int) -> bool:
        return fid & ~SMC64 & 0xFF00_0000 == PSCI_BASE

    def call(self, cpu: int, fid: int, arg: Callable[[int], int]) -> int:
        """``arg(n)`` reads argument register n; only the calls that take arguments read them."""
        self.calls += 1
        fn = _decode(fid)
        if fn is None or fn not in _IMPLEMENTED:
            return PsciRet.NOT_SUPPORTED
        if fn == PsciFn.VERSION:
            return PSCI_VERSION_1_0
        if fn in (PsciFn.MIGRATE_INFO_TYPE, PsciFn.SYSTEM_OFF, PsciFn.SYSTEM_RESET, PsciFn.CPU_OFF):
            a1 = a2 = a3 = 0
        else:
            mask = 0xFFFF_FFFF_FFFF_FFFF if fid & SMC64 else 0xFFFF_FFFF
            a1, a2, a3 = arg(1) & mask, arg(2) & mask, arg(3) & mask
        p = self._platform
        if fn == PsciFn.FEATURES:
            feature = _decode(a1)
            return PsciRet.SUCCESS if feature in _IMPLEMENTED else PsciRet.NOT_SUPPORTED
        if fn == PsciFn.MIGRATE_INFO_TYPE:
            return MIGRATE_INFO_NO_TOS
        if fn == PsciFn.CPU_ON:
            if not p.ram_contains(a2):
                return PsciRet.INVALID_ADDRESS
            return p.cpu_on(a1, a2, a3)
        if fn == PsciFn.CPU_OFF:
            p.cpu_off(cpu)
            return PsciRet.SUCCESS  # only seen if the VMM lets the vCPU continue
        if fn == PsciFn.AFFINITY_INFO:
            if a2 != 0:  # only level 0 (a single core) is meaningful here
                return PsciRet.INVALID_PARAMETERS
            state = p.affinity_state(a1)
            return PsciRet.INVALID_PARAMETERS if state is None else state
        if fn == PsciFn.CPU_SUSPEND:
            p.cpu_standby(cpu)
            return PsciRet.SUCCESS
        if fn == PsciFn.SYSTEM_OFF:
            p.system_exit(SHUTDOWN_EXIT, "PSCI SYSTEM_OFF")
            return PsciRet.SUCCESS
        if fn == PsciFn.SYSTEM_RESET:
            p.system_exit(REBOOT_EXIT, "PSCI SYSTEM_RESET")
            return PsciRet.SUCCESS
        return PsciRet.NOT_SUPPORTED
