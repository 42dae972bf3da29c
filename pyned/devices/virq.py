"""uvmm's ``l4vmm,virq-snd``: a store anywhere in the window triggers an IRQ object.

The receiving side (``l4vmm,virq-rcv``) needs no register: the VMM binds the
IRQ object to a virtual GIC input, so a doorbell between two VMs is one
store on the sender and one interrupt on the receiver, with nothing to
acknowledge at the device.
"""

from __future__ import annotations

from typing import Callable


class VirqSender:
    def __init__(self, trigger: Callable[[], None]) -> None:
        self._trigger = trigger
        self.rings = 0

    def read(self, offset: int, size: int, cpu: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int, cpu: int) -> None:
        self.rings += 1
        self._trigger()

    def reset(self) -> None:
        pass

    def replay_safe(self, offset: int, is_write: bool) -> bool:
        return not is_write
