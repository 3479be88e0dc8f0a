"""The report of one device: a pure function of its gridded series and the model's predictions.

Input (``DeviceSeries``): T slots of the regular ``interval_s`` grid (the prepare stage's grid and gap
policy, ``airwatt.prepare.grid``), the measured power, which slots are valid, and the model's per-appliance
power and on/off state (``ModelBundle.predict_series``). Nothing here reads files or runs a model, so the
batch job, the service and notebooks share it.

Accounting, per slot (valid slots only; a gap slot holds no energy and is counted as missing time):

- measured energy = measured power x ``interval_s``;
- appliance power is the prediction clipped at 0 W; where the appliances together exceed the measured
  power, each is scaled by measured / sum, so appliances never explain more than was measured (the energy
  removed is reported as ``clipped_kwh``);
- unexplained remainder = measured - sum of (scaled) appliances; appliances + remainder = measured.

Per local day (the device's timezone; DST days have 23 or 25 hours): energy_kwh, on_hours, cycles (on-runs
starting that day; a run already on at the window start counts; a gap ends a run), peak_w, share of the
day's measured energy, cost (airwatt.report.tariffs); the day's hours expected, measured and missing.
Periods (ISO weeks from Monday, or calendar months) sum the days. Totals are reconciled in code: the days'
appliances + remainder, the days' sum and an independent integral of the whole window must agree within
``reconcile_tolerance_kwh + reconcile_tolerance_fraction x measured``, or the report fails.
"""

from __future__ import annotations

import dataclasses
import math
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from airwatt.appliances import APPLIANCES
from airwatt.config import ReportParams
from airwatt.errors import ConfigError, DataError
from airwatt.report.events import find_events
from airwatt.report.tariffs import clock_s, max_price, slot_costs
from airwatt.timeutil import from_epoch_ms

Period = Literal["week", "month"]
UNEXPLAINED = "unexplained"
MS_PER_DAY = 86_400_000
WS_PER_KWH = 3.6e6
FULL_DAY_H = 23.0  # a day with this many expected hours is a whole day (DST days have 23)


