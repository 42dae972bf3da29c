"""virtio-rng, the entropy device (VIRTIO 1.2 §5.4), device id 4, one requestq.

Each driver buffer is filled with random bytes: from ``os.urandom``, or, when
a ``seed`` is given, from a deterministic stream (``random.Random(seed)``)
so that tests and recorded runs repeat exactly. At most ``MAX_REQUEST``
bytes go into one buffer; the used length tells the driver how many, which
the specification allows. No features, no configuration space.
"""

from __future__ import annotations

import os
import random

from pyned.devices.virtio.mmio import Deferred, VirtioDevice
from pyned.devices.virtio.queue import Virtqueue, VirtqueueError, scatter

VIRTIO_ID_ENTROPY = 4
MAX_REQUEST = 64 * 1024


class VirtioRng(VirtioDevice):
    device_id = VIRTIO_ID_ENTROPY
    name = "rng"
    num_queues = 1
    queue_max = 64

    def __init__(self, seed: int | None = None) -> None:
        super().__init__()
        self._random = random.Random(seed) if seed is not None else None
        self.bytes_supplied = 0

    def _entropy(self, n: int) -> bytes:
        return self._random.randbytes(n) if self._random is not None else os.urandom(n)

    def on_notify(self, index: int, queue: Virtqueue) -> Deferred | None:
        while (chain := queue.pop()) is not None:
            if chain.readable:
                raise VirtqueueError("entropy request has device-readable descriptors")
            n = scatter(chain.writable, self._entropy(min(chain.writable_len, MAX_REQUEST)))
            self.bytes_supplied += n
            queue.push(chain.head, n)
        return None
