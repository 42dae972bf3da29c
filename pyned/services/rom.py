"""The ROM namespace: ``rom/NAME`` looked up along a search path.

The path is the script's folder, any ``--rom DIR``, then the shipped
``images/``, ``dts/`` and ``io/`` (io's description of the board,
``rom/fvp-baser.devs``), then the real guests ``pyned images fetch`` put in the
cache (``rom/Image``, ``rom/initrd.cpio.gz``, ``rom/u-boot.bin``). A ``.dtb`` that does not exist may be given by its
``.dts`` source, which the VMM compiles when it loads it.
"""

from __future__ import annotations

from pathlib import Path

from pyned.errors import RomError

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shipped_dirs() -> list[Path]:
    from pyned.images.guests import guests_dir

    return [PROJECT_ROOT / "images", PROJECT_ROOT / "dts", PROJECT_ROOT / "io", guests_dir()]


class Rom:
    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = [d for d in dirs]

    def host_path(self, name: str) -> Path:
        """A file a script names to write (a disk, flash): relative to the script's folder."""
        path = Path(name).expanduser()
        if not path.is_absolute():
            path = (self.dirs[0] if self.dirs else Path.cwd()) / path
        return path

    def resolve(self, name: str) -> Path:
        rel = name[4:] if name.startswith("rom/") else name
        if not rel:
            raise RomError(f"{name}: empty ROM name")
        direct = Path(rel)
        if not name.startswith("rom/") and direct.is_file():
            return direct
        candidates = [rel]
        if rel.endswith(".dtb"):
            candidates.append(rel[:-4] + ".dts")
        for d in self.dirs:
            for c in candidates:
                p = d / c
                if p.is_file():
                    return p
        where = ", ".join(str(d) for d in self.dirs)
        raise RomError(f"{name}: not found in the ROM path ({where})")