@dataclass(frozen=True)
class DeviceSeries:
    """One device on the regular grid: slot k starts at ``start_ms + k * interval_s``."""

    device_id: str
    timezone: str
    start_ms: int
    interval_s: float
    appliances: tuple[str, ...]
    aggregate_w: np.ndarray  # (T,) measured power; ignored where not valid
    valid: np.ndarray  # (T,) bool: a reading, or filled within the prepare gap policy
    power_w: np.ndarray  # (T, A) predicted appliance power
    on: np.ndarray  # (T, A) bool predicted on/off state

    def __post_init__(self) -> None:
        n, a = len(self.aggregate_w), len(self.appliances)
        for name, shape in (("valid", (n,)), ("power_w", (n, a)), ("on", (n, a))):
            if np.shape(getattr(self, name)) != shape:
                raise DataError(
                    f"{name} has shape {np.shape(getattr(self, name))}, expected {shape}",
                    device=self.device_id,
                )
        if self.interval_s <= 0 or round(self.interval_s * 1000) != self.interval_s * 1000:
            raise DataError(f"interval_s must be a positive whole number of ms, not {self.interval_s}")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise DataError(f"unknown timezone {self.timezone!r}", device=self.device_id) from None

    def only(self, inventory: Sequence[str] | None) -> DeviceSeries:
        """The series restricted to the device's registered appliances (all without an inventory)."""
        from airwatt.appliances import inventory_columns

        keep = inventory_columns(self.appliances, inventory)
        if len(keep) == len(self.appliances):
            return self
        return dataclasses.replace(
            self,
            appliances=tuple(self.appliances[j] for j in keep),
            power_w=self.power_w[:, keep],
            on=self.on[:, keep],
        )

    @classmethod
    def from_arrays(
        cls,
        timestamps_ms: np.ndarray,
        aggregate_w: np.ndarray,
        valid: np.ndarray | None,
        power_w: np.ndarray,
        on: np.ndarray,
        *,
        appliances: Sequence[str],
        interval_s: float,
        timezone: str,
        device_id: str = "device",
    ) -> DeviceSeries:
        """From plain arrays; ``timestamps_ms`` (epoch ms) must be the regular grid, ``valid`` defaults to
        the finite readings."""
        ts = np.asarray(timestamps_ms, dtype=np.int64)
        step_ms = round(interval_s * 1000)
        if len(ts) == 0:
            raise DataError("no slots: the series is empty", device=device_id)
        bad = np.flatnonzero(np.diff(ts) != step_ms)
        if len(bad):
            raise DataError(
                f"timestamps are not a regular {interval_s:g} s grid: slot {bad[0] + 1} is "
                f"{(ts[bad[0] + 1] - ts[bad[0]]) / 1000:g} s after the previous one",
                row=int(bad[0] + 1),
                column="timestamp",
                device=device_id,
            )
        agg = np.asarray(aggregate_w, dtype=np.float64)
        ok = np.isfinite(agg) if valid is None else np.asarray(valid, bool) & np.isfinite(agg)
        return cls(
            device_id,
            timezone,
            int(ts[0]),
            float(interval_s),
            tuple(appliances),
            agg,
            ok,
            np.asarray(power_w),
            np.asarray(on, bool),
        )

    def __len__(self) -> int:
        return len(self.aggregate_w)

    @property
    def step_ms(self) -> int:
        return round(self.interval_s * 1000)

    @property
    def end_ms(self) -> int:
        return self.start_ms + len(self) * self.step_ms

    def to_window(self, start_ms: int, end_ms: int) -> DeviceSeries:
        """The series on the slots covering [start_ms, end_ms): cropped, and padded with invalid slots, so
        time without readings at the window's edges is reported missing rather than dropped."""
        step = self.step_ms
        first = self.start_ms + math.floor((start_ms - self.start_ms) / step) * step
        n = max(0, math.ceil((end_ms - first) / step))
        offset = (self.start_ms - first) // step  # new index of old slot 0
        lo, hi = max(0, offset), min(n, offset + len(self))
        a = len(self.appliances)
        agg, valid = np.full(n, np.nan), np.zeros(n, bool)
        power, on = np.zeros((n, a), np.float32), np.zeros((n, a), bool)
        if hi > lo:
            src = slice(lo - offset, hi - offset)
            agg[lo:hi], valid[lo:hi] = self.aggregate_w[src], self.valid[src]
            power[lo:hi], on[lo:hi] = self.power_w[src], self.on[src]
        return DeviceSeries(
            self.device_id, self.timezone, first, self.interval_s, self.appliances, agg, valid, power, on
        )


@dataclass(frozen=True)
class LocalTime:
    """Each slot's local calendar day (days since 1970-01-01, local wall clock) and second of that day."""

    day: np.ndarray  # (T,) int64
    second: np.ndarray  # (T,) int64
    month: np.ndarray  # (T,) datetime64[M]

    @classmethod
    def of(cls, s: DeviceSeries) -> LocalTime:
        grid_ms = s.start_ms + np.arange(len(s), dtype=np.int64) * s.step_ms
        wall_ms = (
            from_epoch_ms(grid_ms).tz_convert(s.timezone).tz_localize(None).to_numpy(dtype="datetime64[ms]")
        ).astype(np.int64)
        day = wall_ms // MS_PER_DAY
        return cls(
            day, (wall_ms - day * MS_PER_DAY) // 1000, day.astype("datetime64[D]").astype("datetime64[M]")
        )


