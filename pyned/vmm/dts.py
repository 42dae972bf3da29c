"""Device Tree Source (DTS) compiler in pure Python: DTS text in, ``fdt.FDT`` out.

Why this exists: the `fdt` package's own ``parse_dts`` is line-based and silently drops
nodes that follow a label, and pyned must not need the ``dtc`` binary at run time. This
module follows dtc's grammar (dtc-lexer.l / dtc-parser.y) and tree semantics
(livetree.c / checks.c), so a DTS compiles to the same tree dtc would produce.

Supported, with dtc semantics:

- ``/dts-v1/;`` headers and ``/memreserve/ ADDR SIZE;`` entries;
- nodes with unit addresses; labels on nodes, on properties and inside values;
- property values: empty (boolean), ``<cells>`` and ``/bits/ 8|16|32|64 <...>``, integer
  literals (decimal, hex, octal; ``U``/``L``/``UL``/``LL``/``ULL``), char literals,
  C integer expressions in parentheses (64-bit arithmetic, wrapped to the element width),
  ``&label`` / ``&{/path}`` in cells (phandle) and outside cells (full path string), strings
  with C escapes, byte strings ``[0011 22]``, ``/incbin/("file"[, offset, length])`` and
  comma-separated mixtures of all of these;
- ``/include/ "file"`` and ``#include "file"`` / ``#include <file>`` as plain textual
  includes (no macro expansion), plus cpp line markers (``# 12 "file"``), so the output of
  ``cpp`` can be compiled;
- re-defined nodes merge; ``&label { };``, ``label: &ref { };`` and ``&{/path} { };`` amend
  a node; ``/delete-node/``, ``/delete-property/`` and ``/omit-if-no-ref/``;
- phandles are assigned as dtc does: only to referenced nodes, 1, 2, 3... in tree order of
  the references, skipping values taken by explicit ``phandle`` properties;
- the checks that make dtc fail: duplicate nodes, properties and labels, bad names,
  bad or duplicate phandles, a ``name`` property that differs from the node name.

Not supported: the C preprocessor (``#define`` and friends raise DtsError; run cpp first),
overlays (``/plugin/``), label-relative paths ``&{label/path}``. Deliberate differences from
dtc: a string literal may not span lines (so an unterminated string is reported where it
starts), and values too wide for their element are truncated silently (dtc 1.6 rejects
them, dtc 1.7 truncates them with a warning).

Property classes in the result: strings -> ``PropStrings``, 32-bit cells -> ``PropWords``,
byte strings and /incbin/ -> ``PropBytes``, no value -> ``Property``; anything mixed (or
not representable, such as an empty string) gets the class ``fdt.parse_dtb`` would give
the same bytes.
"""

from __future__ import annotations

import itertools
import os
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import fdt
from fdt.items import new_property

__all__ = ["DtsError", "SourcePos", "compile_dts", "compile_dts_file"]

_MASK64 = (1 << 64) - 1
_DTB_VERSION = 17
_MAX_INCLUDE_DEPTH = 100
_PLUGIN_MESSAGE = "overlays (/plugin/) are not supported; give a DTB overlay"
_PRINTABLE = frozenset(string.printable.encode("ascii"))


@dataclass(frozen=True)
class SourcePos:
    """A place in a source file; lines and columns count from 1."""

    filename: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}:{self.col}"


class DtsError(ValueError):
    """An error in DTS source; ``str()`` is one line: ``FILE:LINE:COL: message``."""

    def __init__(self, pos: SourcePos, message: str) -> None:
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(f"{pos}: {message}")
        self.pos = pos
        self.message = message


def compile_dts(
    text: str,
    *,
    filename: str = "<dts>",
    include_dirs: Sequence[str | os.PathLike[str]] = (),
) -> fdt.FDT:
    """Compile DTS text; includes are searched in ``include_dirs``."""
    return _compile(text, filename, None, [Path(d) for d in include_dirs])


def compile_dts_file(path: str | os.PathLike[str]) -> fdt.FDT:
    """Compile a DTS file; includes are searched in the file's own folder."""
    path = Path(path)
    try:
        text = _decode(path.read_bytes())
    except OSError as exc:
        raise DtsError(SourcePos(str(path), 1, 1), f"cannot read file: {exc.strerror or exc}") from exc
    return _compile(text, str(path), path.parent, [path.parent])


def _compile(text: str, filename: str, directory: Path | None, include_dirs: list[Path]) -> fdt.FDT:
    lexer = _Lexer(text, filename, directory, include_dirs)
    root, reserves = _Parser(lexer).parse()
    # dtc guesses the boot CPU while parsing, before the checks delete omitted nodes.
    boot_cpuid = _boot_cpuid(root)
    _check_and_resolve(root)
    return _to_fdt(root, reserves, boot_cpuid)


def _decode(data: bytes) -> str:
    # surrogateescape keeps non-UTF-8 bytes so strings come out byte-exact, as with dtc.
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------


class _Mode(Enum):
    """dtc's lexer states: what a word means depends on where it stands."""

    VALUE = "value"  # numbers and operators (dtc's V1 state)
    NAME = "name"  # property and node names, after '{', ';' and /delete-*/
    BYTES = "bytes"  # inside [ ... ]


