"""The board's physical devices, one model each, built from the board description.

These are not any VM's: they exist from power-on, keep their state when the
VM or service that owned them ends, and their interrupt outputs are the
kernel's IRQ objects (``irq_line``), which route each line to its one owner.
Every model is reached by whoever io gave it to, through its MMIO protocol;
the host watches them here (``leds``, ``device``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from pyned.devices.base import IrqLine
from pyned.devices.leds import LedBoard
from pyned.devices.pl011 import Pl011
from pyned.devices.pl061 import Pl061
from pyned.devices.sp804 import Clock, Sp804
from pyned.platform.board import Board, Peripheral


class Console(Protocol):
    """A terminal for a physical UART: output bytes, and a way to deliver typed input."""

    def write(self, data: bytes) -> None: ...

    def attach_input(self, fn: Callable[[bytes], int]) -> None: ...


@dataclass
class HwDevice:
    spec: Peripheral
    model: object


class Hardware:
    def __init__(self, board: Board, irq_line: Callable[[int], IrqLine], clock: Clock,
                 now: Callable[[], int], console: Callable[[str], Console]) -> None:
        self.board = board
        self.leds = LedBoard((led.name for led in board.leds), now)
        self.devices: dict[str, HwDevice] = {}
        for p in board.peripherals:
            line = irq_line(p.intid)
            if p.compatible == "arm,pl011":
                con = console(p.name)
                uart = Pl011(con, line)
                con.attach_input(uart.push_input)
                model: object = uart
            elif p.compatible == "arm,sp804":
                model = Sp804(line, clock, now)
            elif p.compatible == "arm,pl061":
                model = Pl061(line, self._led_watcher(p.name))
            else:
                raise ValueError(f"board device {p.name}: no model for {p.compatible}")
            self.devices[p.name] = HwDevice(p, model)

    def _led_watcher(self, gpio: str) -> Callable[[int, int], None] | None:
        wired = [(led.name, led.pin) for led in self.board.leds if led.gpio == gpio]
        if not wired:
            return None

        def pads_changed(pads: int, _outputs: int) -> None:
            for name, pin in wired:
                self.leds.set(name, bool(pads >> pin & 1))

        return pads_changed

    def device(self, name: str) -> object:
        return self.devices[name].model

    def at(self, addr: int, size: int = 1) -> HwDevice | None:
        """The board device whose window holds [addr, addr + size)."""
        return next((d for d in self.devices.values() if d.spec.window.contains(addr, size)),
                    None)
