"""The DTS compiler against dtc: the same source must give the same tree, and the same DTB."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import fdt
import pytest

from pyned.vmm.dts import DtsError, compile_dts, compile_dts_file

DATA = Path(__file__).resolve().parents[1] / "data" / "dts"
REPO_DTS = Path(__file__).resolve().parents[2] / "dts"
REAL_FILES = sorted(DATA.glob("*.dts")) + sorted(REPO_DTS.glob("*.dts"))


def prop_bytes(prop: fdt.Property) -> bytes:
    blob, _, _ = prop.to_dtb("", 0, 17)
    length = struct.unpack_from(">III", blob)[1]
    return bytes(blob[12 : 12 + length])


def flatten(tree: fdt.FDT) -> dict[str, dict[str, bytes]]:
    """{path: {property: raw bytes}}, in tree order."""
    out: dict[str, dict[str, bytes]] = {}

    def walk(node: fdt.Node, path: str) -> None:
        out[path] = {prop.name: prop_bytes(prop) for prop in node.props}
        for child in node.nodes:
            walk(child, path.rstrip("/") + "/" + child.name)

    walk(tree.root, "/")
    return out


def ordered(flat: dict[str, dict[str, bytes]]) -> list[tuple[str, list[str]]]:
    return [(path, list(props)) for path, props in flat.items()]


def reserve_map(blob: bytes) -> list[tuple[int, int]]:
    # Read from the blob: fdt.parse_dtb appends entries to one list shared by all trees.
    offset = struct.unpack_from(">I", blob, 16)[0]
    entries = []
    while (entry := struct.unpack_from(">QQ", blob, offset)) != (0, 0):
        entries.append(entry)
        offset += 16
    return entries


def run_dtc(source: Path, include_dirs: list[Path] = ()) -> bytes:
    dtc = shutil.which("dtc")
    if dtc is None:
        pytest.skip("dtc is not on PATH")
    args = [dtc, "-q", "-I", "dts", "-O", "dtb", *(f"-i{d}" for d in include_dirs), str(source)]
    result = subprocess.run(args, capture_output=True, text=False)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout


def assert_same_as_dtc(ours: fdt.FDT, blob: bytes) -> None:
    theirs = fdt.parse_dtb(blob)
    assert flatten(ours) == flatten(theirs)
    assert ordered(flatten(ours)) == ordered(flatten(theirs))
    assert [(e["address"], e["size"]) for e in ours.entries] == reserve_map(blob)
    # dtc and fdt build the header and the strings block the same way, so the bytes match too.
    assert ours.to_dtb() == blob


# --------------------------------------------------------------------------------------
# Real files and handcrafted snippets, compared with dtc
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", REAL_FILES, ids=lambda p: p.name)
def test_real_files_match_dtc(path: Path) -> None:
    assert_same_as_dtc(compile_dts_file(path), run_dtc(path))


SNIPPETS = {
    "basics": """/dts-v1/;
