from pyned.devices.sysctl import SysCtl
from pyned.devices.vm_print import VmPrint


class Power:
    def __init__(self):
        self.exits = []

    def system_exit(self, code, reason):
        self.exits.append(code)


def test_syscon_exit_register():
    p = Power()
    dev = SysCtl(p)
    assert dev.read(0, 4, 0) == 0
    dev.write(4, 4, 9, 0)
    assert p.exits == []
    dev.write(0, 4, 0x66, 0)
    assert p.exits == [0x66]


def test_vm_print_buffers_lines_per_cpu():
    out = []

    class S:
        def write(self, b):
            out.append(b)

    vp = VmPrint(S())
    for c in b"ab":
        vp.putc(0, c)
    for c in b"xy\n":
        vp.putc(1, c)
    assert out == [b"xy\n"]
    vp.putc(0, 0x10A)  # only the low byte counts
    assert out[-1] == b"ab\n"
    vp.putc(2, ord("z"))
    vp.flush()
    assert out[-1] == b"z"
