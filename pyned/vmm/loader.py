"""Kernel and ramdisk loaders, tried in uvmm's order: ELF, gzip, arm64 Image, raw.

* ELF: PT_LOAD segments at ``p_paddr`` (ET_EXEC). A position-independent
  ELF (ET_DYN) has no fixed address, so its segments go to RAM base +
  ``p_paddr``: on an MPU platform guest-physical is host-physical and RAM is
  wherever the kernel allocated it, so our own guests are built that way.
* gzip: decompressed (bounded by the RAM size) and loaded as what it contains.
* arm64 ``Image``: the header's magic at 0x38, copied to RAM base + text_offset.
* ``raw:addr=0xOFF:file``: the bytes at RAM base + OFF, entry there.
* ``rom:addr=0xADDR``: nothing loaded, the guest starts at ADDR.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from pyned.errors import ImageError
from pyned.platform.board import MemRange
from pyned.vmm.memory import GuestMemory

ARM64_IMAGE_MAGIC = b"ARM\x64"
EM_AARCH64 = 183
RAW_DEFAULT_OFFSET = 0x208000


@dataclass(frozen=True)
class KernelSpec:
    """What ``-k`` names: a loader prefix (or none) and the file."""

    path: str
    kind: str = "auto"          # auto | raw | rom
    addr: int | None = None

    @classmethod
    def parse(cls, text: str) -> "KernelSpec":
        if text.startswith(("raw:", "rom:")):
            kind, rest = text.split(":", 1)
            addr = None
            path = ""
            for part in rest.split(":"):
                if part.startswith("addr="):
                    try:
                        addr = int(part[5:], 16)
                    except ValueError:
                        raise ImageError(f"kernel {text!r}: addr= must be hex") from None
                elif part == "64bit":
                    continue
                else:
                    path = part
            if kind == "rom":
                if addr is None:
                    raise ImageError(f"kernel {text!r}: rom: needs addr=0x...")
                return cls("", "rom", addr)
            return cls(path, "raw", RAW_DEFAULT_OFFSET if addr is None else addr)
        return cls(text)


@dataclass(frozen=True)
class LoadedImage:
    entry: int
    ranges: tuple[MemRange, ...]
    format: str


def _check_fits(name: str, ram: MemRange, base: int, size: int) -> None:
    if not ram.contains(base, max(size, 1)):
        raise ImageError(
            f"{name}: needs [{base:#x}-{base + size - 1:#x}], which is not inside the VM's "
            f"RAM {ram} ({ram.size >> 20} MiB); give more mem or a different ram_base")


def load_kernel(data: bytes, name: str, memory: GuestMemory, ram: MemRange,
                spec: KernelSpec) -> LoadedImage:
    if spec.kind == "rom":
        return LoadedImage(spec.addr or 0, (), "rom")
    if spec.kind == "raw":
        base = ram.base + (spec.addr or 0)
        _check_fits(name, ram, base, len(data))
        memory.write(base, data)
        return LoadedImage(base, (MemRange(base, len(data)),), "raw")
    if data[:4] == b"\x7fELF":
        return _load_elf(data, name, memory, ram)
    if data[:2] == b"\x1f\x8b":
        inner = _gunzip(data, name, ram.size)
        if inner[:2] == b"\x1f\x8b":
            raise ImageError(f"{name}: gzip inside gzip is not a kernel")
        img = load_kernel(inner, name, memory, ram, spec)
        return LoadedImage(img.entry, img.ranges, "gzip+" + img.format)
    if len(data) >= 64 and data[0x38:0x3C] == ARM64_IMAGE_MAGIC:
        return _load_image(data, name, memory, ram)
    if data[:2] == b"MZ":
        raise ImageError(f"{name}: Cannot boot EFI images! Was the ARM header stripped?")
    raise ImageError(f"{name}: unknown kernel format (not ELF, gzip or an arm64 Image; "
                     f"use raw:addr=0x...:{name} for a flat binary)")


def _gunzip(data: bytes, name: str, limit: int) -> bytes:
    dec = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = dec.decompress(data, limit + 1)
    except zlib.error as err:
        raise ImageError(f"{name}: corrupt gzip data: {err}") from None
    if len(out) > limit:
        raise ImageError(f"{name}: decompresses to more than the VM's RAM ({limit >> 20} MiB)")
    if not dec.eof:
        raise ImageError(f"{name}: truncated gzip data")
    return out


def _load_image(data: bytes, name: str, memory: GuestMemory, ram: MemRange) -> LoadedImage:
    text_offset, image_size = struct.unpack_from("<QQ", data, 8)
    # image_size 0 marks pre-3.17 kernels, whose footprint the header does not give.
    size = image_size or len(data)
    base = ram.base + text_offset
    _check_fits(name, ram, base, size)
    memory.write(base, data)
    if size > len(data):
        memory.fill(base + len(data), size - len(data))
    return LoadedImage(base, (MemRange(base, size),), "arm64 Image")


def _load_elf(data: bytes, name: str, memory: GuestMemory, ram: MemRange) -> LoadedImage:
    try:
        elf = ELFFile(io.BytesIO(data))
        if elf.elfclass != 64:
            raise ImageError(f"{name}: 32-bit ELF; the R82 runs AArch64 guests only")
        if elf["e_machine"] != "EM_AARCH64":
            raise ImageError(f"{name}: ELF for {elf['e_machine']}, not AArch64")
        relocatable = elf["e_type"] == "ET_DYN"
        if elf["e_type"] not in ("ET_EXEC", "ET_DYN"):
            raise ImageError(f"{name}: ELF type {elf['e_type']} is not executable")
        bias = ram.base if relocatable else 0
        ranges = []
        for i, seg in enumerate(elf.iter_segments()):
            if seg["p_type"] != "PT_LOAD" or seg["p_memsz"] == 0:
                continue
            addr = seg["p_paddr"] + bias
            filesz, memsz = seg["p_filesz"], seg["p_memsz"]
            if filesz > memsz or seg["p_offset"] + filesz > len(data):
                raise ImageError(f"{name}: PT_LOAD segment {i} is malformed "
                                 f"(filesz {filesz:#x}, memsz {memsz:#x}, offset {seg['p_offset']:#x})")
            try:
                _check_fits(f"{name} segment {i}", ram, addr, memsz)
            except ImageError as err:
                if not relocatable:
                    raise ImageError(f"{err} (it is linked at a fixed address)") from None
                raise
            memory.write(addr, data[seg["p_offset"] : seg["p_offset"] + filesz])
            if memsz > filesz:
                memory.fill(addr + filesz, memsz - filesz)
            ranges.append(MemRange(addr, memsz))
        if not ranges:
            raise ImageError(f"{name}: ELF has no loadable segment")
        entry = elf["e_entry"] + bias
    except ELFError as err:
        raise ImageError(f"{name}: malformed ELF: {err}") from None
    except (struct.error, ValueError) as err:
        raise ImageError(f"{name}: malformed ELF: {err}") from None
    if not any(r.contains(entry, 4) for r in ranges):
        raise ImageError(f"{name}: entry point {entry:#x} is not in a loaded segment")
    return LoadedImage(entry, tuple(ranges), "ELF" + (" (PIE)" if relocatable else ""))