@dataclass
class DeviceReport:
    """Report tables of one device (DataFrames, one row per day / period / event / gap)."""

    device_id: str
    timezone: str
    interval_s: float
    currency: str
    period: Period
    window_ms: tuple[int, int]
    appliances: list[str]
    days: pd.DataFrame
    appliance_days: pd.DataFrame
    periods: pd.DataFrame
    appliance_periods: pd.DataFrame
    events: pd.DataFrame
    gaps: pd.DataFrame
    reconciliation: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: tables as lists of records, dates as ISO strings, timestamps in the device's local time
        with their UTC offset, NaN as null."""
        start, end = (
            t.isoformat() for t in from_epoch_ms(np.array(self.window_ms)).tz_convert(self.timezone)
        )
        return {
            "device_id": self.device_id,
            "timezone": self.timezone,
            "interval_s": self.interval_s,
            "currency": self.currency,
            "period": self.period,
            "window": {"start": start, "end": end},
            "appliances": self.appliances,
            "reconciliation": self.reconciliation,
            **{
                name: records(getattr(self, name), self.timezone)
                for name in ("days", "appliance_days", "periods", "appliance_periods", "events", "gaps")
            },
        }


def records(df: pd.DataFrame, timezone: str) -> list[dict[str, Any]]:
    """DataFrame rows as JSON-able dicts."""
    out = df.copy()
    for col in out.columns:
        if isinstance(out[col].dtype, pd.DatetimeTZDtype):
            out[col] = [t.isoformat() for t in out[col].dt.tz_convert(timezone)]
        elif out[col].dtype == object:
            out[col] = [v.isoformat() if hasattr(v, "isoformat") else v for v in out[col]]
    rows = out.astype(object).where(out.notna(), None).to_dict(orient="records")
    return [{k: _plain(v) for k, v in r.items()} for r in rows]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


# ------------------------------------------------------------------------------------------ per slot
@dataclass(frozen=True)
class SlotEnergy:
    """Per-slot accounting in watts (valid slots; 0 elsewhere) and cost."""

    measured_w: np.ndarray  # (T,)
    appliance_w: np.ndarray  # (T, A) after clipping to the measured power
    remainder_w: np.ndarray  # (T,)
    clipped_w: np.ndarray  # (T,) predicted power removed by clipping
    on: np.ndarray  # (T, A) on and valid
    cost: np.ndarray  # (T,) cost of the measured energy
    appliance_cost: np.ndarray  # (T, A)
    remainder_cost: np.ndarray  # (T,)


def slot_energy(s: DeviceSeries, t: LocalTime, params: ReportParams) -> SlotEnergy:
    """Clip appliances to the measured power, the remainder, and each slot's cost (module docstring).

    Per-slot (T,) values are float64; the (T, A) appliance arrays float32 (a device-month is 518,400 x A
    slots) and every sum over them is taken in float64 (``_sum``), so the totals reconcile as before."""
    valid = s.valid
    measured = np.where(valid, np.asarray(s.aggregate_w, np.float64), 0.0)
    appliance = np.nan_to_num(np.array(s.power_w, dtype=np.float32), nan=0.0)  # a copy, (T, A)
    np.clip(appliance, 0.0, None, out=appliance)
    appliance[~valid] = 0.0
    total = appliance.sum(axis=1, dtype=np.float64)
    cap = np.maximum(measured, 0.0)
    scale = np.divide(cap, total, out=np.ones_like(total), where=total > cap)
    np.multiply(appliance, scale[:, None], out=appliance, casting="same_kind")
    explained = appliance.sum(axis=1, dtype=np.float64)
    energy_kwh = measured * s.interval_s / WS_PER_KWH
    cost = slot_costs(params.tariff, energy_kwh, t.second, t.month)
    price_w = np.divide(cost, measured, out=np.zeros_like(cost), where=measured > 0)  # cost per W in slot
    remainder = measured - explained
    remainder_cost = np.where(measured > 0, remainder * price_w, cost)
    appliance_cost = appliance * price_w[:, None].astype(np.float32)
    return SlotEnergy(
        measured,
        appliance,
        remainder,
        total - explained,
        s.on & valid[:, None],
        cost,
        appliance_cost,
        remainder_cost,
    )


def _sum(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Sums of ``values`` (T, ...) over the runs beginning at ``starts``, in float64."""
    return np.add.reduceat(values, starts, axis=0, dtype=np.float64)


# ------------------------------------------------------------------------------------------ per day
def _day_starts(day: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.concatenate(([True], day[1:] != day[:-1])))


def _dates(day_codes: np.ndarray) -> list[Any]:
    return list(np.asarray(day_codes, dtype=np.int64).astype("datetime64[D]").astype(object))


