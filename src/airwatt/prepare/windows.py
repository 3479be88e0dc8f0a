"""Lazy training windows over the prepared arrays: nothing is copied until a window is asked for.

A window is ``window_length`` consecutive grid slots of ONE device; its target is the slot at
``window_length // 2`` ("midpoint": for an even length, the slot right of the centre) or at
``window_length - 1`` ("last": causal models). Only the start offsets of usable windows are precomputed:
a window is usable when it lies inside one device, at most ``max_invalid_fraction`` of its slots are invalid,
and the aggregate at its target slot is valid.

Each item (a WindowSample of float32 tensors):

- ``aggregate``     (W,)  (aggregate_w - mean_w) / std_w with the TRAINING statistics; invalid slots are 0
                          (the training mean);
- ``power_w``       (A,)  target ground truth in WATTS (0 where not valid): models scale it as they choose,
                          with ``dataset.stats`` (the same norm_stats.json the model artifact carries);
- ``status``        (A,)  target on/off (1.0 = on);
- ``power_valid``   (A,)  1.0 where the power target is known (ground truth present or short-gap filled);
- ``status_valid``  (A,)  1.0 where the on/off target is known (from ground truth or labels, grid.py).

Power and status have separate masks because annotator labels exist where no sub-meter does.
Arrays are memory-mapped on first use in each process, so DataLoader workers (num_workers > 0) each open
their own maps instead of pickling data.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from airwatt.errors import ConfigError, DataError
from airwatt.prepare import ARRAYS, load_array

Target = Literal["midpoint", "last"]


class WindowSample(NamedTuple):
    aggregate: torch.Tensor  # (W,)
    power_w: torch.Tensor  # (A,)
    status: torch.Tensor  # (A,)
    power_valid: torch.Tensor  # (A,)
    status_valid: torch.Tensor  # (A,)


def target_offset(window_length: int, target: Target) -> int:
    """Position of the target slot inside a window."""
    if target == "midpoint":
        return window_length // 2
    if target == "last":
        return window_length - 1
    raise ConfigError(f"target must be 'midpoint' or 'last', not {target!r}")


def valid_window_starts(
    valid: np.ndarray,
    devices: list[dict[str, Any]],
    window_length: int,
    offset: int,
    stride: int,
    max_invalid_fraction: float,
) -> np.ndarray:
    """Global start offsets of usable windows (module docstring); never crossing a device boundary."""
    max_invalid = int(np.floor(max_invalid_fraction * window_length + 1e-9))
    out = []
    for d in devices:
        lo, n = d["offset"], d["length"]
        if n < window_length:
            continue
        v = np.asarray(valid[lo : lo + n], dtype=bool)
        invalid_before = np.concatenate(([0], np.cumsum(~v)))  # invalid slots in v[:k]
        local = np.arange(0, n - window_length + 1, stride)
        invalid = invalid_before[local + window_length] - invalid_before[local]
        usable = (invalid <= max_invalid) & v[local + offset]
        out.append(lo + local[usable])
    return np.concatenate(out).astype(np.int64) if out else np.empty(0, np.int64)


class WindowDataset(Dataset[WindowSample]):
    """Windows of one split of a prepared directory (see module docstring)."""

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        window_length: int,
        target: Target = "midpoint",
        stride: int = 1,
        max_invalid_fraction: float = 0.1,
        aggregate_norm: tuple[float, float] | None = None,
    ) -> None:
        """``aggregate_norm`` (mean_w, std_w) replaces the split's training statistics: a fine-tuned model
        keeps the normalisation its weights were trained with."""
        if window_length < 1 or stride < 1:
            raise ConfigError(f"window_length ({window_length}) and stride ({stride}) must be >= 1")
        if not 0 <= max_invalid_fraction <= 1:
            raise ConfigError(f"max_invalid_fraction must be in [0, 1], not {max_invalid_fraction}")
        self.root = Path(prepared_dir)
        self.split_dir = self.root / split
        index_path = self.split_dir / "index.json"
        if not index_path.is_file():
            raise DataError(f"split {split!r} not found in the prepared directory", file=index_path)
        self.index: dict[str, Any] = json.loads(index_path.read_text())
        self.stats: dict[str, Any] = json.loads((self.root / "norm_stats.json").read_text())
        self.appliances: list[str] = self.index["appliances"]
        self.window_length = window_length
        self.target = target
        self.target_offset = target_offset(window_length, target)
        if aggregate_norm is not None:
            self.stats = {
                **self.stats,
                "aggregate": {"mean_w": aggregate_norm[0], "std_w": aggregate_norm[1]},
            }
        self._mean_w = float(self.stats["aggregate"]["mean_w"])
        self._std_w = float(self.stats["aggregate"]["std_w"])
        self.starts = valid_window_starts(
            load_array(self.split_dir / "valid.npy"),
            self.index["devices"],
            window_length,
            self.target_offset,
            stride,
            max_invalid_fraction,
        )
        self._device_offsets = np.array([d["offset"] for d in self.index["devices"]], dtype=np.int64)
        self._arrays: dict[str, np.ndarray] | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """The split's arrays, memory-mapped on first use in this process."""
        if self._arrays is None:
            self._arrays = {name: load_array(self.split_dir / f"{name}.npy") for name in ARRAYS}
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None  # workers open their own maps
        return state

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> WindowSample:
        s = int(self.starts[i])
        a = self.arrays
        w = slice(s, s + self.window_length)
        agg = np.asarray(a["aggregate_w"][w], dtype=np.float32)
        x = np.where(a["valid"][w], (agg - self._mean_w) / self._std_w, 0.0).astype(np.float32)  # (W,)
        t = s + self.target_offset
        power_valid = np.asarray(a["power_valid"][t])  # (A,)
        power = np.where(power_valid, a["power_w"][t], 0.0)
        return WindowSample(
            torch.from_numpy(x),
            torch.from_numpy(power.astype(np.float32)),
            torch.from_numpy(np.asarray(a["status"][t], dtype=np.float32)),
            torch.from_numpy(power_valid.astype(np.float32)),
            torch.from_numpy(np.asarray(a["status_valid"][t], dtype=np.float32)),
        )

    def window_sources(self) -> np.ndarray:
        """(len,) the source dataset (index.json ``source``) of each window's device."""
        devices = self.index["devices"]
        names = np.array([d.get("source", "") for d in devices] or [""], dtype=object)
        which = np.searchsorted(self._device_offsets, self.starts, side="right") - 1
        return names[which] if len(devices) else np.empty(0, dtype=object)

    def locate(self, i: int) -> tuple[str, pd.Timestamp]:
        """(device id, UTC time of the target slot) of window ``i``."""
        t = int(self.starts[i]) + self.target_offset
        d = self.index["devices"][int(np.searchsorted(self._device_offsets, t, side="right")) - 1]
        ms = d["start_ms"] + (t - d["offset"]) * round(self.index["interval_s"] * 1000)
        return d["device_id"], pd.Timestamp(ms, unit="ms", tz="UTC")