@dataclass(frozen=True)
class _Token:
    # "name", "label", "ref", "int", "string", "byte", "word", "eof", or the keyword or
    # punctuator itself ("/dts-v1/", "{", "<<", ...).
    kind: str
    text: str
    pos: SourcePos
    value: int | bytes | str | None = None


_KEYWORD_MODES: dict[str, _Mode | None] = {
    "/dts-v1/": _Mode.VALUE,
    "/plugin/": None,
    "/memreserve/": _Mode.VALUE,
    "/bits/": _Mode.VALUE,
    "/delete-property/": _Mode.NAME,
    "/delete-node/": _Mode.NAME,
    "/omit-if-no-ref/": _Mode.NAME,
    "/incbin/": None,
}
_TWO_CHAR_OPS = frozenset({"<<", ">>", "<=", ">=", "==", "!=", "&&", "||"})

_RE_SPACE = re.compile(r"\s+")
_RE_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*:")
_RE_NAME = re.compile(r"\\?[A-Za-z0-9,._+*#?@-]+")
_RE_NUMBER = re.compile(r"[0-9][A-Za-z0-9_]*")
# Longest suffix first: Python tries alternatives in order, flex takes the longest match.
_RE_LITERAL = re.compile(r"(0[xX][0-9a-fA-F]+|[0-9]+)(?:ULL|UL|LL|U|L)?")
_RE_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RE_LABEL_REF = re.compile(r"&([A-Za-z_][A-Za-z0-9_]*)")
_RE_PATH_REF = re.compile(r"&\{(/[A-Za-z0-9,._+*#?@/-]*)\}")
_RE_HEX_BYTE = re.compile(r"[0-9a-fA-F]{2}")
_RE_STRING = re.compile(r'"((?:[^"\\\n]|\\.)*)"')
_RE_CHAR = re.compile(r"'((?:[^'\\\n]|\\.)*)'")
_RE_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))|([^\\]+)", re.S)
_SIMPLE_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13}
_RE_DTS_INCLUDE = re.compile(r'/include/\s*"([^"\n]*)"')
_RE_LINE_MARKER = re.compile(
    r'#(?:line)?[ \t]+([0-9]+)[ \t]+"((?:[^"\\\n]|\\.)*)"(?:[ \t]+[0-9]+)*[ \t\r]*(?=\n|$)'
)
_RE_CPP_INCLUDE = re.compile(r'#[ \t]*include[ \t]*(?:"([^"\n]*)"|<([^>\n]*)>)')
# Only at the start of a line and followed by a blank, so "#address-cells" stays a name.
_RE_CPP_DIRECTIVE = re.compile(
    r"#[ \t]*(define|undef|include|include_next|import|if|ifdef|ifndef|elif|else|endif"
    r"|error|warning|pragma|line)(?=[ \t\r\n]|$)"
)


@dataclass
class _Source:
    text: str
    name: str  # as shown in positions; cpp line markers may change it
    directory: Path | None  # searched first for quoted includes
    offset: int = 0
    line: int = 1
    line_start: int = 0