def day_tables(s: DeviceSeries, t: LocalTime, e: SlotEnergy) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(days, appliance_days): one row per local day, and per local day x appliance (+ the remainder)."""
    starts = _day_starts(t.day)
    hours = s.interval_s / 3600.0
    kwh = s.interval_s / WS_PER_KWH
    counts = np.diff([*starts, len(s)])
    measured_h = np.add.reduceat(s.valid, starts) * hours
    measured_kwh = np.add.reduceat(e.measured_w, starts) * kwh
    app_kwh = _sum(e.appliance_w, starts) * kwh  # (D, A)
    rem_kwh = np.add.reduceat(e.remainder_w, starts) * kwh
    peak_agg = np.maximum.reduceat(np.where(s.valid, s.aggregate_w, -np.inf), starts)
    dates = _dates(t.day[starts])
    days = pd.DataFrame(
        {
            "device_id": s.device_id,
            "day": dates,
            "hours_expected": counts * hours,
            "hours_measured": measured_h,
            "missing_hours": (counts - np.add.reduceat(s.valid, starts)) * hours,
            "measured_kwh": measured_kwh,
            "explained_kwh": app_kwh.sum(axis=1),
            "unexplained_kwh": rem_kwh,
            "clipped_kwh": np.add.reduceat(e.clipped_w, starts) * kwh,
            "cost": np.add.reduceat(e.cost, starts),
            "peak_w": np.where(np.isfinite(peak_agg), peak_agg, np.nan),
        }
    )
    rising = e.on & ~np.vstack([np.zeros((1, e.on.shape[1]), bool), e.on[:-1]])
    share_of = np.where(measured_kwh > 0, measured_kwh, np.nan)
    per_app = {
        "energy_kwh": app_kwh,
        "on_hours": np.add.reduceat(e.on, starts, axis=0) * hours,
        "cycles": np.add.reduceat(rising, starts, axis=0).astype(float),
        "peak_w": np.maximum.reduceat(e.appliance_w, starts, axis=0).astype(np.float64),
        "share": app_kwh / share_of[:, None],
        "cost": _sum(e.appliance_cost, starts),
    }
    rem = {
        "energy_kwh": rem_kwh,
        "on_hours": np.full(len(starts), np.nan),
        "cycles": np.full(len(starts), np.nan),
        "peak_w": np.maximum.reduceat(np.where(s.valid, e.remainder_w, -np.inf), starts),
        "share": rem_kwh / share_of,
        "cost": np.add.reduceat(e.remainder_cost, starts),
    }
    rem["peak_w"] = np.where(np.isfinite(rem["peak_w"]), rem["peak_w"], np.nan)
    names = [*s.appliances, UNEXPLAINED]
    frame = pd.DataFrame(
        {
            "device_id": s.device_id,
            "day": np.repeat(np.array(dates, dtype=object), len(names)),
            "appliance": np.tile(np.array(names, dtype=object), len(starts)),
            **{k: np.column_stack([v, rem[k]]).ravel() for k, v in per_app.items()},
        }
    )
    frame["cycles"] = frame["cycles"].astype("Int64")
    return days, frame


# ---------------------------------------------------------------------------------------- periods
def period_keys(dates: pd.Series, period: Period) -> tuple[pd.Series, pd.Series]:
    """(label, first day) of each date's period: ISO week 2026-W02 from Monday, or month 2026-01."""
    d = pd.to_datetime(pd.Series(dates, dtype=object))
    if period == "week":
        iso = d.dt.isocalendar()
        labels = iso["year"].astype(str) + "-W" + iso["week"].astype(str).str.zfill(2)
        first = d - pd.to_timedelta(d.dt.day_of_week, unit="D")
    else:
        labels = d.dt.strftime("%Y-%m")
        first = d.dt.to_period("M").dt.start_time
    return labels, pd.Series([x.date() for x in first], index=dates.index, dtype=object)


