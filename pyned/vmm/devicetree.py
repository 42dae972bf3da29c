"""The VM's device tree: loaded, overlaid, read by device factories, augmented.

A thin layer over the ``fdt`` package's mutable tree that adds what a VMM
needs from a DT: cells-aware ``reg`` and ``interrupts`` decoding,
``interrupt-parent`` resolution, overlays, and disabling a node together with
the reason, so that users can see why a device did not appear.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import fdt
from fdt.items import Node, Property, PropBytes, PropStrings, PropWords

from pyned.errors import ImageError
from pyned.vmm import dts



class Unbacked(Exception):
    """The node describes something this VM cannot provide; the message says why."""


def prop_bytes(prop: Property) -> bytes:
    if isinstance(prop, PropWords):
        return struct.pack(f">{len(prop.data)}I", *prop.data)
    if isinstance(prop, PropStrings):
        return b"".join(s.encode() + b"\0" for s in prop.data)
    if isinstance(prop, PropBytes):
        return bytes(prop.data)
    return b""


def node_path(node: Node) -> str:
    parts = []
    while node is not None and node.parent is not None:
        parts.append(node.name)
        node = node.parent
    return "/" + "/".join(reversed(parts))


@dataclass(frozen=True)
class Interrupt:
    controller: Node
    cells: tuple[int, ...]


def load_blob_or_source(path: Path) -> fdt.FDT:
    """Read a DTB, or compile a DTS; errors name the file."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ImageError(f"{path}: cannot read: {err.strerror}") from None
    if path.suffix in (".dts", ".dtsi"):
        try:
            return dts.compile_dts(data.decode("utf-8", errors="replace"), filename=str(path),
                                   include_dirs=[path.parent])
        except dts.DtsError as err:
            raise ImageError(str(err)) from None
    if data[:4] != b"\xd0\x0d\xfe\xed":
        raise ImageError(f"{path}: not a device tree blob (bad magic {data[:4].hex()})")
    try:
        return parse_dtb(data)
    except Exception as err:
        raise ImageError(f"{path}: malformed device tree blob: {err}") from None


def parse_dtb(data: bytes) -> fdt.FDT:
    """``fdt.parse_dtb`` with a reserve map of its own.

    The package appends /memreserve/ entries to a default list that every FDT
    object shares, so one VM's DTB would leak its entries into the next.
    """
    tree = fdt.parse_dtb(data)
    off = struct.unpack_from(">I", data, 16)[0]
    entries = []
    while off + 16 <= len(data):
        addr, size = struct.unpack_from(">QQ", data, off)
        if addr == 0 and size == 0:
            break
        entries.append({"address": addr, "size": size})
        off += 16
    tree.entries = entries
    return tree


