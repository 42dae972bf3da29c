import os
import struct

import pytest
from virtq_driver import Driver, FakeRam

from pyned.devices.virtio.block import (MAX_DISCARD_SEG, SEG_MAX, VIRTIO_BLK_F_DISCARD,
                                        VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
                                        VIRTIO_BLK_F_WRITE_ZEROES, VIRTIO_BLK_S_IOERR,
                                        VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
                                        VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
                                        VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES, VirtioBlock)
from pyned.devices.virtio.mmio import MmioReg

SECTORS = 64


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(i % 251 for i in range(SECTORS * 512)))
    return path


def make(path, **kw):
    log = []
    dev = VirtioBlock(path, log=log.append, **kw)
    drv = Driver(dev, FakeRam(8 << 20))
    q = drv.bring_up(sizes=[64])[0]
    return drv, dev, q, log


def request(q, rtype, sector, out=b"", in_len=0, *, split_header=False, status_with_data=False,
            indirect=False, extra_out=()):
    hdr = struct.pack("<IIQ", rtype, 0, sector)
    outs = [hdr[:8], hdr[8:]] if split_header else [hdr]
    outs += ([out] if out else []) + list(extra_out)
    if status_with_data:
        ins = [in_len + 1]
    else:
        ins = ([in_len] if in_len else []) + [1]
    head = q.add(outs, ins, indirect=indirect)
    q.kick()
    used = q.take_used()
    assert [h for h, _ in used] == [head]
    if status_with_data:
        raw = q.read_buffer(head, 0, in_len + 1)
        return raw[-1], raw[:-1], used[0][1]
    status = q.read_buffer(head, len(ins) - 1, 1)[0]
    data = q.read_buffer(head, 0, in_len) if in_len else b""
    return status, data, used[0][1]


def expected(image, sector, n):
    return image.read_bytes()[sector * 512:(sector + n) * 512]


def test_config_and_features(image):
    drv, dev, _, _ = make(image)
    m = drv.mmio
    assert drv.get(MmioReg.DEVICE_ID) == 2
    assert m.read(0x100, 4, 0) | m.read(0x104, 4, 0) << 32 == SECTORS
    assert m.read(0x100, 8, 0) == SECTORS
    assert m.read(0x10C, 4, 0) == SEG_MAX
    assert m.read(0x114, 4, 0) == 512  # blk_size
    assert m.read(0x128, 4, 0) == MAX_DISCARD_SEG
    assert m.read(0x138, 1, 0) == 1  # write_zeroes_may_unmap
    features = drv.device_features()
    assert features >> VIRTIO_BLK_F_FLUSH & 1
    assert features >> VIRTIO_BLK_F_DISCARD & 1 and features >> VIRTIO_BLK_F_WRITE_ZEROES & 1
    assert not features >> VIRTIO_BLK_F_RO & 1


def test_read(image):
    _, dev, q, _ = make(image)
    status, data, used = request(q, VIRTIO_BLK_T_IN, 3, in_len=1024)
    assert status == VIRTIO_BLK_S_OK and data == expected(image, 3, 2)
    assert used == 1025
    assert dev.reads == 1 and dev.bytes_read == 1024


def test_read_with_odd_layouts(image):
    _, _, q, _ = make(image)
    status, data, _ = request(q, VIRTIO_BLK_T_IN, 5, in_len=512, split_header=True,
                              status_with_data=True)
    assert status == VIRTIO_BLK_S_OK and data == expected(image, 5, 1)
    status, data, _ = request(q, VIRTIO_BLK_T_IN, 7, in_len=2048, indirect=True)
    assert status == VIRTIO_BLK_S_OK and data == expected(image, 7, 4)


