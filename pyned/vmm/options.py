"""uvmm's command line, parsed once into a typed object (uvmm: server/src/main.cc)."""

from __future__ import annotations

import getopt
from dataclasses import dataclass, field

from pyned.errors import ConfigError

LEVELS = ("quiet", "warn", "info", "trace")
FAULT_MODES = ("ignore", "halt", "inject")


@dataclass
class UvmmOptions:
    kernel: str | None = None     # None: uvmm's default, rom/zImage
    dtbs: list[str] = field(default_factory=list)
    dtb_limit: int | None = None
    ramdisk: str | None = None
    cmdline: str | None = None
    rambase: int | None = None
    verbosity: int = 1            # index into LEVELS; uvmm's default shows warnings
    debug: dict[str, int] = field(default_factory=dict)
    fault_mode: str = "ignore"
    dt_mods: list[str] = field(default_factory=list)
    hang_timeout: float = 0.0     # pyned: seconds for the no-progress detector, 0 = off
    firmware: str | None = None   # pyned: image for the first flash bank, booted there
    nvram: str | None = None      # pyned: file behind the second flash bank


_SHORT = "k:d:r:c:b:D:vqf:m:Wi"
_LONG = ["kernel=", "dtb=", "ramdisk=", "cmdline=", "rambase=", "debug=", "verbose", "quiet",
         "fault-mode=", "dt-mod=", "wakeup-on-system-resume",
         # pyned's own: the no-progress detector (vm.py, _check_progress) and a
         # firmware boot from flash (builder.py)
         "hang-timeout=", "firmware=", "nvram="]


def _number(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise ConfigError(f"uvmm: {what} {text!r} is not a number") from None


def parse_uvmm_args(argv: list[str]) -> UvmmOptions:
    try:
        opts, rest = getopt.getopt(argv, _SHORT, _LONG)
    except getopt.GetoptError as err:
        raise ConfigError(f"uvmm: {err}") from None
    if rest:
        raise ConfigError(f"uvmm: unexpected argument {rest[0]!r}")
    o = UvmmOptions()
    for flag, value in opts:
        if flag in ("-k", "--kernel"):
            o.kernel = value
        elif flag in ("-d", "--dtb"):
            path, _, extra = value.partition(":limit=")
            o.dtbs.append(path)
            if extra:
                o.dtb_limit = _number(extra, "dtb limit")
        elif flag in ("-r", "--ramdisk"):
            o.ramdisk = value
        elif flag in ("-c", "--cmdline"):
            o.cmdline = value
        elif flag in ("-b", "--rambase"):
            o.rambase = _number(value, "rambase")
        elif flag in ("-v", "--verbose"):
            o.verbosity = min(o.verbosity + 1, len(LEVELS) - 1)
        elif flag in ("-q", "--quiet"):
            o.verbosity = 0
        elif flag in ("-D", "--debug"):
            comp, _, level = value.rpartition("=")
            if level not in LEVELS:
                raise ConfigError(f"uvmm: debug level {level!r} is not one of {', '.join(LEVELS)}")
            if comp:
                o.debug[comp] = LEVELS.index(level)
            else:
                o.verbosity = LEVELS.index(level)
        elif flag in ("-f", "--fault-mode"):
            if value not in FAULT_MODES:
                raise ConfigError(f"uvmm: fault mode {value!r} is not one of {', '.join(FAULT_MODES)}")
            o.fault_mode = value
        elif flag in ("-m", "--dt-mod"):
            o.dt_mods.append(value)
        elif flag == "--hang-timeout":
            try:
                o.hang_timeout = float(value)
            except ValueError:
                o.hang_timeout = -1.0
            if not 0 <= o.hang_timeout < 1e6:
                raise ConfigError(f"uvmm: --hang-timeout {value!r} is not a number of seconds "
                                  f"(0 turns the detector off)")
        elif flag == "--firmware":
            o.firmware = value
        elif flag == "--nvram":
            o.nvram = value
        elif flag == "-i":
            raise ConfigError("uvmm: -i (forced identity mode) was removed from uvmm; "
                              "guest RAM is identity-mapped on the MPU platform anyway")
    return o
