"""Monitor sessions: one per client connection, and one per VM monitor channel.

A session is text for people (``socat``, ``nc``, ``pyned monitor``): a
greeting line, then a command per line, each reply followed by the prompt.
A first line that is a JSON object turns the session into JSON lines for
programs: one response object per request object, plus event objects once
subscribed. ``connect`` turns a text session raw until Ctrl-E ``.``.

The selector thread (server.py) owns a session's socket and input; commands
run on the worker pool. Console output reaches a session from the channel's
writer, a vCPU thread, which only appends to a bounded queue: a client that
reads too slowly loses console output (and is told how much), one whose
replies pile up is dropped.
"""

from __future__ import annotations

import codecs
import collections
import hmac
import itertools
import json
import queue
import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Callable

from pyned.monitor.registry import CommandError, Reply, split_line

if TYPE_CHECKING:
    from pyned.monitor.server import Listener, Monitor
    from pyned.services.cons import Channel
    from pyned.services.journal import JournalEntry
    from pyned.services.uvmm import Guest

MAX_LINE = 16 * 1024            # longest command line or JSON request
INPUT_LIMIT = 64 * 1024         # unread input kept while a command runs; then reading pauses
STREAM_LIMIT = 256 * 1024       # console output queued for a client before it is dropped
REPLY_LIMIT = 8 * 1024 * 1024   # replies queued for a client that does not read: drop it
PROMPT = b"pyned> "
VM_PROMPT = b"monitor> "        # uvmm's prompt on a VM's own monitor channel
GREETING = ("pyned monitor: type 'help' for the commands, 'quit' to leave; "
            "programs: send JSON objects, one per line")
TOKEN_GREETING = "pyned monitor: send the access token that pyned boot printed"
CTRL_E = 0x05
# cons's Ctrl-E escapes: the byte each one sends to the guest.
_EOL = re.compile(rb"\r\n|\r|\n")
_ESCAPES = {ord("e"): b"\x05", ord("c"): b"\x03", ord("z"): b"\x1a", ord("q"): b"\x1b"}


