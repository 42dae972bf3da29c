import pytest

from pyned.errors import MemoryLayoutError
from pyned.kernel.memory import PhysicalMemory
from pyned.kernel.mpu import Access, MpuMap, MpuRegion
from pyned.platform.board import MemRange

MiB = 1 << 20


@pytest.fixture
def phys():
    return PhysicalMemory(MemRange(0, 256 * MiB), (MemRange(0, 16 * MiB),))


def test_allocations_are_aligned_and_never_overlap(phys):
    a = phys.allocate(3 * MiB, align_bits=21)
    b = phys.allocate(16 * MiB, align_bits=24)
    assert a.base % (2 * MiB) == 0 and a.base >= 16 * MiB
    assert b.base % (16 * MiB) == 0
    assert not a.range.overlaps(b.range)


def test_fixed_address_and_overlap_error(phys):
    a = phys.allocate(4 * MiB, fixed=32 * MiB)
    assert a.base == 32 * MiB
    with pytest.raises(MemoryLayoutError, match="overlaps"):
        phys.allocate(4 * MiB, fixed=34 * MiB)
    with pytest.raises(MemoryLayoutError, match="outside DRAM"):
        phys.allocate(4 * MiB, fixed=255 * MiB)
    with pytest.raises(MemoryLayoutError, match="reserved"):
        phys.allocate(MiB, fixed=0)


def test_exhaustion_is_a_clear_error(phys):
    with pytest.raises(MemoryLayoutError, match="no free 512 MiB"):
        phys.allocate(512 * MiB)


def test_fresh_dataspace_is_zeroed_and_released_memory_reused(phys):
    a = phys.allocate(2 * MiB)
    a.view()[:4] = b"junk"
    base = a.base
    a.release()
    b = phys.allocate(2 * MiB)
    assert b.base == base
    assert bytes(b.view()[:4]) == b"\0\0\0\0"


def test_dataspace_freed_when_unreferenced(phys):
    a = phys.allocate(2 * MiB)
    base = a.base
    del a
    assert all(x.range.base != base for x in phys.allocations())


def test_mpu_limit_alignment_overlap():
    m = MpuMap(2, "vm1")
    m.add(MpuRegion(MemRange(0x1000000, 0x100000), Access.RWX, "ram", "a"))
    with pytest.raises(MemoryLayoutError, match="overlaps"):
        m.add(MpuRegion(MemRange(0x1080000, 0x100000), Access.RW, "ram", "b"))
    with pytest.raises(MemoryLayoutError, match="aligned"):
        m.add(MpuRegion(MemRange(0x2000010, 0x100), Access.RW, "mmio", "c"))
    m.add(MpuRegion(MemRange(0x3000000, 0x1000), Access.RW, "mmio", "d"))
    with pytest.raises(MemoryLayoutError, match="2 EL2 MPU regions"):
        m.add(MpuRegion(MemRange(0x4000000, 0x1000), Access.RW, "mmio", "e"))
    assert m.find(0x1000010).name == "a" and m.find(0x5000000) is None
