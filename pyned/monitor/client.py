"""``pyned monitor [ADDRESS]``: the monitor's client, as uvmm_cli is uvmm's.

It speaks the JSON-lines mode and gives people line editing, history and tab
completion (the server completes commands, channels and device paths).
``connect NAME`` puts the terminal in raw mode and hands every key to the
guest until Ctrl-E ``.``. Without a terminal, or with ``-c``, it runs the
commands it is given and exits (status 1 if one failed), for scripts.

Without an ADDRESS it takes ``$PYNED_MONITOR``, else the one running pyned of
this user (the private folders ``pyned boot`` creates in the temp directory).
A TCP address needs the token: ``--token``, ``$PYNED_MONITOR_TOKEN``, or the
token file pyned keeps in its private folder for the same user.
"""

from __future__ import annotations

import codecs
import json
import os
import select
import shlex
import socket
import sys
import tempfile
from pathlib import Path
from typing import Callable

from pyned.errors import ConfigError, PynedError
from pyned.monitor.server import FOLDER_PREFIX, SOCKET_NAME, Address, parse_address

HISTORY = Path.home() / ".pyned_monitor_history"
CTRL_E = 0x05
_ESCAPES = {ord("e"): "\x05", ord("c"): "\x03", ord("z"): "\x1a", ord("q"): "\x1b"}


def _private_folders() -> list[Path]:
    tmp = Path(tempfile.gettempdir())
    out = []
    for d in tmp.glob(FOLDER_PREFIX + "*"):
        try:
            if d.is_dir() and d.stat().st_uid == os.getuid():
                out.append(d)
        except OSError:
            continue
    return sorted(out, key=lambda d: d.stat().st_mtime, reverse=True)


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(0.5)
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def find_address(given: str | None) -> Address:
    text = given or os.environ.get("PYNED_MONITOR")
    if text:
        return parse_address(text if ":" in text or "/" in text else f"unix:{text}")
    socks = [d / SOCKET_NAME for d in _private_folders() if (d / SOCKET_NAME).exists()]
    socks = [s for s in socks if _alive(s)]
    if not socks:
        raise ConfigError("no running pyned monitor found; give its address "
                          "(pyned boot prints it)")
    if len(socks) > 1:
        raise ConfigError("several pyned monitors run; name one: " +
                          ", ".join(f"unix:{s}" for s in socks))
    return Address("unix", path=str(socks[0]))


def find_token(addr: Address, given: str | None) -> str:
    token = given or os.environ.get("PYNED_MONITOR_TOKEN")
    if token:
        return token
    for d in _private_folders():
        f = d / f"tcp-{addr.port}.token"
        if f.is_file():
            return f.read_text().strip()
    raise ConfigError(f"{addr} needs the token pyned boot printed (--token or "
                      f"$PYNED_MONITOR_TOKEN)")


class Connection:
    """A JSON-lines session: requests, their responses, and the events in between."""

    def __init__(self, addr: Address, token: str | None = None, timeout: float = 120.0) -> None:
        family = socket.AF_UNIX if addr.kind == "unix" else (
            socket.AF_INET6 if ":" in addr.host else socket.AF_INET)
        self.address = addr
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        target = addr.path if addr.kind == "unix" else (addr.host, addr.port)
        try:
            self.sock.connect(target)
        except OSError as err:
            raise ConfigError(f"cannot reach the monitor at {addr}: {err.strerror or err}") \
                from None
        self._buf = bytearray()
        self._ids = 0
        self.events: list[dict] = []
        self.greeting = self._readline()
        if addr.kind == "tcp":
            self._write({"token": token or ""})
            reply = self._read_object()
            if not reply.get("ok"):
                raise ConfigError(f"{addr}: {reply.get('error', 'refused')}")

    def close(self) -> None:
        self.sock.close()

    def _write(self, obj: object) -> None:
        self.sock.sendall(json.dumps(obj).encode() + b"\n")

    def _readline(self) -> bytes:
        while b"\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConfigError("the monitor closed the connection")
            self._buf += data
        line, _, rest = bytes(self._buf).partition(b"\n")
        self._buf = bytearray(rest)
        return line

    def _read_object(self) -> dict:
        line = self._readline()
        try:
            obj = json.loads(line)
        except ValueError:
            raise ConfigError(f"the monitor sent something that is not JSON: {line[:80]!r}") \
                from None
        if not isinstance(obj, dict):
            raise ConfigError("the monitor sent a JSON value that is not an object")
        return obj

    def send(self, command: str | list[str], **fields: object) -> int:
        self._ids += 1
        self._write({"id": self._ids, "command": command, **fields})
        return self._ids

    def request(self, command: str | list[str], **fields: object) -> dict:
        rid = self.send(command, **fields)
        while True:
            obj = self._read_object()
            if "event" in obj:
                self.events.append(obj)
            elif obj.get("id") == rid:
                return obj

    def pending(self) -> bool:
        return b"\n" in self._buf

    def read_available(self) -> list[dict]:
        """Objects that have arrived (without waiting once the socket is drained)."""
        out = []
        while True:
            if not self.pending():
                ready, _, _ = select.select([self.sock], [], [], 0)
                if not ready:
                    return out
                data = self.sock.recv(65536)
                if not data:
                    raise ConfigError("the monitor closed the connection")
                self._buf += data
                continue
            out.append(self._read_object())


