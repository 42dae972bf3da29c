"""A Device Tree Source compiler: DTS text to an ``fdt.FDT`` tree, without dtc.

It exists because the ``fdt`` package's own DTS parser silently drops nodes
that follow a label, and pyned should not need dtc installed to read the
descriptions in ``dts/``. Supported, with dtc's semantics: ``/dts-v1/``,
``/memreserve/``, labels on nodes, properties and values; cell lists with
``/bits/ 8|16|32|64``, integer and character literals and full C expressions
in parentheses; ``&label`` and ``&{/path}`` as phandles inside cells and as
path strings outside; strings with C escapes, byte strings, mixed values;
``/include/`` and ``#include`` (plain textual includes, no macros); merging
of nodes defined twice; ``&label { ... };`` amendments; ``/delete-node/`` and
``/delete-property/``; ``/omit-if-no-ref/`` (accepted, not applied). Phandles
are assigned as dtc assigns them: only to referenced nodes, in tree order.
Overlays (``/plugin/``) are not compiled: give a DTB overlay instead.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import fdt
from fdt.items import Node as FdtNode
from fdt.items import PropBytes, PropStrings, new_property

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,._+*#?@-")
_LABEL_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, "\\": 92, '"': 34,
            "'": 39, "0": 0}
_MAX_INCLUDE_DEPTH = 32


class DtsError(ValueError):
    """A DTS error; ``str()`` is one line: ``FILE:LINE:COL: message``."""


@dataclass
class _Ref:
    """A reference resolved after parsing: a phandle cell or a path string."""

    target: str          # label name, or a path when ``by_path``
    by_path: bool
    where: str           # FILE:LINE:COL for errors


@dataclass
class _Node:
    name: str
    props: dict[str, list[bytes | _Ref | tuple[_Ref, int]]] = field(default_factory=dict)
    children: dict[str, "_Node"] = field(default_factory=dict)
    parent: "_Node | None" = None

    def path(self) -> str:
        parts = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(parts))


class _Tree:
    def __init__(self) -> None:
        self.root = _Node("/")
        self.labels: dict[str, _Node] = {}
        self.memreserve: list[tuple[int, int]] = []

    def add_label(self, label: str, node: _Node, where: str) -> None:
        old = self.labels.get(label)
        if old is not None and old is not node:
            raise DtsError(f"{where}: duplicate label '{label}' (also on {old.path()})")
        self.labels[label] = node

    def find_path(self, path: str) -> _Node | None:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            child = node.children.get(part)
            if child is None:
                matches = [c for n, c in node.children.items() if n.split("@")[0] == part]
                if len(matches) != 1:
                    return None
                child = matches[0]
            node = child
        return node


class _Parser:
    """One source file: a cursor over its text and the grammar on top of it."""

    def __init__(self, text: str, filename: str, tree: _Tree, include_dirs: list[Path],
                 depth: int = 0) -> None:
        self.s = text
        self.i = 0
        self.file = filename
        self.tree = tree
        self.include_dirs = include_dirs
        self.depth = depth

    # -- cursor -------------------------------------------------------------

    def where(self, pos: int | None = None) -> str:
        pos = self.i if pos is None else pos
        line = self.s.count("\n", 0, pos) + 1
        col = pos - (self.s.rfind("\n", 0, pos) + 1) + 1
        return f"{self.file}:{line}:{col}"

    def error(self, msg: str, pos: int | None = None) -> DtsError:
        return DtsError(f"{self.where(pos)}: {msg}")

    def skip(self) -> None:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif s.startswith("//", self.i):
                end = s.find("\n", self.i)
                self.i = len(s) if end < 0 else end
            elif s.startswith("/*", self.i):
                end = s.find("*/", self.i + 2)
                if end < 0:
                    raise self.error("unterminated comment")
                self.i = end + 2
            else:
                return

    def at(self, token: str) -> bool:
        self.skip()
        return self.s.startswith(token, self.i)

    def eat(self, token: str) -> bool:
        if self.at(token):
            self.i += len(token)
            return True
        return False

    def expect(self, token: str) -> None:
        if not self.eat(token):
            got = self.s[self.i : self.i + 12].split("\n")[0] or "end of file"
            raise self.error(f"expected '{token}', found '{got}'")

    def eof(self) -> bool:
        self.skip()
        return self.i >= len(self.s)

    def word(self, chars: set[str] = _NAME_CHARS) -> str:
        self.skip()
        start = self.i
        while self.i < len(self.s) and self.s[self.i] in chars:
            self.i += 1
        return self.s[start : self.i]

    # -- file level ---------------------------------------------------------

    def parse_file(self, top: bool) -> None:
        if top:
            if not self.eat("/dts-v1/"):
                raise self.error("missing /dts-v1/; at the start of the file")
            self.expect(";")
        while not self.eof():
            if self.eat("/dts-v1/"):
                self.expect(";")
            elif self.at("/plugin/"):
                raise self.error("overlays (/plugin/) are not supported; give a DTB overlay")
            elif self.eat("/memreserve/"):
                addr = self.number()
                size = self.number()
                self.expect(";")
                self.tree.memreserve.append((addr, size))
            elif self.at("/include/") or self.at("#"):
                self.include(lambda p: p.parse_file(top=False))
            elif self.eat("/delete-node/"):
                where = self.where()
                node = self.reference_node(where)
                self.expect(";")
                if node.parent is None:
                    raise self.error("cannot delete the root node")
                del node.parent.children[node.name]
            elif self.eat("/omit-if-no-ref/"):
                continue
            elif self.at("/"):
                self.i += 1
                self.node_body(self.tree.root)
                self.expect(";")
            elif self.at("&"):
                where = self.where()
                node = self.reference_node(where)
                self.node_body(node)
                self.expect(";")
            else:
                labels = self.labels()
                if labels and self.at("&"):
                    where = self.where()
                    node = self.reference_node(where)
                    for label in labels:
                        self.tree.add_label(label, node, where)
                    self.node_body(node)
                    self.expect(";")
                    continue
                raise self.error("expected a node ('/ {', '&label {') or a directive")

    def include(self, parse) -> None:
        pos = self.i
        if self.eat("#"):
            directive = self.word()
            if directive != "include":
                raise self.error(f"#{directive}: the C preprocessor is not supported", pos)
            self.skip()
            if self.eat("<"):
                end = self.s.find(">", self.i)
                if end < 0 or "\n" in self.s[self.i : end]:
                    raise self.error("unterminated #include <...>")
                name = self.s[self.i : end]
                self.i = end + 1
            else:
                name = self.string_literal().decode()
        else:
            self.expect("/include/")
            name = self.string_literal().decode()
        if self.depth >= _MAX_INCLUDE_DEPTH:
            raise self.error("includes nested too deeply", pos)
        base = Path(self.file).parent
        for d in [base] + self.include_dirs:
            path = d / name
            if path.is_file():
                break
        else:
            raise self.error(f"cannot find include file '{name}'", pos)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError as err:
            raise self.error(f"cannot read '{name}': {err.strerror}", pos) from None
        parse(_Parser(text, str(path), self.tree, self.include_dirs, self.depth + 1))

    # -- nodes and properties -------------------------------------------------

    def labels(self) -> list[str]:
        out = []
        while True:
            self.skip()
            start = self.i
            name = self.word(_LABEL_CHARS)
            if name and self.s.startswith(":", self.i) and not name[0].isdigit():
                self.i += 1
                out.append(name)
            else:
                self.i = start
                return out

    def reference_node(self, where: str) -> _Node:
        ref = self.reference()
        node = self.resolve_node(ref)
        if node is None:
            what = f"path '{ref.target}'" if ref.by_path else f"label '{ref.target}'"
            raise DtsError(f"{where}: reference to undefined {what}")
        return node

    def reference(self) -> _Ref:
        where = self.where()
        self.expect("&")
        if self.s.startswith("{", self.i):
            end = self.s.find("}", self.i)
            if end < 0:
                raise self.error("unterminated &{/path}")
            path = self.s[self.i + 1 : end]
            self.i = end + 1
            return _Ref(path, True, where)
        label = ""
        while self.i < len(self.s) and self.s[self.i] in _LABEL_CHARS:
            label += self.s[self.i]
            self.i += 1
        if not label:
            raise self.error("expected a label after '&'")
        return _Ref(label, False, where)

    def resolve_node(self, ref: _Ref) -> _Node | None:
        if ref.by_path:
            return self.tree.find_path(ref.target)
        return self.tree.labels.get(ref.target)

    def node_body(self, node: _Node) -> None:
        self.expect("{")
        while not self.eat("}"):
            if self.eof():
                raise self.error(f"unterminated node {node.path()}")
            if self.at("/include/") or self.at("#include"):
                self.include(lambda p, n=node: p.node_items(n))
                continue
            self.node_item(node)

    def node_items(self, node: _Node) -> None:
        while not self.eof():
            self.node_item(node)

    def node_item(self, node: _Node) -> None:
        if self.eat("/delete-node/"):
            name = self.word()
            self.expect(";")
            if node.children.pop(name, None) is None:
                matches = [n for n in node.children if n.split("@")[0] == name]
                for n in matches:
                    del node.children[n]
            return
        if self.eat("/delete-property/"):
            name = self.word()
            self.expect(";")
            node.props.pop(name, None)
            return
        self.eat("/omit-if-no-ref/")
        where = self.where()
        labels = self.labels()
        start = self.i
        name = self.word()
        if not name:
            raise self.error("expected a property or node name")
        if self.at("{"):
            child = node.children.get(name)
            if child is None:
                child = _Node(name, parent=node)
                node.children[name] = child
            for label in labels:
                self.tree.add_label(label, child, where)
            self.node_body(child)
            self.expect(";")
            return
        if self.eat(";"):
            node.props[name] = []
            return
        if not self.eat("="):
            raise self.error(f"expected '=', ';' or '{{' after '{name}'", start)
        value: list[bytes | _Ref | tuple[_Ref, int]] = []
        while True:
            self.labels()
            value.extend(self.value_piece())
            self.labels()
            if self.eat(";"):
                break
            self.expect(",")
        node.props[name] = value

    def value_piece(self) -> list[bytes | _Ref | tuple[_Ref, int]]:
        self.skip()
        if self.at('"'):
            return [self.string_literal() + b"\0"]
        if self.eat("["):
            return [self.byte_string()]
        if self.at("&"):
            return [self.reference()]
        bits = 32
        if self.eat("/bits/"):
            bits = self.number()
            if bits not in (8, 16, 32, 64):
                raise self.error(f"/bits/ {bits}: only 8, 16, 32 and 64 are allowed")
        if self.eat("<"):
            return self.cells(bits)
        raise self.error("expected a value: \"string\", <cells>, [bytes] or &reference")

    def cells(self, bits: int) -> list[bytes | _Ref | tuple[_Ref, int]]:
        out: list[bytes | _Ref | tuple[_Ref, int]] = []
        fmt = {8: ">B", 16: ">H", 32: ">I", 64: ">Q"}[bits]
        mask = (1 << bits) - 1
        while not self.eat(">"):
            if self.eof():
                raise self.error("unterminated cell list")
            self.labels()
            if self.at(">"):
                continue
            if self.at("&"):
                if bits != 32:
                    raise self.error("a phandle reference needs 32-bit cells")
                out.append((self.reference(), 32))
                continue
            out.append(struct.pack(fmt, self.primary() & mask))
        return out

    def byte_string(self) -> bytes:
        digits = ""
        while not self.eat("]"):
            if self.eof():
                raise self.error("unterminated byte string")
            self.labels()
            self.skip()
            c = self.s[self.i]
            if c in "0123456789abcdefABCDEF":
                digits += c
                self.i += 1
            elif c != "]":
                raise self.error(f"bad character '{c}' in byte string")
        if len(digits) % 2:
            raise self.error("byte string has an odd number of hex digits")
        return bytes.fromhex(digits)

    # -- literals and expressions ---------------------------------------------

    def string_literal(self) -> bytes:
        self.skip()
        start = self.i
        if not self.eat('"'):
            raise self.error("expected a string")
        out = bytearray()
        s = self.s
        while True:
            if self.i >= len(s) or s[self.i] == "\n":
                raise self.error("unterminated string", start)
            c = s[self.i]
            if c == '"':
                self.i += 1
                return bytes(out)
            if c == "\\":
                out.append(self.escape())
            else:
                out += c.encode()
                self.i += 1

    def escape(self) -> int:
        s = self.s
        self.i += 1
        c = s[self.i : self.i + 1]
        if c == "x":
            j = self.i + 1
            while j < len(s) and j < self.i + 3 and s[j] in "0123456789abcdefABCDEF":
                j += 1
            if j == self.i + 1:
                raise self.error("\\x without hex digits")
            value = int(s[self.i + 1 : j], 16)
            self.i = j
            return value
        if c in "01234567":
            j = self.i
            while j < len(s) and j < self.i + 3 and s[j] in "01234567":
                j += 1
            value = int(s[self.i : j], 8) & 0xFF
            self.i = j
            return value
        if c in _ESCAPES:
            self.i += 1
            return _ESCAPES[c]
        if not c:
            raise self.error("unterminated escape")
        self.i += 1
        return ord(c)

    def number(self) -> int:
        self.skip()
        start = self.i
        if self.at("("):
            return self.primary()
        m = self.word(set("0123456789abcdefABCDEFxXuUlL"))
        text = m.rstrip("uUlL")
        try:
            if text.lower().startswith("0x"):
                return int(text, 16)
            if len(text) > 1 and text.startswith("0"):
                return int(text, 8)
            return int(text, 10)
        except ValueError:
            raise self.error(f"bad number '{m or self.s[start:start + 1]}'", start) from None

    def primary(self) -> int:
        self.skip()
        if self.eat("("):
            value = self.expr()
            self.expect(")")
            return value
        if self.at("'"):
            self.i += 1
            if self.s.startswith("\\", self.i):
                value = self.escape()
            else:
                value = ord(self.s[self.i])
                self.i += 1
            self.expect("'")
            return value
        return self.number()

    _BINARY = [["||"], ["&&"], ["|"], ["^"], ["&"], ["==", "!="], ["<=", ">=", "<", ">"],
               ["<<", ">>"], ["+", "-"], ["*", "/", "%"]]

    def expr(self) -> int:
        cond = self.binary(0)
        if self.eat("?"):
            a = self.expr()
            self.expect(":")
            b = self.expr()
            return a if cond else b
        return cond

    def binary(self, level: int) -> int:
        if level == len(self._BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while True:
            self.skip()
            op = next((o for o in self._BINARY[level] if self.s.startswith(o, self.i)
                       and not (o in ("|", "&") and self.s.startswith(o * 2, self.i))
                       and not (o in ("<", ">") and self.s.startswith(o * 2, self.i))), None)
            if op is None:
                return left
            pos = self.i
            self.i += len(op)
            right = self.binary(level + 1)
            left = self.apply(op, left, right, pos)

    def unary(self) -> int:
        if self.eat("-"):
            return -self.unary()
        if self.eat("~"):
            return ~self.unary()
        if self.eat("!"):
            return int(not self.unary())
        return self.primary()

    def apply(self, op: str, a: int, b: int, pos: int) -> int:
        if op in ("/", "%") and b == 0:
            raise self.error("division by zero", pos)
        u64 = (1 << 64) - 1
        return {
            "||": lambda: int(bool(a) or bool(b)), "&&": lambda: int(bool(a) and bool(b)),
            "|": lambda: a | b, "^": lambda: a ^ b, "&": lambda: a & b,
            "==": lambda: int(a == b), "!=": lambda: int(a != b), "<": lambda: int(a < b),
            ">": lambda: int(a > b), "<=": lambda: int(a <= b), ">=": lambda: int(a >= b),
            "<<": lambda: (a << b) & u64, ">>": lambda: (a & u64) >> b,
            "+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b,
            "/": lambda: (a & u64) // (b & u64), "%": lambda: (a & u64) % (b & u64),
        }[op]()


def _assign_phandles(tree: _Tree) -> dict[int, int]:
    """dtc's rule: a referenced node without a phandle gets the next free number."""
    used: set[int] = set()
    nodes = list(_walk(tree.root))
    for node in nodes:
        value = node.props.get("phandle")
        if value and isinstance(value[0], bytes) and len(value[0]) == 4:
            used.add(struct.unpack(">I", value[0])[0])
    by_node: dict[int, int] = {}
    for node in nodes:
        value = node.props.get("phandle")
        if value and isinstance(value[0], bytes):
            by_node[id(node)] = struct.unpack(">I", b"".join(
                p for p in value if isinstance(p, bytes))[:4])[0]
    next_free = 1
    for node in nodes:
        for pieces in node.props.values():
            for piece in pieces:
                if not isinstance(piece, tuple):
                    continue
                target = _resolve(tree, piece[0])
                if id(target) not in by_node:
                    while next_free in used:
                        next_free += 1
                    by_node[id(target)] = next_free
                    used.add(next_free)
                    target.props["phandle"] = [struct.pack(">I", next_free)]
    return by_node


