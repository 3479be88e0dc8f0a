"""The resampling policy: irregular or coarser source samples onto the AirWatt 5 s grid.

Policy (the same for aggregate power and for every sub-metered appliance):

1. **Grid.** Slots are ``[t, t + interval_s)`` with ``t`` a multiple of ``interval_s`` since the Unix epoch
   (UTC), so grids of different sources line up. A slot is labelled with its start ``t``. The grid runs from
   the slot of the first source sample to the slot of the last one, with every slot in between present.
2. **Mean within bin.** A slot's value is the mean of the source samples whose timestamp falls inside it.
   Missing source values (NaN) are left out of the mean; a slot with no valid sample is *empty*.
3. **Bounded forward fill.** An empty slot takes the value of the last non-empty slot when that slot started
   at most ``max_fill_s`` seconds earlier; such slots are marked ``filled``. This covers sources coarser than
   the grid (REFIT 8 s / 30 s, UK-DALE 6 s: a sample is a mean over the following period) and short dropouts.
4. **Longer gaps stay missing and marked.** Empty slots further than ``max_fill_s`` from the last value keep
   NaN (written as a null ``power_w`` row), so a gap is visible in the file and never silently invented.

Zeros are values, not gaps: meter outages that a source wrote as 0 W are kept as they are (the validation
suite flags them). ``max_fill_s`` should be at least the source period minus one slot (25 s for 30 s data),
or coarse sources come out mostly missing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GridSeries:
    """Columns on one grid: slot starts in epoch ms, values in W (NaN = missing), forward-fill flags."""

    timestamps_ms: np.ndarray  # (n,) int64, strictly increasing by interval
    values: dict[str, np.ndarray]  # name -> (n,) float64
    filled: dict[str, np.ndarray]  # name -> (n,) bool

    def __len__(self) -> int:
        return len(self.timestamps_ms)


def interval_ms(interval_s: float) -> int:
    """The grid step in whole milliseconds (the format stores ms)."""
    step = round(interval_s * 1000)
    if step <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    return step


def bin_means(slot: np.ndarray, values: np.ndarray, n_slots: int) -> np.ndarray:
    """Mean of ``values`` per slot index (0..n_slots-1), ignoring NaN; NaN where a slot has no valid value."""
    ok = ~np.isnan(values)
    sums = np.bincount(slot[ok], weights=values[ok], minlength=n_slots)
    counts = np.bincount(slot[ok], minlength=n_slots)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def forward_fill(values: np.ndarray, max_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """Fill NaN runs from the last valid value for at most ``max_slots`` slots; (values, filled mask)."""
    valid = ~np.isnan(values)
    idx = np.arange(len(values))
    last = np.maximum.accumulate(np.where(valid, idx, -1))
    fill = ~valid & (last >= 0) & (idx - last <= max_slots)
    out = values.copy()
    out[fill] = values[last[fill]]
    return out, fill


def resample_to_grid(
    timestamps_ms: np.ndarray,
    columns: Mapping[str, np.ndarray],
    *,
    interval_s: float,
    max_fill_s: float,
) -> GridSeries:
    """Apply the policy above to columns sampled together at ``timestamps_ms`` (any order)."""
    t = np.asarray(timestamps_ms, dtype=np.int64)
    return resample_channels({name: (t, v) for name, v in columns.items()}, interval_s, max_fill_s)


def resample_channels(
    channels: Mapping[str, tuple[np.ndarray, np.ndarray]], interval_s: float, max_fill_s: float
) -> GridSeries:
    """Apply the policy to channels with their own time axes ``name -> (timestamps_ms, values)``.

    All channels share one grid spanning the earliest to the latest sample of any channel (raw REDD
    sub-meters and mains are sampled at different instants).
    """
    step = interval_ms(interval_s)
    slots = {name: np.asarray(t, dtype=np.int64) // step for name, (t, _) in channels.items()}
    nonempty = [s for s in slots.values() if len(s)]
    if not nonempty:
        return GridSeries(
            np.empty(0, np.int64),
            {c: np.empty(0, np.float64) for c in channels},
            {c: np.empty(0, bool) for c in channels},
        )
    first = min(int(s.min()) for s in nonempty)  # floor division above: also right before 1970
    n_slots = max(int(s.max()) for s in nonempty) - first + 1
    max_slots = int(max_fill_s * 1000 // step)
    values: dict[str, np.ndarray] = {}
    filled: dict[str, np.ndarray] = {}
    for name, (_, v) in channels.items():
        means = bin_means(slots[name] - first, np.asarray(v, dtype=np.float64), n_slots)
        values[name], filled[name] = forward_fill(means, max_slots)
    grid = (first + np.arange(n_slots, dtype=np.int64)) * step
    return GridSeries(grid, values, filled)


def clip_to_window(series: GridSeries, start_ms: int | None, end_ms: int | None) -> GridSeries:
    """The slots in [start_ms, end_ms) (either bound None = open)."""
    t = series.timestamps_ms
    keep = np.ones(len(t), bool)
    if start_ms is not None:
        keep &= t >= start_ms
    if end_ms is not None:
        keep &= t < end_ms
    if keep.all():
        return series
    return GridSeries(
        t[keep],
        {k: v[keep] for k, v in series.values.items()},
        {k: f[keep] for k, f in series.filled.items()},
    )
