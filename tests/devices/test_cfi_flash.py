"""The CFI flash model without Unicorn: query table, commands, status, programming, storage."""

import struct

import pytest

from pyned.devices.cfi_flash import (BLOCK_SIZE, CfiFlash, CfiQuery, FlashCmd, FlashStorage,
                                     Mode, Status)

BANK = 64 << 20   # QEMU virt's bank: two x16 chips on a 32-bit bus
SMALL = 4 << 20   # the same chips, smaller, where the size does not matter


def flash(size=SMALL, **kw):
    kw.setdefault("bank_width", 4)
    kw.setdefault("device_width", 2)
    log = []
    dev = CfiFlash(bytearray(b"\xff" * size), log=log.append, **kw)
    dev.log = log
    return dev


def cmd(dev, value, offset=0):
    """A command as drivers write it: the same byte to every chip, at bus width."""
    dev.write(offset, 4, value * 0x0001_0001, 0)


def query(dev, index):
    """One chip's query byte, read through chip 0's lanes."""
    return dev.read(index * dev.bank_width, 2, 0)


def test_cfi_query_table_describes_each_chip():
    dev = flash(BANK)
    cmd(dev, FlashCmd.CFI_QUERY, 0x55 * 4)
    assert not dev.array_mode
    # "QRY", replicated on both chips' lanes.
    assert [dev.read(4 * (CfiQuery.QRY + i), 4, 0) for i in range(3)] == \
        [0x0051_0051, 0x0052_0052, 0x0059_0059]
    assert query(dev, CfiQuery.COMMAND_SET) == 1 and query(dev, CfiQuery.COMMAND_SET + 1) == 0
    assert query(dev, CfiQuery.PRIMARY_TABLE) == CfiQuery.PRI
    assert query(dev, CfiQuery.DEVICE_SIZE) == 25              # 32 MiB per chip
    assert query(dev, CfiQuery.INTERFACE) == 1                 # x16
    assert query(dev, CfiQuery.BUFFER_SIZE) == 6               # 64 bytes per chip
    assert query(dev, CfiQuery.ERASE_REGIONS) == 1
    region = [query(dev, CfiQuery.REGION1 + i) for i in range(4)]
    assert region == [0xFF, 0x00, 0x00, 0x02]                  # 256 blocks of 128 KiB per chip
    assert bytes(query(dev, CfiQuery.PRI + i) for i in range(5)) == b"PRI10"
    assert query(dev, CfiQuery.END) == 0 and query(dev, 0x1000) == 0
    # Narrow reads take their byte lanes: chip 1's copy sits at +2.
    assert dev.read(0x40, 1, 0) == 0x51 and dev.read(0x41, 1, 0) == 0
    assert dev.read(0x42, 2, 0) == 0x51
    # An 8-byte read spans two bus words.
    assert dev.read(0x40, 8, 0) == 0x0052_0052_0051_0051


@pytest.mark.parametrize("bank_width, device_width, chip_size, interface", [
    (1, 1, 1 << 20, 0), (2, 2, 1 << 20, 1), (4, 4, 1 << 20, 3), (8, 2, 1 << 18, 1)])
def test_geometry_for_other_widths(bank_width, device_width, chip_size, interface):
    dev = flash(1 << 20, bank_width=bank_width, device_width=device_width)
    cmd(dev, FlashCmd.CFI_QUERY)
    assert dev.chips == bank_width // device_width
    assert query(dev, CfiQuery.DEVICE_SIZE) == chip_size.bit_length() - 1
    assert query(dev, CfiQuery.INTERFACE) == interface
    assert dev.read(CfiQuery.QRY * bank_width, 1, 0) == ord("Q")


@pytest.mark.parametrize("size, bank, device, message", [
    (3 << 20, 4, 2, "not a power of two"), (0x800, 4, 2, "at least 4 KiB"),
    (BANK, 3, None, "bank-width 3"), (BANK, 4, 8, "device-width 8"), (BANK, 2, 4, "device-width 4")])
def test_geometries_it_cannot_describe(size, bank, device, message):
    with pytest.raises(ValueError, match=message):
        CfiFlash.check_geometry(size, bank, device)


