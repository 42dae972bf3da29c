"""The DTS compiler against dtc: the same source must give the same tree and bytes."""

import shutil
import subprocess
from pathlib import Path

import pytest

from pyned.vmm.devicetree import parse_dtb, prop_bytes
from pyned.vmm.dts import DtsError, compile_dts, compile_dts_file

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[1] / "data" / "dts"
needs_dtc = pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc not installed")


def flatten(tree):
    out = {}

    def walk(node, path):
        out[path] = [(p.name, prop_bytes(p)) for p in node.props]
        for child in node.nodes:
            walk(child, (path.rstrip("/") + "/" + child.name))

    walk(tree.root, "/")
    return out, [(e["address"], e["size"]) for e in tree.entries]


def dtc(source: str, tmp_path: Path, name="t.dts"):
    src = tmp_path / name
    src.write_text(source)
    out = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", str(src)], capture_output=True,
                         cwd=tmp_path, check=True).stdout
    return parse_dtb(out)


SNIPPETS = {
    "labels_and_phandles": """/dts-v1/;
/ { #address-cells = <2>; #size-cells = <2>; interrupt-parent = <&gic>;
    gic: ic@1000 { #interrupt-cells = <3>; reg = <0 0x1000 0 0x100>; };
    clk: c { #clock-cells = <0>; };
    dev@2000 { clocks = <&clk>, <&clk>; ip = <&{/ic@1000}>; path = &clk; p2 = &{/c}; };
};""",
    "values": """/dts-v1/;
/memreserve/ 0x1000 0x2000;
/ { a = "x", "", "y\\n\\t\\"\\x41\\101"; b = [00 11 2233]; c = /bits/ 8 <1 0xff 'A'>;
    d = /bits/ 16 <0x1234 (-1)>; e = /bits/ 64 <0x123456789abcdef0>; f;
    g = <1>, "s", [ab], <2 3>; h = <0x10U 010 7ULL>; i = l1: <1 l2: 2> l3:;
};""",
    "expressions": """/dts-v1/;
/ { e = <(1 + 2 * 3) (10 / 3) (10 % 3) (1 << 4) (0x100 >> 4) (5 & 3) (5 | 3) (5 ^ 3)
          (~0) (-1) (!0) (3 > 2) (2 >= 3) (1 == 1) (1 != 1) (1 && 0) (1 || 0) (1 ? 7 : 8)
          ((0x80000000 << 1) >> 1)>; };""",
    "merge_amend_delete": """/dts-v1/;
/ { n1: node { a = <1>; b = <2>; sub { x; }; gone { }; }; other@1 { }; };
/ { node { a = <3>; /delete-property/ b; /delete-node/ gone; new { }; }; };
&n1 { c = "amended"; };
&{/node/sub} { y; };
/delete-node/ &{/other@1};
""",
    "explicit_phandle": """/dts-v1/;
/ { a: x { phandle = <5>; }; b: y { }; z { r = <&a &b>; }; };""",
}


@needs_dtc
@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_snippets_match_dtc(name, tmp_path):
    ours = compile_dts(SNIPPETS[name], filename="t.dts")
    assert flatten(ours) == flatten(dtc(SNIPPETS[name], tmp_path))


@needs_dtc
@pytest.mark.parametrize("path", sorted(DATA.glob("*.dts")) + [ROOT / "dts" / "virt-r82.dts"],
                         ids=lambda p: p.name)
def test_real_files_match_dtc(path, tmp_path):
    ours = compile_dts_file(path)
    assert flatten(ours) == flatten(dtc(path.read_text(), tmp_path))
    assert ours.to_dtb(version=17)  # and it serialises


@needs_dtc
def test_includes(tmp_path):
    (tmp_path / "inc").mkdir()
    (tmp_path / "inc" / "a.dtsi").write_text('/ { from_a = "a"; node { z = <9>; }; };\n')
    (tmp_path / "b.dtsi").write_text("x = <1>;\n")
    src = '/dts-v1/;\n/include/ "inc/a.dtsi"\n/ { node { /include/ "b.dtsi" }; };\n'
    (tmp_path / "t.dts").write_text(src)
    ours = compile_dts_file(tmp_path / "t.dts")
    theirs = dtc(src, tmp_path)
    assert flatten(ours) == flatten(theirs)
    hash_inc = src.replace('/include/ "inc/a.dtsi"', '#include "a.dtsi"')
    ours2 = compile_dts(hash_inc, filename=str(tmp_path / "t.dts"), include_dirs=[tmp_path / "inc"])
    assert flatten(ours2) == flatten(theirs)


@pytest.mark.parametrize("src,where,msg", [
    ("/ { };", "t.dts:1:1", "missing /dts-v1/"),
    ("/dts-v1/;\n/ { a = <1 2;\n};", "t.dts:2:13", "bad number"),
    ("/dts-v1/;\n/ { a = \"open;\n};", "t.dts:2:9", "unterminated string"),
    ("/dts-v1/;\n/ { a = <&nope>; };", "t.dts:2:10", "undefined label 'nope'"),
    ("/dts-v1/;\n/ { l: a { }; l: b { }; };", "t.dts:2:15", "duplicate label 'l'"),
    ("/dts-v1/;\n#define X 1\n", "t.dts:2:1", "preprocessor is not supported"),
    ("/dts-v1/;\n/include/ \"missing.dtsi\"\n", "t.dts:2:1", "cannot find include"),
    ("/dts-v1/;\n/plugin/;\n", "t.dts:2:1", "overlays"),
    ("/dts-v1/;\n/ { a = <(1 / 0)>; };", "t.dts:2:13", "division by zero"),
    ("/dts-v1/;\n/ { a = [123]; };", "t.dts:2:14", "odd number"),
    ("/dts-v1/;\n/ { a = <1>\n", "t.dts:3:1", "expected ','"),
    ("/dts-v1/;\n/ { node {\n", "t.dts:3:1", "unterminated node"),
    ("/dts-v1/;\n&missing { };", "t.dts:2:1", "undefined label 'missing'"),
])
def test_errors_are_one_line_with_position(src, where, msg):
    with pytest.raises(DtsError) as err:
        compile_dts(src, filename="t.dts")
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith(where + ":"), text
    assert msg in text


def test_error_inside_an_include_names_that_file(tmp_path):
    (tmp_path / "bad.dtsi").write_text("/ {\n  x = <zz>;\n};\n")
    (tmp_path / "t.dts").write_text('/dts-v1/;\n/include/ "bad.dtsi"\n')
    with pytest.raises(DtsError, match=r"bad.dtsi:2:\d+: bad number"):
        compile_dts_file(tmp_path / "t.dts")
