"""The monitor over real sockets while real guests run."""

import os
import re
import socket
import stat
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from pyned.cpu.engine import patch_level
from pyned.errors import ConfigError
from pyned.monitor import Monitor, parse_address
from pyned.monitor.client import Connection
from pyned.monitor.server import Address
from pyned.monitor.session import MAX_LINE, STREAM_LIMIT
from pyned.testing import NEEDS_EXACT_STOPS, Booted

pytestmark = pytest.mark.boot
ROOT = Path(__file__).resolve().parents[2]
PRE = 'local vmm = require "vmm"\n'
RTOS = ('vmm.start_vm{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb", '
        'bootargs = "seconds=30" }\n')
VIRTIO = ('vmm.start_vm{ id = 2, kernel = "rom/virtio.elf", fdt = "rom/virt-r82-virtio.dtb", '
          'bootargs = "name=two stay" }\n')
TWO = PRE + RTOS + VIRTIO


class Text:
    """A person at socat/nc: lines in, replies up to the prompt out."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""
        self.greeting = self.until(b"\n")

    def until(self, end: bytes) -> str:
        while end not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"connection closed; got {self.buf!r}")
            self.buf += data
        text, _, self.buf = self.buf.partition(end)
        return text.decode(errors="replace")

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\n")
        return self.until(b"pyned> ").rstrip("\n")

    def close(self) -> None:
        self.sock.close()


@contextmanager
def booted(src: str, *expect: tuple[str, str]) -> Iterator[Booted]:
    with Booted(source=src) as b:
        for channel, pattern in expect:
            b.expect(channel, pattern)
        yield b


def ticks(text: str) -> int:
    return len(re.findall(r"rtos: tick=", text))


@NEEDS_EXACT_STOPS
def test_uvmm_commands_inspect_running_vms():
    with booted(TWO, ("vm1", r"tick=1000 "), ("vm2", r"virtio: done")) as b:
        t = Text(b.monitor_path())
        assert "help" in t.greeting
        help_text = t.cmd("help")
        for name in ("list", "connect", "cpu", "dev", "ram", "dt", "gic", "ps", "inject", "stats"):
            assert re.search(rf"^  {name} ", help_text, re.MULTILINE), name
        listing = t.cmd("list")
        assert re.search(r"^vm1 .* key=1 ", listing, re.MULTILINE) and re.search(r"^mon2 ", listing, re.MULTILINE)
        assert "several VMs run" in t.cmd("cpu list")
        assert re.match(r"cpu0  mpidr 0x0  core \d  (executing|waiting)", t.cmd("vm1 cpu list"))

        regs = t.cmd("vm1 cpu 0 regs")
        pc = int(re.search(r"pc (0x[0-9a-f]+)", regs).group(1), 16)
        ram = b.system.guests[1].vm.memory.regions[0].range
        assert ram.base <= pc < ram.base + ram.size and "x30" in regs and "sctlr" in regs
        assert not b.system.guests[1].vm.paused          # paused only for the snapshot
        # Every tick traps ICC_IAR1, ICC_EOIR1 and CNTV_CVAL: about 3000/s at 1 kHz.
        stats = t.cmd("stats vm1 0.5")
        traps = int(re.search(r"system-register traps \d+ \((\d+)/s\)", stats).group(1))
        assert 1000 < traps < 6000, traps
        # The rtos idles in wfi between ticks: its timer interrupts come ahead of time.
        early = int(re.search(r"delivered ahead of their deadline \d+ \((\d+)/s\)", stats).group(1))
        assert 300 < early <= 1100, stats
        cores = t.cmd("cores")
        assert re.search(r"^core0: running .*, switches \d+, cleared ahead of a timer deadline "
                         r"0 times", cores, re.MULTILINE), cores
        assert re.search(r"^  vm1/cpu0 +prio \d+ +(running|runnable|blocked)$", cores,
                         re.MULTILINE), cores
        assert "cores" in help_text

        assert t.cmd("use vm2") == "VM commands go to vm2"
        devs = t.cmd("dev list")
        assert re.search(r"^/l4vmm@a0000000/virtio@1000 +virtio,mmio +VirtioMmio$", devs, re.MULTILINE)
        config = t.cmd("dev virtio@1000 config")
        assert "virtio-console (device id 3)" in config and "DRIVER_OK" in config
        queues = t.cmd("dev /l4vmm@a0000000/virtio@1000 queues")
        assert re.search(r"1 transmitq0: size \d+ .* used.idx 1 ", queues), queues
        memmap = t.cmd("dev memmap")
        assert re.search(r"0xaf000000 - 0xaf00ffff\]  mmio  /interrupt-controller", memmap)

        base = b.system.guests[2].vm.memory.regions[0].range.base
        words = b.system.guests[2].vm.memory.read(base, 16)
        dump = t.cmd(f"ram dump {base:#x} 4 d")
        assert dump == f"{base:#018x}: " + " ".join(
            f"{int.from_bytes(words[i:i + 4], 'little'):08x}" for i in range(0, 16, 4))
        assert "Dataspace" in t.cmd("ram ds")

        dts = t.cmd("dt")
        assert re.search(r"virtio@2000 \{  /\* disabled by pyned: no capability 'net'", dts)
        assert dts.startswith("/dts-v1/;")
        assert re.search(r"^\s+27\s+0\s+y\s+\S\s+\S\s+\S\s+0x80 level", t.cmd("vm1 gic"), re.MULTILINE)
        assert t.cmd("verbose show") == "all: warn"
        assert t.cmd("verbose set info") == "all: info" and b.system.guests[2].options.verbosity == 2
        t.close()


@NEEDS_EXACT_STOPS
def test_lifecycle_commands_control_a_vm_and_land_in_the_journal():
    with booted(PRE + RTOS, ("vm1", r"tick=1000 ")) as b:
        t = Text(b.monitor_path())
        assert t.cmd("pause") == "vm1 paused"
        assert re.search(r"vm1 +uvmm +paused ", t.cmd("ps"))
        n = ticks(b.text("vm1"))
        time.sleep(1.3)
        assert ticks(b.text("vm1")) == n
        assert t.cmd("pause vm1") == "error: vm1 is already paused"
        assert t.cmd("vm1 resume") == "vm1 resumed"
        b.expect("vm1", rf"tick={(n + 1) * 1000} ", timeout=5)

        assert t.cmd("reset") == "vm1 reset: a fresh VM runs (restart 1)"
        b.expect("vm1", r"(?s)restarted.*tick=1000 ")
        assert re.search(r"vm1 +uvmm +running .* 1  reset \(monitor reset\)", t.cmd("ps"))

        assert t.cmd("inject undefined") == "vm1: undefined injected into cpu 0"
        b.expect("vm1", r"unexpected exception ESR=0x2000000")
        assert b.wait() == 0                      # the guest's handler powered it off
        ps = t.cmd("ps")
        assert re.search(r"vm1 +uvmm +exited .* 1  0x0 \(PSCI SYSTEM_OFF\)", ps), ps
        events = t.cmd("events vm1")
        assert [ln.split()[2] for ln in events.splitlines()] == [
            "start", "pause", "resume", "restart", "inject", "shutdown"]
        assert "by client" in events
        assert t.cmd("vm1 cpu list") == "error: vm1 is not running (task 1 exited 0x0)"
        t.close()


def test_kill_and_stats_with_the_engines_instruction_count():
    src = PRE + ('vmm.start_vm{ id = 1, kernel = "rom/busy.elf", fdt = "rom/virt-r82.dtb", '
                 'bootargs = "seconds=30" }\n')
    with booted(src, ("vm1", r"busy: started")) as b:
        t = Text(b.monitor_path())
        stats = t.cmd("stats vm1 0.5")
        busy = float(re.search(r"in guest code ([\d.]+)s", stats).group(1))
        assert 0.05 < busy <= 0.6 and "last 0.5" in stats
        c = Connection(Address("unix", path=b.monitor_path()))
        data = c.request("stats")["result"]
        assert data["vms"][0]["cpus"][0]["run_ns"] > 0
        if patch_level() >= 2:
            rate = float(re.search(r"instructions \d+ \(([\d.]+) M/s\)", stats).group(1))
            assert rate > 1 and data["instructions"] is True
            assert data["vms"][0]["cpus"][0]["insns"] > 0
        else:
            assert "instructions/s: not counted" in stats and data["instructions"] is False
        assert t.cmd("tail vm1 1") == "busy: started" and "busy: started" in t.cmd("cat vm1")
        assert t.cmd("hide vm1") == "hidden on pyned's terminal: vm1"
        assert t.cmd("timestamp vm1 on") == "vm1: timestamps on"
        assert re.search(r"^vm1 +-T key=1 ", t.cmd("list vm1"), re.MULTILINE)
        assert not b.system.cons.channels["vm1"].show and b.system.cons.channels["vm1"].timestamp
        assert t.cmd("kill vm1") == "vm1 (task 1) killed"
        assert b.wait() == 0
        assert re.search(r"vm1 +uvmm +killed ", t.cmd("ps"))
        assert "[X]" in t.cmd("list vm*")
        t.close()


@NEEDS_EXACT_STOPS
def test_json_lines_requests_and_event_streams():
    with booted(PRE + RTOS, ("vm1", r"tick=1000 ")) as b:
        c = Connection(Address("unix", path=b.monitor_path()))
        r = c.request("cpu list")
        assert r["ok"] and r["id"] == 1 and r["result"][0]["cpu"] == 0
        assert c.request("nonsense")["error"].startswith("unknown command")
        assert c.request(["complete", "vm1 dev "])["result"] == sorted(
            ["list", "memmap"] + [d.path for d in b.system.guests[1].vm.devices])
        assert c.request(["complete", "c"])["result"] == ["c", "cat", "complete", "connect", "cores", "cpu"]
        sub = c.request("subscribe", events=["state", "console"], channels=["vm1"])
        assert sub["result"] == {"state": True, "console": ["vm1"], "output": None}
        assert c.request("reset")["ok"]
        seen = {"state": [], "console": []}
        deadline = time.monotonic() + 10
        while not (seen["state"] and any("tick=1000" in ln for ln in seen["console"][1:])):
            assert time.monotonic() < deadline, seen
            for ev in c.read_available() + c.events:
                seen[ev["event"]].append(ev.get("change") or ev.get("line"))
            c.events.clear()
            time.sleep(0.02)
        assert seen["state"][0] == "restart"
        assert c.request("unsubscribe")["ok"]
        c.close()


def test_connect_types_into_the_guest_and_ctrl_e_dot_returns():
    with booted(PRE + VIRTIO, ("vm2", r"virtio: done")) as b:
        t = Text(b.monitor_path())
        before = b.system.cons.channels["vm2"].in_bytes
        t.sock.sendall(b"connect vm2\n")
        assert "[connected to vm2: Ctrl-E . returns to the prompt]" in t.until(b"\r\n")
        t.sock.sendall(b"hello guest\n")          # as nc sends a typed line
        t.sock.sendall(b"\x05.\n")
        assert "[disconnected from vm2]" in t.until(b"pyned> ")
        # The virtio console's driver runs, so the input went to its receive queue.
        queues = t.cmd("dev virtio@1000 queues")
        assert re.search(r"0 receiveq0: .* used.idx 1 ", queues), queues
        assert b.system.cons.channels["vm2"].in_bytes == before + len(b"hello guest\n")

        # uvmm's own monitor channel: commands for that VM only, uvmm's prompt.
        t.sock.sendall(b"connect mon2\r")        # Enter on a terminal in raw mode
        assert t.until(b"monitor> ").endswith("\r\n")
        t.sock.sendall(b"dev list\n")
        assert "/l4vmm@a0000000/virtio@1000" in t.until(b"monitor> ")
        t.sock.sendall(b"ps\n")
        assert "Command execution failed: unknown command 'ps'" in t.until(b"monitor> ")
        t.sock.sendall(b"\x05.")
        t.until(b"pyned> ")
        # The guest ends while connected: back to the prompt; it cannot be connected again.
        t.sock.sendall(b"connect vm2\n")
        t.until(b"\r\n")
        b.system.guests[1].kill()
        assert t.until(b"pyned> ").endswith("[vm2 has ended]\n")
        assert t.cmd("connect vm2").startswith("error: vm2 has ended")
        t.close()


@NEEDS_EXACT_STOPS
def test_bad_input_gets_an_error_and_everything_carries_on():
    with booted(TWO, ("vm1", r"tick=1000 "), ("vm2", r"virtio: done")) as b:
        path = b.monitor_path()
        t = Text(path)
        assert t.cmd("frobnicate").startswith("error: unknown command 'frobnicate'")
        assert t.cmd("vm1 cpu 7 regs") == "error: vm1 has no cpu 7 (cpus 0-0)"
        assert t.cmd("vm1 cpu x regs").startswith("error: cpu 'x' is not a number")
        assert t.cmd("vm1 ram dump 0x40000000").startswith(
            "error: 0x40000000 is not in guest RAM ([0x1000000-0x1ffffff])")
        assert t.cmd("vm1 ram dump 0x1000000 4 z") == "error: width 'z' is not one of b, w, d, q"
        assert t.cmd("vm3 cpu list").startswith("error: unknown command 'vm3'")
        assert t.cmd("use vm9").startswith("error: no VM 'vm9'")
        assert t.cmd("vm2 dev virtio@2000 config") == "error: no device 'virtio@2000'; " \
                                                      "'dev list' shows them"
        assert t.cmd("inject vm1 meltdown").startswith("error: usage: inject")
        assert t.cmd('cat "vm1').startswith("error: cannot split the line")
        assert t.cmd("x" * (MAX_LINE + 10)) == f"error: line longer than {MAX_LINE} bytes: ignored"
        t.sock.sendall(b"\xff\xfe\x00junk\n")
        assert t.until(b"pyned> ") == "error: the line is not UTF-8 text: ignored\n"
        t.sock.sendall(b"ps\x00\n")
        assert "control characters" in t.until(b"pyned> ")
        # JSON that is not a request, then a client that vanishes mid-command.
        c = Connection(Address("unix", path=path))
        c.sock.sendall(b'{"command": 5}\n[1, 2]\n')
        assert c._read_object()["error"] == "'command' must be a string or a list of strings"
        assert c._read_object()["error"] == "a request is a JSON object"
        gone = socket.socket(socket.AF_UNIX)
        gone.connect(path)
        gone.sendall(b"stats 0.5\nps\n")
        gone.close()
        n = ticks(b.text("vm1"))
        assert "vm1" in t.cmd("ps") and len(b.system.guests) == 2
        b.expect("vm1", rf"tick={(n + 1) * 1000} ")
        assert "stats" in t.cmd("help") and c.request("ps")["ok"]
        c.close()
        t.close()


def test_a_client_that_does_not_read_loses_output_and_blocks_nobody():
    with booted(PRE + RTOS, ("vm1", r"tick=1000 ")) as b:
        path = b.monitor_path()
        slow = Connection(Address("unix", path=path))
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        ch = b.system.cons.create("chatty")      # a console beside the guest's, for the flood
        assert slow.request("subscribe output chatty")["ok"]
        chunk = b"x" * 4095 + b"\n"
        t0 = time.monotonic()
        for _ in range(1000):                     # 4 MB while the client reads nothing
            ch.write(chunk)
        assert time.monotonic() - t0 < 2.0
        t = Text(path)
        assert "vm1" in t.cmd("ps")
        n = ticks(b.text("vm1"))
        b.expect("vm1", rf"tick={(n + 1) * 1000} ", timeout=5)
        got, dropped = 0, 0
        deadline = time.monotonic() + 10
        while got + dropped < len(chunk) * 1000 and time.monotonic() < deadline:
            for ev in slow.read_available():
                got += len(ev.get("data", ""))
                dropped += ev.get("bytes", 0) if ev["event"] == "dropped" else 0
            time.sleep(0.01)
        # Every byte is either delivered or counted as dropped; the queue stayed bounded.
        assert got + dropped == len(chunk) * 1000 and got <= 4 * STREAM_LIMIT  # + socket buffers
        t.close()
        slow.close()


def test_sockets_are_private_and_tcp_needs_the_token():
    with booted(PRE + RTOS, ("vm1", r"started")) as b:
        path = Path(b.monitor_path())
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        listener = Monitor.of(b.system).listen("tcp:127.0.0.1:0")
        addr = listener.address
        assert addr.port and listener.token
        assert (path.parent / f"tcp-{addr.port}.token").read_text().strip() == listener.token
        with pytest.raises(ConfigError, match="wrong token"):
            Connection(addr, "guess")
        c = Connection(addr, listener.token)
        assert c.request("ps")["ok"]
        raw = socket.create_connection((addr.host, addr.port), timeout=5)
        assert b"access token" in raw.recv(200)
        raw.sendall(b"ps\n")
        assert raw.recv(200) == b"error: wrong token\n" and raw.recv(200) == b""
        c.close()
    assert not path.parent.exists()                # the private folder goes with the run
    for bad in ("tcp:0.0.0.0:4000", "tcp:192.168.1.2:1", "tcp:localhost", "monitor.sock"):
        with pytest.raises(ConfigError):
            parse_address(bad)


def test_many_clients_at_once():
    with booted(PRE + RTOS, ("vm1", r"started")) as b:
        path = b.monitor_path()
        clients = [Connection(Address("unix", path=path)) for _ in range(50)]
        for c in clients:
            c.send("cpu list")
        for c in clients:
            assert c._read_object()["result"][0]["cpu"] == 0
        for c in clients:
            c.close()
        assert Text(path).cmd("ps")


def test_start_vm_mon_option_and_the_pyned_monitor_client(tmp_path):
    sock = tmp_path / "vm1.sock"
    src = PRE + (f'vmm.start_vm{{ id = 1, kernel = "rom/rtos.elf", fdt = "rom/virt-r82.dtb", '
                 f'bootargs = "seconds=30", mon = "unix:{sock}" }}\n'
                 'vmm.start_vm{ id = 2, kernel = "rom/virtio.elf", fdt = "rom/virt-r82-virtio.dtb", '
                 'bootargs = "name=two stay", mon = false }\n')
    with booted(src, ("vm1", r"started"), ("vm2", r"virtio: done")) as b:
        assert f"monitor on unix:{sock} for vm1" in b.text("ned")
        t = Text(str(sock))
        assert "cpu0" in t.cmd("cpu list")          # this socket's VM commands go to vm1
        assert t.cmd("vm2 cpu list") == "error: vm2 was started with mon = false: its monitor is off"
        assert "vm2 paused" == t.cmd("pause vm2")    # lifecycle control is pyned's, not uvmm's
        t.close()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        out = subprocess.run([sys.executable, "-m", "pyned", "monitor", f"unix:{sock}", "-c", "ps",
                              "-c", "vm1 dev list"], capture_output=True, text=True, env=env,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        assert re.search(r"vm2 +uvmm +paused", out.stdout) and "/serial@9c090000" in out.stdout
        out = subprocess.run([sys.executable, "-m", "pyned", "monitor", f"unix:{sock}"],
                             input="ps\nbogus\n", capture_output=True, text=True, env=env,
                             timeout=60)
        assert out.returncode == 1 and "unknown command 'bogus'" in out.stderr
        assert re.search(r"vm1 +uvmm +running", out.stdout)
