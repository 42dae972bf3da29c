"""The microkernel model: memory, tasks, clock and the per-core scheduler."""