class _Lexer:
    """Turns the source, with its includes spliced in, into tokens.

    Like dtc's flex lexer, the mode is switched by the tokens themselves, so the parser
    never has to tell the lexer where it is.
    """

    def __init__(self, text: str, filename: str, directory: Path | None, include_dirs: list[Path]) -> None:
        self._sources = [_Source(text, filename, directory)]
        self._include_dirs = include_dirs
        self._mode = _Mode.VALUE

    def pos(self) -> SourcePos:
        src = self._sources[-1]
        return SourcePos(src.name, src.line, src.offset - src.line_start + 1)

    def next_token(self) -> _Token:
        while True:
            src = self._sources[-1]
            if src.offset >= len(src.text):
                if len(self._sources) == 1:
                    return _Token("eof", "", self.pos())
                self._sources.pop()
                continue
            if not self._skip_blank(src):
                return self._scan(src)

    def find_file(self, name: str, pos: SourcePos, *, quoted: bool, what: str = "include file") -> Path:
        """Where an included file is: the including file's folder, then the include dirs."""
        directory = self._sources[-1].directory
        dirs = ([directory] if quoted and directory is not None else []) + self._include_dirs
        candidates = [Path(name)] if os.path.isabs(name) else [d / name for d in dirs]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        searched = ", ".join(str(d) for d in dirs) if dirs else "no include directories given"
        raise DtsError(pos, f"cannot find {what} '{name}' (searched: {searched})")

    def _advance(self, src: _Source, length: int) -> None:
        start, end = src.offset, src.offset + length
        newlines = src.text.count("\n", start, end)
        if newlines:
            src.line += newlines
            src.line_start = src.text.rfind("\n", start, end) + 1
        src.offset = end

    def _skip_blank(self, src: _Source) -> bool:
        """Consume whitespace, a comment or a directive; False if a token starts here."""
        text, i = src.text, src.offset
        if text[i].isspace():
            match = _RE_SPACE.match(text, i)
            assert match is not None
            self._advance(src, match.end() - i)
            return True
        if text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise DtsError(self.pos(), "unterminated comment")
            self._advance(src, end + 2 - i)
            return True
        if text.startswith("//", i):
            end = text.find("\n", i)
            self._advance(src, (len(text) if end < 0 else end) - i)
            return True
        if text.startswith("/include/", i):
            pos = self.pos()
            match = _RE_DTS_INCLUDE.match(text, i)
            if match is None:
                raise DtsError(pos, 'expected "file" after /include/')
            self._advance(src, match.end() - i)
            self._push(match[1], pos, quoted=True)
            return True
        if text[i] == "#" and not text[src.line_start : i].strip():
            return self._directive(src)
        return False

    def _directive(self, src: _Source) -> bool:
        text, i = src.text, src.offset
        pos = self.pos()
        if match := _RE_LINE_MARKER.match(text, i):
            self._advance(src, match.end() - i)
            src.name = match[2]
            src.line = int(match[1]) - 1  # the marker numbers the line after it
            return True
        if match := _RE_CPP_INCLUDE.match(text, i):
            self._advance(src, match.end() - i)
            self._push(match[1] if match[1] is not None else match[2], pos, quoted=match[1] is not None)
            return True
        if match := _RE_CPP_DIRECTIVE.match(text, i):
            if match[1] == "include":
                raise DtsError(pos, 'expected "file" or <file> after #include')
            raise DtsError(
                pos,
                f"'#{match[1]}': the C preprocessor is not supported (only #include is); run cpp first",
            )
        return False

    def _push(self, name: str, pos: SourcePos, *, quoted: bool) -> None:
        if len(self._sources) > _MAX_INCLUDE_DEPTH:
            raise DtsError(pos, "includes nested too deeply (does a file include itself?)")
        path = self.find_file(name, pos, quoted=quoted)
        try:
            text = _decode(path.read_bytes())
        except OSError as exc:
            raise DtsError(pos, f"cannot read '{path}': {exc.strerror or exc}") from exc
        self._sources.append(_Source(text, str(path), path.parent))

    def _token(self, src: _Source, kind: str, length: int, value: int | bytes | str | None = None,
               mode: _Mode | None = None) -> _Token:
        pos = self.pos()
        text = src.text[src.offset : src.offset + length]
        self._advance(src, length)
        if mode is not None:
            self._mode = mode
        return _Token(kind, text, pos, value)

    def _scan(self, src: _Source) -> _Token:
        text, i, mode = src.text, src.offset, self._mode
        char = text[i]
        if char == '"':
            match = _RE_STRING.match(text, i)
            if match is None:
                raise DtsError(self.pos(), "unterminated string")
            return self._token(src, "string", match.end() - i, _unescape(match[1], self.pos()))
        if char == "/":
            for keyword, new_mode in _KEYWORD_MODES.items():
                if text.startswith(keyword, i):
                    return self._token(src, keyword, len(keyword), mode=new_mode)
        if match := _RE_LABEL.match(text, i):
            return self._token(src, "label", match.end() - i, match.group()[:-1])
        if mode is _Mode.BYTES:
            if match := _RE_HEX_BYTE.match(text, i):
                return self._token(src, "byte", 2, int(match.group(), 16))
            if char == "]":
                return self._token(src, "]", 1, mode=_Mode.VALUE)
            if text[i] in string.hexdigits:
                raise DtsError(self.pos(), "bad byte string: odd number of hex digits")
            raise DtsError(self.pos(), f"bad byte string: expected hex digits, found {text[i]!r}")
        if mode is _Mode.NAME:
            if match := _RE_NAME.match(text, i):
                name = match.group().removeprefix("\\")
                return self._token(src, "name", match.end() - i, name, _Mode.VALUE)
        else:
            if match := _RE_LITERAL.match(text, i):
                end = match.end()
                word = _RE_NUMBER.match(text, i)
                assert word is not None
                # dtc lexes "1U2L" as two literals and "10a:" as a literal and a label;
                # any other letters glued to a number make it a bad number.
                if word.end() != end and not (text[end].isdigit() or _RE_LABEL.match(text, end)):
                    raise DtsError(self.pos(), f"bad number '{word.group()}'")
                return self._token(src, "int", end - i, _literal(match.group(), self.pos()))
            if match := _RE_WORD.match(text, i):
                return self._token(src, "word", match.end() - i)
        if char == "'":
            match = _RE_CHAR.match(text, i)
            if match is None:
                raise DtsError(self.pos(), "unterminated character literal")
            return self._token(src, "int", match.end() - i, _char_value(match[1], self.pos()))
        if char == "&":
            if match := _RE_LABEL_REF.match(text, i) or _RE_PATH_REF.match(text, i):
                return self._token(src, "ref", match.end() - i, match[1])
            if text.startswith("&{", i):
                raise DtsError(self.pos(), "bad path reference: expected &{/path}")
        if text[i : i + 2] in _TWO_CHAR_OPS:
            return self._token(src, text[i : i + 2], 2)
        new_mode = _Mode.BYTES if char == "[" else _Mode.NAME if char in "{;" else None
        return self._token(src, char, 1, mode=new_mode)


def _literal(text: str, pos: SourcePos) -> int:
    match = _RE_LITERAL.fullmatch(text)
    digits = match[1] if match else ""
    if not match or (digits[0] == "0" and digits[1:2].isdigit() and not set(digits) <= set("01234567")):
        raise DtsError(pos, f"bad number '{text}'")
    if digits[:2] in ("0x", "0X"):
        value = int(digits, 16)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits, 8)
    else:
        value = int(digits)
    if value > _MASK64:
        raise DtsError(pos, f"bad number '{text}': out of range (more than 64 bits)")
    return value


