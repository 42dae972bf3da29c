"""Restart policies: the budget on its own, and how start_vm's restart table is checked."""

import pytest

from pyned.errors import ConfigError
from pyned.services.spec import RestartBudget, RestartPolicy
from pyned.testing import run_script


def test_max_counts_every_restart_without_a_window():
    b = RestartBudget(RestartPolicy(on=("crash", "reboot"), max=2))
    assert b.next_delay("crash", 0.0) == 0.0
    assert b.next_delay("reboot", 100.0) == 0.0
    assert b.next_delay("crash", 1e6) is None
    assert b.next_delay("shutdown", 0.0) is None      # not in `on`: never restarted


def test_window_forgets_old_restarts_and_the_backoff_starts_over():
    b = RestartBudget(RestartPolicy(max=2, window_s=10, backoff_ms=100, backoff_factor=2))
    assert b.next_delay("crash", 0.0) == 0.1
    assert b.next_delay("crash", 1.0) == 0.2
    assert b.next_delay("crash", 2.0) is None          # a third inside 10 s: give up
    assert b.next_delay("crash", 30.0) == 0.1          # a quiet window: allowed again


def test_backoff_is_capped():
    b = RestartBudget(RestartPolicy(backoff_ms=10, backoff_factor=10, backoff_max_ms=500))
    assert [b.next_delay("crash", float(i)) for i in range(4)] == [0.01, 0.1, 0.5, 0.5]


@pytest.mark.parametrize("fields,message", [
    (dict(on=("panic",)), "restart.on: 'panic' is not one of crash, reboot, shutdown"),
    (dict(max=-1), "restart.max must be 0 or more"),
    (dict(backoff_factor=0.5), "backoff_factor 1 or more"),
    (dict(window_s=0), "restart.window_s must be positive"),
])
def test_bad_policies_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        RestartPolicy(**fields)


PRE = 'local vmm = require "vmm"\nlocal L4 = require "L4"\n'


@pytest.mark.parametrize("table,message", [
    ('{ on = "crash", tries = 3 }', "restart: unknown key 'tries'"),
    ('{ on = { "crash", 5 } }', "restart.on must list event names"),
    ('{ max = 2.5 }', "restart.max must be a whole number"),
    ('{ backoff_ms = "soon" }', "restart.backoff_ms must be a number"),
    ('{ on = "oops" }', "'oops' is not one of crash, reboot, shutdown"),
    ('5', "option 'restart' must be a table"),
])
def test_start_vm_restart_errors_name_the_script_line(table, message):
    src = PRE + ('vmm.start_vm{ id = 1, kernel = "rom/hello.elf", fdt = "rom/virt-r82.dtb",\n'
                 f'              restart = {table} }}\n')
    status, b, err = run_script(src)
    assert err is not None and "system.lua:3:" in str(err) and message in str(err), err


def test_only_vms_take_a_restart_policy():
    src = PRE + 'L4.default_loader:startv({ restart = {} }, "rom/virtio-rng")\n'
    status, b, err = run_script(src)
    assert err is not None and "only rom/uvmm tasks are restarted by a policy" in str(err)