class DeviceTree:
    def __init__(self, tree: fdt.FDT, source: str) -> None:
        self.tree = tree
        self.source = source
        # path -> why pyned disabled the node
        self.disabled: dict[str, str] = {}

    @classmethod
    def load(cls, paths: list[Path], cache: dict[Path, bytes] | None = None) -> "DeviceTree":
        """Load the base tree and its overlays.

        ``cache`` keeps each file as a DTB across the builds of one VM (a
        restart): ROM contents do not change while the system runs, and
        compiling a DTS costs most of a VM's build.
        """
        if not paths:
            raise ImageError("no device tree given (fdt = ...)")

        def tree(path: Path) -> fdt.FDT:
            if cache is None:
                return load_blob_or_source(path)
            if path not in cache:
                cache[path] = load_blob_or_source(path).to_dtb(version=17)
            return parse_dtb(cache[path])

        dt = cls(tree(paths[0]), str(paths[0]))
        for overlay in paths[1:]:
            dt.apply_overlay(tree(overlay), str(overlay))
        return dt

    # -- structure ----------------------------------------------------------

    @property
    def root(self) -> Node:
        return self.tree.root

    def walk(self) -> Iterator[Node]:
        stack = [self.root]
        while stack:
            node = stack.pop()
            yield node
            stack.extend(reversed(node.nodes))

    def node(self, path: str) -> Node | None:
        if path == "/":
            return self.root
        node = self.root
        for part in path.strip("/").split("/"):
            node = node.get_subnode(part)
            if node is None:
                return None
        return node

    def ensure_node(self, path: str) -> Node:
        node = self.root
        for part in path.strip("/").split("/"):
            sub = node.get_subnode(part)
            if sub is None:
                sub = Node(part)
                node.append(sub)
            node = sub
        return node

    # -- properties ---------------------------------------------------------

    @staticmethod
    def raw(node: Node, name: str) -> bytes | None:
        prop = node.get_property(name)
        return None if prop is None else prop_bytes(prop)

    def cells(self, node: Node, name: str) -> list[int] | None:
        data = self.raw(node, name)
        if data is None:
            return None
        if len(data) % 4:
            raise ImageError(f"{self.source}: {node_path(node)}: property {name} is not a cell list")
        return list(struct.unpack(f">{len(data) // 4}I", data))

    def u32(self, node: Node, name: str, default: int | None = None) -> int | None:
        cells = self.cells(node, name)
        return cells[0] if cells else default

    def string(self, node: Node, name: str) -> str | None:
        strings = self.strings(node, name)
        return strings[0] if strings else None

    def strings(self, node: Node, name: str) -> list[str]:
        data = self.raw(node, name)
        if not data:
            return []
        return [s.decode("utf-8", errors="replace") for s in data.rstrip(b"\0").split(b"\0")]

    def compatible(self, node: Node) -> list[str]:
        return self.strings(node, "compatible")

    def is_enabled(self, node: Node) -> bool:
        status = self.string(node, "status")
        return status in (None, "okay", "ok")

    def disable(self, node: Node, reason: str) -> None:
        node.set_property("status", "disabled")
        self.disabled[node_path(node)] = reason

    # -- addresses ----------------------------------------------------------

    def address_cells(self, parent: Node | None) -> tuple[int, int]:
        if parent is None:
            return 2, 1
        return self.u32(parent, "#address-cells", 2), self.u32(parent, "#size-cells", 1)

    def reg(self, node: Node) -> list[tuple[int, int]]:
        cells = self.cells(node, "reg") or []
        ac, sc = self.address_cells(node.parent)
        step = ac + sc
        if step == 0 or len(cells) % step:
            raise ImageError(f"{self.source}: {node_path(node)}: reg has {len(cells)} cells, "
                             f"not a multiple of #address-cells {ac} + #size-cells {sc}")
        out = []
        for i in range(0, len(cells), step):
            addr = _join(cells[i : i + ac])
            size = _join(cells[i + ac : i + step])
            out.append((self.translate(node.parent, addr, node), size))
        return out

    def translate(self, bus: Node | None, addr: int, node: Node) -> int:
        """Map a bus address up through ``ranges`` to a CPU physical address."""
        while bus is not None and bus.parent is not None:
            ranges = self.raw(bus, "ranges")
            if ranges is None:
                raise ImageError(f"{self.source}: {node_path(node)}: parent {node_path(bus)} "
                                 f"has no ranges, so its reg is not a CPU address")
            if ranges:
                child_ac, _ = self.address_cells(bus)
                parent_ac, _ = self.address_cells(bus.parent)
                _, size_c = self.address_cells(bus)
                cells = list(struct.unpack(f">{len(ranges) // 4}I", ranges))
                step = child_ac + parent_ac + size_c
                for i in range(0, len(cells) - step + 1, step):
                    child = _join(cells[i : i + child_ac])
                    parent_addr = _join(cells[i + child_ac : i + child_ac + parent_ac])
                    size = _join(cells[i + child_ac + parent_ac : i + step])
                    if child <= addr < child + size:
                        addr = addr - child + parent_addr
                        break
                else:
                    raise ImageError(f"{self.source}: {node_path(node)}: address {addr:#x} "
                                     f"is not in the ranges of {node_path(bus)}")
            bus = bus.parent
        return addr

    def set_reg(self, node: Node, entries: list[tuple[int, int]]) -> None:
        ac, sc = self.address_cells(node.parent)
        words: list[int] = []
        for addr, size in entries:
            words += _split(addr, ac) + _split(size, sc)
        node.set_property("reg", words)

    # -- interrupts ---------------------------------------------------------

    def phandles(self) -> dict[int, Node]:
        out = {}
        for node in self.walk():
            ph = self.u32(node, "phandle") or self.u32(node, "linux,phandle")
            if ph:
                out[ph] = node
        return out

    def interrupt_parent(self, node: Node) -> Node | None:
        handles = self.phandles()
        cur: Node | None = node
        while cur is not None:
            ph = self.u32(cur, "interrupt-parent")
            if ph is not None:
                return handles.get(ph)
            cur = cur.parent
        return None

    def interrupts(self, node: Node) -> list[Interrupt]:
        """Decode ``interrupts`` (with ``interrupt-parent``) or ``interrupts-extended``."""
        ext = self.cells(node, "interrupts-extended")
        out: list[Interrupt] = []
        if ext:
            handles = self.phandles()
            i = 0
            while i < len(ext):
                ctrl = handles.get(ext[i])
                if ctrl is None:
                    raise ImageError(f"{self.source}: {node_path(node)}: interrupts-extended "
                                     f"names unknown phandle {ext[i]}")
                n = self.u32(ctrl, "#interrupt-cells", 0)
                out.append(Interrupt(ctrl, tuple(ext[i + 1 : i + 1 + n])))
                i += 1 + n
            return out
        cells = self.cells(node, "interrupts")
        if not cells:
            return []
        ctrl = self.interrupt_parent(node)
        if ctrl is None:
            raise ImageError(f"{self.source}: {node_path(node)}: interrupts without an "
                             f"interrupt-parent")
        n = self.u32(ctrl, "#interrupt-cells", 0)
        if not n or len(cells) % n:
            raise ImageError(f"{self.source}: {node_path(node)}: {len(cells)} interrupt cells "
                             f"do not fit #interrupt-cells = {n} of {node_path(ctrl)}")
        return [Interrupt(ctrl, tuple(cells[i : i + n])) for i in range(0, len(cells), n)]

    # -- overlays -----------------------------------------------------------

    def apply_overlay(self, overlay: fdt.FDT, name: str) -> None:
        """Apply a /plugin/ overlay's fragments, or merge a plain tree over this one."""
        fragments = [n for n in overlay.root.nodes if n.get_subnode("__overlay__") is not None]
        if not fragments:
            self.root.merge(overlay.root)
            return
        symbols = self.node("/__symbols__")
        fixups = overlay.root.get_subnode("__fixups__")
        fixed_targets: dict[str, str] = {}
        if fixups is not None:
            for prop in fixups.props:
                for ref in prop_bytes(prop).rstrip(b"\0").split(b"\0"):
                    path, pname, _off = ref.decode().split(":")
                    fixed_targets[path] = prop.name
        for frag in fragments:
            target_path = self.string(frag, "target-path")
            if target_path is None:
                label = fixed_targets.get(node_path(frag))
                sym = self.string(symbols, label) if (symbols is not None and label) else None
                if sym is None:
                    raise ImageError(f"{name}: fragment {frag.name}: cannot resolve its target "
                                     f"(compile the base DTB with dtc -@ so labels are kept)")
                target_path = sym
            target = self.node(target_path)
            if target is None:
                raise ImageError(f"{name}: fragment {frag.name}: target {target_path} "
                                 f"does not exist in {self.source}")
            target.merge(frag.get_subnode("__overlay__"))

    def to_dtb(self) -> bytes:
        return self.tree.to_dtb(version=17)

    def to_dts(self) -> str:
        return self.tree.to_dts()


def _join(cells: list[int]) -> int:
    value = 0
    for c in cells:
        value = (value << 32) | c
    return value


def _split(value: int, n: int) -> list[int]:
    return [(value >> (32 * (n - 1 - i))) & 0xFFFF_FFFF for i in range(n)]