def _unescape(body: str, pos: SourcePos) -> bytes:
    out = bytearray()
    for match in _RE_ESCAPE.finditer(body):
        octal, hexa, other, plain = match.groups()
        if plain is not None:
            out += _encode(plain)
        elif octal is not None:
            out.append(int(octal, 8) & 0xFF)
        elif hexa is not None:
            out.append(int(hexa, 16))
        elif other == "x":
            raise DtsError(pos, "\\x used with no following hex digits")
        elif other in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[other])
        else:
            out += _encode(other)
    return bytes(out)


def _char_value(body: str, pos: SourcePos) -> int:
    data = _unescape(body, pos)
    if not data:
        raise DtsError(pos, "empty character literal")
    if len(data) > 1:
        raise DtsError(pos, f"character literal has {len(data)} characters instead of 1")
    return data[0]


# --------------------------------------------------------------------------------------
# The tree as dtc builds it
# --------------------------------------------------------------------------------------


class _Kind(Enum):
    """What syntax a piece of a value came from; decides the fdt property class."""

    STRING = "string"
    CELLS32 = "cells32"
    CELLS = "cells"  # /bits/ 8, 16 or 64
    BYTES = "bytes"


@dataclass(frozen=True)
class _Chunk:
    kind: _Kind
    data: bytes


@dataclass(eq=False)
class _PhandleRef:
    target: str  # a label, or a path starting with '/'
    pos: SourcePos
    phandle: int | None = None  # filled in once the whole tree is known


@dataclass(eq=False)
class _PathRef:
    target: str
    pos: SourcePos
    path: str | None = None


_Piece = _Chunk | _PhandleRef | _PathRef


@dataclass(eq=False)
class _Label:
    name: str
    pos: SourcePos
    serial: int  # source order, to blame the later of two duplicate labels


@dataclass(eq=False)
class _Prop:
    name: str
    pos: SourcePos
    value: list[_Piece] = field(default_factory=list)
    labels: list[_Label] = field(default_factory=list)
    value_labels: list[_Label] = field(default_factory=list)
    # Deleted items stay in place, as in dtc, so that a later re-definition revives them
    # at their old position.
    deleted: bool = False


@dataclass(eq=False)
class _Node:
    name: str
    pos: SourcePos
    props: list[_Prop] = field(default_factory=list)
    children: list[_Node] = field(default_factory=list)
    labels: list[_Label] = field(default_factory=list)
    parent: _Node | None = None
    deleted: bool = False
    omit_if_unused: bool = False
    referenced: bool = False
    phandle: int = 0

    def live_props(self) -> list[_Prop]:
        return [p for p in self.props if not p.deleted]

    def live_children(self) -> list[_Node]:
        return [c for c in self.children if not c.deleted]

    def prop(self, name: str) -> _Prop | None:
        return next((p for p in self.props if p.name == name and not p.deleted), None)

    def path(self) -> str:
        names: list[str] = []
        node: _Node | None = self
        while node is not None and node.parent is not None:
            names.append(node.name)
            node = node.parent
        return "/" + "/".join(reversed(names))


def _add_label(labels: list[_Label], label: _Label) -> None:
    if all(existing.name != label.name for existing in labels):
        labels.append(label)


def _adopt(node: _Node, parent: _Node | None) -> _Node:
    """Insert a freshly parsed node as it is."""
    # dtc applies /delete-*/ only when merging into an existing node; in a node defined
    # for the first time there is nothing to delete, so the markers are dropped.
    node.parent = parent
    node.props = [p for p in node.props if not p.deleted]
    node.children = [c for c in node.children if not c.deleted]
    for child in node.children:
        _adopt(child, node)
    return node


def _merge(old: _Node, new: _Node) -> None:
    """dtc's merge_nodes(): a re-definition amends the existing node, in order."""
    old.deleted = False
    for label in new.labels:
        _add_label(old.labels, label)
    for prop in new.props:
        existing = next((p for p in old.props if p.name == prop.name), None)
        if prop.deleted:
            if existing is not None:
                existing.deleted = True
                existing.labels.clear()
        elif existing is None:
            old.props.append(prop)
        else:
            for label in prop.labels:
                _add_label(existing.labels, label)
            existing.value, existing.value_labels = prop.value, prop.value_labels
            existing.pos, existing.deleted = prop.pos, False
    for child in new.children:
        existing_child = next((c for c in old.children if c.name == child.name), None)
        if child.deleted:
            if existing_child is not None:
                _delete_node(existing_child)
        elif existing_child is None:
            old.children.append(_adopt(child, old))
        else:
            _merge(existing_child, child)


def _delete_node(node: _Node) -> None:
    node.deleted = True
    node.labels.clear()
    for prop in node.props:
        prop.deleted = True
        prop.labels.clear()
    for child in node.children:
        _delete_node(child)


def _walk(node: _Node) -> Iterator[_Node]:
    """Live nodes in pre-order, the order in which dtc's checks visit them."""
    yield node
    for child in node.live_children():
        if not child.deleted:  # an earlier step of the caller's loop may have deleted it
            yield from _walk(child)


def _find_by_label(node: _Node, label: str) -> _Node | None:
    for found in _walk(node):
        if any(existing.name == label for existing in found.labels):
            return found
    return None


def _find_by_path(root: _Node, path: str) -> _Node | None:
    node: _Node | None = root
    for name in path.split("/"):
        if name and node is not None:
            node = next((c for c in node.live_children() if c.name == name), None)
    return node


