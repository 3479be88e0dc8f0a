"""The tables to validate, and the small derived frames Great Expectations judges.

pandas only derives columns here (intervals, flags, per-device fractions, joined limits); every pass/fail
decision is an expectation in suites.py. Every row-level frame keeps the row number of its source Parquet
file as its index, so GX's ``partial_unexpected_index_list`` names rows a user can find; the per-device frame
is indexed by device id.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from airwatt.dataset.io import read_manifest
from airwatt.dataset.schema import (
    GROUND_TRUTH_FILE,
    LABELS_FILE,
    LABELS_REQUIRED,
    READINGS_FILE,
    READINGS_REQUIRED,
    Manifest,
)
from airwatt.errors import DataError
from airwatt.timeutil import to_epoch_ms

_MS_BITS = 42  # epoch milliseconds fit in 42 bits until the year 2109; device codes go above them


@dataclass(frozen=True)
class Tables:
    """A dataset as read from disk, without coercion: validation must see what is really there."""

    root: Path
    manifest: Manifest
    readings: pd.DataFrame
    ground_truth: pd.DataFrame
    labels: pd.DataFrame


@dataclass(frozen=True)
class Limits:
    """The thresholds the derived columns are computed against (from params.yaml)."""

    interval_s: float
    cadence_tolerance_s: float
    submeter_tolerance_w: float
    submeter_tolerance_fraction: float


@dataclass(frozen=True)
class Derived:
    """Derived frames; a table whose required columns are unusable gets None (its schema check fails)."""

    readings: pd.DataFrame | None  # index: readings row
    devices: pd.DataFrame | None  # index: device_id
    ground_truth: pd.DataFrame | None  # index: ground_truth row
    labels: pd.DataFrame | None  # index: labels row


def _read_parquet(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise DataError("table missing from the dataset", file=path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read Parquet: {e}", file=path) from None
    # Nullable integers stay integers (task_id), so their dtype does not depend on whether nulls occur.
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def load_tables(root: Path) -> Tables:
    """Read the manifest and the three tables of a dataset directory."""
    root = Path(root)
    manifest = read_manifest(root)
    return Tables(
        root=root,
        manifest=manifest,
        readings=_read_parquet(root / READINGS_FILE),
        ground_truth=_read_parquet(root / GROUND_TRUTH_FILE),
        labels=_read_parquet(root / LABELS_FILE),
    )


# ---------------------------------------------------------------------------------------------- helpers
def _usable_time_series(df: pd.DataFrame, required: tuple[str, ...], time_col: str) -> bool:
    """True when the columns derived checks need exist with usable dtypes (else only schema is judged)."""
    if any(c not in df.columns for c in required):
        return False
    if not isinstance(df[time_col].dtype, pd.DatetimeTZDtype) or df[time_col].isna().any():
        return False
    return not df["device_id"].isna().any()


def _numeric(df: pd.DataFrame, col: str) -> np.ndarray:
    """A column as float64 (NaN where missing or absent); non-numeric columns read as all-NaN."""
    if col not in df.columns or not pd.api.types.is_numeric_dtype(df[col].dtype):
        return np.full(len(df), np.nan)
    return df[col].to_numpy(dtype=np.float64, na_value=np.nan)


def previous_interval_s(codes: np.ndarray, ts_ms: np.ndarray) -> np.ndarray:
    """Seconds since the previous row of the same device in file order; NaN on each device's first row."""
    order = np.argsort(codes, kind="stable")
    c, t = codes[order], ts_ms[order]
    gap = np.full(len(t), np.nan)
    if len(t) > 1:
        same = c[1:] == c[:-1]
        gap[1:] = np.where(same, (t[1:] - t[:-1]) / 1000.0, np.nan)
    out = np.empty_like(gap)
    out[order] = gap
    return out


def cadence_error_s(interval_s: np.ndarray, nominal_s: float) -> np.ndarray:
    """Distance of each interval to the nearest whole multiple (>= 1) of the nominal interval.

    A missing reading makes a 10 s interval: that is a gap (judged by gap_fraction), not a cadence error.
    """
    k = np.maximum(np.round(interval_s / nominal_s), 1.0)
    return np.abs(interval_s - k * nominal_s)


def device_codes(device_id: pd.Series, devices: pd.Index) -> np.ndarray:
    """Position of each row's device in ``devices`` (-1 if absent); factorises first, which is fast."""
    local, uniques = pd.factorize(device_id)
    lookup = np.append(devices.get_indexer(pd.Index(uniques, dtype=object)), -1)  # local -1 (null) -> -1
    return lookup[local].astype(np.int64)


def _per_device(codes: np.ndarray, n_devices: int, values: np.ndarray | None = None) -> np.ndarray:
    weights = None if values is None else values.astype(np.float64)
    return np.bincount(codes, weights=weights, minlength=n_devices)[:n_devices].astype(np.float64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / den, np.nan)


