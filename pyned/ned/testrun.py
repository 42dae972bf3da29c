"""``pyned test SCRIPT.lua...``: run Lua test scripts, each in a fresh system.

A script passes when it calls ``test.pass()``, or returns and every task it
started ends (as ``--wait-and-exit``) without a failed check or an error; it
fails on ``test.fail()``, a failed ``test.check``/``expect``/``wait_event``,
an error in the script, or when it has not ended within the timeout.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from pyned.cpu.syndrome import SyndromeLayout, probe_syndrome_layout
from pyned.errors import PynedError
from pyned.ned.runtime import ExitMode, Ned, NedOptions, TestEnded
from pyned.platform.board import Board
from pyned.services.cons import MemoryTerminal
from pyned.services.journal import JournalEntry
from pyned.system import System, SystemOptions

DEFAULT_TIMEOUT_S = 60.0
# How long a script gets to notice the shutdown after its timeout.
_STOP_WAIT_S = 5.0
# Console lines shown under a failure.
FAILURE_LINES = 25


@dataclass
class TestResult:
    script: Path
    passed: bool
    message: str
    seconds: float
    output: str = ""
    journal: list[JournalEntry] = field(default_factory=list)


def run_test(script: Path, *, timeout: float = DEFAULT_TIMEOUT_S, args: list[str] | None = None,
             rom_dirs: list[Path] | None = None, board: Board | None = None,
             syndrome: SyndromeLayout | None = None) -> TestResult:
    """Run one test script to its verdict in a System of its own."""
    capture = MemoryTerminal()
    t0 = time.monotonic()
    system = System(SystemOptions(board=board or Board(),
                                  rom_dirs=[script.parent] + list(rom_dirs or []),
                                  out=capture, colour=False), syndrome=syndrome)
    outcome: dict[str, object] = {}
    try:
        ned = Ned(system, NedOptions(script=script, args=list(args or []),
                                     mode=ExitMode.WAIT_AND_EXIT))
    except PynedError as err:
        system.shutdown()
        return TestResult(script, False, str(err), time.monotonic() - t0)

    def body() -> None:
        try:
            outcome["status"] = ned.run()
        except BaseException as exc:  # reported as the test's failure
            outcome["error"] = exc

    runner = threading.Thread(target=body, name=f"pyned-test-{script.stem}", daemon=True)
    runner.start()
    runner.join(timeout)
    timed_out = runner.is_alive()
    system.shutdown()
    runner.join(_STOP_WAIT_S)
    error = outcome.get("error")
    if ned.verdict is not None:
        passed, message = ned.verdict.passed, ned.verdict.message
    elif timed_out:
        passed, message = False, f"not ended after {timeout:g} s" + (
            "" if not runner.is_alive() else " (and the script did not stop)")
    elif isinstance(error, TestEnded):
        passed, message = error.passed, error.message
    elif isinstance(error, PynedError):
        passed, message = False, str(error)
    elif error is not None:
        passed, message = False, f"internal error: {type(error).__name__}: {error}"
    else:
        passed, message = True, ""
    return TestResult(script, passed, message, time.monotonic() - t0,
                      capture.data.decode(errors="replace"), system.journal.entries())


def run_tests(scripts: list[Path], out: TextIO, *, timeout: float = DEFAULT_TIMEOUT_S,
              rom_dirs: list[Path] | None = None, board: Board | None = None,
              verbose: bool = False) -> int:
    """Run every script, print a line each and a summary; 0 if all passed."""
    syndrome = probe_syndrome_layout()
    passed = failed = 0
    t0 = time.monotonic()
    for script in scripts:
        res = run_test(script, timeout=timeout, rom_dirs=rom_dirs, board=board,
                       syndrome=syndrome)
        verdict = "PASS" if res.passed else "FAIL"
        out.write(f"{verdict}  {script}  ({res.seconds:.1f} s)"
                  f"{': ' + res.message if res.message and res.passed else ''}\n")
        if not res.passed:
            for line in res.message.splitlines():
                out.write(f"      {line}\n")
        if verbose or not res.passed:
            lines = res.output.splitlines()
            shown = lines if verbose else lines[-FAILURE_LINES:]
            if shown:
                out.write(f"      --- output{'' if verbose else ' (last lines)'} ---\n")
                out.writelines(f"      {line}\n" for line in shown)
        out.flush()
        passed += res.passed
        failed += not res.passed
    out.write(f"{passed} passed, {failed} failed ({time.monotonic() - t0:.1f} s)\n")
    return 0 if failed == 0 else 1
