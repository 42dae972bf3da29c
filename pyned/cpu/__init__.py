"""The emulated Cortex-R82 core: a vCPU on Unicorn with exception entry and sysreg traps."""
