"""Notable events of one device, from its predicted on/off state and day tables (thresholds: params.report).

- ``left_on_overnight``: an appliance of ``overnight_appliances`` on for at least ``overnight_min_on_s`` of
  the night window [night_start, night_end) local time (a window may wrap past midnight; its day is the
  date it starts on).
- ``never_cycles_off``: an appliance of ``cycling_appliances`` (fridge, freezer) in one on-run longer than
  ``max_on_s`` (a compressor that never rests). A gap ends a run.
- ``above_baseline``: an appliance's (or the unexplained remainder's, or the measured total's) day energy
  above ``baseline_factor`` x its baseline and at least ``baseline_min_kwh``. The baseline is the median of
  the previous ``baseline_days`` days measured at least ``min_day_coverage`` on which it used energy (the
  total: all such days), so a once-a-week washing machine is compared with its own washing days; it needs
  ``baseline_min_days`` such days.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from airwatt.config import ReportParams
from airwatt.report.tariffs import clock_s
from airwatt.timeutil import from_epoch_ms

TOTAL = "total"
EVENT_COLUMNS = (
    "device_id",
    "kind",
    "appliance",
    "day",
    "start",
    "end",
    "value",
    "threshold",
    "unit",
    "message",
)


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(EVENT_COLUMNS))
    for col in ("start", "end"):
        frame[col] = pd.to_datetime(frame[col], utc=True).astype("datetime64[ms, UTC]")
    for col in ("value", "threshold"):
        frame[col] = frame[col].astype(float)
    return frame


def _date(day_code: int) -> object:
    return np.datetime64(int(day_code), "D").astype(object)


def overnight_events(
    device_id: str,
    appliances: Sequence[str],
    start_ms: int,
    step_ms: int,
    day: np.ndarray,
    second: np.ndarray,
    on: np.ndarray,
    params: ReportParams,
) -> list[dict]:
    """``left_on_overnight`` rows (module docstring)."""
    lo, hi = clock_s(params.night_start), clock_s(params.night_end)
    in_night = (second >= lo) & (second < hi) if lo < hi else (second >= lo) | (second < hi)
    night = day - ((second < hi) & (lo > hi))  # a wrapping night belongs to the day it starts on
    rows = []
    step_s = step_ms / 1000
    for j, name in enumerate(appliances):
        if name not in params.overnight_appliances:
            continue
        idx = np.flatnonzero(in_night & on[:, j])
        if len(idx) == 0:
            continue
        nights, first = np.unique(night[idx], return_index=True)
        counts = np.diff([*first, len(idx)])
        for k, n in enumerate(nights):
            on_s = counts[k] * step_s
            if on_s < params.overnight_min_on_s:
                continue
            slots = idx[first[k] : first[k] + counts[k]]
            rows.append(
                {
                    "device_id": device_id,
                    "kind": "left_on_overnight",
                    "appliance": name,
                    "day": _date(n),
                    "start": from_epoch_ms(np.array([start_ms + slots[0] * step_ms]))[0],
                    "end": from_epoch_ms(np.array([start_ms + (slots[-1] + 1) * step_ms]))[0],
                    "value": on_s / 3600,
                    "threshold": params.overnight_min_on_s / 3600,
                    "unit": "h",
                    "message": f"{name} on for {on_s / 3600:.1f} h of the night {params.night_start}-"
                    f"{params.night_end} starting {_date(n)}",
                }
            )
    return rows


def long_on_events(
    device_id: str,
    appliances: Sequence[str],
    start_ms: int,
    step_ms: int,
    day: np.ndarray,
    on: np.ndarray,
    params: ReportParams,
) -> list[dict]:
    """``never_cycles_off`` rows: on-runs of cycling appliances longer than ``max_on_s``."""
    rows = []
    for j, name in enumerate(appliances):
        if name not in params.cycling_appliances:
            continue
        edges = np.diff(np.concatenate(([0], on[:, j].astype(np.int8), [0])))
        first, end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        for a, b in zip(first, end, strict=True):
            on_s = (b - a) * step_ms / 1000
            if on_s <= params.max_on_s:
                continue
            rows.append(
                {
                    "device_id": device_id,
                    "kind": "never_cycles_off",
                    "appliance": name,
                    "day": _date(day[a]),
                    "start": from_epoch_ms(np.array([start_ms + a * step_ms]))[0],
                    "end": from_epoch_ms(np.array([start_ms + b * step_ms]))[0],
                    "value": on_s / 3600,
                    "threshold": params.max_on_s / 3600,
                    "unit": "h",
                    "message": f"{name} on without a break for {on_s / 3600:.1f} h (it should cycle off)",
                }
            )
    return rows


def baseline_events(
    device_id: str, days: pd.DataFrame, app_days: pd.DataFrame, params: ReportParams
) -> list[dict]:
    """``above_baseline`` rows (module docstring), per appliance, the remainder and the measured total."""
    day_codes = np.array([np.datetime64(d, "D").astype(np.int64) for d in days["day"]])
    covered = (days["hours_measured"] >= params.min_day_coverage * days["hours_expected"]).to_numpy()
    series = {TOTAL: days["measured_kwh"].to_numpy()}
    for name, g in app_days.groupby("appliance", sort=False):
        series[str(name)] = g["energy_kwh"].to_numpy()
    rows = []
    for name, kwh in series.items():
        usable = covered & ((kwh > 0) | (name == TOTAL))
        for i in range(len(kwh)):
            if kwh[i] < params.baseline_min_kwh:
                continue
            prior = usable[:i] & (day_codes[:i] >= day_codes[i] - params.baseline_days)
            if prior.sum() < params.baseline_min_days:
                continue
            baseline = float(np.median(kwh[:i][prior]))
            if kwh[i] <= params.baseline_factor * baseline:
                continue
            rows.append(
                {
                    "device_id": device_id,
                    "kind": "above_baseline",
                    "appliance": name,
                    "day": days["day"].iloc[i],
                    "start": None,
                    "end": None,
                    "value": float(kwh[i]),
                    "threshold": params.baseline_factor * baseline,
                    "unit": "kWh",
                    "message": f"{name} used {kwh[i]:.2f} kWh, {kwh[i] / baseline:.1f}x its usual "
                    f"{baseline:.2f} kWh a day"
                    if baseline > 0
                    else f"{name} used {kwh[i]:.2f} kWh",
                }
            )
    return rows


def find_events(
    device_id: str,
    appliances: Sequence[str],
    start_ms: int,
    step_ms: int,
    day: np.ndarray,
    second: np.ndarray,
    on: np.ndarray,
    days: pd.DataFrame,
    app_days: pd.DataFrame,
    params: ReportParams,
) -> pd.DataFrame:
    """All events of one device, by day then kind."""
    rows = (
        overnight_events(device_id, appliances, start_ms, step_ms, day, second, on, params)
        + long_on_events(device_id, appliances, start_ms, step_ms, day, on, params)
        + baseline_events(device_id, days, app_days, params)
    )
    frame = _frame(rows)
    return (
        frame.sort_values(["day", "kind", "appliance"], kind="stable", ignore_index=True) if rows else frame
    )
