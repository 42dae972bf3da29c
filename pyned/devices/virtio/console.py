"""virtio-console (VIRTIO 1.2 §5.3), device id 3, uvmm's ``l4vmm,vdev = "console"``.

Port 0 only: no VIRTIO_CONSOLE_F_MULTIPORT, F_SIZE or F_EMERG_WRITE, so the
configuration space (cols, rows, max_nr_ports, emerg_wr) reads as zeros and
there are exactly two queues, receiveq (0) and transmitq (1). Output goes to
a CharSink, like the PL011's, after the transport lock is released. Input
from the host waits in a bounded buffer (64 KiB) until the driver posts
receive buffers; ``push_input`` returns how many bytes it took, as the
PL011's does. Input survives a device reset: the driver resets the device
when it probes, and what the user typed before that should still arrive.
"""

from __future__ import annotations

from pyned.devices.base import CharSink
from pyned.devices.virtio.mmio import Deferred, VirtioDevice
from pyned.devices.virtio.queue import Virtqueue, VirtqueueError, scatter

VIRTIO_ID_CONSOLE = 3
RECEIVEQ = 0
TRANSMITQ = 1
INPUT_BUFFER = 64 * 1024
CONFIG_SIZE = 12  # cols, rows, max_nr_ports, emerg_wr


class VirtioConsole(VirtioDevice):
    device_id = VIRTIO_ID_CONSOLE
    name = "console"
    num_queues = 2
    queue_max = 128

    def __init__(self, sink: CharSink, input_buffer: int = INPUT_BUFFER) -> None:
        super().__init__()
        self._sink = sink
        self._limit = input_buffer
        self._pending = bytearray()
        self.tx_bytes = 0
        self.rx_bytes = 0

    def config_bytes(self) -> bytes:
        return bytes(CONFIG_SIZE)

    # -- host side ------------------------------------------------------------

    def push_input(self, data: bytes) -> int:
        """Queue bytes for the guest; returns how many fitted in the input buffer."""
        if self.transport is None:
            return 0
        return self.transport.device_call(lambda: self._accept(data), 0)

    def _accept(self, data: bytes) -> int:
        taken = min(len(data), self._limit - len(self._pending))
        if taken > 0:
            self._pending += data[:taken]
            self._deliver()
        return max(taken, 0)

    # -- guest side -------------------------------------------------------------

    def on_notify(self, index: int, queue: Virtqueue) -> Deferred | None:
        if index == RECEIVEQ:
            self._deliver()
            return None
        out = bytearray()
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise VirtqueueError("console transmit buffer has device-writable descriptors")
            for view in chain.readable:
                out += view
            queue.push(chain.head, 0)
        if not out:
            return None
        self.tx_bytes += len(out)
        data = bytes(out)
        return lambda: self._sink.write(data)

    def _deliver(self) -> None:
        assert self.transport is not None
        queue = self.transport.queue(RECEIVEQ)
        if queue is None:
            return
        while self._pending and (chain := queue.pop()) is not None:
            if chain.readable:
                raise VirtqueueError("console receive buffer has device-readable descriptors")
            n = scatter(chain.writable, self._pending)
            del self._pending[:n]
            self.rx_bytes += n
            queue.push(chain.head, n)
