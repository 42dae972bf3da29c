import gzip
import struct
from pathlib import Path

import pytest

from pyned.errors import ImageError
from pyned.kernel.memory import PhysicalMemory
from pyned.platform.board import MemRange
from pyned.vmm.loader import KernelSpec, load_kernel
from pyned.vmm.memory import GuestMemory, RamRegion

IMAGES = Path(__file__).resolve().parents[2] / "images"
MiB = 1 << 20


def make_elf(entry, segments, etype=2, machine=183, cls=2):
    """A minimal ELF64: header, program headers, then segment data."""
    phoff = 64
    data_off = phoff + 56 * len(segments)
    hdr = b"\x7fELF" + bytes([cls, 1, 1]) + bytes(9)
    hdr += struct.pack("<HHIQQQIHHHHHH", etype, machine, 1, entry, phoff, 0, 0, 64, 56,
                       len(segments), 64, 0, 0)
    phdrs = b""
    blobs = b""
    for paddr, data, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 5, data_off + len(blobs), paddr, paddr, len(data),
                             memsz, 0x1000)
        blobs += data
    return hdr + phdrs + blobs


@pytest.fixture
def ram():
    phys = PhysicalMemory(MemRange(0, 128 * MiB))
    ds = phys.allocate(16 * MiB, fixed=32 * MiB)
    mem = GuestMemory()
    mem.add(RamRegion(ds.range, ds, "ram"))
    mem._keep = (phys, ds)
    return mem, ds.range


def test_exec_elf_loads_at_paddr_and_zeroes_bss(ram):
    mem, rng = ram
    elf = make_elf(0x0200_0000 + 0x100, [(0x0200_0000 + 0x100, b"\x11" * 16, 64)])
    mem.fill(0x0200_0000 + 0x110, 48, 0xEE)
    img = load_kernel(elf, "k.elf", mem, rng, KernelSpec("k.elf"))
    assert img.entry == 0x0200_0100
    assert mem.read(0x0200_0100, 16) == b"\x11" * 16
    assert mem.read(0x0200_0110, 48) == bytes(48)


def test_exec_elf_outside_ram_names_the_fix(ram):
    mem, rng = ram
    elf = make_elf(0x8000, [(0x8000, b"\0" * 4, 4)])
    with pytest.raises(ImageError, match="k.elf segment 0.*not inside the VM's RAM.*fixed"):
        load_kernel(elf, "k.elf", mem, rng, KernelSpec("k.elf"))


def test_pie_elf_is_placed_at_ram_base(ram):
    mem, rng = ram
    img = load_kernel((IMAGES / "hello.elf").read_bytes(), "hello.elf", mem, rng,
                      KernelSpec("hello.elf"))
    assert rng.contains(img.entry) and img.format == "ELF (PIE)"
    assert all(rng.contains(r.base, r.size) for r in img.ranges)


@pytest.mark.parametrize("blob,msg", [
    (make_elf(0, [], machine=62), "not AArch64"),
    (make_elf(0, [], cls=1), "32-bit"),
    (make_elf(0x0200_0000, []), "no loadable segment"),
    (b"\x7fELF" + bytes(10), "malformed ELF"),
    (make_elf(0x0200_0000, [(0x0200_0000, b"x" * 8, 4)]), "malformed"),
    (make_elf(0x0300_0000, [(0x0200_0000, b"x" * 8, 8)]), "entry point"),
    (b"MZ" + bytes(100), "Cannot boot EFI"),
    (b"junk" * 20, "unknown kernel format"),
    (b"\x1f\x8b\x08\x00corrupt", "gzip"),
])
def test_bad_kernels_are_one_line_errors(ram, blob, msg):
    mem, rng = ram
    with pytest.raises(ImageError, match=msg) as err:
        load_kernel(blob, "k", mem, rng, KernelSpec("k"))
    assert "\n" not in str(err.value)


def arm64_image(text_offset, size, payload=b"\x1f\x20\x03\xd5"):
    hdr = bytearray(64)
    struct.pack_into("<IIQQQ", hdr, 0, 0x14000010, 0, text_offset, size, 0xA)
    hdr[0x38:0x3C] = b"ARM\x64"
    return bytes(hdr) + payload


def test_arm64_image_at_text_offset_and_gzip(ram):
    mem, rng = ram
    img = load_kernel(arm64_image(0x80000, 0x1000), "Image", mem, rng, KernelSpec("Image"))
    assert img.entry == rng.base + 0x80000 and img.format == "arm64 Image"
    gz = gzip.compress(arm64_image(0x200000, 0))
    img = load_kernel(gz, "Image.gz", mem, rng, KernelSpec("Image.gz"))
    assert img.entry == rng.base + 0x200000 and img.format == "gzip+arm64 Image"


def test_image_too_big(ram):
    mem, rng = ram
    with pytest.raises(ImageError, match="give more mem"):
        load_kernel(arm64_image(0, 32 * MiB), "Image", mem, rng, KernelSpec("Image"))


def test_gzip_bomb_is_bounded(ram):
    mem, rng = ram
    gz = gzip.compress(bytes(20 * MiB))
    with pytest.raises(ImageError, match="more than the VM's RAM"):
        load_kernel(gz, "big.gz", mem, rng, KernelSpec("big.gz"))


def test_raw_and_rom_specs(ram):
    mem, rng = ram
    spec = KernelSpec.parse("raw:addr=0x1000:blob.bin")
    assert spec == KernelSpec("blob.bin", "raw", 0x1000)
    img = load_kernel(b"abcd", "blob.bin", mem, rng, spec)
    assert img.entry == rng.base + 0x1000 and mem.read(img.entry, 4) == b"abcd"
    rom = KernelSpec.parse("rom:addr=0x2000000:64bit")
    assert load_kernel(b"", "", mem, rng, rom).entry == 0x2000000
    assert KernelSpec.parse("raw:blob").addr == 0x208000
    with pytest.raises(ImageError, match="hex"):
        KernelSpec.parse("raw:addr=zz:blob")
