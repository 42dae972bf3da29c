"""IRQ objects: each routes one interrupt source to exactly one owner.

A hardware line is a platform device's interrupt output (an SPI of the
board's GIC); the ICU holds one IRQ object per line, and io hands the right to
bind it to whoever owns the device (a VM's virtual GIC, a native service). A
software IRQ (ned's ``factory:create(L4.Proto.Irq_sender)``) has no line: its
sender triggers an event, as uvmm's ``l4vmm,virq-snd`` does.

Binding is exclusive: a second owner is refused with a clear error. While an
object is unbound a line keeps its level and a software IRQ keeps one pending
event (a kernel IRQ object queues one); the receiver gets either at ``bind``.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

from pyned.errors import ConfigError


class IrqBusy(ConfigError):
    """The interrupt is bound to another owner already."""


class IrqSink(Protocol):
    """Where an IRQ object delivers: a virtual GIC input, a native service."""

    def set_level(self, level: bool) -> None: ...

    def pulse(self) -> None: ...


class Irq:
    """One kernel IRQ object: a hardware line (``set_level``) or a software one (``trigger``)."""

    def __init__(self, name: str, number: int | None = None) -> None:
        self.name = name
        self.number = number          # the INTID of a hardware line; None for software IRQs
        self.owner: str | None = None
        self.level = False
        self.events = 0               # rising edges / triggers, for the monitor and benchmarks
        self.last_event_ns = 0
        self._pending = False         # a trigger nobody received yet
        self._sink: IrqSink | None = None
        self._lock = threading.Lock()

    def bind(self, owner: str, sink: IrqSink) -> None:
        with self._lock:
            if self.owner is not None and self.owner != owner:
                raise IrqBusy(f"{self.name} is bound to {self.owner} already; "
                              f"it cannot also go to {owner}")
            self.owner, self._sink = owner, sink
            level, pending, self._pending = self.level, self._pending, False
        if level:
            sink.set_level(True)
        if pending:
            sink.pulse()

    def unbind(self, owner: str) -> None:
        with self._lock:
            if self.owner == owner:
                self.owner, self._sink = None, None

    def set_level(self, level: bool) -> None:
        """The line's new level, from the device (any thread).

        Forwarded under the lock, so that levels from two threads reach the
        sink in the order they were set here.
        """
        with self._lock:
            if level == self.level:
                return
            self.level = level
            if level:
                self.events += 1
                self.last_event_ns = time.monotonic_ns()
            if self._sink is not None:
                self._sink.set_level(level)

    def trigger(self) -> None:
        """A software event (``L4::Irq::trigger``)."""
        with self._lock:
            self.events += 1
            self.last_event_ns = time.monotonic_ns()
            sink = self._sink
            if sink is None:
                self._pending = True
        if sink is not None:
            sink.pulse()

    def __repr__(self) -> str:
        return f"<Irq {self.name} owner={self.owner}>"


class Icu:
    """The board's interrupt lines as IRQ objects, by INTID (created on first use)."""

    def __init__(self, first: int, count: int) -> None:
        self.first, self.count = first, count
        self._lines: dict[int, Irq] = {}
        self._lock = threading.Lock()

    def line(self, intid: int) -> Irq:
        if not self.first <= intid < self.first + self.count:
            raise ValueError(f"INTID {intid} is not a shared interrupt of the board "
                             f"({self.first}..{self.first + self.count - 1})")
        with self._lock:
            irq = self._lines.get(intid)
            if irq is None:
                irq = self._lines[intid] = Irq(f"interrupt {intid}", intid)
            return irq

    def lines(self) -> list[Irq]:
        with self._lock:
            return [self._lines[k] for k in sorted(self._lines)]