def _undefined(ref: str) -> str:
    return f"no node at path '{ref}'" if ref.startswith("/") else f"undefined label '{ref}'"


def _lookup(root: _Node | None, ref: str) -> _Node | None:
    if root is None:
        return None
    return _find_by_path(root, ref) if ref.startswith("/") else _find_by_label(root, ref)


# --------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------

_BINARY_LEVELS: tuple[frozenset[str], ...] = tuple(
    frozenset(ops)
    for ops in (
        ("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", ">", "<=", ">="),
        ("<<", ">>"), ("+", "-"), ("*", "/", "%"),
    )
)


def _binary_op(op: str, left: int, right: int, pos: SourcePos) -> int:
    if op in ("/", "%"):
        if right == 0:
            raise DtsError(pos, "division by zero")
        return left // right if op == "/" else left % right
    if op == "<<":
        return (left << right) & _MASK64 if right < 64 else 0
    if op == ">>":
        return left >> right if right < 64 else 0
    results = {
        "+": left + right, "-": left - right, "*": left * right,
        "&": left & right, "|": left | right, "^": left ^ right,
        "==": left == right, "!=": left != right, "<": left < right, ">": left > right,
        "<=": left <= right, ">=": left >= right,
        "&&": bool(left) and bool(right), "||": bool(left) or bool(right),
    }
    return int(results[op]) & _MASK64