def test_read_array_is_the_storage_and_reset_returns_to_it():
    dev = flash()
    dev.storage[0x10:0x18] = bytes(range(8))
    assert dev.array_mode and dev.read(0x10, 8, 0) == 0x0706050403020100
    cmd(dev, FlashCmd.READ_STATUS)
    assert dev.read(0x10, 4, 0) == 0x0080_0080
    cmd(dev, FlashCmd.AMD_RESET)          # what probing drivers send first
    assert dev.array_mode and dev.read(0x10, 1, 0) == 0
    cmd(dev, FlashCmd.READ_ID)
    dev.reset()
    assert dev.mode is Mode.READ_ARRAY and dev.status == Status.READY


def test_identifier_codes_and_block_lock_status():
    dev = flash()
    cmd(dev, FlashCmd.LOCK_SETUP, BLOCK_SIZE)
    cmd(dev, FlashCmd.LOCK_BLOCK, BLOCK_SIZE)
    assert dev.read(0, 4, 0) == 0x0080_0080                     # status, ready
    cmd(dev, FlashCmd.READ_ID)
    assert dev.read(0, 4, 0) == 0x0089_0089                     # Intel
    assert dev.read(4, 4, 0) == 0x0018_0018
    assert dev.read(8, 4, 0) == 0                               # block 0 unlocked
    assert dev.read(BLOCK_SIZE + 8, 4, 0) == 0x0001_0001        # block 1 locked
    assert dev.read(BLOCK_SIZE, 2, 0) == 0x89                   # codes at every block base


def test_word_program_clears_bits_only():
    dev = flash()
    cmd(dev, FlashCmd.PROGRAM, 0x100)
    dev.write(0x100, 4, 0x1234_5678, 0)
    assert dev.mode is Mode.READ_STATUS and dev.read(0x100, 4, 0) == 0x0080_0080
    cmd(dev, FlashCmd.PROGRAM_ALT, 0x100)
    dev.write(0x100, 4, 0xFFFF_00FF, 0)                         # ones cannot come back
    cmd(dev, FlashCmd.READ_ARRAY)
    assert dev.read(0x100, 4, 0) == 0x1234_0078
    assert dev.status == Status.READY


def test_block_erase_erases_its_block_only():
    dev = flash()
    dev.storage[:] = b"\0" * SMALL
    cmd(dev, FlashCmd.BLOCK_ERASE, BLOCK_SIZE + 0x40)
    cmd(dev, FlashCmd.CONFIRM, BLOCK_SIZE + 0x40)
    assert dev.status == Status.READY
    cmd(dev, FlashCmd.READ_ARRAY)
    assert dev.storage[BLOCK_SIZE:2 * BLOCK_SIZE] == b"\xff" * BLOCK_SIZE
    assert dev.storage[BLOCK_SIZE - 1] == 0 and dev.storage[2 * BLOCK_SIZE] == 0


def test_locked_blocks_and_read_only_flash_refuse_program_and_erase():
    dev = flash()
    cmd(dev, FlashCmd.LOCK_SETUP)
    cmd(dev, FlashCmd.LOCK_BLOCK)
    cmd(dev, FlashCmd.PROGRAM)
    dev.write(0, 4, 0, 0)
    assert dev.status == Status.READY | Status.LOCKED | Status.PROGRAM_ERROR
    cmd(dev, FlashCmd.CLEAR_STATUS)
    cmd(dev, FlashCmd.BLOCK_ERASE)
    cmd(dev, FlashCmd.CONFIRM)
    assert dev.status == Status.READY | Status.LOCKED | Status.ERASE_ERROR
    cmd(dev, FlashCmd.CLEAR_STATUS)
    cmd(dev, FlashCmd.LOCK_SETUP)
    cmd(dev, FlashCmd.CONFIRM)            # unlock
    cmd(dev, FlashCmd.PROGRAM)
    dev.write(0, 4, 0, 0)
    assert dev.status == Status.READY and dev.storage[:4] == b"\0" * 4

    ro = flash(read_only=True)
    cmd(ro, FlashCmd.PROGRAM)
    ro.write(0, 4, 0, 0)
    assert ro.status & Status.LOCKED and ro.storage[:4] == b"\xff" * 4


