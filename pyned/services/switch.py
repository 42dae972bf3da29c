"""The virtual network switch, after L4Re's ``l4vio_switch`` (kernkonzept/l4_virtio-net-switch).

Ports are created by name with the factory options ``l4vio_switch`` takes
(``name=``, ``mac=``, ``type=monitor|none``); a VM's virtio-net device is
attached to a port and detached again when the VM goes away, so a restarted
VM plugs a new device into the same port. Forwarding is a learning bridge:
the source MAC of every frame is learned for its port (a table of 1024
entries, the oldest evicted first, as ``Mac_table``), a frame for a learned
unicast MAC goes to that port only, broadcast, multicast and unknown
unicast go to every other port, and nothing ever goes back out of the port
it came in on. A monitor port receives a copy of every frame and cannot
send. Every frame entering the switch can be captured to a classic pcap file
(LINKTYPE_ETHERNET, microsecond timestamps), flushed per packet so that
Wireshark or tcpdump can read it while the system runs.

Threads: a port's device calls in from its VM's vCPU thread. The switch
holds its lock only to learn and to pick destinations, then delivers with no
lock held, so two VMs sending to each other at once cannot deadlock.
Not modelled: VLANs (``vlan=`` is rejected), dynamic port limits, ds-max.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections import OrderedDict
from typing import BinaryIO, Callable, Protocol

from pyned.devices.virtio.net import default_mac, format_mac, parse_mac

MAC_TABLE_SIZE = 1024
PCAP_MAGIC = 0xA1B2C3D4
PCAP_SNAPLEN = 65535
LINKTYPE_ETHERNET = 1
_PCAP_HEADER = struct.Struct("<IHHiIII")
_PCAP_RECORD = struct.Struct("<IIII")


class NetEndpoint(Protocol):
    """What a switch port plugs into: a VirtioNet, or a test double."""

    def connect(self, uplink: Callable[[bytes], None] | None) -> None: ...

    def deliver(self, frame: bytes) -> bool: ...


class SwitchPort:
    """One port: options, the attached endpoint and counters (rx = into the switch)."""

    def __init__(self, name: str, mac: bytes, monitor: bool) -> None:
        self.name = name
        self.mac = mac
        self.monitor = monitor
        self.endpoint: NetEndpoint | None = None
        self.rx_frames = self.rx_bytes = 0
        self.tx_frames = self.tx_bytes = 0
        self.tx_dropped = 0

    def stats(self) -> dict[str, object]:
        return {"name": self.name, "mac": format_mac(self.mac), "monitor": self.monitor,
                "attached": self.endpoint is not None, "rx_frames": self.rx_frames,
                "rx_bytes": self.rx_bytes, "tx_frames": self.tx_frames,
                "tx_bytes": self.tx_bytes, "tx_dropped": self.tx_dropped}


class PcapWriter:
    """A classic pcap file, one flushed record per frame."""

    def __init__(self, path: str | os.PathLike[str],
                 clock: Callable[[], float] = time.time) -> None:
        self._file: BinaryIO | None = open(path, "wb")
        self._clock = clock
        self._lock = threading.Lock()
        self._file.write(_PCAP_HEADER.pack(PCAP_MAGIC, 2, 4, 0, 0, PCAP_SNAPLEN, LINKTYPE_ETHERNET))
        self._file.flush()
        self.packets = 0

    def write(self, frame: bytes) -> None:
        now = self._clock()
        sec = int(now)
        usec = min(int((now - sec) * 1_000_000), 999_999)
        data = frame[:PCAP_SNAPLEN]
        with self._lock:
            if self._file is None:
                return
            self._file.write(_PCAP_RECORD.pack(sec, usec, len(data), len(frame)) + data)
            self._file.flush()
            self.packets += 1

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class VirtioSwitch:
    """A learning Ethernet switch between named ports."""

    def __init__(self, name: str = "switch", *, pcap: str | os.PathLike[str] | None = None,
                 max_ports: int = 256, mac_table_size: int = MAC_TABLE_SIZE,
                 log: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.max_ports = max_ports
        self._log = log if log is not None else (lambda line: None)
        self._lock = threading.Lock()
        self._ports: dict[str, SwitchPort] = {}
        self._table: OrderedDict[bytes, SwitchPort] = OrderedDict()
        self._table_size = mac_table_size
        self._pcap = PcapWriter(pcap, clock) if pcap is not None else None
        self.dropped = 0

    # -- configuration --------------------------------------------------------

    def add_port(self, name: str, *, mac: str | bytes | None = None, port_type: str = "none",
                 vlan: str | None = None) -> SwitchPort:
        """Create a port, as ``switch:create(0, "name=...", "mac=...", "type=...")``."""
        if vlan is not None:
            raise ValueError(f"port {name!r}: VLANs are not supported")
        if port_type not in ("none", "monitor"):
            raise ValueError(f"port {name!r}: type must be 'none' or 'monitor', not {port_type!r}")
        with self._lock:
            if name in self._ports:
                raise ValueError(f"port {name!r} exists already")
            if len(self._ports) >= self.max_ports:
                raise ValueError(f"switch {self.name!r} has no free port (max {self.max_ports})")
            raw = parse_mac(mac) if mac is not None else default_mac(f"{self.name}/{name}")
            for other in self._ports.values():
                if other.mac == raw:
                    raise ValueError(f"port {name!r}: MAC {format_mac(raw)} is already used "
                                     f"by port {other.name!r}")
            port = SwitchPort(name, raw, port_type == "monitor")
            self._ports[name] = port
            return port

    def port(self, name: str) -> SwitchPort:
        return self._ports[name]

    @property
    def ports(self) -> list[SwitchPort]:
        return list(self._ports.values())

    def attach(self, name: str, endpoint: NetEndpoint) -> None:
        """Plug ``endpoint`` into port ``name``, replacing whatever was plugged in."""
        port = self._ports[name]
        with self._lock:
            old = port.endpoint
            port.endpoint = endpoint
            self._flush(port)
        if old is not None and old is not endpoint:
            old.connect(None)
        endpoint.connect(lambda frame: self._forward(port, endpoint, frame))

    def detach(self, name: str, endpoint: NetEndpoint | None = None) -> None:
        """Unplug port ``name`` (only if ``endpoint`` is still the one plugged in, when given)."""
        port = self._ports[name]
        with self._lock:
            old = port.endpoint
            if old is None or (endpoint is not None and old is not endpoint):
                return
            port.endpoint = None
            self._flush(port)
        old.connect(None)

    def close(self) -> None:
        if self._pcap is not None:
            self._pcap.close()

    def stats(self) -> list[dict[str, object]]:
        with self._lock:
            return [p.stats() for p in self._ports.values()]

    def mac_table(self) -> dict[str, str]:
        with self._lock:
            return {format_mac(mac): port.name for mac, port in self._table.items()}

    # -- forwarding -----------------------------------------------------------

    def _flush(self, port: SwitchPort) -> None:
        for mac in [m for m, p in self._table.items() if p is port]:
            del self._table[mac]

    def _learn(self, mac: bytes, port: SwitchPort) -> None:
        if mac in self._table:
            self._table[mac] = port  # a client may move between ports
            return
        if len(self._table) >= self._table_size:
            self._table.popitem(last=False)
        self._table[mac] = port

    def _forward(self, src: SwitchPort, endpoint: NetEndpoint, frame: bytes) -> None:
        if len(frame) < 14:
            return
        dst_mac = frame[0:6]
        src_mac = frame[6:12]
        with self._lock:
            # A device of a VM that was replaced on this port may still be sending.
            if src.endpoint is not endpoint or src.monitor:
                self.dropped += 1
                return
            src.rx_frames += 1
            src.rx_bytes += len(frame)
            if not src_mac[0] & 1:
                self._learn(src_mac, src)
            known = None if dst_mac[0] & 1 else self._table.get(dst_mac)
            if known is src:
                targets = []  # for a station on the sender's own segment
            elif known is not None:
                targets = [known] if known.endpoint is not None else []
            else:
                targets = [p for p in self._ports.values()
                           if p is not src and p.endpoint is not None and not p.monitor]
            targets += [p for p in self._ports.values()
                        if p.monitor and p is not src and p.endpoint is not None
                        and p not in targets]
            plan = [(p, p.endpoint) for p in targets]
        if self._pcap is not None:
            self._pcap.write(frame)
        results = []
        for port, ep in plan:
            assert ep is not None
            try:
                ok = ep.deliver(frame)
            except Exception as e:  # the receiver's bug must not hit the sender's thread
                self._log(f"switch {self.name}: port {port.name}: delivery failed: {e!r}")
                ok = False
            results.append((port, ok))
        with self._lock:
            for port, ok in results:
                if ok:
                    port.tx_frames += 1
                    port.tx_bytes += len(frame)
                else:
                    port.tx_dropped += 1
