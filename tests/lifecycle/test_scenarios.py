"""The scripted lifecycle scenarios in tests/scenarios/, each run as `pyned test` runs it."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.boot
ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = ROOT / "tests" / "scenarios"
# Scenarios that run for many seconds by design.
LONG = {"isolation"}


@pytest.mark.parametrize("name", [
    pytest.param(p.stem, marks=[pytest.mark.slow] if p.stem in LONG else [])
    for p in sorted(SCENARIOS.glob("*.lua"))])
def test_scenario(pyned_lua_test, name):
    res = pyned_lua_test(SCENARIOS / f"{name}.lua", timeout=60)
    assert res.passed, f"{res.message}\n{res.output[-3000:]}"
    if name == "poweroff":   # it passes by ending: check that it ended for the right reason
        assert res.message == ""
        assert [(e.event, e.code) for e in res.journal] == [("start", None), ("shutdown", 0)]


def test_pyned_test_command_reports_each_script_and_a_summary(tmp_path):
    failing = tmp_path / "failing.lua"
    failing.write_text('local test = require "test"\ntest.equal(1 + 1, 3, "sum")\n')
    proc = subprocess.run([sys.executable, "-m", "pyned", "test", str(SCENARIOS / "poweroff.lua"),
                           str(failing)], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=120)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"PASS  {SCENARIOS / 'poweroff.lua'}" in out
    assert f"FAIL  {failing}" in out and f"{failing}:2: sum: expected 3, got 2" in out
    assert out.rstrip().splitlines()[-1].startswith("1 passed, 1 failed")
