"""One device's tables on the exact ``interval_s`` grid: aggregate, ground truth, on/off status, validity.

Grid: slots ``t0 + k * interval_s`` for k = 0 .. K-1, where t0 is the device's first reading floored to a
multiple of ``interval_s`` since the epoch and the last slot holds its last reading. A reading belongs to the
slot whose interval [t_k, t_k + interval_s) contains it; several readings in one slot are averaged.

Validity (the gap policy; causal, so the service can apply it reading by reading): a slot is present when
it holds a non-null reading. The first ``max_fill_s`` of every run of missing slots are forward-filled from
the last present slot and valid; the rest of a longer run (and a run at the very start) stays NaN and
invalid. Whether a slot is filled depends only on the slots before it. Ground truth (targets, never served)
is filled only over whole runs of at most ``max_fill_s``, so a long sub-meter gap never gets a held value
for a truth. A reading is *answerable* (``answerable``) when a whole window of history lies inside the
series, the reading is valid and at most a share of the window ending at it is invalid.

On/off status per appliance, by source preference sub-meter > annotator > model:

1. the device has ground truth for the appliance: status from its "sub-meter" labels, or, where the labels
   table has none for it, derived from the ground truth with the standard thresholds and durations
   (airwatt.labels.on_intervals_ms, on the ground truth wherever it is known); known where the power
   target is valid;
2. otherwise the labels of the most preferred source present for that device and appliance (sub-meter,
   else annotator, else model; the intervals of that one source); known wherever the aggregate is valid
   (outside its intervals the appliance is taken to be off), except that annotator labels with "reviewed"
   rows (the windows a person labelled, written by `airwatt label pull`) are known only inside those
   windows; an appliance reviewed but never labelled on is off (known) inside them;
3. otherwise unknown (status False, not valid).

Every target (power and status) is also invalid where the aggregate is invalid, and where the sub-meter
glitched: above ``GLITCH_FACTOR`` x the appliance's ``max_w`` (32,768 W on a fridge plug, 49,150 W on a
washing machine's, as in the public REFIT 8 s files), in training, evaluation and label push alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from airwatt.appliances import APPLIANCES
from airwatt.labels import on_intervals_ms, status_from_intervals
from airwatt.timeutil import from_epoch_ms, to_epoch_ms

GLITCH_FACTOR = 3.0  # sub-meter watts above this x the appliance's max_w are not a reading
SOURCE_PREFERENCE = ("sub-meter", "annotator", "model")


@dataclass
class DeviceGrid:
    """Arrays of one device on the grid; K slots, A appliances."""

    start_ms: int
    aggregate_w: np.ndarray  # (K,) float32, NaN where invalid
    valid: np.ndarray  # (K,) bool
    power_w: np.ndarray  # (K, A) float32, NaN where invalid
    power_valid: np.ndarray  # (K, A) bool
    status: np.ndarray  # (K, A) bool
    status_valid: np.ndarray  # (K, A) bool
    present: int  # slots holding a reading (before filling)
    status_sources: dict[str, str]  # appliance -> the label source used

    def __len__(self) -> int:
        return len(self.valid)


def grid_span(timestamps_ms: np.ndarray, interval_ms: int) -> tuple[int, int]:
    """(t0_ms, slots) of the grid covering the timestamps."""
    t0 = int(timestamps_ms.min()) // interval_ms * interval_ms
    return t0, int(timestamps_ms.max() - t0) // interval_ms + 1


def bin_mean(slots: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Mean of the non-NaN ``values`` per slot (NaN where a slot has none); values (R,) or (R, C)."""
    v = values.reshape(len(values), -1).astype(np.float64)
    out = np.full((n, v.shape[1]), np.nan, dtype=np.float64)
    for c in range(v.shape[1]):
        ok = ~np.isnan(v[:, c])
        count = np.bincount(slots[ok], minlength=n)
        total = np.bincount(slots[ok], weights=v[ok, c], minlength=n)
        has = count > 0
        out[has, c] = total[has] / count[has]
    return out.reshape((n, *values.shape[1:])).astype(np.float32)


