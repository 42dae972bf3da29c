"""The emulated Cortex-R82 core: a vCPU on Unicorn with exception entry and sysreg traps."""

from pyned.cpu.engine import select_library

# Before anything imports Unicorn: run on pyned's patched build when it exists.
select_library()
