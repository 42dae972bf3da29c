"""``rom/gpio-blink``: a native program that blinks an LED on a GPIO it owns through io.

It is what a small L4Re driver does: take its vbus (capability ``vbus``),
find a PL061 on it, drive one pin as an output and toggle it on the kernel
clock, on a thread of its own; the GPIO's interrupt is bound to the program,
which counts the edges on an input pin (a button).

Arguments (``key=value``): ``period_ms`` (time between toggles, default 100),
``pin`` (default 0), ``button`` (input pin whose rising edges it counts,
default 7), ``device`` (vbus device name; default the first ``arm,pl061``),
``toggles`` or ``seconds`` (end after that many toggles or seconds, exit
code 0; default: run until killed).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pyned.devices.pl061 import Pl061Reg
from pyned.errors import ConfigError
from pyned.kernel.clock import now_ns
from pyned.kernel.task import Task
from pyned.services.gate import IpcGate
from pyned.services.io import Vbus
from pyned.services.spec import StartSpec

if TYPE_CHECKING:
    from pyned.system import System


class _Receiver:
    """The GPIO's interrupt as this program receives it: a wake-up for its thread
    (the device raises it with its own lock held, so nothing may call back here)."""

    def __init__(self, blinker: "GpioBlink") -> None:
        self._blinker = blinker

    def set_level(self, level: bool) -> None:
        if level:
            self._blinker.interrupted()

    def pulse(self) -> None:
        self._blinker.interrupted()


class GpioBlink:
    def __init__(self, system: "System", task: Task, spec: StartSpec) -> None:
        opts = _options(spec.args)
        self.period_ns = opts.get("period_ms", 100) * 1_000_000
        self.pin = opts.get("pin", 0)
        self.button = opts.get("button", 7)
        for what in ("pin", "button"):
            if not 0 <= getattr(self, what) < 8:
                raise ConfigError(f"gpio-blink: {what}={getattr(self, what)} is not a pin 0..7")
        if self.period_ns <= 0:
            raise ConfigError("gpio-blink: period_ms must be positive")
        self.limit = opts.get("toggles")
        if "seconds" in opts:
            self.limit = opts["seconds"] * 1_000_000_000 // self.period_ns
        self.system, self.task = system, task
        self.channel = spec.log or system.cons.create("gpio-blink", "y")
        self.name = self.channel.name
        gate = spec.caps.get("vbus")
        vbus = gate.object if isinstance(gate, IpcGate) else None
        if not isinstance(vbus, Vbus):
            raise ConfigError("gpio-blink: needs a vbus as capability 'vbus' (a channel of "
                              "vmm.start_io)")
        wanted = opts.get("device")
        dev = next((d for d in vbus.devices if (d.name == wanted if wanted is not None
                                                else "arm,pl061" in d.compatible)), None)
        if dev is None or not dev.mmio:
            raise ConfigError(f"gpio-blink: no {'device ' + repr(wanted) if wanted else 'PL061'} "
                              f"on vbus '{vbus.name}'")
        self.vbus, self.dev = vbus, dev
        self.toggles = 0
        self.presses = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._irq = threading.Event()
        vbus.claim(self.name)
        self._irqs = [irq for _, irq in dev.irqs]
        try:
            for irq in self._irqs:
                irq.bind(self.name, _Receiver(self))
        except ConfigError:
            self._release()
            raise

    def _reg(self, reg: int, value: int | None = None) -> int:
        m = self.dev.mmio[0]
        if value is None:
            return m.device.read(m.offset + reg, 4, 0)  # type: ignore[attr-defined]
        m.device.write(m.offset + reg, 4, value, 0)  # type: ignore[attr-defined]
        return value

    def start(self) -> None:
        out, btn = 1 << self.pin, 1 << self.button
        self._reg(Pl061Reg.GPIODIR, (self._reg(Pl061Reg.GPIODIR) | out) & ~btn)
        self._reg(Pl061Reg.GPIOIS, self._reg(Pl061Reg.GPIOIS) & ~btn)     # edge
        self._reg(Pl061Reg.GPIOIBE, self._reg(Pl061Reg.GPIOIBE) & ~btn)   # one edge
        self._reg(Pl061Reg.GPIOIEV, self._reg(Pl061Reg.GPIOIEV) | btn)    # rising
        self._reg(Pl061Reg.GPIOIC, btn)
        self._reg(Pl061Reg.GPIOIE, self._reg(Pl061Reg.GPIOIE) | btn)
        self.log(f"LED on {self.dev.name} ({self.dev.hw.path}) pin {self.pin}, toggling every "
                 f"{self.period_ns // 1_000_000} ms; counting rising edges on pin {self.button}")
        self.task.set_kill(self.kill)
        self.task.running()
        threading.Thread(target=self._run, name=f"pyned-{self.name}", daemon=True).start()

    def log(self, text: str) -> None:
        self.channel.write(f"gpio-blink: {text}\n".encode())

    def interrupted(self) -> None:
        self._irq.set()
        self._wake.set()

    def _handle_interrupt(self) -> None:
        btn = 1 << self.button
        if self._reg(Pl061Reg.GPIOMIS) & btn:
            self._reg(Pl061Reg.GPIOIC, btn)
            self.presses += 1
            self.log(f"button press {self.presses}")

    def _run(self) -> None:
        try:
            self._blink()
        except Exception as exc:  # a failing device model ends this program, not the host
            self._release()
            self.log(f"failed: {type(exc).__name__}: {exc}")
            self.channel.mark_dead()
            self.task.exit(1, f"failed: {exc}")
            return
        self._release()
        if not self._stop.is_set():
            self.log(f"done after {self.toggles} toggles")
            self.channel.mark_dead()
            self.task.exit(0, "done")

    def _blink(self) -> None:
        clock = self.system.clock
        mask_offset = (1 << self.pin) << 2     # GPIODATA, address-masked to the one pin
        start = now_ns()
        level = 0
        while not self._stop.is_set():
            if self.limit is not None and self.toggles >= self.limit:
                return
            deadline = start + (self.toggles + 1) * self.period_ns
            handle = clock.at(deadline, self._wake.set)
            while not self._stop.is_set() and now_ns() < deadline:
                self._wake.wait()
                self._wake.clear()
                if self._irq.is_set():
                    self._irq.clear()
                    self._handle_interrupt()
            handle.cancel()
            if self._stop.is_set():
                return
            level ^= 1
            self._reg(mask_offset, level << self.pin)
            self.toggles += 1

    def kill(self) -> None:
        self._stop.set()
        self._wake.set()
        self.task.exit(None, "killed", killed=True)

    def _release(self) -> None:
        for irq in self._irqs:
            irq.unbind(self.name)
        self.vbus.release(self.name)


def _options(args: list[str]) -> dict[str, int]:
    known = ("period_ms", "pin", "button", "toggles", "seconds")
    out: dict[str, int] = {}
    for word in args:
        key, eq, value = word.partition("=")
        if key == "device" and eq:
            out[key] = value  # type: ignore[assignment]
            continue
        if not eq or key not in known:
            raise ConfigError(f"gpio-blink: unknown argument {word!r} "
                              f"(known: {', '.join(known)}=N, device=NAME)")
        try:
            out[key] = int(value, 0)
        except ValueError:
            raise ConfigError(f"gpio-blink: {key}={value!r} is not a number") from None
    return out


def start(system: "System", task: Task, spec: StartSpec) -> None:
    GpioBlink(system, task, spec).start()
