"""Prepare: the device split, the grid arrays training memory-maps, and normalisation statistics.

The stage is airwatt.prepare.run (``prepare``, the output layout in its docstring); gridding a device in
.grid, the split rules in .split, normalisation in .normalize, activations for augmentation in .activations
and the training windows and chunks in .windows (``WindowDataset``, which imports torch). Docs:
docs/sync-prepare.md.
"""

from airwatt.prepare.run import ARRAYS, load_array, prepare

__all__ = ["ARRAYS", "load_array", "prepare"]