# ---------------------------------------------------------------------------------------------- derived
def derive_readings(tables: Tables, codes: np.ndarray, rated_max_w: np.ndarray, lim: Limits) -> pd.DataFrame:
    """Per reading: interval to the previous reading of its device, cadence error, outage flag, rated max."""
    r = tables.readings
    ts_ms = to_epoch_ms(r["timestamp"])
    interval = previous_interval_s(codes, ts_ms)
    power = _numeric(r, "power_w")
    volts, amps = _numeric(r, "voltage_v"), _numeric(r, "current_a")
    # Outage: the supply is off, so every channel reads 0 (a channel the monitor lacks is null, not 0).
    is_outage = (power == 0) & ((volts == 0) | np.isnan(volts)) & ((amps == 0) | np.isnan(amps))
    return pd.DataFrame(
        {
            "power_w": power,
            "rated_max_w": rated_max_w[codes],
            "interval_s": interval,
            "cadence_error_s": cadence_error_s(interval, lim.interval_s),
            "is_outage": is_outage,
        },
        index=r.index,
    )


def derive_devices(
    device_ids: list[str],
    codes: np.ndarray,
    ts_ms: np.ndarray,
    readings: pd.DataFrame,
    gt: pd.DataFrame | None,
    gt_codes: np.ndarray | None,
    lim: Limits,
) -> pd.DataFrame:
    """One row per device (the manifest's, then any others found in readings): fractions and counts."""
    n = len(device_ids)
    rows = _per_device(codes, n)
    power = readings["power_w"].to_numpy()
    rated = readings["rated_max_w"].to_numpy()
    interval = readings["interval_s"].to_numpy()
    first, last = _first_last(codes, ts_ms, n)
    present = rows > 0
    # Expected 5 s slots in the device's own span [first reading, last reading].
    expected = np.where(present, np.round((last - first) / (lim.interval_s * 1000.0)) + 1, np.nan)
    missing = np.clip(expected - _per_device(codes, n, ~np.isnan(power)), 0, None)
    has_interval = ~np.isnan(interval)
    on_cadence = has_interval & (readings["cadence_error_s"].to_numpy() <= lim.cadence_tolerance_s)
    with np.errstate(invalid="ignore"):
        out_of_range = ~np.isnan(power) & ~((power >= 0) & (power <= rated))
        non_increasing = has_interval & (interval <= 0)
    devices = pd.DataFrame(
        {
            "rows": rows.astype(np.int64),
            "first_ms": np.where(present, first, -1),
            "last_ms": np.where(present, last, -1),
            "expected_slots": expected,
            "missing_slots": missing,
            "gap_fraction": np.where(present, _ratio(missing, expected), 1.0),
            "cadence_fraction": _ratio(
                _per_device(codes, n, on_cadence), _per_device(codes, n, has_interval)
            ),
            "outage_fraction": _ratio(_per_device(codes, n, readings["is_outage"].to_numpy()), rows),
            "non_increasing_rows": _per_device(codes, n, non_increasing).astype(np.int64),
            "power_out_of_range_rows": _per_device(codes, n, out_of_range).astype(np.int64),
            "submeter_excess_fraction": np.full(n, np.nan),
        },
        index=pd.Index(device_ids, name="device_id", dtype=object),
    )
    if gt is not None and gt_codes is not None:
        both = gt["allowed_w"].notna().to_numpy() & gt["submetered_sum_w"].notna().to_numpy()
        excess = both & (gt["submetered_sum_w"].to_numpy() > gt["allowed_w"].to_numpy())
        devices["submeter_excess_fraction"] = _ratio(
            _per_device(gt_codes, n, excess), _per_device(gt_codes, n, both)
        )
    return devices


def derive_ground_truth(
    tables: Tables,
    gt_codes: np.ndarray,
    reading_keys: np.ndarray,
    reading_power_w: np.ndarray,
    rated_max_w: np.ndarray,
    lim: Limits,
) -> pd.DataFrame:
    """Per ground-truth row: interval to the previous row of its device, the smallest and largest
    sub-metered value (float64, so GX compares them vectorised), the sub-metered sum and its allowed maximum.

    allowed_w = aggregate + submeter_tolerance_w + submeter_tolerance_fraction * aggregate, from the reading
    of the same device and timestamp (NaN when there is none: that row is not judged).
    """
    g = tables.ground_truth
    ts_ms = to_epoch_ms(g["timestamp"])
    total = np.zeros(len(g))
    counted = np.zeros(len(g), dtype=bool)
    lowest = np.full(len(g), np.nan)
    highest = np.full(len(g), np.nan)
    for a in tables.manifest.appliances:
        v = _numeric(g, a)
        ok = ~np.isnan(v)
        total += np.where(ok, v, 0.0)
        counted |= ok
        lowest = np.fmin(lowest, v)  # fmin/fmax skip NaN
        highest = np.fmax(highest, v)
    keys = (gt_codes.astype(np.int64) << _MS_BITS) | ts_ms
    order = np.argsort(reading_keys, kind="stable")
    pos = np.searchsorted(reading_keys, keys, sorter=order)
    pos = np.minimum(pos, max(len(order) - 1, 0))
    matched = len(order) > 0
    aggregate: np.ndarray = np.full(len(g), np.nan)
    if matched:
        idx = order[pos]
        hit = reading_keys[idx] == keys
        aggregate = np.where(hit, reading_power_w[idx], np.nan)
    allowed = aggregate + lim.submeter_tolerance_w + lim.submeter_tolerance_fraction * aggregate
    return pd.DataFrame(
        {
            "interval_s": previous_interval_s(gt_codes, ts_ms),
            "submetered_min_w": lowest,
            "submetered_max_w": highest,
            "rated_max_w": rated_max_w[gt_codes],
            "aggregate_w": aggregate,
            "submetered_sum_w": np.where(counted, total, np.nan),
            "allowed_w": allowed,
        },
        index=g.index,
    )


