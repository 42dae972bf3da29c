"""pytest fixtures for testing guests and systems under pyned.

Registered as a ``pytest11`` entry point, so an installed pyned offers them to
any project's tests; pyned's own tests load it from ``tests/conftest.py``.

* ``pyned_boot(script=None, *, source=None, **options)`` boots a ned script
  in-process (a ``pyned.testing.Booted``: ``expect``, ``inject``, ``reset``,
  ``journal``, ``wait_event``, ``wait``, ``guest``); every system it made is
  shut down after the test.
* ``pyned_lua_test(script, timeout=60)`` runs a ``require "test"`` script as
  ``pyned test`` does and returns its ``TestResult`` (``passed``, ``message``,
  ``output``, ``journal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest


@pytest.fixture
def pyned_boot() -> Iterator[Callable[..., object]]:
    from pyned.testing import Booted

    started: list[Booted] = []

    def boot(script: str | Path | None = None, **options: object) -> Booted:
        b = Booted(script, **options)  # type: ignore[arg-type]
        started.append(b)
        return b.__enter__()

    yield boot
    for b in reversed(started):
        b.close()


@pytest.fixture
def pyned_lua_test() -> Callable[..., object]:
    from pyned.ned.testrun import run_test
    from pyned.testing import _syndrome

    def run(script: str | Path, timeout: float = 60.0, **options: object):
        return run_test(Path(script), timeout=timeout, syndrome=_syndrome(),
                        **options)  # type: ignore[arg-type]

    return run
