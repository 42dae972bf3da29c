"""Debian's arm64 packages through apt, without touching the host's package state.

apt runs with its own lists and archive folders inside pyned's cache and
with arm64 as its only architecture, so nothing is added to dpkg's foreign
architectures, nothing is installed, and no root is needed. It reads the
host's ``sources.list`` (so a Debian host's own mirror is used). Packages are
opened with ``dpkg-deb --fsys-tarfile`` and only the members asked for are
taken out of the stream.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Callable, Iterable

from pyned.errors import PynedError

ARCH = "arm64"


class FetchError(PynedError):
    pass


class Apt:
    def __init__(self, state: Path, log: Callable[[str], None] = print) -> None:
        self.state = state
        self.log = log
        for tool in ("apt-get", "apt-cache", "dpkg-deb"):
            if shutil.which(tool) is None:
                raise FetchError(f"fetching guests needs {tool} (a Debian or Ubuntu host)")
        self._opts = [
            "-o", f"Dir::State::Lists={state / 'lists'}",
            "-o", f"Dir::Cache={state / 'cache'}",
            "-o", f"Dir::State::status={state / 'status'}",
            "-o", f"APT::Architecture={ARCH}",
            "-o", f"APT::Architectures::={ARCH}",
            "-o", "Debug::NoLocking=1",
        ]
        if os.geteuid() == 0:
            # root's apt drops to the _apt user for downloads, which cannot
            # write into root's cache folder.
            self._opts += ["-o", "APT::Sandbox::User=root"]

    def _run(self, tool: str, args: list[str], cwd: Path | None = None) -> str:
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        status = self.state / "status"
        if not status.exists():
            status.write_text("")  # an empty dpkg database: nothing counts as installed
        proc = subprocess.run([tool, "-q", *self._opts, *args], cwd=cwd, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise FetchError(f"{tool} {' '.join(args)} failed: "
                             f"{lines[-1] if lines else f'exit {proc.returncode}'}")
        return proc.stdout

    def update(self) -> None:
        self.log("apt-get update (arm64 package lists, kept in pyned's cache)")
        self._run("apt-get", ["update"])

    def field(self, package: str, name: str) -> str:
        """One field of the candidate version's record (``Version``, ``Depends``...)."""
        out = self._run("apt-cache", ["show", "--no-all-versions", package])
        for line in out.splitlines():
            if line.startswith(name + ":"):
                return line.split(":", 1)[1].strip()
        raise FetchError(f"{package}: no {name} field in its package record")

    def download(self, package: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.glob("*.deb"))
        self.log(f"apt-get download {package}")
        self._run("apt-get", ["download", package], cwd=dest)
        new = sorted(set(dest.glob("*.deb")) - before)
        name = package.split(":")[0]
        found = new or sorted(dest.glob(f"{name}_*.deb"))
        if not found:
            raise FetchError(f"apt-get download {package} produced no .deb")
        return found[-1]


def deb_members(deb: Path, want: Callable[[str], bool],
                on_member: Callable[[str, bytes], None]) -> None:
    """Stream a package's files; ``on_member(path, data)`` for each regular file wanted."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for info in tar:
                name = info.name[2:] if info.name.startswith("./") else info.name
                if info.isfile() and want(name):
                    f = tar.extractfile(info)
                    assert f is not None
                    on_member(name, f.read())
    except tarfile.TarError as err:
        raise FetchError(f"{deb.name}: unreadable package: {err}") from None
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise FetchError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {err.strip()}")


def deb_files(deb: Path, paths: Iterable[str]) -> dict[str, bytes]:
    """The named files of a package (paths without the leading ``./``)."""
    wanted = set(paths)
    got: dict[str, bytes] = {}
    deb_members(deb, wanted.__contains__, got.__setitem__)
    missing = wanted - got.keys()
    if missing:
        raise FetchError(f"{deb.name}: has no {', '.join(sorted(missing))}")
    return got