def fill_short_gaps(values: np.ndarray, max_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(filled values, valid) for one channel (axis 0): the first ``max_slots`` NaNs of every run after a
    value are forward-filled from it; the rest of a longer run stays NaN. Causal: slot k's outcome depends
    only on slots <= k."""
    present = ~np.isnan(values)
    if present.all():  # nothing to fill (the common case for live requests)
        return values.copy(), present
    idx = np.arange(len(values))
    last = np.maximum.accumulate(np.where(present, idx, -1))  # last present slot at or before each slot
    fill = ~present & (last >= 0) & (idx - last <= max_slots)
    out = values.copy()
    out[fill] = values[last[fill]]
    return out, present | fill


def fill_short_runs(values: np.ndarray, max_slots: int) -> tuple[np.ndarray, np.ndarray]:
    """(filled values, valid) for ground truth: a whole run of at most ``max_slots`` NaNs after a value is
    forward-filled, a longer run not at all. Not causal (a run's length is known at its end): for targets
    only, which are never served; the model's input uses ``fill_short_gaps``."""
    present = ~np.isnan(values)
    if present.all():
        return values.copy(), present
    n = len(values)
    idx = np.arange(n)
    last = np.maximum.accumulate(np.where(present, idx, -1))  # last present slot at or before each slot
    nxt = np.minimum.accumulate(np.where(present, idx, n)[::-1])[::-1]  # next present slot at or after
    fill = ~present & (last >= 0) & (nxt - last - 1 <= max_slots)
    out = values.copy()
    out[fill] = values[last[fill]]
    return out, present | fill


def missing_in_windows(valid: np.ndarray, window_length: int) -> np.ndarray:
    """(T,) int: invalid slots in the window of ``window_length`` slots ending at each slot, the slots
    before the series counting as invalid."""
    missing_before = np.concatenate([np.zeros(window_length, np.int64), np.cumsum(~np.asarray(valid, bool))])
    return (
        missing_before[window_length:]
        - missing_before[: len(valid)]
        + np.maximum(0, window_length - 1 - np.arange(len(valid)))
    )


def max_missing(window_length: int, max_invalid_fraction: float) -> int:
    """The most invalid slots a window may hold and still be answered."""
    return int(np.floor(max_invalid_fraction * window_length + 1e-9))


def answerable(valid: np.ndarray, window_length: int, max_invalid_fraction: float) -> np.ndarray:
    """(T,) bool: the readings a real-time service answers: a whole window of history lies inside the series
    (as the service needs ``window_length`` readings sent), the reading is valid, and at most
    ``max_invalid_fraction`` of its window is invalid."""
    ok = missing_in_windows(valid, window_length) <= max_missing(window_length, max_invalid_fraction)
    ok[: window_length - 1] = False
    return np.asarray(valid, bool) & ok


def grid_device(
    readings: pd.DataFrame,
    ground_truth: pd.DataFrame | None,
    labels: pd.DataFrame | None,
    appliances: list[str],
    *,
    interval_s: float,
    max_fill_s: float,
    glitch_factor: float | None = GLITCH_FACTOR,
) -> DeviceGrid:
    """One device's readings, ground truth and labels on its grid (see module docstring). Sub-meter slots
    above ``glitch_factor`` x the appliance's max_w (a counter overflow such as 32,768 W on a fridge plug)
    are unknown, in power and on/off alike (None: keep them)."""
    interval_ms = round(interval_s * 1000)
    max_slots = int(max_fill_s // interval_s)
    ts_ms = to_epoch_ms(readings["timestamp"])
    t0, n = grid_span(ts_ms, interval_ms)
    slots = (ts_ms - t0) // interval_ms
    raw = bin_mean(slots, readings["power_w"].to_numpy(dtype=np.float64, na_value=np.nan), n)
    aggregate, valid = fill_short_gaps(raw, max_slots)
    aggregate[~valid] = np.nan

    a = len(appliances)
    power = np.full((n, a), np.nan, dtype=np.float32)
    gt_valid = np.zeros((n, a), dtype=bool)  # ground truth known, whatever the aggregate
    has_gt = np.zeros(a, dtype=bool)
    if ground_truth is not None and len(ground_truth):
        gt_ms = to_epoch_ms(ground_truth["timestamp"])
        keep = (gt_ms >= t0) & (gt_ms < t0 + n * interval_ms)
        gt_slots = (gt_ms[keep] - t0) // interval_ms
        for j, name in enumerate(appliances):
            if name not in ground_truth.columns or ground_truth[name].isna().all():
                continue
            has_gt[j] = True
            col = ground_truth[name].to_numpy(dtype=np.float64, na_value=np.nan)[keep]
            filled, ok = fill_short_runs(bin_mean(gt_slots, col, n), max_slots)
            if glitch_factor is not None:
                ok &= ~(filled > glitch_factor * APPLIANCES[name].max_w)
            power[:, j], gt_valid[:, j] = filled, ok
    power_valid = gt_valid & valid[:, None]

    status = np.zeros((n, a), dtype=bool)
    status_valid = np.zeros((n, a), dtype=bool)
    sources: dict[str, str] = {}
    grid_ms = t0 + np.arange(n, dtype=np.int64) * interval_ms
    grid_ts = pd.Series(from_epoch_ms(grid_ms))
    for j, name in enumerate(appliances):
        reviewed: pd.DataFrame | None = None
        lab = labels[labels["appliance"] == name] if labels is not None and len(labels) else None
        sub = lab[lab["source"] == "sub-meter"] if lab is not None else None
        if has_gt[j] and (sub is None or sub.empty):
            gt_on = np.where(gt_valid[:, j], power[:, j], 0.0)
            s_ms, e_ms = on_intervals_ms(grid_ms, gt_on, APPLIANCES[name], interval_s)
            starts, ends = pd.Series(from_epoch_ms(s_ms)), pd.Series(from_epoch_ms(e_ms))
            sources[name] = "sub-meter (derived from ground truth)"
        else:
            reviewed = lab[lab["source"] == "reviewed"] if lab is not None else None
            chosen = _preferred_source(lab)
            if chosen is None and reviewed is not None and len(reviewed):
                chosen = "annotator"  # reviewed and never on: off inside the reviewed spans
            if chosen is None:
                continue
            assert lab is not None
            sel = lab[lab["source"] == chosen]
            starts, ends = sel["start"], sel["end"]
            sources[name] = chosen
        status[:, j] = status_from_intervals(grid_ts, starts, ends)
        status_valid[:, j] = power_valid[:, j] if has_gt[j] else valid
        if sources[name] == "annotator" and reviewed is not None and len(reviewed):
            status_valid[:, j] &= status_from_intervals(grid_ts, reviewed["start"], reviewed["end"])
    power[~power_valid] = np.nan
    return DeviceGrid(
        start_ms=t0,
        aggregate_w=aggregate.astype(np.float32),
        valid=valid,
        power_w=power,
        power_valid=power_valid,
        status=status,
        status_valid=status_valid,
        present=int((~np.isnan(raw)).sum()),
        status_sources=sources,
    )


def _preferred_source(labels: pd.DataFrame | None) -> str | None:
    """The most preferred label source present (sub-meter > annotator > model), or None."""
    if labels is None or labels.empty:
        return None
    present = set(labels["source"])
    return next((src for src in SOURCE_PREFERENCE if src in present), None)