def _print_reply(reply: dict, out: Callable[[str], None]) -> bool:
    if reply.get("ok"):
        if reply.get("text"):
            out(reply["text"])
        return True
    print(f"error: {reply.get('error')}", file=sys.stderr)
    return False


def run_commands(conn: Connection, lines: list[str]) -> int:
    status = 0
    for line in lines:
        if not line.strip():
            continue
        if not _print_reply(conn.request(line), print):
            status = 1
    return status


def _raw_terminal(fd: int):  # -> restore function
    import termios

    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    # Keys go through untouched (no echo, no signals, no flow control, Enter
    # stays CR as on a serial line); output processing stays, so the guest's
    # bare newlines still start a new line.
    new[0] &= ~(termios.ICRNL | termios.INLCR | termios.IGNCR | termios.IXON | termios.BRKINT
                | termios.ISTRIP)
    new[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG | termios.IEXTEN)
    new[6][termios.VMIN] = 1
    new[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, new)
    return lambda: termios.tcsetattr(fd, termios.TCSANOW, old)


def connect(conn: Connection, name: str) -> None:
    """Attach the terminal to channel ``name`` until Ctrl-E . (or the channel ends)."""
    reply = conn.request(["connect", name])
    if not _print_reply(reply, lambda _t: None):
        return
    out = sys.stdout
    out.write(f"[connected to {name}: Ctrl-E . returns to the prompt]\n")
    out.write(reply["result"].get("tail") or reply["result"].get("prompt") or "")
    out.flush()
    fd = sys.stdin.fileno()
    restore = _raw_terminal(fd) if os.isatty(fd) else None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    esc = False
    try:
        while True:
            for obj in conn.events + conn.read_available():
                ev = obj.get("event")
                if ev == "output" and obj.get("channel") == name:
                    out.write(obj.get("data", ""))
                elif ev == "disconnected":
                    out.write(f"\n[{obj.get('reason', 'disconnected')}]\n")
                    out.flush()
                    return
            conn.events.clear()
            out.flush()
            ready, _, _ = select.select([fd, conn.sock], [], [], None if not conn.pending() else 0)
            if fd not in ready:
                continue
            data = os.read(fd, 4096)
            if not data:  # end of input: leave the channel
                conn.send(["disconnect"])
                return
            typed = []
            for b in data:
                if esc:
                    esc = False
                    if b == ord("."):
                        if typed:
                            conn.send(["send", name, "".join(typed)])
                        conn.request(["disconnect"])
                        out.write(f"\n[disconnected from {name}]\n")
                        return
                    typed.append(_ESCAPES.get(b, ""))
                elif b == CTRL_E:
                    esc = True
                else:
                    typed.append(decoder.decode(bytes([b])))
            text = "".join(typed)
            if text:
                conn.send(["send", name, text])
    finally:
        if restore is not None:
            restore()
        conn.events.clear()  # output that was still on its way
        out.flush()


def interactive(conn: Connection) -> int:
    import readline

    try:
        readline.read_history_file(HISTORY)
    except OSError:
        pass
    readline.set_history_length(1000)
    cache: dict[str, list[str]] = {}

    def complete(text: str, state: int) -> str | None:
        line = readline.get_line_buffer()[:readline.get_endidx()]
        if state == 0:
            reply = conn.request(["complete", line])
            cache["c"] = reply.get("result") or [] if reply.get("ok") else []
        cands = cache.get("c", [])
        return cands[state] + " " if state < len(cands) else None

    readline.set_completer_delims(" \t")
    readline.set_completer(complete)
    readline.parse_and_bind("tab: complete")
    print(f"pyned monitor at {conn.address}: 'help' lists the commands, Tab completes, "
          f"Ctrl-D leaves")
    try:
        while True:
            try:
                line = input("pyned> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print()
                continue
            try:
                words = shlex.split(line)
            except ValueError:
                words = []
            if words and words[0] in ("connect", "c") and len(words) == 2:
                connect(conn, words[1])
                continue
            if words and words[0] in ("quit", "exit"):
                return 0
            if line.strip():
                _print_reply(conn.request(line), print)
    finally:
        try:
            readline.write_history_file(HISTORY)
        except OSError:
            pass


def main(address: str | None, commands: list[str], token: str | None) -> int:
    addr = find_address(address)
    conn = Connection(addr, find_token(addr, token) if addr.kind == "tcp" else None)
    try:
        if commands:
            return run_commands(conn, commands)
        if not sys.stdin.isatty():
            return run_commands(conn, sys.stdin.read().splitlines())
        return interactive(conn)
    except (OSError, PynedError) as err:
        raise ConfigError(f"monitor: {err}") from None
    finally:
        conn.close()
