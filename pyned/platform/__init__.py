"""The board: memory map, physical devices, number of cores."""

from pyned.platform.board import Board, Led, MemRange, Peripheral

__all__ = ["Board", "Led", "MemRange", "Peripheral"]