class _Parser:
    """Recursive descent over dtc's grammar, building and merging the tree as it goes.

    Amendments (``&label { };``) are resolved when they are read, like dtc does, so a
    label must be defined before it is amended.
    """

    def __init__(self, lexer: _Lexer) -> None:
        self._lexer = lexer
        self._tok = lexer.next_token()
        self._serial = itertools.count()

    def parse(self) -> tuple[_Node, list[tuple[int, int]]]:
        self._headers()
        reserves = self._memreserves()
        return self._devicetree(), reserves

    # -- token helpers --

    def _advance(self) -> _Token:
        tok = self._tok
        self._tok = self._lexer.next_token()
        return tok

    def _expect(self, kind: str, what: str | None = None) -> _Token:
        if self._tok.kind != kind:
            raise self._unexpected(what or f"'{kind}'")
        return self._advance()

    def _unexpected(self, expected: str) -> DtsError:
        tok = self._tok
        if tok.kind == "/plugin/":
            return DtsError(tok.pos, _PLUGIN_MESSAGE)
        found = {"eof": "end of input", "string": "a string"}.get(tok.kind, f"'{tok.text}'")
        return DtsError(tok.pos, f"syntax error: expected {expected}, found {found}")

    def _labels(self) -> list[_Label]:
        labels = []
        while self._tok.kind == "label":
            tok = self._advance()
            assert isinstance(tok.value, str)
            labels.append(_Label(tok.value, tok.pos, next(self._serial)))
        return labels

    # -- top level --

    def _headers(self) -> None:
        if self._tok.kind != "/dts-v1/":
            raise DtsError(self._tok.pos, "missing /dts-v1/; header (version 0 DTS is not supported)")
        while self._tok.kind == "/dts-v1/":
            self._advance()
            self._expect(";")
            if self._tok.kind == "/plugin/":
                raise DtsError(self._tok.pos, _PLUGIN_MESSAGE)

    def _memreserves(self) -> list[tuple[int, int]]:
        reserves = []
        while True:
            labels = self._labels()  # dtc allows labels on reserve entries; they mean nothing
            if self._tok.kind != "/memreserve/":
                if labels:
                    raise self._unexpected("'/memreserve/' after a label")
                return reserves
            self._advance()
            address = self._prim()
            size = self._prim()
            self._expect(";")
            reserves.append((address, size))

    def _devicetree(self) -> _Node:
        root: _Node | None = None
        while self._tok.kind != "eof" or root is None:
            labels = self._labels()
            tok = self._tok
            if tok.kind == "/" and not labels:
                self._advance()
                fragment = self._node_body("", tok.pos)
                if root is None:
                    root = _adopt(fragment, None)
                else:
                    _merge(root, fragment)
            elif tok.kind == "ref":
                self._advance()
                target = self._target(root, tok)
                fragment = self._node_body(target.name, tok.pos)
                for label in labels:
                    _add_label(target.labels, label)
                _merge(target, fragment)
            elif tok.kind in ("/delete-node/", "/omit-if-no-ref/") and not labels and root is not None:
                self._advance()
                target = self._target(root, self._expect("ref", "a node reference (&label or &{/path})"))
                self._expect(";")
                if tok.kind == "/delete-node/":
                    _delete_node(target)
                else:
                    target.omit_if_unused = True
            elif root is None:
                raise self._unexpected("the root node '/ { ... };'")
            elif tok.kind == "/memreserve/":
                raise DtsError(tok.pos, "/memreserve/ must come before the root node")
            else:
                raise self._unexpected("'/ {', '&label {', '/delete-node/' or end of input")
        return root

    def _target(self, root: _Node | None, ref: _Token) -> _Node:
        assert isinstance(ref.value, str)
        target = _lookup(root, ref.value)
        if target is None:
            raise DtsError(ref.pos, _undefined(ref.value))
        return target

    # -- nodes and properties --

    def _node_body(self, name: str, pos: SourcePos) -> _Node:
        self._expect("{")
        node = _Node(name, pos)
        in_subnodes = False
        while True:
            labels: list[_Label] = []
            omit = False
            while self._tok.kind in ("label", "/omit-if-no-ref/"):
                if self._tok.kind == "label":
                    labels += self._labels()
                else:
                    omit = True
                    self._advance()
            tok = self._tok
            if tok.kind == "}" and not labels and not omit:
                break
            if tok.kind == "/delete-node/":
                self._advance()
                name_tok = self._expect("name", "a node name")
                self._expect(";")
                assert isinstance(name_tok.value, str)
                node.children.append(_Node(name_tok.value, name_tok.pos, deleted=True))
                in_subnodes = True
            elif tok.kind == "name":
                assert isinstance(tok.value, str)
                self._advance()
                if self._tok.kind == "{":
                    child = self._node_body(tok.value, tok.pos)
                    for label in labels:
                        _add_label(child.labels, label)
                    child.omit_if_unused = omit
                    node.children.append(child)
                    in_subnodes = True
                elif self._tok.kind in ("=", ";"):
                    self._check_prop_allowed(tok, omit, in_subnodes)
                    prop = _Prop(tok.value, tok.pos, labels=labels)
                    if self._advance().kind == "=":
                        prop.value, prop.value_labels = self._prop_value()
                        self._expect(";", "',' or ';'")
                    node.props.append(prop)
                else:
                    raise self._unexpected(f"'=', ';' or '{{' after '{tok.value}'")
            elif tok.kind == "/delete-property/":
                self._check_prop_allowed(tok, omit, in_subnodes)
                self._advance()
                name_tok = self._expect("name", "a property name")
                self._expect(";")
                assert isinstance(name_tok.value, str)
                node.props.append(_Prop(name_tok.value, name_tok.pos, deleted=True))
            elif tok.kind == "eof":
                raise DtsError(tok.pos, f"unterminated node '{name or '/'}' (opened at {pos})")
            elif labels or omit:
                raise self._unexpected("a property or node after the label")
            else:
                raise self._unexpected("a property, a node or '}'")
        self._expect("}")
        self._expect(";")
        return node

    def _check_prop_allowed(self, tok: _Token, omit: bool, in_subnodes: bool) -> None:
        if omit:
            raise DtsError(tok.pos, "/omit-if-no-ref/ applies to nodes, not to properties")
        if in_subnodes:
            raise DtsError(tok.pos, "properties must precede subnodes")

    def _prop_value(self) -> tuple[list[_Piece], list[_Label]]:
        pieces: list[_Piece] = []
        labels: list[_Label] = []
        while True:
            labels += self._labels()
            self._value_piece(pieces, labels)
            labels += self._labels()
            if self._tok.kind != ",":
                return pieces, labels
            self._advance()

    def _value_piece(self, pieces: list[_Piece], labels: list[_Label]) -> None:
        tok = self._tok
        if tok.kind == "string":
            self._advance()
            assert isinstance(tok.value, bytes)
            pieces.append(_Chunk(_Kind.STRING, tok.value + b"\0"))
        elif tok.kind in ("<", "/bits/"):
            self._cells(pieces, labels)
        elif tok.kind == "[":
            self._advance()
            data = bytearray()
            while self._tok.kind in ("byte", "label"):
                if self._tok.kind == "label":
                    labels += self._labels()
                else:
                    value = self._advance().value
                    assert isinstance(value, int)
                    data.append(value)
            self._expect("]", "hex bytes or ']'")
            pieces.append(_Chunk(_Kind.BYTES, bytes(data)))
        elif tok.kind == "ref":
            self._advance()
            assert isinstance(tok.value, str)
            pieces.append(_PathRef(tok.value, tok.pos))
        elif tok.kind == "/incbin/":
            pieces.append(_Chunk(_Kind.BYTES, self._incbin()))
        else:
            raise self._unexpected("a property value (\"string\", <cells>, [bytes] or &reference)")

    def _cells(self, pieces: list[_Piece], labels: list[_Label]) -> None:
        bits = 32
        if self._tok.kind == "/bits/":
            self._advance()
            size = self._expect("int", "the element size after /bits/")
            if size.value not in (8, 16, 32, 64):
                raise DtsError(size.pos, "array elements must be 8, 16, 32 or 64 bits")
            assert isinstance(size.value, int)
            bits = size.value
        self._expect("<")
        kind = _Kind.CELLS32 if bits == 32 else _Kind.CELLS
        mask = (1 << bits) - 1
        data = bytearray()
        while self._tok.kind != ">":
            tok = self._tok
            if tok.kind == "label":
                labels += self._labels()
            elif tok.kind == "ref":
                if bits != 32:
                    raise DtsError(tok.pos, "references are only allowed in arrays with 32-bit elements")
                self._advance()
                assert isinstance(tok.value, str)
                pieces += [_Chunk(kind, bytes(data)), _PhandleRef(tok.value, tok.pos)]
                data = bytearray()
            elif tok.kind in ("int", "("):
                data += (self._prim() & mask).to_bytes(bits // 8, "big")
            else:
                raise self._unexpected("a number, '(', &reference or '>'")
        self._advance()
        pieces.append(_Chunk(kind, bytes(data)))

    def _incbin(self) -> bytes:
        start = self._advance()
        self._expect("(")
        name_tok = self._expect("string", "a file name")
        offset, length = 0, None
        if self._tok.kind == ",":
            self._advance()
            offset = self._prim()
            self._expect(",")
            length = self._prim()
        self._expect(")")
        assert isinstance(name_tok.value, bytes)
        path = self._lexer.find_file(_decode(name_tok.value), start.pos, quoted=True, what="/incbin/ file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DtsError(start.pos, f"cannot read '{path}': {exc.strerror or exc}") from exc
        return data[offset:] if length is None else data[offset : offset + length]

    # -- integer expressions: 64-bit unsigned, as in dtc --

    def _prim(self) -> int:
        tok = self._tok
        if tok.kind == "int":
            self._advance()
            assert isinstance(tok.value, int)
            return tok.value
        if tok.kind == "(":
            self._advance()
            value = self._expr()
            self._expect(")")
            return value
        raise self._unexpected("a number, a character literal or '('")

    def _expr(self) -> int:
        condition = self._binary(0)
        if self._tok.kind != "?":
            return condition
        self._advance()
        if_true = self._expr()
        self._expect(":")
        if_false = self._expr()
        return if_true if condition else if_false

    def _binary(self, level: int) -> int:
        if level == len(_BINARY_LEVELS):
            return self._unary()
        start = self._tok.pos
        left = self._binary(level + 1)
        while self._tok.kind in _BINARY_LEVELS[level]:
            op = self._advance().kind
            left = _binary_op(op, left, self._binary(level + 1), start)
        return left

    def _unary(self) -> int:
        op = self._tok.kind
        if op not in ("-", "~", "!"):
            return self._prim()
        self._advance()
        value = self._unary()
        if op == "-":
            return -value & _MASK64
        if op == "~":
            return ~value & _MASK64
        return int(value == 0)


# --------------------------------------------------------------------------------------
# Checks and reference resolution (dtc's checks.c, in its order)
# --------------------------------------------------------------------------------------

_NODE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + ",._+-@")
_PROP_NAME_CHARS = frozenset(string.ascii_letters + string.digits + ",._+*#?-")


def _raw(prop: _Prop) -> bytes:
    # Before resolution a phandle reads as 0xffffffff and a path as nothing, as in dtc.
    out = bytearray()
    for piece in prop.value:
        if isinstance(piece, _Chunk):
            out += piece.data
        elif isinstance(piece, _PhandleRef):
            out += (0xFFFFFFFF if piece.phandle is None else piece.phandle).to_bytes(4, "big")
        elif piece.path is not None:
            out += piece.path.encode("ascii") + b"\0"
    return bytes(out)


def _boot_cpuid(root: _Node) -> int:
    cpus = _find_by_path(root, "/cpus")
    if cpus is None or not cpus.children:
        return 0
    reg = cpus.children[0].prop("reg")
    raw = _raw(reg) if reg is not None else b""
    return int.from_bytes(raw, "big") if len(raw) == 4 else 0


def _check_and_resolve(root: _Node) -> None:
    _check_names(root)
    _check_name_properties(root)
    _check_labels(root)
    by_phandle = _explicit_phandles(root)
    _resolve_phandle_refs(root, by_phandle)
    _resolve_path_refs(root)
    for node in _walk(root):
        if node.omit_if_unused and not node.referenced:
            _delete_node(node)


def _check_names(root: _Node) -> None:
    for node in _walk(root):
        if node.parent is not None:
            bad = next((c for c in node.name if c not in _NODE_NAME_CHARS), None)
            if bad is not None:
                raise DtsError(node.pos, f"bad character '{bad}' in node name '{node.name}'")
            if node.name.count("@") > 1:
                raise DtsError(node.pos, f"multiple '@' characters in node name '{node.name}'")
        seen: set[str] = set()
        for prop in node.live_props():
            bad = next((c for c in prop.name if c not in _PROP_NAME_CHARS), None)
            if bad is not None:
                raise DtsError(prop.pos, f"bad character '{bad}' in property name '{prop.name}'")
            if prop.name in seen:
                raise DtsError(prop.pos, f"duplicate property '{prop.name}' in {node.path()}")
            seen.add(prop.name)
        seen.clear()
        for child in node.live_children():
            if child.name in seen:
                raise DtsError(child.pos, f"duplicate node '{child.name}' in {node.path()}")
            seen.add(child.name)


def _check_name_properties(root: _Node) -> None:
    # A legacy "name" property equal to the node name is dropped by dtc; any other is an error.
    for node in _walk(root):
        prop = node.prop("name")
        if prop is None:
            continue
        raw = _raw(prop)
        if not raw.endswith(b"\0") or b"\0" in raw[:-1]:
            raise DtsError(prop.pos, "'name' property is not a string")
        base = node.name.split("@")[0]
        if raw[:-1] != base.encode("ascii"):
            value = _decode(raw[:-1])
            raise DtsError(prop.pos, f"'name' property is incorrect ({value!r} instead of {base!r})")
        prop.deleted = True


def _check_labels(root: _Node) -> None:
    owners: dict[str, tuple[object, _Label, str]] = {}

    def note(label: _Label, owner: object, where: str) -> None:
        if label.name in owners and owners[label.name][0] is not owner:
            _, other, other_where = owners[label.name]
            later = max(label, other, key=lambda lab: lab.serial)
            raise DtsError(later.pos, f"duplicate label '{label.name}' on {other_where} and {where}")
        owners[label.name] = (owner, label, where)

    for node in _walk(root):
        for label in node.labels:
            note(label, node, node.path())
        for prop in node.live_props():
            where = f"property '{prop.name}' of {node.path()}"
            for label in prop.labels:
                note(label, prop, where)
            for label in prop.value_labels:
                note(label, label, f"a value in {where}")


def _explicit_phandles(root: _Node) -> dict[int, _Node]:
    by_phandle: dict[int, _Node] = {}
    for node in _walk(root):
        phandle = _explicit_phandle(root, node, "phandle")
        linux_phandle = _explicit_phandle(root, node, "linux,phandle")
        if phandle and linux_phandle and phandle != linux_phandle:
            raise DtsError(node.pos, "mismatching 'phandle' and 'linux,phandle' properties")
        phandle = phandle or linux_phandle
        if not phandle:
            continue
        other = by_phandle.get(phandle)
        if other is not None and other is not node:
            raise DtsError(node.pos, f"duplicate phandle {phandle:#x} (already used by {other.path()})")
        node.phandle = phandle
        by_phandle[phandle] = node
    return by_phandle


def _explicit_phandle(root: _Node, node: _Node, name: str) -> int:
    prop = node.prop(name)
    if prop is None:
        return 0
    raw = _raw(prop)
    if len(raw) != 4:
        raise DtsError(prop.pos, f"bad length ({len(raw)}) of '{name}' property")
    refs = [piece for piece in prop.value if isinstance(piece, _PhandleRef)]
    if refs:
        target = _lookup(root, refs[0].target)
        if target is not None and target is not node:
            raise DtsError(prop.pos, f"'{name}' is a reference to another node")
        return 0  # "phandle = <&self>" asks for a fresh phandle, filled in with the references
    value = int.from_bytes(raw, "big")
    if value in (0, 0xFFFFFFFF):
        raise DtsError(prop.pos, f"bad value ({value:#x}) in '{name}' property")
    return value


def _resolve_phandle_refs(root: _Node, by_phandle: dict[int, _Node]) -> None:
    next_phandle = 1
    for node in _walk(root):
        for prop in node.live_props():
            for piece in prop.value:
                if not isinstance(piece, _PhandleRef):
                    continue
                target = _lookup(root, piece.target)
                if target is None:
                    raise DtsError(piece.pos, _undefined(piece.target))
                if not target.phandle:
                    while next_phandle in by_phandle:
                        next_phandle += 1
                    target.phandle = next_phandle
                    by_phandle[next_phandle] = target
                    if target.prop("phandle") is None:
                        cell = _Chunk(_Kind.CELLS32, next_phandle.to_bytes(4, "big"))
                        target.props.append(_Prop("phandle", target.pos, [cell]))
                piece.phandle = target.phandle
                target.referenced = True


def _resolve_path_refs(root: _Node) -> None:
    for node in _walk(root):
        for prop in node.live_props():
            for piece in prop.value:
                if isinstance(piece, _PathRef):
                    target = _lookup(root, piece.target)
                    if target is None:
                        raise DtsError(piece.pos, _undefined(piece.target))
                    piece.path = target.path()
                    target.referenced = True


# --------------------------------------------------------------------------------------
# Conversion to fdt objects
# --------------------------------------------------------------------------------------


def _to_fdt(root: _Node, reserves: list[tuple[int, int]], boot_cpuid: int) -> fdt.FDT:
    # A fresh entries list: FDT's default argument is a shared mutable list.
    tree = fdt.FDT(entries=[{"address": address, "size": size} for address, size in reserves])
    tree.header.version = _DTB_VERSION
    tree.header.boot_cpuid_phys = boot_cpuid
    tree.root = _to_fdt_node(root, "/")
    # Let fdt's own add_label()/update_phandles() continue after our phandles, not reuse them.
    for node in _walk(root):
        if node.phandle:
            tree.last_handle = max(tree.last_handle, node.phandle)
            for label in node.labels:
                tree.label_to_handle[label.name] = node.phandle
                tree.handle_to_label[node.phandle] = label.name
    return tree


def _to_fdt_node(node: _Node, name: str) -> fdt.Node:
    out = fdt.Node(name)
    if node.labels:
        out.set_label(node.labels[0].name)
    for prop in node.live_props():
        out.append(_to_fdt_prop(prop))
    for child in node.live_children():
        out.append(_to_fdt_node(child, child.name))
    return out


def _to_fdt_prop(prop: _Prop) -> fdt.Property:
    raw = _raw(prop)
    kinds = {
        _Kind.CELLS32 if isinstance(piece, _PhandleRef) else _Kind.STRING if isinstance(piece, _PathRef)
        else piece.kind
        for piece in prop.value
    }
    if not raw:
        return fdt.Property(prop.name)
    if kinds == {_Kind.STRING}:
        strings = raw[:-1].split(b"\0")
        if all(s and _PRINTABLE.issuperset(s) for s in strings):
            return fdt.PropStrings(prop.name, *(s.decode("ascii") for s in strings))
        return fdt.PropBytes(prop.name, data=raw)
    if kinds == {_Kind.CELLS32}:
        words = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4))
        return fdt.PropWords(prop.name, *words)
    if kinds == {_Kind.BYTES}:
        return fdt.PropBytes(prop.name, data=raw)
    return new_property(prop.name, raw)
