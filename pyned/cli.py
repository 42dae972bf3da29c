"""The ``pyned`` command: ``pyned boot [SCRIPT.lua [ARGS]]``, ``pyned test SCRIPT.lua...``.

Errors a user can cause end in one line and a non-zero status; ``--debug``
shows the traceback.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

from pyned.errors import PynedError
from pyned.services.rom import PROJECT_ROOT

if TYPE_CHECKING:
    from pyned.system import System

DEMO_SCRIPT = PROJECT_ROOT / "lua" / "examples" / "demo.lua"


def _boot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("boot", help="run a ned-style Lua script (default: the shipped demo)")
    p.add_argument("--exit", action="store_true", help="quit right after the script has run")
    p.add_argument("--wait-and-exit", action="store_true",
                   help="quit once every task the script started has exited")
    p.add_argument("-e", "--execute", action="append", default=[], metavar="STMT",
                   help="run a Lua statement before the script (repeatable)")
    p.add_argument("--rom", action="append", default=[], type=Path, metavar="DIR",
                   help="add a folder to the rom/ search path")
    p.add_argument("--cores", type=int, default=None, help="number of platform cores (default 2)")
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto")
    p.add_argument("--no-reserve", action="store_true",
                   help="do not clear a core of lower priorities shortly before a blocked "
                        "vCPU's timer deadline (more time for them, later timer interrupts)")
    p.add_argument("--no-timer-advance", action="store_true",
                   help="deliver a timer interrupt at its deadline, not ahead of it to a vCPU "
                        "that then waits for the deadline (less host CPU, later handlers)")
    p.add_argument("--monitor", action="append", default=[], metavar="ADDR",
                   help="also serve the monitor on ADDR: tcp:127.0.0.1:PORT (loopback, with a "
                        "token) or unix:PATH; 'off': no monitor (default: a private Unix socket)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--led-trace", type=Path, metavar="FILE",
                   help="at the end, write the board LEDs' timeline with the VMs' starts and "
                        "crashes: FILE.svg (a plot), .csv or .json")
    p.add_argument("--journal", type=Path, metavar="FILE.json",
                   help="write the lifecycle journal to this file when pyned ends")
    p.add_argument("script", nargs="?", type=Path, help="the Lua script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script (arg table)")


def _test_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("test", help="run Lua test scripts (require \"test\"), one system each")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="fail a script that has not ended after S seconds (default 60)")
    p.add_argument("--rom", action="append", default=[], type=Path, metavar="DIR",
                   help="add a folder to the rom/ search path")
    p.add_argument("--cores", type=int, default=None, help="number of platform cores (default 2)")
    p.add_argument("-v", "--verbose", action="store_true", help="show every script's output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("scripts", nargs="+", type=Path, metavar="SCRIPT.lua")


def _test(args: argparse.Namespace) -> int:
    from pyned.ned.testrun import run_tests

    missing = [s for s in args.scripts if not s.is_file()]
    if missing:
        raise PynedError(f"{missing[0]}: no such script")
    if args.timeout <= 0:
        raise PynedError(f"--timeout {args.timeout:g}: must be positive")
    return run_tests(list(args.scripts), sys.stdout, timeout=args.timeout, rom_dirs=args.rom,
                     board=_board(args.cores), verbose=args.verbose)


def _board(cores: int | None):
    from dataclasses import replace

    from pyned.platform.board import Board

    board = Board() if cores is None else replace(Board(), cores=cores)
    if board.cores < 1 or board.cores > 8:
        raise PynedError(f"--cores {board.cores}: the platform has 1 to 8 cores")
    return board
def _monitor_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("monitor", help="the monitor's client: consoles, inspection, control")
    p.add_argument("address", nargs="?",
                   help="unix:PATH or tcp:127.0.0.1:PORT (default: the running pyned's)")
    p.add_argument("-c", "--command", action="append", default=[], metavar="CMD", dest="commands",
                   help="run CMD and exit (repeatable)")
    p.add_argument("--token", help="the token of a TCP monitor")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _unicorn_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("unicorn", help="build or inspect the patched Unicorn library pyned runs on")
    p.add_argument("action", choices=("build", "status"))
    p.add_argument("--force", action="store_true", help="rebuild even if a build exists")


def _unicorn(args: argparse.Namespace) -> int:
    from pyned.cpu import engine

    lib = engine.cache_dir() / engine.LIB_NAME
    if args.action == "status":
        state = "patched" if engine.patched() else "stock (unpatched)"
        print(f"unicorn {engine.UNICORN_VERSION}: running on the {state} library"
              f"{'' if not lib.is_file() else f'; build at {lib}'}")
        return 0
    if lib.is_file() and not args.force:
        print(f"pyned: {lib} exists (use --force to rebuild)")
        return 0
    try:
        engine.build(log=lambda text: print(f"pyned: {text}"))
    except (engine.BuildError, OSError, subprocess.CalledProcessError) as err:
        raise PynedError(f"unicorn build failed: {err}") from None
    return 0


def _images_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("images", help="fetch real guests (Debian's arm64 Linux, busybox, U-Boot)")
    p.add_argument("action", choices=("fetch", "status"))
    p.add_argument("--refresh", action="store_true", help="ask Debian for newer packages")


def _images(args: argparse.Namespace) -> int:
    from pyned.images import guests

    if args.action == "status":
        have = guests.find()
        if have is None:
            print(f"pyned: no guests in {guests.guests_dir()}; run 'pyned images fetch'")
            return 1
        m = have.manifest
        print(f"{have.folder}: linux {m['kernel_release']}, " + ", ".join(
            f"{pkg} {ver}" for pkg, ver in m["packages"].items()))
        return 0
    guests.fetch(refresh=args.refresh, log=lambda text: print(f"pyned: {text}"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyned", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _boot_parser(sub)
    _monitor_parser(sub)
    _test_parser(sub)
    _unicorn_parser(sub)
    _images_parser(sub)
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False)
    try:
        if args.command == "boot":
            return _boot(args)
        if args.command == "test":
            return _test(args)
        if args.command == "unicorn":
            return _unicorn(args)
        if args.command == "images":
            return _images(args)
        if args.command == "monitor":
            from pyned.monitor import client
            return client.main(args.address, args.commands, args.token)
    except PynedError as err:
        if debug:
            traceback.print_exc()
        print(f"pyned: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pyned: interrupted", file=sys.stderr)
        return 130
    return 2


def _boot(args: argparse.Namespace) -> int:
    from pyned.ned.runtime import ExitMode, Ned, NedOptions, TestEnded
    from pyned.system import System, SystemOptions

    script = args.script
    if script is None and not args.execute:
        script = DEMO_SCRIPT
    if args.exit and args.wait_and_exit:
        raise PynedError("--exit and --wait-and-exit exclude each other")
    mode = ExitMode.EXIT if args.exit else (
        ExitMode.WAIT_AND_EXIT if args.wait_and_exit else ExitMode.SERVE)
    board = _board(args.cores)
    colour = {"auto": None, "always": True, "never": False}[args.color]
    rom_dirs = ([script.parent] if script else []) + list(args.rom)
    system = System(SystemOptions(board=board, rom_dirs=rom_dirs, colour=colour,
                                  reserve=not args.no_reserve,
                                  timer_advance=not args.no_timer_advance))
    # A terminated pyned (CI's timeout, a service manager) still shuts down in order
    # and removes its monitor's private folder.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    try:
        _serve_monitor(system, args.monitor)
        ned = Ned(system, NedOptions(script=script, args=list(args.args),
                                     execute=list(args.execute), mode=mode, debug=args.debug))
        return ned.run()
    except TestEnded as end:  # a test script run with boot: its verdict is the status
        print(f"pyned: test {'passed' if end.passed else 'FAILED'}"
              f"{': ' + end.message if end.message else ''}", file=sys.stderr)
        return 0 if end.passed else 1
    finally:
        system.shutdown()
        if args.journal is not None:
            system.journal.write_json(args.journal)
        if args.led_trace is not None:
            _write_led_trace(system, args.led_trace, script)


def _write_led_trace(system: "System", path: Path, script: Path | None) -> None:
    from pyned.kernel.clock import now_ns
    from pyned.ledplot import Marker, write_trace

    leds = system.hardware.leds
    events = leds.timeline()
    used = [name for name in leds.names if any(e.led == name for e in events)]
    t0 = system.journal.start
    markers = [Marker(int((t0 + e.time) * 1e9), f"{e.vm} {e.event}", e.event)
               for e in system.journal.entries()
               if e.event in ("start", "crash", "restart", "shutdown", "reboot", "killed")]
    title = f"LED timeline of {script.name}" if script else "LED timeline"
    try:
        write_trace(path, events, used or list(leds.names), leds.start_ns, now_ns(), markers,
                    title)
    except OSError as err:
        print(f"pyned: {path}: cannot write the LED trace: {err.strerror}", file=sys.stderr)
        return
    print(f"pyned: LED timeline ({len(events)} changes) written to {path}", file=sys.stderr)


def _serve_monitor(system: System, addresses: list[str]) -> None:
    """The private Unix socket plus every --monitor address; each printed on ned's log."""
    if "off" in addresses:
        if len(addresses) > 1:
            raise PynedError("--monitor off excludes other --monitor addresses")
        return
    from pyned.monitor import Monitor

    monitor = Monitor.of(system)
    for address in [None, *addresses]:
        monitor.serve(address)
