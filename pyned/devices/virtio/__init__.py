"""VirtIO over MMIO: split virtqueues (queue), the virtio-mmio transport (mmio)
and the device backends (console, block, net, rng).

A VM gets one ``VirtioMmio(device, ram, irq, log)`` per ``virtio,mmio`` node;
the backend is chosen from the node's ``l4vmm,vdev`` as in uvmm. Net devices
are connected to a ``pyned.services.switch.VirtioSwitch`` port.
"""

from pyned.devices.virtio.block import VirtioBlock
from pyned.devices.virtio.console import VirtioConsole
from pyned.devices.virtio.mmio import VirtioDevice, VirtioMmio
from pyned.devices.virtio.net import VirtioNet
from pyned.devices.virtio.queue import Chain, Virtqueue, VirtqueueError
from pyned.devices.virtio.rng import VirtioRng

__all__ = ["Chain", "VirtioBlock", "VirtioConsole", "VirtioDevice", "VirtioMmio", "VirtioNet",
           "VirtioRng", "Virtqueue", "VirtqueueError"]