/dts-v1/;
/memreserve/ 0x10000000 0x4000;
r: /memreserve/ (0x2000 * 2) 0x1000ULL;
// a line comment
/ { /* a block
       comment */
    model = "test";
    #address-cells = <1>;
    #size-cells = <1>;
    bool-prop;
    cpus { #address-cells = <1>; #size-cells = <0>; cpu@3 { reg = <3>; }; };
    serial@9000000 { reg = <0x9000000 0x1000>; };
    node,with.odd_chars+x@1,2 { };
    \\1234 { };
};""",
    "labels_and_phandles": """/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&gic>;
    gic: ic@1000 { #interrupt-cells = <3>; reg = <0 0x1000 0 0x100>; };
    clk: c { #clock-cells = <0>; };
    dev@2000 { clocks = <&clk>, <&clk>; ip = <&{/ic@1000}>; path = &clk; p2 = &{/c}; };
    a: b: multi@1 { lp: labelled-prop = <&b &late &nested>; };
    late: late { };
    outer { nested: inner { }; };
    fixed: fixed { phandle = <2>; };
    self: self { phandle = <&self>; };
    user { refs = <&fixed &self>; };
};""",
    "explicit_phandle": """/dts-v1/;
/ { a: x { phandle = <5>; }; b: y { }; z { r = <&a &b>; }; w { linux,phandle = <9>; }; };""",
    "literals": """/dts-v1/;
/ { dec = <0 1 4294967295>; hex = <0x0 0XfF 0xdeadBEEF>; oct = <00 017 0777>;
    suffixes = <1U 2L 3UL 4LL 5ULL 0x6U 07L>;
    chars = <'a' '\\n' '\\'' '\\x41' '\\101' '\\0' '"'>;
    b8 = /bits/ 8 <1 0xff 'A' (-1) (-128)>;
    b16 = /bits/ 16 <0x1234 (-1)>;
    b32 = /bits/ 32 <0x12345678 (-1)>;
    b64 = /bits/ 64 <0x123456789abcdef0 (~0) (-2) 18446744073709551615>;
    neg = <(-1) (-0x80000000)>;
    glued = <1U2L 10g: 5 0x10ULL>;  // dtc lexes these as 1U 2L, and 10 then label g
};""",
    "expressions": """/dts-v1/;
/ { e = <(1 + 2 * 3) (10 / 3) (10 % 3) (1 << 4) (0x100 >> 4) (5 & 3) (5 | 3) (5 ^ 3)
          (~0) (-1) (!0) (!7) (3 > 2) (2 >= 3) (2 < 3) (3 <= 3) (1 == 1) (1 != 1)
          (1 && 0) (1 || 0) (1 ? 7 : 8) (0 ? 1 : 0 ? 2 : 3) ((0x80000000 << 1) >> 1)
          (1 << 64) (1 >> 64) (2 - 3) (1 + 2 << 3) (1 | 2 & 3) (1 ^ 3 | 4) (1 < 2 == 1)
          (0 || 0 && 1) (-(-5)) (~~3) (!!9) ((1 << 63) / 0x100000000 / 4) (0xffffffff + 2 - 2) (6 * 7 % 5)>;
    m = /bits/ 64 <((1 << 63) + (1 << 63)) (0 - 1) (3 * 0x5555555555555556)>;
};""",
    "strings_and_bytes": """/dts-v1/;
/ { s = "plain"; esc = "a\\nb\\tc\\\\d\\"e\\x41\\x4a\\101\\0z\\q";
    list = "one", "two", "three"; empty = ""; empties = "", "x", "";
    high = "\\xff\\x80";
    b1 = [00 11 22 33]; b2 = [0011aAbB]; b3 = [ 01  02
        03 ]; b4 = [];
    mixed = "s", <1 2>, [ab cd], /bits/ 16 <3>, "t";
    empty-cells = <>;
    labelled = l1: <1 l2: 2 l3:> l4:, l5: "x" l6:, [l7: 01 l8: 02];
};""",
    "paths": """/dts-v1/;
/ { both = <&uart>, &uart;
    aliases { serial0 = &uart; gic = &{/soc/gic@1}; root = &{/}; };
    chosen { stdout-path = &uart, "extra"; };
    soc { uart: uart@2 { }; gic@1 { }; };
};""",
    "merge_amend": """/dts-v1/;
/ { n1: node { a = <1>; b = <2>; sub { x; }; }; other@1 { keep; }; };
/ { node { a = <3>; c = "new"; sub { y; }; added { }; }; extra { }; };
&n1 { d = "amended"; a = <4>; };
&{/node/sub} { z; };
alias: &{/other@1} { more; };
&alias { again; };
/ { user = <&alias>; };
""",
    "delete": """/dts-v1/;
/ { a = <1>; b = <2>; c = <3>;
    n: node { p; q; child { x; }; gone { }; };
    victim: victim { v; };
    path-victim { };
    lab: relabel { };
};
/ { /delete-property/ a; node { /delete-property/ p; /delete-node/ gone; }; };
/delete-node/ &victim;
/delete-node/ &{/path-victim};
/delete-node/ &lab;
/ { a = <10>; node { p = "back"; gone { revived; }; }; lab: relabel2 { }; };
&n { /delete-node/ child; };
/ { r = <&lab>; };
""",
    "omit_if_no_ref": """/dts-v1/;
/ { /omit-if-no-ref/ unused: unused { };
    /omit-if-no-ref/ used: used { };
    /omit-if-no-ref/ by_path: by-path { };
    later: later { };
    user { r = <&used>; p = &by_path; };
};
/omit-if-no-ref/ &later;
""",
    "name_property": """/dts-v1/;
/ { n@1 { name = "n"; x; }; };""",
    "first_body_markers": """/dts-v1/;
/ { /delete-property/ a; a = <1>; b = <2>; /delete-node/ foo; foo { }; };""",
}


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippets_match_dtc(name: str, tmp_path: Path) -> None:
    source = tmp_path / "t.dts"
    source.write_text(SNIPPETS[name])
    assert_same_as_dtc(compile_dts(SNIPPETS[name], filename="t.dts"), run_dtc(source))


def test_includes_match_dtc(tmp_path: Path) -> None:
    (tmp_path / "inc").mkdir()
    (tmp_path / "sys").mkdir()
    (tmp_path / "inc" / "a.dtsi").write_text(
        '/include/ "nested.dtsi"\n/ { from-a = "a"; node { z = <9>; }; };\n'
    )
    (tmp_path / "inc" / "nested.dtsi").write_text("/ { nested; };\n")  # found beside a.dtsi
    (tmp_path / "sys" / "board.dtsi").write_text("/ { board { b; }; };\n")
    (tmp_path / "b.dtsi").write_text("x = <1>;\n")
    src = '/dts-v1/;\n/include/ "inc/a.dtsi"\n/include/ "board.dtsi"\n/ { node { /include/ "b.dtsi" }; };\n'
    (tmp_path / "t.dts").write_text(src)
    blob = run_dtc(tmp_path / "t.dts", [tmp_path / "sys"])

    assert_same_as_dtc(compile_dts(src, include_dirs=[tmp_path, tmp_path / "sys"]), blob)

    cpp_style = src.replace('/include/ "inc/a.dtsi"', '#include "inc/a.dtsi"')
    cpp_style = cpp_style.replace('/include/ "board.dtsi"', "  #  include <board.dtsi>")
    assert_same_as_dtc(compile_dts(cpp_style, include_dirs=[tmp_path, tmp_path / "sys"]), blob)


def test_compile_dts_file_searches_its_own_folder(tmp_path: Path) -> None:
    (tmp_path / "common.dtsi").write_text("/ { common; };\n")
    (tmp_path / "t.dts").write_text(
        '/dts-v1/;\n#include "common.dtsi"\n#include <common.dtsi>\n/ { own; };\n'
    )
    assert set(flatten(compile_dts_file(tmp_path / "t.dts"))["/"]) == {"common", "own"}


def test_incbin_matches_dtc(tmp_path: Path) -> None:
    (tmp_path / "blob.bin").write_bytes(bytes(range(40)))
    src = '/dts-v1/;\n/ { all = /incbin/("blob.bin"); part = /incbin/("blob.bin", 4, 8), <1>; };\n'
    (tmp_path / "t.dts").write_text(src)
    assert_same_as_dtc(compile_dts_file(tmp_path / "t.dts"), run_dtc(tmp_path / "t.dts"))


# --------------------------------------------------------------------------------------
# Behaviour that dtc 1.6 cannot be compared on
# --------------------------------------------------------------------------------------


def test_property_classes() -> None:
    tree = compile_dts("""/dts-v1/;
/ { s = "a", "b"; w = <1 2>; b = [01 02 03]; e; p = &n; ph = <&n>; mixed = "ab", <1>;
    empty = ""; b64 = /bits/ 64 <1>; n: n { }; };""")
    root = tree.root
    assert isinstance(root.get_property("s"), fdt.PropStrings) and root.get_property("s").data == ["a", "b"]
    assert isinstance(root.get_property("w"), fdt.PropWords) and root.get_property("w").data == [1, 2]
    assert isinstance(root.get_property("b"), fdt.PropBytes)
    assert bytes(root.get_property("b").data) == b"\1\2\3"
    assert type(root.get_property("e")) is fdt.Property
    assert root.get_property("p").data == ["/n"]
    assert root.get_property("ph").data == [1]
    assert prop_bytes(root.get_property("mixed")) == b"ab\0\0\0\0\1"
    assert prop_bytes(root.get_property("empty")) == b"\0"
    assert root.get_property("b64").data == [0, 1]  # as fdt.parse_dtb would give it
    assert root.get_subnode("n").label == "n"


def test_values_wrap_to_the_element_width() -> None:
    # dtc 1.6 rejects these and dtc 1.7 truncates them with a warning; we truncate.
    tree = compile_dts(
        "/dts-v1/;\n/ { w = <0x100000001>; b = /bits/ 8 <0x1ff>; s = /bits/ 16 <(0x12345)>; };"
    )
    assert prop_bytes(tree.root.get_property("w")) == b"\0\0\0\1"
    assert prop_bytes(tree.root.get_property("b")) == b"\xff"
    assert prop_bytes(tree.root.get_property("s")) == b"\x23\x45"


def test_compiling_twice_gives_independent_equal_trees() -> None:
    src = "/dts-v1/;\n/memreserve/ 1 2;\n/ { r = <&a>; a: a { }; };"
    first, second = compile_dts(src), compile_dts(src)
    assert flatten(first) == flatten(second)
    assert first.entries is not second.entries
    assert first.last_handle == 1 and first.label_to_handle == {"a": 1}


def test_round_trip_through_fdt() -> None:
    tree = compile_dts_file(DATA / "min-gicv2.dts")
    assert flatten(fdt.parse_dtb(tree.to_dtb())) == flatten(tree)


def test_cpp_line_markers_set_positions() -> None:
    src = '# 1 "board.dts"\n/dts-v1/;\n# 40 "soc.dtsi" 1\n/ {\n  x = <1>\n};\n'
    with pytest.raises(DtsError) as err:
        compile_dts(src, filename="pre.i")
    assert str(err.value).startswith("soc.dtsi:42:1: ")


def test_property_names_starting_with_hash_are_not_directives() -> None:
    tree = compile_dts("/dts-v1/;\n/ {\n#address-cells = <1>;\n#include-ish;\n};\n")
    assert [p.name for p in tree.root.props] == ["#address-cells", "#include-ish"]


# --------------------------------------------------------------------------------------
# Errors: one line, naming file, line and column
# --------------------------------------------------------------------------------------

ERRORS = [
    # syntax
    ("/ { };", "t.dts:1:1", "missing /dts-v1/"),
    ("/dts-v1/;\n/ { a = <1>\n", "t.dts:3:1", "expected ',' or ';'"),
    ("/dts-v1/;\n/ { a = <1 2;\n};", "t.dts:2:13", "syntax error"),
    ("/dts-v1/;\n/ { node {\n", "t.dts:3:1", "unterminated node 'node'"),
    ("/dts-v1/;\n/ { n { }; p; };", "t.dts:2:12", "properties must precede subnodes"),
    ("/dts-v1/;\n/ { a = <zz>; };", "t.dts:2:10", "found 'zz'"),
    ("/dts-v1/;\n/ { a = foo; };", "t.dts:2:9", "expected a property value"),
    ("/dts-v1/;\n/ { };\n/memreserve/ 0 1;", "t.dts:3:1", "/memreserve/ must come before"),
    ("/dts-v1/;\n/ { a = /bits/ 12 <1>; };", "t.dts:2:16", "8, 16, 32 or 64"),
    ("/dts-v1/;\n/ { a = /bits/ 8 <&q>; q: q { }; };", "t.dts:2:19", "32-bit elements"),
    ("/dts-v1/;\n/ { a = <(1 / 0)>; };", "t.dts:2:11", "division by zero"),
    ("/dts-v1/;\n/ { a = <(5 % (2 - 2))>; };", "t.dts:2:11", "division by zero"),
    # undefined references
    ("/dts-v1/;\n/ { a = <&nope>; };", "t.dts:2:10", "undefined label 'nope'"),
    ("/dts-v1/;\n/ { a = &nope; };", "t.dts:2:9", "undefined label 'nope'"),
    ("/dts-v1/;\n/ { a = <&{/no/such}>; };", "t.dts:2:10", "no node at path '/no/such'"),
    ("/dts-v1/;\n&missing { };", "t.dts:2:1", "undefined label 'missing'"),
    ("/dts-v1/;\n/ { };\n&missing { };", "t.dts:3:1", "undefined label 'missing'"),
    ("/dts-v1/;\n/ { };\n/delete-node/ &gone;", "t.dts:3:15", "undefined label 'gone'"),
    ("/dts-v1/;\n/ { x: x { }; };\n/delete-node/ &x;\n/ { r = <&x>; };", "t.dts:4:10", "undefined label 'x'"),
    # duplicates
    ("/dts-v1/;\n/ { l: a { }; l: b { }; };", "t.dts:2:15", "duplicate label 'l'"),
    ("/dts-v1/;\n/ { l: a { }; };\n/ { b { l: p; }; };", "t.dts:3:9", "duplicate label 'l'"),
    ("/dts-v1/;\n/ { a = <1>; a = <2>; };", "t.dts:2:14", "duplicate property 'a'"),
    ("/dts-v1/;\n/ { n { }; n { }; };", "t.dts:2:12", "duplicate node 'n'"),
    ("/dts-v1/;\n/ { a { phandle = <1>; }; b { phandle = <1>; }; };", "t.dts:2:27", "duplicate phandle 0x1"),
    ("/dts-v1/;\n/ { a { phandle = <0>; }; };", "t.dts:2:9", "bad value"),
    ("/dts-v1/;\n/ { a#b { }; };", "t.dts:2:5", "bad character '#' in node name"),
    ("/dts-v1/;\n/ { p@q; };", "t.dts:2:5", "bad character '@' in property name"),
    ("/dts-v1/;\n/ { n { name = \"m\"; }; };", "t.dts:2:9", "'name' property is incorrect"),
    # bad numbers and literals
    ("/dts-v1/;\n/ { a = <08>; };", "t.dts:2:10", "bad number '08'"),
    ("/dts-v1/;\n/ { a = <0x1g>; };", "t.dts:2:10", "bad number '0x1g'"),
    ("/dts-v1/;\n/ { a = <1u>; };", "t.dts:2:10", "bad number '1u'"),
    ("/dts-v1/;\n/ { a = <99999999999999999999>; };", "t.dts:2:10", "out of range"),
    ("/dts-v1/;\n/ { a = <''>; };", "t.dts:2:10", "empty character literal"),
    ("/dts-v1/;\n/ { a = <'ab'>; };", "t.dts:2:10", "2 characters instead of 1"),
    ("/dts-v1/;\n/ { a = <'a>; };", "t.dts:2:10", "unterminated character literal"),
    ("/dts-v1/;\n/ { a = \"open;\n};", "t.dts:2:9", "unterminated string"),
    ("/dts-v1/;\n/ { a = \"\\x\"; };", "t.dts:2:9", "\\x used with no following hex digits"),
    ("/dts-v1/;\n/ { a = [123]; };", "t.dts:2:12", "odd number of hex digits"),
    ("/dts-v1/;\n/ { a = [12 zz]; };", "t.dts:2:13", "bad byte string"),
    ("/dts-v1/;\n/* never closed\n/ { };", "t.dts:2:1", "unterminated comment"),
    # files, the preprocessor, overlays
    ("/dts-v1/;\n/include/ \"missing.dtsi\"\n", "t.dts:2:1", "cannot find include file 'missing.dtsi'"),
    ("/dts-v1/;\n#include <missing.h>\n", "t.dts:2:1", "cannot find include file 'missing.h'"),
    ("/dts-v1/;\n/ { a = /incbin/(\"nothing.bin\"); };", "t.dts:2:9", "cannot find /incbin/ file"),
    ("/dts-v1/;\n#define X 1\n", "t.dts:2:1", "C preprocessor is not supported"),
    ("/dts-v1/;\n/ {\n  #ifdef X\n};", "t.dts:3:3", "'#ifdef': the C preprocessor is not supported"),
    ("/dts-v1/;\n#include nothing\n", "t.dts:2:1", "after #include"),
    ("/dts-v1/;\n/plugin/;\n", "t.dts:2:1", "overlays (/plugin/) are not supported; give a DTB overlay"),
    ("/dts-v1/;\n/ { a = &{foo}; };", "t.dts:2:9", "bad path reference"),
]


@pytest.mark.parametrize("src,where,message", ERRORS, ids=[e[2] for e in ERRORS])
def test_errors_are_one_line_with_position(src: str, where: str, message: str) -> None:
    with pytest.raises(DtsError) as err:
        compile_dts(src, filename="t.dts")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(where + ": "), text
    assert message in text, text


def test_error_inside_an_include_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "bad.dtsi").write_text("/ {\n  x = <08>;\n};\n")
    (tmp_path / "t.dts").write_text('/dts-v1/;\n/include/ "bad.dtsi"\n')
    with pytest.raises(DtsError) as err:
        compile_dts_file(tmp_path / "t.dts")
    assert str(err.value) == f"{tmp_path / 'bad.dtsi'}:2:8: bad number '08'"


def test_missing_include_is_reported_in_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "mid.dtsi").write_text('\n\n  #include "absent.dtsi"\n')
    (tmp_path / "t.dts").write_text('/dts-v1/;\n#include "mid.dtsi"\n')
    with pytest.raises(DtsError, match=r"mid\.dtsi:3:3: cannot find include file 'absent\.dtsi'"):
        compile_dts_file(tmp_path / "t.dts")


def test_recursive_include_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "t.dts").write_text('/dts-v1/;\n/include/ "t.dts"\n')
    with pytest.raises(DtsError, match="nested too deeply"):
        compile_dts_file(tmp_path / "t.dts")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DtsError, match=r"nothing\.dts:1:1: cannot read file"):
        compile_dts_file(tmp_path / "nothing.dts")
