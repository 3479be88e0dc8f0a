"""On/off intervals from sub-metered power, and back to a per-reading on/off status.

The rule (Kelly & Knottenbelt 2015, as in nilmtk): a reading is "on" when power >= the appliance's on
threshold; on-runs separated by an off-gap shorter than ``min_off_s`` are merged; merged runs shorter than
``min_on_s`` are dropped. Durations are measured on timestamps, in seconds. Missing power (NaN) counts as off.
An interval's end is exclusive: the timestamp of the first off reading (or last reading + interval).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from airwatt.appliances import ApplianceSpec
from airwatt.dataset.schema import PANDAS_TIMESTAMP_DTYPE
from airwatt.timeutil import from_epoch_ms, to_epoch_ms


def on_intervals_ms(
    timestamps_ms: np.ndarray, power_w: np.ndarray, spec: ApplianceSpec, interval_s: float
) -> tuple[np.ndarray, np.ndarray]:
    """(starts_ms, ends_ms) of the on-intervals of one appliance at one device; timestamps sorted.

    A run never spans a hole in the timestamps longer than 1.5 intervals (a connectivity gap): it ends one
    interval after its last reading before the hole, and only the min_off_s merge may join it to the next run.
    """
    on = np.nan_to_num(power_w, nan=0.0) >= spec.on_threshold_w
    if not on.any():
        return np.empty(0, np.int64), np.empty(0, np.int64)
    ts = timestamps_ms.astype(np.int64)
    step_ms = round(interval_s * 1000)
    hole_after = np.diff(ts) > 1.5 * step_ms  # (n-1,) a gap follows reading i
    prev_on = np.concatenate(([False], on[:-1] & ~hole_after))
    next_on = np.concatenate((on[1:] & ~hole_after, [False]))
    first = np.flatnonzero(on & ~prev_on)
    last = np.flatnonzero(on & ~next_on)
    starts = ts[first]
    follows = np.minimum(last + 1, len(ts) - 1)
    contiguous = (last + 1 < len(ts)) & ~np.concatenate((hole_after, [True]))[last]
    ends = np.where(contiguous, ts[follows], ts[last] + step_ms)
    # Merge runs separated by an off-gap shorter than min_off_s.
    if len(starts) > 1 and spec.min_off_s > 0:
        breaks = (starts[1:] - ends[:-1]) >= spec.min_off_s * 1000
        starts = starts[np.concatenate(([True], breaks))]  # first run of each merged group
        ends = ends[np.concatenate((breaks, [True]))]  # last run of each merged group
    # Drop runs shorter than min_on_s.
    long_enough = (ends - starts) >= spec.min_on_s * 1000
    return starts[long_enough], ends[long_enough]


def derive_labels(
    ground_truth: pd.DataFrame, appliances: list[str], specs: dict[str, ApplianceSpec], interval_s: float
) -> pd.DataFrame:
    """Labels (source "sub-meter") for one device's ground truth (timestamp + one column per appliance)."""
    ts_ms = to_epoch_ms(ground_truth["timestamp"])
    frames = []
    for a in appliances:
        if a not in ground_truth.columns or ground_truth[a].isna().all():
            continue
        s, e = on_intervals_ms(ts_ms, ground_truth[a].to_numpy(dtype=np.float64), specs[a], interval_s)
        frames.append(pd.DataFrame({"appliance": a, "start": s, "end": e}))
    if not frames:
        return pd.DataFrame(
            {
                "appliance": pd.Series(dtype=str),
                "start": pd.Series(dtype=PANDAS_TIMESTAMP_DTYPE),
                "end": pd.Series(dtype=PANDAS_TIMESTAMP_DTYPE),
                "source": pd.Series(dtype=str),
            }
        )
    out = pd.concat(frames, ignore_index=True)
    for col in ("start", "end"):
        out[col] = from_epoch_ms(out[col].to_numpy())
    out["source"] = "sub-meter"
    return out


def status_from_intervals(timestamps: pd.Series, starts: pd.Series, ends: pd.Series) -> np.ndarray:
    """Boolean on-status at each timestamp for the intervals [start, end) of one appliance at one device."""
    t = to_epoch_ms(timestamps)
    s = np.sort(to_epoch_ms(starts))
    e = np.sort(to_epoch_ms(ends))
    # Count of intervals started minus ended at or before t: > 0 means inside one (intervals may overlap).
    inside = np.searchsorted(s, t, side="right") - np.searchsorted(e, t, side="right")
    return inside > 0
