import pytest

from pyned.errors import ConfigError
from pyned.vmm.options import parse_uvmm_args


def test_vmm_lua_style_command_line():
    o = parse_uvmm_args(["-drom/a.dtb", "-drom/o.dtbo:limit=0x4000000", "-cconsole=ttyAMA0 x=1",
                         "-rrom/rd", "-krom/k.elf", "-b0x2000000", "--fault-mode=halt", "-v",
                         "-Dirq=trace", "-m/chosen/x=u32:5"])
    assert o.dtbs == ["rom/a.dtb", "rom/o.dtbo"] and o.dtb_limit == 0x4000000
    assert o.cmdline == "console=ttyAMA0 x=1" and o.ramdisk == "rom/rd"
    assert o.kernel == "rom/k.elf" and o.rambase == 0x2000000
    assert o.fault_mode == "halt" and o.verbosity == 2 and o.debug == {"irq": 3}
    assert o.dt_mods == ["/chosen/x=u32:5"]


@pytest.mark.parametrize("argv,msg", [
    (["-x"], "option -x not recognized"),
    (["-i"], "removed"),
    (["-fsometimes"], "fault mode"),
    (["-bzz"], "not a number"),
    (["-Dcore=loud"], "debug level"),
    (["stray"], "unexpected argument"),
])
def test_errors(argv, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_uvmm_args(argv)
