"""The board: memory map, physical devices, number of cores."""

from pyned.platform.board import Board, MemRange

__all__ = ["Board", "MemRange"]
