"""cons: the console multiplexer every VM console and log channel goes through.

Each channel keeps its output in a buffer (40960 bytes by default, as cons's
``-B``) that tests and the monitor read, and, when shown, prints it to the
terminal a line at a time with the channel's tag in its colour, the way cons
shows ned log channels (``vm1     | text``). A partial line (a shell prompt)
is printed after a short delay so interactive guests stay usable.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from typing import BinaryIO, Callable

from pyned.kernel.clock import Clock

DEFAULT_BUFSZ = 40960
PARTIAL_LINE_NS = 50_000_000
_COLOURS = {"n": 0, "r": 1, "g": 2, "y": 3, "b": 4, "m": 5, "c": 6, "w": 7}


def ansi_colour(spec: str) -> str:
    """cons's rule: first letter picks the colour, upper case means bright."""
    if not spec:
        return "\033[37m"
    code = _COLOURS.get(spec[0].lower())
    if code is None:
        return "\033[0m"
    return f"\033[{90 + code if spec[0].isupper() else 30 + code}m"


class Channel:
    def __init__(self, cons: "Cons", name: str, colour: str, key: str | None, show: bool,
                 bufsz: int, timestamp: bool) -> None:
        self.cons = cons
        self.name = name
        self.colour = colour
        self.key = key
        self.show = show
        self.bufsz = bufsz
        self.timestamp = timestamp
        self.dead = False
        self.out_bytes = 0
        self.in_bytes = 0
        self._buf = bytearray()
        self._partial = bytearray()
        self._partial_timer = None
        self._cond = threading.Condition()
        self._input: Callable[[bytes], int] | None = None
        self._listeners: list[Callable[[bytes], None]] = []

    # -- output from the program ----------------------------------------------

    def write(self, data: bytes) -> None:
        if not data:
            return
        with self._cond:
            self.out_bytes += len(data)
            self._buf += data
            if len(self._buf) > self.bufsz:
                del self._buf[: len(self._buf) - self.bufsz]
            self._cond.notify_all()
            listeners = list(self._listeners)
        for fn in listeners:
            fn(data)
        if self.show:
            self.cons._emit(self, data)

    def subscribe(self, fn: Callable[[bytes], None]) -> None:
        """Call ``fn`` with every write, on the writer's thread (a vCPU): it must not block."""
        with self._cond:
            self._listeners.append(fn)

    def unsubscribe(self, fn: Callable[[bytes], None]) -> None:
        with self._cond:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def text(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", errors="replace")

    def text_since(self, position: int) -> str:
        """The output from byte ``position`` on (counted like ``expect``'s), as far as kept."""
        with self._cond:
            first = self.out_bytes - len(self._buf)
            return self._buf[max(0, position - first):].decode("utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str] | None:
        """Block until ``pattern`` (a regex) appears in the buffer, or time out."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                m = rx.search(self._buf.decode("utf-8", errors="replace"), start)
                if m or self.dead:
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def expect(self, pattern: str, timeout: float,
               after: int = 0) -> tuple[re.Match[bytes] | None, int]:
        """Wait for ``pattern`` in the output from byte ``after`` on (counted since the
        channel was made, so it survives the buffer dropping old output); returns the
        match and the position just after it."""
        rx = re.compile(pattern.encode())
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                first = self.out_bytes - len(self._buf)
                m = rx.search(self._buf, max(0, after - first))
                if m:
                    return m, first + m.end()
                left = deadline - time.monotonic()
                if self.dead or left <= 0:
                    return None, after
                self._cond.wait(left)

    def mark_dead(self) -> None:
        with self._cond:
            self.dead = True
            self._cond.notify_all()
        self.cons._flush_partial(self)

    # -- input to the program ---------------------------------------------------

    def attach_input(self, fn: Callable[[bytes], int]) -> None:
        self._input = fn

    def send(self, data: bytes) -> int:
        if self._input is None:
            return 0
        taken = self._input(data)
        self.in_bytes += taken
        return taken


class Cons:
    def __init__(self, clock: Clock, out: BinaryIO | None = None, colour: bool | None = None,
                 show_all: bool = True) -> None:
        self._clock = clock
        self._out = out if out is not None else sys.stdout.buffer
        tty = getattr(self._out, "isatty", lambda: False)()
        self.colour = tty if colour is None else colour
        self.show_all = show_all
        self.channels: dict[str, Channel] = {}
        self._lock = threading.RLock()
        self._last: Channel | None = None

    def create(self, tag: str, colour: str = "", options: list[str] | None = None) -> Channel:
        key = None
        show = self.show_all
        bufsz = DEFAULT_BUFSZ
        timestamp = False
        for opt in options or []:
            if opt.startswith("key="):
                key = opt[4:]
            elif opt == "show":
                show = True
            elif opt == "hide":
                show = False
            elif opt.startswith("bufsz="):
                bufsz = int(opt[6:], 0)
            elif opt == "timestamp":
                timestamp = True
            elif opt == "no-timestamp":
                timestamp = False
        with self._lock:
            old = self.channels.get(tag)
            if old is not None and old.dead:
                # A restarted program continues its console: one history per name.
                old.dead = False
                return old
            name = tag
            n = 1
            while name in self.channels:
                name = f"{tag}:{n}"
                n += 1
            ch = Channel(self, name, colour, key, show, bufsz, timestamp)
            self.channels[name] = ch
            return ch

    def _prefix(self, ch: Channel) -> bytes:
        stamp = time.strftime("%H:%M:%S ") if ch.timestamp else ""
        tag = f"{ch.name:<8}|"
        if self.colour:
            return f"{ansi_colour(ch.colour)}{tag}\033[0m {stamp}".encode()
        return f"{tag} {stamp}".encode()

    def _emit(self, ch: Channel, data: bytes) -> None:
        with self._lock:
            ch._partial += data
            *lines, rest = ch._partial.split(b"\n")
            if lines:
                out = b"".join(self._prefix(ch) + ln.rstrip(b"\r") + b"\n" for ln in lines)
                self._write(out)
            ch._partial = bytearray(rest)
            if ch._partial and ch._partial_timer is None:
                ch._partial_timer = self._clock.after(PARTIAL_LINE_NS,
                                                      lambda: self._flush_partial(ch))

    def _flush_partial(self, ch: Channel) -> None:
        with self._lock:
            ch._partial_timer = None
            if ch._partial:
                self._write(self._prefix(ch) + bytes(ch._partial) + b"\n")
                ch._partial = bytearray()

    def _write(self, data: bytes) -> None:
        try:
            self._out.write(data)
            self._out.flush()
        except (OSError, ValueError):
            pass  # a closed terminal must not stop the VMs


class MemoryTerminal(io.RawIOBase):
    """A terminal for cons kept in memory (tests, ``pyned test``): not a tty."""

    def __init__(self) -> None:
        self.data = bytearray()
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, b: bytes) -> int:  # type: ignore[override]
        with self._lock:
            self.data += b
        return len(b)

    def isatty(self) -> bool:
        return False