def derive_labels(tables: Tables, devices: pd.DataFrame, lim: Limits) -> pd.DataFrame:
    """Per label: start/end and its device's data span [first reading, last reading + interval), as naive
    UTC timestamps (GX compares tz-aware columns through a pandas path deprecated in 3.1), and the
    "device/appliance" key. A device without readings has no span (NaT), so its labels fail the span check.
    """
    lab = tables.labels
    dev = lab["device_id"].astype(object)
    present = devices["rows"] > 0
    first = devices["first_ms"].where(present)
    end = (devices["last_ms"] + round(lim.interval_s * 1000)).where(present)
    return pd.DataFrame(
        {
            "start_utc": _naive_utc(to_epoch_ms(lab["start"])),
            "end_utc": _naive_utc(to_epoch_ms(lab["end"])),
            "span_start_utc": _naive_utc(dev.map(first).to_numpy(dtype=np.float64)),
            "span_end_utc": _naive_utc(dev.map(end).to_numpy(dtype=np.float64)),
            "device_appliance": (dev.astype(str) + "/" + lab["appliance"].astype(str)).to_numpy(),
        },
        index=lab.index,
    )


def _naive_utc(ms: np.ndarray) -> np.ndarray:
    """Epoch milliseconds (NaN allowed) as naive datetime64[ms] in UTC; NaN becomes NaT."""
    ms = np.asarray(ms, dtype=np.float64)
    out = np.where(np.isnan(ms), np.iinfo(np.int64).min, np.nan_to_num(ms)).astype(np.int64)
    return out.view("datetime64[ms]")


def inventory_keys(manifest: Manifest) -> list[str]:
    """ "device/appliance" for every appliance in every device's inventory."""
    return [f"{d.device_id}/{a}" for d in manifest.devices for a in d.appliances]


def _first_last(codes: np.ndarray, ts_ms: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    first = np.full(n, np.iinfo(np.int64).max)
    last = np.full(n, np.iinfo(np.int64).min)
    np.minimum.at(first, codes, ts_ms)
    np.maximum.at(last, codes, ts_ms)
    return first, last


def derive_all(tables: Tables, lim: Limits) -> Derived:
    """All derived frames; a table whose key columns are unusable is skipped (its schema check fails)."""
    m, r = tables.manifest, tables.readings
    if not _usable_time_series(r, READINGS_REQUIRED, "timestamp") or not pd.api.types.is_numeric_dtype(
        r["power_w"].dtype
    ):
        return Derived(None, None, None, None)
    known = set(m.device_ids)
    device_ids = [*m.device_ids, *sorted({str(d) for d in r["device_id"].unique()} - known)]
    index = pd.Index(device_ids, dtype=object)
    codes = device_codes(r["device_id"], index)
    rated = np.array([m.device(d).rated_max_w if d in known else np.nan for d in device_ids])
    readings = derive_readings(tables, codes, rated, lim)
    ts_ms = to_epoch_ms(r["timestamp"])

    gt, gt_codes = None, None
    if _usable_time_series(tables.ground_truth, ("device_id", "timestamp"), "timestamp"):
        gt_codes = device_codes(tables.ground_truth["device_id"], index)
        has_readings = gt_codes >= 0  # a device with no readings at all has no aggregate to compare with
        gt_codes = np.where(has_readings, gt_codes, 0)
        reading_keys = (codes << _MS_BITS) | ts_ms
        gt = derive_ground_truth(tables, gt_codes, reading_keys, readings["power_w"].to_numpy(), rated, lim)
        gt.loc[~has_readings, ["aggregate_w", "allowed_w", "rated_max_w"]] = np.nan
    devices = derive_devices(device_ids, codes, ts_ms, readings, gt, gt_codes, lim)

    labels = None
    lab = tables.labels
    if _usable_time_series(lab, LABELS_REQUIRED, "start") and isinstance(
        lab["end"].dtype, pd.DatetimeTZDtype
    ):
        labels = derive_labels(tables, devices, lim)
    return Derived(readings=readings, devices=devices, ground_truth=gt, labels=labels)