class Workers:
    """A few threads for commands that may wait; started on first use.

    (concurrent.futures would do, but importing it costs pyned boot tens of
    milliseconds for a monitor that may never get a client.)
    """

    def __init__(self, count: int) -> None:
        self._count = count
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._closed = False

    def submit(self, fn: Callable[[], None]) -> None:
        if self._closed:
            raise RuntimeError("the monitor is closing")
        if not self._threads:
            self._threads = [threading.Thread(target=self._serve, daemon=True,
                                              name=f"pyned-monitor-cmd{i}")
                             for i in range(self._count)]
            for t in self._threads:
                t.start()
        self._queue.put(fn)

    def _serve(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            fn()

    def shutdown(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)


class Serial:
    """Runs jobs one at a time, in order, on the monitor's workers."""

    def __init__(self, pool: Workers, on_error: Callable[[Exception], None]) -> None:
        self._pool = pool
        self._on_error = on_error
        self._lock = threading.Lock()
        self._jobs: collections.deque[Callable[[], None]] = collections.deque()
        self._running = False

    def submit(self, job: Callable[[], None]) -> None:
        with self._lock:
            self._jobs.append(job)
            if self._running:
                return
            self._running = True
        try:
            self._pool.submit(self._drain)
        except RuntimeError:  # the pool is shut down: the monitor is closing
            pass

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._running = False
                    return
                job = self._jobs.popleft()
            try:
                job()
            except Exception as exc:  # a monitor bug: log it, keep serving this client
                self._on_error(exc)


class Session:
    """One client connection. The selector thread owns the socket; workers queue output."""

    ids = itertools.count(1)

    def __init__(self, monitor: Monitor, sock: socket.socket, listener: Listener) -> None:
        self.monitor = monitor
        self.sock = sock
        self.id = next(Session.ids)
        self.label = f"client {self.id} ({listener.address.kind})"
        self.current: str | None = listener.default_vm
        self.mode = "auth" if listener.token else "text"   # auth, text, json, raw
        self._token = listener.token
        self.inbuf = bytearray()
        self.skipping = False          # inside an over-long line: drop up to its newline
        self._after_cr = False         # the last line ended in CR at the end of the input
        self.awaiting = False          # a command runs: parse no further input yet
        self.closing = False           # close once the queued output is written
        self.closed = False
        self.mask = 0                  # the selector events it is registered for
        self.jobs = Serial(monitor.pool, self._job_failed)
        self._lock = threading.Lock()
        self._out = bytearray()        # ready to write (selector thread writes it)
        # Raw console output per channel, rendered on the selector thread.
        self._streams: dict[str, bytearray] = {}
        self._stream_bytes = 0
        self._dropped = 0
        self._events: list[JournalEntry] = []
        # connect (text: raw mode; JSON: an output subscription) and subscriptions
        self.attached: Channel | None = None
        self._esc = False
        self._detach_note: str | None = None
        self._listeners: dict[str, Callable[[bytes], None]] = {}
        self._sub_state = False
        self._sub_console: set[str] | None = None   # None: not subscribed; empty: all
        self._sub_output: set[str] | None = None
        self._partial: dict[str, bytearray] = {}
        self._sub_lock = threading.RLock()   # listeners change from workers and the journal
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}

    # -- output (any thread) -----------------------------------------------------

    def send(self, data: bytes) -> None:
        with self._lock:
            if self.closed:
                return
            self._out += data
            stuck = len(self._out) > REPLY_LIMIT
        if stuck:
            self.monitor.log(f"monitor: {self.label} reads no replies: dropped")
            self.abort()
        self.monitor.mark(self)

    def send_json(self, obj: object) -> None:
        self.send(json.dumps(obj, separators=(",", ":")).encode() + b"\n")

    def _stream(self, name: str, data: bytes) -> None:
        """From a channel's writer (a vCPU thread): queue, never block or format."""
        with self._lock:
            if self.closed:
                return
            if self._stream_bytes + len(self._out) > STREAM_LIMIT:
                self._dropped += len(data)
                return
            buf = self._streams.get(name)
            if buf is None:
                buf = self._streams[name] = bytearray()
            buf += data
            self._stream_bytes += len(data)
        self.monitor.mark(self)

    def journal(self, entry: JournalEntry) -> None:
        with self._lock:
            if not self._sub_state:
                return
            self._events.append(entry)
        self.monitor.mark(self)

    def check_attached(self) -> None:
        """The connected channel's program has ended: leave it (selector thread)."""
        ch = self.attached
        if ch is None or not ch.dead:
            return
        note = f"{ch.name} has ended"
        if self.mode == "raw":
            with self._lock:
                self._detach_note = note
        else:
            self.attached = None
            self._sub_output = (self._sub_output or set()) - {ch.name} or None
            self._sync_listeners()
            self.send_json({"event": "disconnected", "channel": ch.name, "reason": note})

    def close_after_reply(self) -> None:
        self.closing = True

    def abort(self) -> None:
        with self._lock:
            self.closing = True
            self._out.clear()
            self._streams.clear()
        self.monitor.mark(self, close=True)

    # -- rendering (selector thread) --------------------------------------------

    def render(self) -> None:
        """Move queued console data and events into the output, in the session's form."""
        with self._lock:
            streams, self._streams, self._stream_bytes = self._streams, {}, 0
            events, self._events = self._events, []
            dropped, self._dropped = self._dropped, 0
            note, self._detach_note = self._detach_note, None
        out = bytearray()
        if self.mode == "raw":
            for data in streams.values():
                out += data
            if dropped:
                out += f"\r\n[monitor: {dropped} bytes dropped: the client reads too slowly]\r\n".encode()
        elif self.mode == "json":
            for name, data in streams.items():
                out += self._render_json(name, bytes(data))
            out += b"".join(_json_line(_state_event(e)) for e in events)
            if dropped:
                out += _json_line({"event": "dropped", "bytes": dropped})
        with self._lock:
            self._out += out
        if note is not None and self.mode == "raw":
            self.detach(note)

    def _render_json(self, name: str, data: bytes) -> bytes:
        out = bytearray()
        now = time.time()
        if self._sub_output is not None and (not self._sub_output or name in self._sub_output):
            dec = self._decoders.setdefault(name, codecs.getincrementaldecoder("utf-8")("replace"))
            out += _json_line({"event": "output", "channel": name, "data": dec.decode(data)})
        if self._sub_console is not None and (not self._sub_console or name in self._sub_console):
            part = self._partial.setdefault(name, bytearray())
            part += data
            *lines, rest = part.split(b"\n")
            for ln in lines:
                out += _json_line({"event": "console", "channel": name, "time": now,
                                   "line": ln.rstrip(b"\r").decode("utf-8", "replace")})
            self._partial[name] = bytearray(rest[-MAX_LINE:])
        return bytes(out)

    def take_output(self, most: int = 256 * 1024) -> bytes:
        with self._lock:
            data = bytes(self._out[:most])
            del self._out[:most]
            return data

    def unsend(self, data: bytes) -> None:
        """Put back what the socket did not take, ahead of newer output."""
        with self._lock:
            self._out[:0] = data

    @property
    def has_output(self) -> bool:
        with self._lock:
            return bool(self._out or self._streams or self._events or self._dropped
                        or self._detach_note)

    # -- input (selector thread) --------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.inbuf += data
        self.process()

    def process(self) -> None:
        while not self.awaiting and not self.closing and self.inbuf:
            if self.mode == "raw":
                data, self.inbuf = bytes(self.inbuf), bytearray()
                self._raw_input(data)
                continue
            if self._after_cr and self.inbuf[:1] == b"\n":
                del self.inbuf[:1]  # the LF of a CR LF that arrived in two pieces
                self._after_cr = False
                continue
            # A line ends in LF, CR LF, or CR alone (Enter on a terminal in raw mode).
            m = _EOL.search(self.inbuf)
            if m is None:
                if len(self.inbuf) > MAX_LINE:
                    self.inbuf.clear()
                    if not self.skipping:
                        self.skipping = True
                        self._error(f"line longer than {MAX_LINE} bytes: ignored")
                return
            line = bytes(self.inbuf[:m.start()])
            self._after_cr = m.group() == b"\r" and m.end() == len(self.inbuf)
            del self.inbuf[:m.end()]
            if self.skipping:
                self.skipping = False
                continue
            if len(line) > MAX_LINE:
                self._error(f"line longer than {MAX_LINE} bytes: ignored")
                continue
            self._line(line)

    def _line(self, raw: bytes) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error("the line is not UTF-8 text: ignored")
            return
        if any(ord(c) < 0x20 and c != "\t" or c == "\x7f" for c in line):
            self._error("the line contains control characters: ignored")
            return
        line = line.strip()
        if self.mode == "auth":
            self._auth(line)
            return
        if self.mode == "text" and line.startswith("{"):
            self.mode = "json"
        if not line:
            if self.mode == "text":
                self.send(PROMPT)
            return
        handler = self._run_json if self.mode == "json" else self._run_text
        if not self._may_wait(line):
            # Answered here on the selector thread: no hand-over to a worker and
            # back, which on a host whose cores run guests costs a wake-up each.
            handler(line)
            return
        self.awaiting = True
        self.jobs.submit(lambda: self._job(handler, line))

    def _may_wait(self, line: str) -> bool:
        try:
            if self.mode == "json":
                req = json.loads(line)
                words = _request_words(req) if isinstance(req, dict) else []
            else:
                words = split_line(line)
        except (ValueError, CommandError):
            return False
        return self.monitor.registry.waits(words)

    def _auth(self, line: str) -> None:
        token, as_json = line, False
        if line.startswith("{"):
            as_json = True
            try:
                token = str(json.loads(line).get("token", ""))
            except (ValueError, AttributeError):
                token = ""
        assert self._token is not None
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            self.monitor.log(f"monitor: {self.label}: wrong token, closed")
            if as_json:
                self.send_json({"ok": False, "error": "wrong token"})
            else:
                self.send(b"error: wrong token\n")
            self.closing = True
            return
        if as_json:
            self.mode = "json"
            self.send_json({"ok": True, "result": "authenticated"})
        else:
            self.mode = "text"
            self.send(GREETING.encode() + b"\n")

    def _error(self, text: str) -> None:
        if self.mode == "json":
            self.send_json({"ok": False, "error": text})
        elif self.mode == "raw":
            pass
        else:
            self.send(f"error: {text}\n".encode() + (PROMPT if self.mode == "text" else b""))

    def _raw_input(self, data: bytes) -> None:
        """Typed bytes for the connected channel; Ctrl-E . returns to the prompt."""
        out = bytearray()
        for i, b in enumerate(data):
            if self._esc:
                self._esc = False
                if b == ord("."):
                    rest = data[i + 1:]
                    # A line-buffered client (nc) sends the Enter after the dot.
                    rest = rest[2:] if rest.startswith(b"\r\n") else (
                        rest[1:] if rest[:1] in (b"\n", b"\r") else rest)
                    self._forward(bytes(out))
                    self.detach(None)
                    self.inbuf[:0] = rest
                    return
                out += _ESCAPES.get(b, b"")
            elif b == CTRL_E:
                self._esc = True
            else:
                out.append(b)
        self._forward(bytes(out))

    def _forward(self, data: bytes) -> None:
        ch = self.attached
        if data and ch is not None:
            self.jobs.submit(lambda: ch.send(data))

    # -- commands (worker threads) ------------------------------------------------

    def _job_failed(self, exc: Exception) -> None:
        self.monitor.log(f"monitor: {self.label}: {type(exc).__name__}: {exc}")

    def _job(self, handler: Callable[[str], None], line: str) -> None:
        try:
            handler(line)
        finally:
            self.awaiting = False
            self.monitor.mark(self, resume=True)

    def _run_text(self, line: str) -> None:
        try:
            reply = self.monitor.run(self, split_line(line))
            text = reply.text
        except CommandError as err:
            text = f"error: {err}"
        except Exception as exc:  # a monitor bug: this reply fails, the server goes on
            text = f"error: internal error in the monitor: {type(exc).__name__}: {exc}"
        if text and not text.endswith("\n"):
            text += "\n"
        self.send(text.encode() + (PROMPT if self.mode == "text" and not self.closing else b""))

    def _run_json(self, line: str) -> None:
        rid = None
        try:
            req = json.loads(line)
        except ValueError as err:
            self.send_json({"id": None, "ok": False, "error": f"not JSON: {err}"})
            return
        try:
            if not isinstance(req, dict):
                raise CommandError("a request is a JSON object")
            rid = req.get("id")
            words = _request_words(req)
            vm = req.get("vm")
            if vm is not None and not isinstance(vm, str):
                raise CommandError("'vm' must be a string")
            exact = isinstance(req.get("command"), list) or "args" in req
            reply = self.monitor.run(self, words, vm=vm, exact=exact)
            self.send_json({"id": rid, "ok": True, "result": reply.data, "text": reply.text})
        except CommandError as err:
            self.send_json({"id": rid, "ok": False, "error": str(err)})
        except Exception as exc:
            self.send_json({"id": rid, "ok": False,
                            "error": f"internal error in the monitor: {type(exc).__name__}: {exc}"})

    # -- connect / subscribe (called by commands) --------------------------------

    def connect(self, ch: Channel) -> Reply:
        if self.mode == "json":
            self._sub_output = set(self._sub_output or ()) | {ch.name}
            self._listen(ch)
            self.attached = ch
            tail = ch.text().rpartition("\n")[2]
            return Reply(f"connected to {ch.name}", {"channel": ch.name, "tail": tail,
                                                     "prompt": self._channel_prompt(ch)})
        if self.mode != "text":
            raise CommandError("already connected")
        self.attached = ch
        self._esc = False
        self.mode = "raw"
        # A prompt the guest printed without a newline is the line to type on.
        tail = ch.text().rpartition("\n")[2] or self._channel_prompt(ch)
        self.send(f"[connected to {ch.name}: Ctrl-E . returns to the prompt]\r\n{tail}".encode())
        self._listen(ch)
        return Reply()

    def _channel_prompt(self, ch: Channel) -> str:
        return VM_PROMPT.decode() if self.monitor.is_vm_monitor(ch) else ""

    def disconnect(self) -> Reply:
        if self.mode != "json" or self.attached is None:
            raise CommandError("not connected")
        name = self.attached.name
        self.attached = None
        if self._sub_output is not None:
            self._sub_output.discard(name)
            if not self._sub_output:
                self._sub_output = None
        self._sync_listeners()
        return Reply(f"disconnected from {name}", {"channel": name})

    def detach(self, note: str | None) -> None:
        """Leave raw mode (selector thread)."""
        ch, self.attached = self.attached, None
        if ch is None or self.mode != "raw":
            return
        self._unlisten(ch.name)
        self.mode = "text"
        self._esc = False
        self.send(f"\r\n[{note or f'disconnected from {ch.name}'}]\n".encode() + PROMPT)

    def subscribe(self, words: list[str]) -> Reply:
        if self.mode != "json":
            raise CommandError("subscribe is for the JSON mode; in text, use connect or tail")
        kinds = [w for w in words if w in ("state", "console", "output")]
        names = [w for w in words if w not in kinds]
        for n in names:
            if n not in self.monitor.system.cons.channels:
                raise CommandError(f"no channel {n!r}")
        kinds = kinds or ["state", "console"]
        if "state" in kinds:
            self._sub_state = True
        for kind in ("console", "output"):
            if kind in kinds:
                cur = getattr(self, f"_sub_{kind}")
                new = set() if not names or cur == set() else (cur or set()) | set(names)
                setattr(self, f"_sub_{kind}", new)
        self._sync_listeners()
        return Reply("subscribed", {"state": self._sub_state,
                                    "console": _subset(self._sub_console),
                                    "output": _subset(self._sub_output)})

    def unsubscribe(self) -> Reply:
        self._sub_state = False
        self._sub_console = self._sub_output = None
        self.attached = None
        self._sync_listeners()
        return Reply("unsubscribed")

    def _sync_listeners(self) -> None:
        """Listen to exactly the channels some subscription wants."""
        with self._sub_lock:
            self._sync_locked()

    def _sync_locked(self) -> None:
        chans = self.monitor.system.cons.channels
        want: set[str] = set()
        for sub in (self._sub_console, self._sub_output):
            if sub is not None:
                want |= set(chans) if not sub else sub
        for name in list(self._listeners):
            if name not in want:
                self._unlisten(name)
        for name in want:
            if name not in self._listeners and name in chans:
                self._listen(chans[name])

    def _listen(self, ch: Channel) -> None:
        with self._sub_lock:
            if ch.name in self._listeners:
                return
            fn = lambda data, name=ch.name: self._stream(name, data)
            self._listeners[ch.name] = fn
            ch.subscribe(fn)

    def _unlisten(self, name: str) -> None:
        with self._sub_lock:
            fn = self._listeners.pop(name, None)
        ch = self.monitor.system.cons.channels.get(name)
        if fn is not None and ch is not None:
            ch.unsubscribe(fn)

    def channels_changed(self) -> None:
        if (self._sub_console == set()) or (self._sub_output == set()):
            self._sync_listeners()

    def shutdown(self) -> None:
        """Forget every subscription (the connection is gone)."""
        with self._lock:
            self.closed = True
        for name in list(self._listeners):
            self._unlisten(name)
        self.attached = None