def test_write_goes_to_the_file(image):
    _, dev, q, _ = make(image)
    payload = os.urandom(1536)
    status, _, used = request(q, VIRTIO_BLK_T_OUT, 10, out=payload)
    assert status == VIRTIO_BLK_S_OK and used == 1
    assert expected(image, 10, 3) == payload
    status, data, _ = request(q, VIRTIO_BLK_T_IN, 10, in_len=1536)
    assert data == payload
    assert request(q, VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    assert dev.flushes == 1


def test_write_with_data_split_over_descriptors(image):
    _, _, q, _ = make(image)
    a, b = os.urandom(100), os.urandom(412)
    status, _, _ = request(q, VIRTIO_BLK_T_OUT, 1, out=a, extra_out=[b], split_header=True)
    assert status == VIRTIO_BLK_S_OK
    assert expected(image, 1, 1) == a + b


@pytest.mark.parametrize("rtype, sector, out, in_len", [
    (VIRTIO_BLK_T_IN, SECTORS - 1, b"", 1024),
    (VIRTIO_BLK_T_IN, 1 << 63, b"", 512),
    (VIRTIO_BLK_T_IN, 0, b"", 100),
    (VIRTIO_BLK_T_OUT, SECTORS, b"x" * 512, 0),
    (VIRTIO_BLK_T_OUT, 0, b"x" * 100, 0),
])
def test_bad_values_are_ioerr_not_reset(image, rtype, sector, out, in_len):
    drv, dev, q, _ = make(image)
    before = image.read_bytes()
    status, _, used = request(q, rtype, sector, out=out, in_len=in_len)
    assert status == VIRTIO_BLK_S_IOERR and used == 1
    assert not drv.needs_reset()
    assert image.read_bytes() == before
    assert dev.errors == 1


def test_unknown_request_type_is_unsupported(image):
    _, _, q, _ = make(image)
    assert request(q, 99, 0)[0] == VIRTIO_BLK_S_UNSUPP


def test_get_id(image, tmp_path):
    _, _, q, _ = make(image)
    status, data, used = request(q, VIRTIO_BLK_T_GET_ID, 0, in_len=20)
    assert status == VIRTIO_BLK_S_OK and data == b"disk.img".ljust(20, b"\0")
    assert used == 21
    _, _, q, _ = make(image, serial="a-very-long-serial-number-indeed")
    assert request(q, VIRTIO_BLK_T_GET_ID, 0, in_len=20)[1] == b"a-very-long-serial-n"


def segments(*segs):
    return b"".join(struct.pack("<QII", s, n, f) for s, n, f in segs)


def test_discard_reads_back_zeros_and_keeps_size(image):
    _, _, q, _ = make(image)
    status, _, _ = request(q, VIRTIO_BLK_T_DISCARD, 0, out=segments((8, 8, 0), (32, 16, 0)))
    assert status == VIRTIO_BLK_S_OK
    assert expected(image, 8, 8) == bytes(4096)
    assert expected(image, 32, 16) == bytes(8192)
    assert expected(image, 16, 1) != bytes(512)
    assert image.stat().st_size == SECTORS * 512


@pytest.mark.parametrize("flags", [0, 1])
def test_write_zeroes(image, flags):
    _, _, q, _ = make(image)
    status, _, _ = request(q, VIRTIO_BLK_T_WRITE_ZEROES, 0, out=segments((3, 5, flags)))
    assert status == VIRTIO_BLK_S_OK
    assert expected(image, 3, 5) == bytes(2560)
    assert expected(image, 8, 1) != bytes(512)
    assert image.stat().st_size == SECTORS * 512


@pytest.mark.parametrize("rtype, segs, status", [
    (VIRTIO_BLK_T_DISCARD, [(0, 8, 1)], VIRTIO_BLK_S_UNSUPP),  # unmap is for write-zeroes only
    (VIRTIO_BLK_T_WRITE_ZEROES, [(0, 8, 2)], VIRTIO_BLK_S_UNSUPP),
    (VIRTIO_BLK_T_WRITE_ZEROES, [(0, 8, 0), (8, 8, 0)], VIRTIO_BLK_S_IOERR),  # max 1 segment
    (VIRTIO_BLK_T_DISCARD, [(0, 8, 0), (SECTORS, 1, 0)], VIRTIO_BLK_S_IOERR),
    (VIRTIO_BLK_T_DISCARD, [(i, 1, 0) for i in range(MAX_DISCARD_SEG + 1)], VIRTIO_BLK_S_IOERR),
    (VIRTIO_BLK_T_DISCARD, [], VIRTIO_BLK_S_IOERR),
])
def test_bad_discard_requests_change_nothing(image, rtype, segs, status):
    _, _, q, _ = make(image)
    before = image.read_bytes()
    assert request(q, rtype, 0, out=segments(*segs))[0] == status
    assert image.read_bytes() == before


def test_read_only_image(image):
    drv, dev, q, _ = make(image, read_only=True)
    features = drv.device_features()
    assert features >> VIRTIO_BLK_F_RO & 1
    assert not features >> VIRTIO_BLK_F_DISCARD & 1
    before = image.read_bytes()
    assert request(q, VIRTIO_BLK_T_OUT, 0, out=b"x" * 512)[0] == VIRTIO_BLK_S_IOERR
    assert request(q, VIRTIO_BLK_T_DISCARD, 0, out=segments((0, 8, 0)))[0] == VIRTIO_BLK_S_UNSUPP
    assert request(q, VIRTIO_BLK_T_FLUSH, 0)[0] == VIRTIO_BLK_S_OK
    status, data, _ = request(q, VIRTIO_BLK_T_IN, 0, in_len=512)
    assert status == VIRTIO_BLK_S_OK and data == before[:512]
    assert image.read_bytes() == before
    with pytest.raises(OSError):
        os.write(dev._fd, b"x")  # opened O_RDONLY


def test_partial_last_sector_is_ignored_and_logged(tmp_path):
    path = tmp_path / "odd.img"
    path.write_bytes(bytes(512 * 3 + 100))
    drv, dev, q, log = make(path)
    assert dev.capacity == 3
    assert "not a multiple of 512" in log[0]
    assert request(q, VIRTIO_BLK_T_IN, 2, in_len=1024)[0] == VIRTIO_BLK_S_IOERR


def test_malformed_requests_need_reset(image):
    drv, _, q, _ = make(image)
    q.add([b"short"], [1])
    q.kick()
    assert drv.needs_reset() and "header" in drv.mmio.failure
    drv, _, q, _ = make(image)
    q.add([struct.pack("<IIQ", VIRTIO_BLK_T_FLUSH, 0, 0)])
    q.kick()
    assert drv.needs_reset() and "status byte" in drv.mmio.failure


def test_closed_device_answers_ioerr(image):
    _, dev, q, _ = make(image)
    dev.close()
    dev.close()
    assert request(q, VIRTIO_BLK_T_IN, 0, in_len=512)[0] == VIRTIO_BLK_S_IOERR


def test_big_request_through_indirect_table(image):
    _, _, q, _ = make(image)
    # 32 KiB in 64 segments: more descriptors than the 64-entry ring has left.
    hdr = struct.pack("<IIQ", VIRTIO_BLK_T_IN, 0, 0)
    head = q.add([hdr], [512] * 64 + [1], indirect=True)
    q.kick()
    assert q.take_used() == [(head, 32 * 1024 + 1)]
    assert q.read_buffer(head, 63, 512) == expected(image, 63, 1)
