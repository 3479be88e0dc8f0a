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

**Chunks** (``targets`` S > 1, real-time models with target "last" only): an item is ``window_length + S - 1``
consecutive slots of one device, and each of its last S slots is a target with its own full window of
history before it; ``aggregate`` is then (W + S - 1,) and the four target tensors (S, A). A target slot
counts (its masks are 1) only where a window ending there would be usable: its aggregate is valid and at
most ``max_invalid_fraction`` of the window ending there is invalid. Chunk starts are ``stride`` slots apart;
a chunk with no usable target is skipped. A causal model computes every position of a chunk in one pass
(``forward_sequence``), so one chunk trains S targets for about the cost of a few windows.
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


def usable_targets(valid: np.ndarray, window_length: int, max_invalid_fraction: float) -> np.ndarray:
    """(n,) bool for one device: slot p is a usable "last" target (a whole window ends at p inside the
    device, p is valid, at most ``max_invalid_fraction`` of the window is invalid)."""
    v = np.asarray(valid, dtype=bool)
    max_invalid = int(np.floor(max_invalid_fraction * window_length + 1e-9))
    invalid_before = np.concatenate(([0], np.cumsum(~v)))
    ok = np.zeros(len(v), bool)
    p = np.arange(window_length - 1, len(v))
    ok[p] = (invalid_before[p + 1] - invalid_before[p + 1 - window_length] <= max_invalid) & v[p]
    return ok


def chunk_starts(
    valid: np.ndarray,
    devices: list[dict[str, Any]],
    window_length: int,
    targets: int,
    stride: int,
    max_invalid_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(global chunk starts, (N,) usable target slots) for chunks of ``window_length + targets - 1`` slots
    (module docstring); a chunk never crosses a device boundary and holds at least one usable target."""
    span = window_length + targets - 1
    usable = np.zeros(len(valid), bool)
    out = []
    for d in devices:
        lo, n = d["offset"], d["length"]
        if n < span:
            continue
        ok = usable_targets(valid[lo : lo + n], window_length, max_invalid_fraction)
        usable[lo : lo + n] = ok
        local = np.arange(0, n - span + 1, stride)
        ok_before = np.concatenate(([0], np.cumsum(ok)))
        has = ok_before[local + span] - ok_before[local + window_length - 1] > 0
        out.append(lo + local[has])
    starts = np.concatenate(out).astype(np.int64) if out else np.empty(0, np.int64)
    return starts, usable


class WindowDataset(Dataset[WindowSample]):
    """Windows (or chunks, ``targets`` > 1) of one split of a prepared directory (see module docstring)."""

    def __init__(
        self,
        prepared_dir: str | Path,
        split: str,
        window_length: int,
        target: Target = "midpoint",
        stride: int = 1,
        max_invalid_fraction: float = 0.1,
        aggregate_norm: tuple[float, float] | None = None,
        targets: int = 1,
    ) -> None:
        """``aggregate_norm`` (mean_w, std_w) replaces the split's training statistics: a fine-tuned model
        keeps the normalisation its weights were trained with. ``targets`` > 1: chunks (module docstring)."""
        if window_length < 1 or stride < 1 or targets < 1:
            raise ConfigError(
                f"window_length ({window_length}), stride ({stride}) and targets ({targets}) must be >= 1"
            )
        if targets > 1 and target != "last":
            raise ConfigError(
                f"chunks of {targets} targets need target 'last' (a real-time model), not {target!r}"
            )
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
        self.targets = targets
        self.span = window_length + targets - 1  # slots per item
        self.target = target
        self.target_offset = target_offset(window_length, target)  # the first target slot in an item
        if aggregate_norm is not None:
            self.stats = {
                **self.stats,
                "aggregate": {"mean_w": aggregate_norm[0], "std_w": aggregate_norm[1]},
            }
        self._mean_w = float(self.stats["aggregate"]["mean_w"])
        self._std_w = float(self.stats["aggregate"]["std_w"])
        valid = load_array(self.split_dir / "valid.npy")
        self._usable: np.ndarray | None = None
        if targets == 1:
            self.starts = valid_window_starts(
                valid, self.index["devices"], window_length, self.target_offset, stride, max_invalid_fraction
            )
        else:
            self.starts, self._usable = chunk_starts(
                valid, self.index["devices"], window_length, targets, stride, max_invalid_fraction
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
        w = slice(s, s + self.span)
        agg = np.asarray(a["aggregate_w"][w], dtype=np.float32)
        x = np.where(a["valid"][w], (agg - self._mean_w) / self._std_w, 0.0).astype(np.float32)  # (span,)
        first = s + self.target_offset
        t: int | slice = first if self.targets == 1 else slice(first, first + self.targets)
        power_valid = np.asarray(a["power_valid"][t])  # (A,), or (S, A) for a chunk
        status_valid = np.asarray(a["status_valid"][t])
        if self._usable is not None:  # a chunk: only the targets a whole usable window ends at
            ok = self._usable[t][:, None]
            power_valid, status_valid = power_valid & ok, status_valid & ok
        power = np.where(power_valid, a["power_w"][t], 0.0)
        return WindowSample(
            torch.from_numpy(x),
            torch.from_numpy(power.astype(np.float32)),
            torch.from_numpy(np.asarray(a["status"][t], dtype=np.float32)),
            torch.from_numpy(power_valid.astype(np.float32)),
            torch.from_numpy(status_valid.astype(np.float32)),
        )

    def window_sources(self) -> np.ndarray:
        """(len,) the source dataset (index.json ``source``) of each window's device."""
        devices = self.index["devices"]
        names = np.array([d.get("source", "") for d in devices] or [""], dtype=object)
        which = np.searchsorted(self._device_offsets, self.starts, side="right") - 1
        return names[which] if len(devices) else np.empty(0, dtype=object)

    def locate(self, i: int) -> tuple[str, pd.Timestamp]:
        """(device id, UTC time of the (first) target slot) of item ``i``."""
        t = int(self.starts[i]) + self.target_offset
        d = self.index["devices"][int(np.searchsorted(self._device_offsets, t, side="right")) - 1]
        ms = d["start_ms"] + (t - d["offset"]) * round(self.index["interval_s"] * 1000)
        return d["device_id"], pd.Timestamp(ms, unit="ms", tz="UTC")