def _state_event(entry: JournalEntry) -> dict[str, object]:
    d = entry.to_dict()
    d["change"] = d.pop("event")
    return {"event": "state", **d}


def _json_line(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _subset(s: set[str] | None) -> list[str] | str | None:
    return None if s is None else ("all" if not s else sorted(s))


def _request_words(req: dict) -> list[str]:
    cmd = req.get("command")
    if isinstance(cmd, str):
        words = split_line(cmd)
    elif isinstance(cmd, list) and all(isinstance(w, str) for w in cmd):
        words = list(cmd)
    else:
        raise CommandError("'command' must be a string or a list of strings")
    args = req.get("args", [])
    if not isinstance(args, list) or not all(isinstance(w, (str, int)) for w in args):
        raise CommandError("'args' must be a list of strings")
    words += [str(a) for a in args]
    for key in ("events", "channels"):   # subscribe's named fields
        extra = req.get(key)
        if isinstance(extra, list):
            words += [str(x) for x in extra]
    if not words:
        raise CommandError("empty command")
    return words


class VmMonitor:
    """A VM's own monitor channel (``monN``), as uvmm serves it: commands for this VM only."""

    def __init__(self, monitor: Monitor, channel: Channel, guest: Guest) -> None:
        self.monitor = monitor
        self.channel = channel
        self.guest = guest
        self._line = bytearray()
        self.jobs = Serial(monitor.pool, lambda exc: monitor.log(
            f"monitor: {channel.name}: {type(exc).__name__}: {exc}"))

    def feed(self, data: bytes) -> int:
        # A terminal in raw mode sends keys one by one and wants them echoed; a
        # line-buffered client (nc, a program) sends whole lines and echoes itself.
        echo = b"\n" not in data
        shown = bytearray()
        for b in data:
            if b in (0x0D, 0x0A):
                line, self._line = bytes(self._line), bytearray()
                if echo:
                    self.channel.write(bytes(shown) + b"\r\n")
                    shown.clear()
                self._submit(line)
            elif b in (0x08, 0x7F):
                if self._line:
                    self._line.pop()
                    shown += b"\b \b"
            elif len(self._line) < MAX_LINE:
                self._line.append(b)
                shown.append(b)
        if echo and shown:
            self.channel.write(bytes(shown))
        return len(data)

    def _submit(self, raw: bytes) -> None:
        def job() -> None:
            try:
                words = split_line(raw.decode("utf-8", "replace"))
                if not words:
                    text = ""
                else:
                    text = self.monitor.registry.run(self.monitor, None, words,
                                                     fixed=self.guest).text
            except CommandError as err:
                text = f"Command execution failed: {err}"
            except Exception as exc:
                text = f"Command execution failed: internal error: {type(exc).__name__}: {exc}"
            if text and not text.endswith("\n"):
                text += "\n"
            self.channel.write(text.encode() + VM_PROMPT)
        self.jobs.submit(job)
