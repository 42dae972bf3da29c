"""The monitor server: listening sockets, the selector thread, and the VMs it serves.

One selector thread does all socket I/O; commands run on a small worker pool,
one at a time per client (session.py), so a slow command (a pause, a stats
window) delays only its own client. Nothing here is ever waited for by a
vCPU or the clock. Unix sockets are created mode 0600 (the default one in a
private folder, mode 0700); TCP is served on loopback only, and a client must
first send the token pyned printed.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import selectors
import shutil
import socket
import stat
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from pyned.errors import ConfigError
from pyned.monitor import system_commands, vm_commands
from pyned.monitor.registry import CommandError, Registry, Reply
from pyned.monitor.session import (
    GREETING,
    INPUT_LIMIT,
    TOKEN_GREETING,
    Session,
    VmMonitor,
    Workers,
)

if TYPE_CHECKING:
    from pyned.kernel.task import Task
    from pyned.services.cons import Channel
    from pyned.services.journal import JournalEntry
    from pyned.services.uvmm import Guest
    from pyned.system import System

WORKERS = 8
SOCKET_NAME = "monitor.sock"
FOLDER_PREFIX = "pyned-monitor-"   # a private folder per run, in the temp directory
# A connected channel can die without a word to its readers: look this often.
ATTACHED_POLL_S = 0.25


# -- addresses ---------------------------------------------------------------

@dataclass(frozen=True)
class Address:
    kind: str            # "unix" or "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"


def parse_address(text: str) -> Address:
    """``unix:PATH``, a path, or ``tcp:HOST:PORT`` with a loopback HOST."""
    if text.startswith("tcp:"):
        host, sep, port = text[4:].rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not host:
            raise ConfigError(f"monitor address {text!r}: expected tcp:127.0.0.1:PORT")
        if host == "localhost":
            host = "127.0.0.1"
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ConfigError(f"monitor address {text!r}: TCP is served on loopback only "
                              f"(127.0.0.1 or ::1), never on {host}")
        if int(port) > 65535:
            raise ConfigError(f"monitor address {text!r}: port {port} is out of range")
        return Address("tcp", host=host, port=int(port))
    path = text.removeprefix("unix:")
    if not path or (not text.startswith("unix:") and "/" not in path):
        raise ConfigError(f"monitor address {text!r}: expected unix:PATH or tcp:127.0.0.1:PORT")
    return Address("unix", path=path)


class Listener:
    """One listening socket; TCP ones carry the token a client must send first."""

    def __init__(self, sock: socket.socket, address: Address, token: str | None,
                 default_vm: str | None, cleanup: Callable[[], None]) -> None:
        self.sock = sock
        self.address = address
        self.token = token
        self.default_vm = default_vm
        self._cleanup = cleanup

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self._cleanup()


# -- sessions ----------------------------------------------------------------
# -- the hub -----------------------------------------------------------------

class Monitor:
    """All monitor listeners and sessions of one System."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.registry = Registry()
        system_commands.register(self.registry)
        vm_commands.register(self.registry)
        self.pool = Workers(WORKERS)
        self.listeners: list[Listener] = []
        self.sessions: set[Session] = set()
        self._folder: Path | None = None
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._dirty: dict[Session, tuple[bool, bool]] = {}   # session -> (resume, close)
        self._pending_listeners: list[Listener] = []
        self._control_locks: dict[int, threading.Lock] = {}
        self._vm_monitors: dict[str, VmMonitor] = {}
        self._restarts: dict[int, int] = {}
        self._closed = False
        self._cancel_journal = system.journal.subscribe(self._journal)
        for g in list(system.guests.values()):
            self._adopt(g)
        self._thread = threading.Thread(target=self._loop, name="pyned-monitor", daemon=True)
        self._thread.start()

    @classmethod
    def of(cls, system: System) -> Monitor:
        """The System's monitor, started on first use."""
        if system.monitor is None:
            system.monitor = cls(system)
        return system.monitor

    def log(self, text: str) -> None:
        self.system.ned_log(text)

    # -- listening ---------------------------------------------------------------

    @property
    def folder(self) -> Path:
        """This run's private folder (mode 0700) for the socket and token files."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX))
        return self._folder

    def listen(self, address: str | Address | None = None,
               default_vm: str | None = None) -> Listener:
        """Serve on ``address`` (default: a Unix socket in the private folder)."""
        addr = (Address("unix", path=str(self.folder / SOCKET_NAME)) if address is None
                else parse_address(address) if isinstance(address, str) else address)
        if addr.kind == "unix":
            listener = self._listen_unix(addr, default_vm)
        else:
            listener = self._listen_tcp(addr, default_vm)
        with self._lock:
            self.listeners.append(listener)
            self._pending_listeners.append(listener)
        self._wake()
        return listener

    def serve(self, address: str | None = None, default_vm: str | None = None) -> Listener:
        """``listen``, and say where (with the token) on ned's log."""
        listener = self.listen(address, default_vm)
        token = f" token {listener.token}" if listener.token else ""
        scope = f" for {default_vm}" if default_vm else ""
        self.log(f"monitor on {listener.address}{token}{scope} (pyned monitor {listener.address})")
        return listener

    def _listen_unix(self, addr: Address, default_vm: str | None) -> Listener:
        path = addr.path
        if len(os.fsencode(path)) >= 108:
            raise ConfigError(f"monitor socket {path}: the path is too long for a Unix socket")
        if os.path.exists(path):
            if not stat.S_ISSOCK(os.stat(path).st_mode) or _socket_alive(path):
                raise ConfigError(f"monitor socket {path}: the path is in use")
            os.unlink(path)  # a stale socket of an earlier run
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
            os.chmod(path, 0o600)
            sock.listen(64)
        except OSError as err:
            sock.close()
            raise ConfigError(f"monitor socket {path}: {err.strerror}") from None
        sock.setblocking(False)

        def cleanup() -> None:
            try:
                os.unlink(path)
            except OSError:
                pass
        return Listener(sock, addr, None, default_vm, cleanup)

    def _listen_tcp(self, addr: Address, default_vm: str | None) -> Listener:
        family = socket.AF_INET6 if ":" in addr.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr.host, addr.port))
            sock.listen(64)
        except OSError as err:
            sock.close()
            raise ConfigError(f"monitor address {addr}: {err.strerror}") from None
        sock.setblocking(False)
        actual = Address("tcp", host=addr.host, port=sock.getsockname()[1])
        token = os.urandom(18).hex()
        # Where `pyned monitor` of the same user finds the token.
        token_file = self.folder / f"tcp-{actual.port}.token"
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")

        def cleanup() -> None:
            try:
                token_file.unlink()
            except OSError:
                pass
        return Listener(sock, actual, token, default_vm, cleanup)

    # -- the selector thread --------------------------------------------------------

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a wake-up is already pending (or the monitor is closing)

    def mark(self, session: Session, resume: bool = False, close: bool = False) -> None:
        """Have the selector thread look at ``session`` (any thread, never blocks long)."""
        with self._lock:
            first = not self._dirty
            r, c = self._dirty.get(session, (False, False))
            self._dirty[session] = (r or resume, c or close)
        if first:
            self._wake()

    def _loop(self) -> None:
        while not self._closed:
            attached = [s for s in list(self.sessions) if s.attached is not None]
            for s in attached:
                s.check_attached()
                if s.has_output:
                    self.mark(s)
            try:
                events = self._sel.select(ATTACHED_POLL_S if attached else None)
            except OSError:
                if self._closed:
                    return
                raise
            for key, mask in events:
                obj = key.data
                if obj is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except (BlockingIOError, OSError):
                        pass
                elif isinstance(obj, Listener):
                    self._accept(obj)
                else:
                    self._guarded(obj, lambda s=obj, m=mask: self._ready(s, m))
            self._service()

    def _ready(self, s: Session, mask: int) -> None:
        if mask & selectors.EVENT_READ:
            self._read(s)
        if mask & selectors.EVENT_WRITE and not s.closed:
            self._write(s)

    def _guarded(self, s: Session, fn: Callable[[], None]) -> None:
        """A monitor bug in one session closes that session, never the server."""
        try:
            fn()
        except Exception as exc:
            self.log(f"monitor: {s.label}: internal error {type(exc).__name__}: {exc}; closed")
            self._close(s)

    def _service(self) -> None:
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            listeners, self._pending_listeners = self._pending_listeners, []
        for listener in listeners:
            self._sel.register(listener.sock, selectors.EVENT_READ, listener)
        for session, (resume, close) in dirty.items():
            if session.closed:
                continue
            if close:
                self._close(session)
                continue
            self._guarded(session, lambda s=session, r=resume: self._refresh(s, r))

    def _refresh(self, s: Session, resume: bool) -> None:
        s.render()
        if resume:
            s.process()
        self._write(s)

    def _accept(self, listener: Listener) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE):
                    self.log(f"monitor: cannot accept a client: {err.strerror}")
                return
            sock.setblocking(False)
            session = Session(self, sock, listener)
            self.sessions.add(session)
            self._sel.register(sock, selectors.EVENT_READ, session)
            session.mask = selectors.EVENT_READ
            greeting = TOKEN_GREETING if listener.token else GREETING
            if listener.default_vm and not listener.token:
                greeting += f"; VM commands go to {listener.default_vm}"
            session.send(greeting.encode() + b"\n")

    def _read(self, s: Session) -> None:
        try:
            data = s.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(s)
            return
        s.feed(data)
        self._write(s)

    def _write(self, s: Session) -> None:
        if s.closed:
            return
        s.render()
        data = s.take_output()
        if data:
            try:
                sent = s.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(s)
                return
            if sent < len(data):
                s.unsend(data[sent:])
        if s.closing and not s.has_output and not s.awaiting:
            self._close(s)
            return
        self._update_interest(s)

    def _update_interest(self, s: Session) -> None:
        # Reading pauses while a command runs and its client has sent plenty
        # more: the socket's buffers then slow the client down, not the server.
        read = not s.closing and not (s.awaiting and len(s.inbuf) >= INPUT_LIMIT)
        mask = (selectors.EVENT_READ if read else 0) | (
            selectors.EVENT_WRITE if s.has_output else 0)
        if mask == s.mask:
            return
        try:
            if s.mask == 0:
                self._sel.register(s.sock, mask, s)
            elif mask == 0:
                self._sel.unregister(s.sock)
            else:
                self._sel.modify(s.sock, mask, s)
        except (KeyError, ValueError, OSError):
            return
        s.mask = mask

    def _close(self, s: Session) -> None:
        if s.closed:
            return
        s.shutdown()
        self.sessions.discard(s)
        if s.mask:
            try:
                self._sel.unregister(s.sock)
            except (KeyError, ValueError):
                pass
        try:
            s.sock.close()
        except OSError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_journal()
        self._wake()
        self._thread.join(2)
        for s in list(self.sessions):
            self._close(s)
        for listener in self.listeners:
            listener.close()
        self.pool.shutdown()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    # -- VMs -----------------------------------------------------------------------

    def _journal(self, entry: JournalEntry) -> None:
        """Every journal entry (on the recording thread): track VMs, feed subscribers."""
        if entry.event in ("start", "restart"):
            for g in list(self.system.guests.values()):
                if g.name == entry.vm:
                    self._adopt(g)
        for g in list(self.system.guests.values()):
            if g.name == entry.vm:
                self._restarts[g.task.tid] = g.restarts
        for s in list(self.sessions):
            if entry.event == "start":
                s.channels_changed()
            s.journal(entry)

    def _adopt(self, guest: Guest) -> None:
        """Serve uvmm's monitor on the VM's ``mon`` channel, if it has one."""
        self._restarts[guest.task.tid] = guest.restarts
        mon = guest.spec.caps.get("mon")
        if mon is None or not hasattr(mon, "attach_input"):
            return
        vmon = self._vm_monitors.get(mon.name)
        if vmon is None or vmon.guest is not guest:
            vmon = VmMonitor(self, mon, guest)
            self._vm_monitors[mon.name] = vmon
            mon.attach_input(vmon.feed)

    def is_vm_monitor(self, ch: Channel) -> bool:
        return ch.name in self._vm_monitors

    def known_restarts(self, tid: int) -> int | None:
        return self._restarts.get(tid)

    def find_guest(self, name: str) -> Guest | None:
        for g in list(self.system.guests.values()):
            if g.name == name:
                return g
            mon = g.spec.caps.get("mon")
            if mon is not None and getattr(mon, "name", None) == name:
                return g
        return None

    def find_vm_name(self, name: str) -> bool:
        """Whether ``name`` is a VM's (or its monitor channel's) name, running or ended."""
        if self.find_guest(name) is not None:
            return True
        return any(t.channel == name and t.name == "uvmm" for t in list(self.system.tasks.tasks))

    def vm_names(self) -> list[str]:
        return sorted(g.name for g in list(self.system.guests.values()))

    def find_task(self, name: str) -> Task | None:
        tasks = list(self.system.tasks.tasks)
        if name.isdigit():
            return next((t for t in tasks if t.tid == int(name)), None)
        alive = [t for t in tasks if t.channel == name and t.alive]
        return alive[0] if alive else None

    def target(self, session: Session | None, name: str | None) -> Guest:
        """The VM a VM command works on."""
        if name is None and session is not None:
            name = session.current
        if name is not None:
            g = self.find_guest(name)
            if g is None:
                ended = [t for t in self.system.tasks.tasks if t.channel == name]
                if ended:
                    t = ended[-1]
                    raise CommandError(f"{name} is not running (task {t.tid} "
                                       f"{'was killed' if t.killed else f'exited {t.exit_code:#x}'})")
                raise CommandError(f"no VM {name!r}; running: {', '.join(self.vm_names()) or 'none'}")
            return g
        guests = list(self.system.guests.values())
        if len(guests) == 1:
            return guests[0]
        if not guests:
            raise CommandError("no VM is running")
        raise CommandError(f"several VMs run ({', '.join(self.vm_names())}): name one "
                           f"('vm1 cpu list') or choose it with 'use'")

    @contextmanager
    def control_lock(self, guest: Guest) -> Iterator[None]:
        """Serialises the monitor's pause/resume/snapshot of one VM (never taken by a vCPU)."""
        with self._lock:
            lock = self._control_locks.setdefault(guest.task.tid, threading.Lock())
        with lock:
            yield

    def run(self, session: Session | None, words: list[str], *, vm: str | None = None,
            exact: bool = False) -> Reply:
        return self.registry.run(self, session, words, vm=vm, exact=exact)


def _socket_alive(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(0.5)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
