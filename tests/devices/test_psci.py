import pytest

from pyned.devices.psci import (MIGRATE_INFO_NO_TOS, PSCI_VERSION_1_0, REBOOT_EXIT, SHUTDOWN_EXIT,
                                AffinityState, Psci, PsciRet)


class Platform:
    def __init__(self):
        self.on = {0: True, 1: False}
        self.calls = []
        self.exit = None

    def cpu_on(self, mpidr, entry, ctx):
        self.calls.append(("on", mpidr, entry, ctx))
        if mpidr not in self.on:
            return PsciRet.INVALID_PARAMETERS
        if self.on[mpidr]:
            return PsciRet.ALREADY_ON
        self.on[mpidr] = True
        return PsciRet.SUCCESS

    def cpu_off(self, cpu):
        self.calls.append(("off", cpu))

    def cpu_standby(self, cpu):
        self.calls.append(("standby", cpu))

    def affinity_state(self, mpidr):
        if mpidr not in self.on:
            return None
        return AffinityState.ON if self.on[mpidr] else AffinityState.OFF

    def ram_contains(self, addr):
        return 0x1000000 <= addr < 0x2000000

    def system_exit(self, code, reason):
        self.exit = (code, reason)


def args(a1, a2, a3):
    return {1: a1, 2: a2, 3: a3}.__getitem__


@pytest.fixture
def psci():
    p = Platform()
    return Psci(p, "hvc"), p


def test_version_features_migrate(psci):
    dev, _ = psci
    assert dev.call(0, 0x84000000, args(0, 0, 0)) == PSCI_VERSION_1_0
    assert dev.call(0, 0x84000006, args(0, 0, 0)) == MIGRATE_INFO_NO_TOS
    assert dev.call(0, 0x8400000A, args(0xC4000003, 0, 0)) == PsciRet.SUCCESS
    assert dev.call(0, 0x8400000A, args(0x84000005, 0, 0)) == PsciRet.NOT_SUPPORTED  # MIGRATE
    assert dev.call(0, 0x8400000A, args(0x12345678, 0, 0)) == PsciRet.NOT_SUPPORTED


def test_cpu_on_checks_entry_and_state(psci):
    dev, p = psci
    assert dev.call(0, 0xC4000003, args(1, 0x10, 0)) == PsciRet.INVALID_ADDRESS
    assert dev.call(0, 0xC4000003, args(1, 0x1000000, 7)) == PsciRet.SUCCESS
    assert p.calls[-1] == ("on", 1, 0x1000000, 7)
    assert dev.call(0, 0xC4000003, args(1, 0x1000000, 7)) == PsciRet.ALREADY_ON
    assert dev.call(0, 0xC4000003, args(5, 0x1000000, 7)) == PsciRet.INVALID_PARAMETERS


def test_smc32_arguments_are_truncated(psci):
    dev, p = psci
    assert dev.call(0, 0x84000003, args((1 << 32) | 1, (1 << 40) | 0x1000000, 0)) == PsciRet.SUCCESS
    assert p.calls[-1][1:3] == (1, 0x1000000)


def test_affinity_info(psci):
    dev, _ = psci
    assert dev.call(0, 0xC4000004, args(0, 0, 0)) == AffinityState.ON
    assert dev.call(0, 0xC4000004, args(1, 0, 0)) == AffinityState.OFF
    assert dev.call(0, 0xC4000004, args(9, 0, 0)) == PsciRet.INVALID_PARAMETERS
    assert dev.call(0, 0xC4000004, args(0, 1, 0)) == PsciRet.INVALID_PARAMETERS


@pytest.mark.parametrize("fid,code", [(0x84000008, SHUTDOWN_EXIT), (0x84000009, REBOOT_EXIT)])
def test_system_off_and_reset(psci, fid, code):
    dev, p = psci
    dev.call(0, fid, args(0, 0, 0))
    assert p.exit[0] == code


def test_smc64_only_for_functions_that_have_it(psci):
    dev, p = psci
    assert dev.call(0, 0xC4000008, args(0, 0, 0)) == PsciRet.NOT_SUPPORTED  # no SMC64 SYSTEM_OFF
    assert p.exit is None


def test_off_and_suspend_reach_platform(psci):
    dev, p = psci
    dev.call(1, 0x84000002, args(0, 0, 0))
    dev.call(0, 0xC4000001, args(0, 0, 0))
    assert ("off", 1) in p.calls and ("standby", 0) in p.calls
