"""uvmm's job: one VM built from its device tree, loaded, run and ended."""