def period_tables(
    days: pd.DataFrame, app_days: pd.DataFrame, period: Period
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(periods, appliance_periods): the days summed per ISO week or calendar month."""
    label, first = period_keys(days["day"], period)
    d = days.assign(period=label, period_start=first)
    sums = [
        "hours_expected",
        "hours_measured",
        "missing_hours",
        "measured_kwh",
        "explained_kwh",
        "unexplained_kwh",
        "clipped_kwh",
        "cost",
    ]
    periods = d.groupby(["device_id", "period", "period_start"], sort=True).agg(
        **{c: (c, "sum") for c in sums}, peak_w=("peak_w", "max"), days=("day", "size")
    )
    periods = periods.reset_index()
    by_day = dict(zip(d["day"], zip(d["period"], d["period_start"], strict=True), strict=True))
    a = app_days.assign(
        period=[by_day[x][0] for x in app_days["day"]], period_start=[by_day[x][1] for x in app_days["day"]]
    )
    ap = a.groupby(["device_id", "period", "period_start", "appliance"], sort=False).agg(
        energy_kwh=("energy_kwh", "sum"),
        on_hours=("on_hours", lambda x: x.sum(min_count=1)),
        cycles=("cycles", lambda x: x.sum(min_count=1)),
        peak_w=("peak_w", "max"),
        cost=("cost", "sum"),
    )
    ap = ap.reset_index().sort_values(["period_start"], kind="stable", ignore_index=True)
    measured = ap["period"].map(periods.set_index("period")["measured_kwh"])
    ap.insert(ap.columns.get_loc("cost"), "share", ap["energy_kwh"] / measured.where(measured > 0))
    ap["cycles"] = ap["cycles"].astype("Int64")
    return periods, ap


# ------------------------------------------------------------------------------------------- gaps
def gap_table(s: DeviceSeries) -> pd.DataFrame:
    """One row per run of invalid slots (no reading, beyond the prepare fill policy)."""
    invalid = ~s.valid
    edges = np.diff(np.concatenate(([0], invalid.astype(np.int8), [0])))
    first, end = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    start_ms = s.start_ms + first * s.step_ms
    end_ms = s.start_ms + end * s.step_ms
    return pd.DataFrame(
        {
            "device_id": pd.Series([s.device_id] * len(first), dtype=object),
            "start": from_epoch_ms(start_ms),
            "end": from_epoch_ms(end_ms),
            "duration_s": (end_ms - start_ms) / 1000.0,
        }
    )


# --------------------------------------------------------------------------------------- reconcile
def reconcile(
    s: DeviceSeries, days: pd.DataFrame, app_days: pd.DataFrame, e: SlotEnergy, params: ReportParams
) -> dict[str, Any]:
    """Check that appliances + remainder = measured per day, and that the days add up to an independent
    integral of the window (energy and cost); DataError naming the device and day when they do not."""
    tol_abs, tol_frac = params.reconcile_tolerance_kwh, params.reconcile_tolerance_fraction
    by_day = app_days.groupby("day", sort=False)[["energy_kwh", "cost"]].sum()
    parts_kwh = by_day["energy_kwh"].reindex(days["day"]).to_numpy()
    parts_cost = by_day["cost"].reindex(days["day"]).to_numpy()
    day_kwh, day_cost = days["measured_kwh"].to_numpy(), days["cost"].to_numpy()
    price = max(max_price(params.tariff), 1e-12)
    checks = [
        ("appliances + unexplained vs measured", days["day"].tolist(), parts_kwh, day_kwh, 1.0),
        ("appliance costs + unexplained cost vs cost", days["day"].tolist(), parts_cost, day_cost, price),
    ]
    window_kwh = float(np.sum(s.aggregate_w[s.valid], dtype=np.float64)) * s.interval_s / WS_PER_KWH
    window_cost = float(e.cost.sum())
    whole = ["window"]
    checks += [
        ("sum of days vs window integral", whole, np.array([day_kwh.sum()]), np.array([window_kwh]), 1.0),
        (
            "sum of day costs vs window cost",
            whole,
            np.array([day_cost.sum()]),
            np.array([window_cost]),
            price,
        ),
    ]
    worst = 0.0
    for what, labels, got, want, unit in checks:
        tol = (tol_abs + tol_frac * np.abs(want / unit)) * unit
        err = np.abs(got - want)
        if not np.all(err <= tol):
            i = int(np.argmax(err - tol))
            raise DataError(
                f"report totals do not reconcile on {labels[i]}: {what}: {got[i]:.6f} vs {want[i]:.6f} "
                f"(tolerance {tol[i]:.6f})",
                device=s.device_id,
            )
        if unit == 1.0:
            worst = max(worst, float(err.max(initial=0.0)))
    return {
        "measured_kwh": window_kwh,
        "appliances_kwh": float(days["explained_kwh"].sum()),
        "unexplained_kwh": float(days["unexplained_kwh"].sum()),
        "clipped_kwh": float(days["clipped_kwh"].sum()),
        "cost": window_cost,
        "max_error_kwh": worst,
        "tolerance_kwh": tol_abs + tol_frac * abs(window_kwh),
        "missing_hours": float(days["missing_hours"].sum()),
        "ok": True,
    }


# ------------------------------------------------------------------------------------------- entry
def check_params(params: ReportParams, appliances: Sequence[str]) -> None:
    """Names in the event lists must be appliances of the vocabulary; the night window must not be empty."""
    for key in ("overnight_appliances", "cycling_appliances"):
        unknown = [a for a in getattr(params, key) if a not in APPLIANCES]
        if unknown:
            raise ConfigError(f"report.{key}: unknown appliances {unknown}")
    if clock_s(params.night_start) == clock_s(params.night_end):
        raise ConfigError("report.night_start equals report.night_end: the night window is empty")
    unknown = [a for a in appliances if a not in APPLIANCES and a != UNEXPLAINED]
    if unknown:
        raise DataError(f"appliances {unknown} are not in the vocabulary")


def device_report(
    series: DeviceSeries,
    params: ReportParams,
    *,
    period: Period = "week",
    window_ms: tuple[int, int] | None = None,
) -> DeviceReport:
    """The report of one device (module docstring). ``window_ms`` [start, end) defaults to the series' span;
    slots of the window without readings count as missing hours."""
    check_params(params, series.appliances)
    if period not in ("week", "month"):
        raise ConfigError(f"period must be 'week' or 'month', not {period!r}")
    s = series if window_ms is None else series.to_window(*window_ms)
    if len(s) == 0:
        raise DataError("the report window holds no slots", device=s.device_id)
    t = LocalTime.of(s)
    e = slot_energy(s, t, params)
    days, app_days = day_tables(s, t, e)
    reconciliation = reconcile(s, days, app_days, e, params)
    periods, app_periods = period_tables(days, app_days, period)
    events = find_events(
        s.device_id, s.appliances, s.start_ms, s.step_ms, t.day, t.second, e.on, days, app_days, params
    )
    return DeviceReport(
        device_id=s.device_id,
        timezone=s.timezone,
        interval_s=s.interval_s,
        currency=params.tariff.currency,
        period=period,
        window_ms=(s.start_ms, s.end_ms),
        appliances=list(s.appliances),
        days=days,
        appliance_days=app_days,
        periods=periods,
        appliance_periods=app_periods,
        events=events,
        gaps=gap_table(s),
        reconciliation=reconciliation,
    )


def report_for_series(
    timestamps_ms: np.ndarray,
    aggregate_w: np.ndarray,
    valid: np.ndarray | None,
    power_w: np.ndarray,
    on: np.ndarray,
    *,
    appliances: Sequence[str],
    interval_s: float,
    timezone: str,
    params: ReportParams,
    period: Period = "week",
    device_id: str = "device",
    window_ms: tuple[int, int] | None = None,
    inventory: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The JSON-able report of one device from plain arrays: (T,) grid timestamps (epoch ms), measured power
    and validity, (T, A) predicted power and on/off of ``appliances`` (e.g. SeriesPrediction.power_w/.on);
    only the appliances of ``inventory`` when given (DeviceSeries.only)."""
    series = DeviceSeries.from_arrays(
        timestamps_ms,
        aggregate_w,
        valid,
        power_w,
        on,
        appliances=appliances,
        interval_s=interval_s,
        timezone=timezone,
        device_id=device_id,
    ).only(inventory)
    return device_report(series, params, period=period, window_ms=window_ms).to_dict()