def _resolve(tree: _Tree, ref: _Ref) -> _Node:
    node = tree.find_path(ref.target) if ref.by_path else tree.labels.get(ref.target)
    if node is None:
        what = f"path '{ref.target}'" if ref.by_path else f"label '{ref.target}'"
        raise DtsError(f"{ref.where}: reference to undefined {what}")
    return node


def _walk(node: _Node):
    yield node
    for child in node.children.values():
        yield from _walk(child)


def _property(name: str, raw: bytes):
    prop = new_property(name, raw)
    # new_property guesses a type from the bytes; keep the bytes exact whatever it guessed.
    if isinstance(prop, PropStrings) and b"".join(s.encode() + b"\0" for s in prop.data) != raw:
        prop = PropBytes(name, data=raw)
    return prop


def _emit(tree: _Tree, phandles: dict[int, int]) -> fdt.FDT:
    out = fdt.FDT()
    out.entries = []  # the package's default is one list shared by every FDT
    for addr, size in tree.memreserve:
        out.entries.append({"address": addr, "size": size})

    def build(src: _Node, dst: FdtNode) -> None:
        for name, pieces in src.props.items():
            raw = bytearray()
            for piece in pieces:
                if isinstance(piece, bytes):
                    raw += piece
                elif isinstance(piece, tuple):
                    raw += struct.pack(">I", phandles[id(_resolve(tree, piece[0]))])
                else:
                    raw += _resolve(tree, piece).path().encode() + b"\0"
            dst.append(_property(name, bytes(raw)))
        for child in src.children.values():
            node = FdtNode(child.name)
            dst.append(node)
            build(child, node)

    build(tree.root, out.root)
    return out


def compile_dts(text: str, *, filename: str = "<dts>",
                include_dirs: Sequence[str | os.PathLike[str]] = ()) -> fdt.FDT:
    tree = _Tree()
    _Parser(text, filename, tree, [Path(d) for d in include_dirs]).parse_file(top=True)
    return _emit(tree, _assign_phandles(tree))


def compile_dts_file(path: str | os.PathLike[str]) -> fdt.FDT:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise DtsError(f"{p}: cannot read: {err.strerror}") from None
    return compile_dts(text, filename=str(p), include_dirs=[p.parent])
