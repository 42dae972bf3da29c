"""virtio-net (VIRTIO 1.2 §5.1), device id 1, one receive and one transmit queue.

Features: VIRTIO_NET_F_MAC and VIRTIO_NET_F_STATUS (the link is up unless
``set_link(False)``). Without MRG_RXBUF, checksum or segmentation offloads a
frame travels whole with a 12-byte virtio_net_hdr (VERSION_1 layout,
num_buffers = 1 on receive) in front, and every frame is at most
``MAX_FRAME_LEN`` bytes.

The device is one end of a cable. ``connect(uplink)`` gives it the function
that takes its transmitted frames (a switch port); transmitted frames are
handed over after the transport lock is released, so the switch may deliver
into another VM's device without any lock order between VMs. The other
direction is ``deliver(frame) -> bool``, callable from any thread: False
means the frame was dropped (no receive buffer posted, the buffer too small,
driver not ready or link down), as on a real port that is not keeping up.
Frames are never queued in the device.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Callable

from pyned.devices.virtio.mmio import Deferred, VirtioDevice
from pyned.devices.virtio.queue import Virtqueue, VirtqueueError, gather, scatter

VIRTIO_ID_NET = 1
VIRTIO_NET_F_MAC = 5
VIRTIO_NET_F_STATUS = 16
VIRTIO_NET_S_LINK_UP = 1

RECEIVEQ = 0
TRANSMITQ = 1
NET_HDR_LEN = 12  # struct virtio_net_hdr with num_buffers (VERSION_1)
ETH_HLEN = 14
MAX_FRAME_LEN = 65535
# flags, gso_type = GSO_NONE, hdr_len, gso_size, csum_start, csum_offset, num_buffers = 1
_RX_HDR = struct.pack("<BBHHHHH", 0, 0, 0, 0, 0, 0, 1)

Uplink = Callable[[bytes], None]


def parse_mac(mac: str | bytes) -> bytes:
    """Six bytes from ``"52:54:00:12:34:56"`` (or ``-`` separated), or six bytes as given."""
    if isinstance(mac, (bytes, bytearray)):
        raw = bytes(mac)
    else:
        parts = mac.replace("-", ":").split(":")
        if len(parts) != 6 or not all(1 <= len(p) <= 2 for p in parts):
            raise ValueError(f"bad MAC address {mac!r}: expected xx:xx:xx:xx:xx:xx")
        try:
            raw = bytes(int(p, 16) for p in parts)
        except ValueError:
            raise ValueError(f"bad MAC address {mac!r}: expected xx:xx:xx:xx:xx:xx") from None
    if len(raw) != 6:
        raise ValueError(f"bad MAC address {raw!r}: expected 6 bytes")
    return raw


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def default_mac(seed: str) -> bytes:
    """A stable locally administered unicast MAC derived from ``seed``."""
    raw = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFC) | 0x02
    return bytes(raw)


class VirtioNet(VirtioDevice):
    device_id = VIRTIO_ID_NET
    name = "net"
    num_queues = 2
    queue_max = 256
    device_features = (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS)

    def __init__(self, mac: str | bytes | None = None, *, seed: str = "pyned-net") -> None:
        super().__init__()
        self.mac = parse_mac(mac) if mac is not None else default_mac(seed)
        self.link_up = True
        self._uplink: Uplink | None = None
        self.tx_frames = self.tx_bytes = self.tx_dropped = 0
        self.rx_frames = self.rx_bytes = self.rx_dropped = 0

    def config_bytes(self) -> bytes:
        # mac, status, max_virtqueue_pairs, mtu
        return self.mac + struct.pack("<HHH", VIRTIO_NET_S_LINK_UP if self.link_up else 0, 1, 1500)

    # -- the cable ------------------------------------------------------------

    def connect(self, uplink: Uplink | None) -> None:
        """Where transmitted frames go from now on (None: nowhere, they are dropped)."""
        self._uplink = uplink

    def set_link(self, up: bool) -> None:
        if up != self.link_up:
            self.link_up = up
            if self.transport is not None:
                self.transport.config_changed()

    def deliver(self, frame: bytes) -> bool:
        """Receive one Ethernet frame; False when it was dropped."""
        if self.transport is None:
            self.rx_dropped += 1
            return False
        return self.transport.device_call(lambda: self._receive(frame), False)

    def _receive(self, frame: bytes) -> bool:
        assert self.transport is not None
        queue = self.transport.queue(RECEIVEQ)
        chain = queue.pop() if queue is not None and self.link_up else None
        if chain is None:
            self.rx_dropped += 1
            return False
        assert queue is not None
        if chain.readable:
            raise VirtqueueError("receive buffer has device-readable descriptors")
        need = NET_HDR_LEN + len(frame)
        if chain.writable_len < need:
            # The driver sees a zero-length completion and recycles the buffer.
            queue.push(chain.head, 0)
            self.rx_dropped += 1
            return False
        scatter(chain.writable, _RX_HDR)
        scatter(chain.writable, frame, NET_HDR_LEN)
        queue.push(chain.head, need)
        self.rx_frames += 1
        self.rx_bytes += len(frame)
        return True

    # -- transmit -------------------------------------------------------------

    def on_notify(self, index: int, queue: Virtqueue) -> Deferred | None:
        if index != TRANSMITQ:
            return None  # new receive buffers: used when the next frame arrives
        frames: list[bytes] = []
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise VirtqueueError("transmit buffer has device-writable descriptors")
            length = chain.readable_len - NET_HDR_LEN
            if ETH_HLEN <= length <= MAX_FRAME_LEN:
                frames.append(gather(chain.readable, NET_HDR_LEN))
            else:
                self.tx_dropped += 1
            queue.push(chain.head, 0)
        if not frames:
            return None
        uplink = self._uplink
        if uplink is None:
            self.tx_dropped += len(frames)
            return None
        self.tx_frames += len(frames)
        self.tx_bytes += sum(map(len, frames))

        def send() -> None:
            for frame in frames:
                uplink(frame)
        return send