def test_buffered_program():
    dev = flash()
    cmd(dev, FlashCmd.WRITE_TO_BUFFER, 0x200)
    assert dev.read(0x200, 4, 0) == 0x0080_0080                 # the buffer is free
    dev.write(0x200, 4, 0x0003_0003, 0)                          # 4 words per chip
    words = [0x1111_1111, 0x2222_2222, 0x3333_3333, 0x4444_4444]
    for i, w in enumerate(words):
        dev.write(0x200 + 4 * i, 4, w, 0)
    assert dev.storage[0x200:0x210] == b"\xff" * 16             # nothing before the confirm
    cmd(dev, FlashCmd.CONFIRM, 0x200)
    assert dev.status == Status.READY
    assert dev.storage[0x200:0x210] == struct.pack("<4I", *words)


@pytest.mark.parametrize("steps", [
    # a count beyond the buffer (64 bytes per chip: 32 bus words)
    [(0x200, 0x0020_0020)],
    # data outside the buffer window of the first data write
    [(0x200, 0x0001_0001), (0x200, 0x5555_5555), (0x300, 0x5555_5555)],
    # a confirm that is not 0xD0
    [(0x200, 0x0000_0000), (0x200, 0x5555_5555), (0x200, 0x00FF_00FF)],
])
def test_broken_buffered_program_writes_nothing(steps):
    dev = flash()
    cmd(dev, FlashCmd.WRITE_TO_BUFFER, 0x200)
    for offset, value in steps:
        dev.write(offset, 4, value, 0)
    assert dev.status & (Status.PROGRAM_ERROR | Status.ERASE_ERROR) == \
        Status.PROGRAM_ERROR | Status.ERASE_ERROR
    assert dev.mode is Mode.READ_STATUS
    assert dev.storage[0x200:0x400] == b"\xff" * 0x200


def test_broken_erase_and_lock_sequences_set_both_error_bits():
    for setup in (FlashCmd.BLOCK_ERASE, FlashCmd.LOCK_SETUP):
        dev = flash()
        cmd(dev, setup)
        cmd(dev, FlashCmd.READ_ARRAY)         # not a valid second cycle
        assert dev.status == Status.READY | Status.PROGRAM_ERROR | Status.ERASE_ERROR
        assert dev.mode is Mode.READ_STATUS and dev.storage[:4] == b"\xff" * 4
        cmd(dev, FlashCmd.CLEAR_STATUS)
        assert dev.status == Status.READY


def test_unknown_commands_are_logged_once_and_return_to_read_array():
    dev = flash()
    cmd(dev, FlashCmd.READ_STATUS)
    cmd(dev, 0x42)
    cmd(dev, 0x42)
    assert dev.array_mode
    assert dev.log == ["cfi-flash: unknown command 0x42 at 0x0; back to read array"]
    cmd(dev, FlashCmd.SUSPEND)                # nothing runs: just status
    assert dev.mode is Mode.READ_STATUS and dev.status == Status.READY


def test_accesses_outside_the_bank_do_nothing():
    dev = flash(1 << 20)
    dev.write(1 << 20, 4, FlashCmd.CFI_QUERY, 0)
    assert dev.array_mode and dev.read((1 << 20) - 2, 4, 0) == 0


def test_storage_erased_or_with_an_image(tmp_path):
    s = FlashStorage(1 << 20, image=b"fw")
    assert s.memory[:3] == b"fw\xff" and s.memory[-1] == 0xFF
    s.close()
    s.close()                                 # twice is harmless
    with pytest.raises(ValueError, match="does not fit"):
        FlashStorage(4096, image=b"\0" * 4097)


def test_storage_file_is_created_erased_kept_in_sync_and_locked(tmp_path):
    path = tmp_path / "vars.img"
    s = FlashStorage(1 << 20, path=path)
    assert path.stat().st_size == 1 << 20
    s.memory[0:4] = b"env!"
    with pytest.raises(ValueError, match="in use by another VM"):
        FlashStorage(1 << 20, path=path)
    s.close()
    data = path.read_bytes()
    assert data[:4] == b"env!" and data[4:] == b"\xff" * ((1 << 20) - 4)
    again = FlashStorage(1 << 20, path=path)  # unlocked once closed
    assert again.memory[:4] == b"env!"
    again.close()
    with pytest.raises(ValueError, match="exactly 2097152"):
        FlashStorage(2 << 20, path=path)
    assert path.read_bytes() == data
