"""Report arithmetic on a synthetic week with known appliance schedules (known predictions fed to the pure
per-device function), clipping and reconciliation, each tariff kind, gaps, DST days and events.

The week (``week_series``), in the device's local time, at 60 s slots:
- base load 80 W all day (no appliance: the unexplained remainder): 1.92 kWh a day;
- fridge 100 W for the first 20 min of every hour: 0.8 kWh, 8 on-hours, 24 cycles a day, peak 100 W;
- kettle 2000 W from 07:00 to 07:03: 0.1 kWh, 0.05 on-hours, 1 cycle a day, peak 2000 W;
- measured 2.82 kWh a day.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from pydantic import ValidationError

from airwatt.appliances import APPLIANCES
from airwatt.config import (
    FlatTariff,
    ReportParams,
    TariffBlock,
    TieredTariff,
    TimeOfUseTariff,
    TouPeriod,
    load_params,
)
from airwatt.errors import ConfigError, DataError
from airwatt.models import GapPolicy, ModelBundle, ModelSpec, NormStats, OnOffSpec, build_model
from airwatt.report import DeviceSeries, device_report, report_for_readings, report_for_series
from airwatt.report.core import LocalTime, reconcile, slot_energy

STEP_S = 60
PER_DAY = 1440
APPS = ["fridge", "kettle"]
FLAT = FlatTariff(kind="flat", currency="USD", price_per_kwh=0.25)


def params(**update: object) -> ReportParams:
    """params.yaml's report section with a flat tariff, updated."""
    base = load_params(REPO / "params.yaml").report
    return base.model_copy(update={"tariff": FLAT, **update})


def local_start_ms(day: str, tz: str) -> int:
    return int(pd.Timestamp(day, tz=tz).tz_convert("UTC").value // 1_000_000)


def week_series(
    tz: str = "Asia/Manila", start: str = "2026-01-05", days: int = 7
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(timestamps_ms, measured W, (T, 2) predicted W, (T, 2) on) of the module's known week."""
    n = days * PER_DAY
    t_s = np.arange(n) * STEP_S  # seconds since local midnight of the first day (no DST in these zones)
    fridge = np.where(t_s % 3600 < 1200, 100.0, 0.0)
    kettle = np.where((t_s % 86400 >= 7 * 3600) & (t_s % 86400 < 7 * 3600 + 180), 2000.0, 0.0)
    power = np.column_stack([fridge, kettle])
    ts = local_start_ms(start, tz) + t_s.astype(np.int64) * 1000
    return ts, 80.0 + fridge + kettle, power, power > 0


def series(
    ts: np.ndarray, agg: np.ndarray, power: np.ndarray, on: np.ndarray, tz: str, **kw: object
) -> DeviceSeries:
    valid = kw.pop("valid", None)
    apps = kw.pop("appliances", APPS)
    return DeviceSeries.from_arrays(
        ts, agg, valid, power, on, appliances=apps, interval_s=STEP_S, timezone=tz
    )  # type: ignore[arg-type]


def rows(report_table: pd.DataFrame, appliance: str) -> pd.DataFrame:
    return report_table[report_table["appliance"] == appliance].reset_index(drop=True)


# -------------------------------------------------------------------------------------- arithmetic
def test_known_week_gives_hand_computed_energy_hours_cycles_peak_share_and_cost() -> None:
    tz = "Asia/Manila"
    r = device_report(series(*week_series(tz), tz), params(), period="week")
    days = r.days
    assert [str(d) for d in days["day"]] == [f"2026-01-{d:02d}" for d in range(5, 12)]  # local days, not UTC
    assert np.allclose(days["measured_kwh"], 2.82)
    assert np.allclose(days["explained_kwh"], 0.9)
    assert np.allclose(days["unexplained_kwh"], 1.92)
    assert np.allclose(days["hours_expected"], 24) and np.allclose(days["missing_hours"], 0)
    assert np.allclose(days["cost"], 2.82 * 0.25)
    assert np.allclose(days["peak_w"], 80 + 100 + 2000)
    fridge, kettle, rest = (rows(r.appliance_days, a) for a in ("fridge", "kettle", "unexplained"))
    assert np.allclose(fridge["energy_kwh"], 0.8) and np.allclose(fridge["on_hours"], 8.0)
    assert fridge["cycles"].tolist() == [24] * 7 and np.allclose(fridge["peak_w"], 100)
    assert np.allclose(fridge["share"], 0.8 / 2.82) and np.allclose(fridge["cost"], 0.2)
    assert np.allclose(kettle["energy_kwh"], 0.1) and np.allclose(kettle["on_hours"], 0.05)
    assert kettle["cycles"].tolist() == [1] * 7 and np.allclose(kettle["peak_w"], 2000)
    assert np.allclose(kettle["cost"], 0.025)
    assert np.allclose(rest["energy_kwh"], 1.92) and np.allclose(rest["cost"], 0.48)
    assert rest["on_hours"].isna().all() and rest["cycles"].isna().all()
    assert np.allclose(fridge["share"] + kettle["share"] + rest["share"], 1.0)
    (week,) = r.periods.itertuples()
    assert (week.period, str(week.period_start), week.days) == ("2026-W02", "2026-01-05", 7)
    assert week.measured_kwh == pytest.approx(7 * 2.82) and week.cost == pytest.approx(7 * 2.82 * 0.25)
    wf = rows(r.appliance_periods, "fridge").iloc[0]
    assert (wf["energy_kwh"], wf["on_hours"], wf["cycles"]) == pytest.approx((5.6, 56.0, 168))
    assert r.events.empty and r.gaps.empty
    assert r.reconciliation["ok"] and r.reconciliation["measured_kwh"] == pytest.approx(7 * 2.82)


def test_timezone_decides_the_days() -> None:
    """The same series read in UTC splits at another midnight (Manila's is 16:00 UTC): 8 days, the first
    of 8 h."""
    ts, agg, power, on = week_series("Asia/Manila")
    r = device_report(series(ts, agg, power, on, "UTC"), params())
    assert len(r.days) == 8
    assert r.days["hours_expected"].iloc[0] == pytest.approx(8)
    assert r.days["measured_kwh"].sum() == pytest.approx(7 * 2.82)


def test_appliances_exceeding_the_measured_power_are_scaled_down_and_the_excess_reported() -> None:
    n = 2 * PER_DAY
    ts = local_start_ms("2026-01-05", "UTC") + np.arange(n, dtype=np.int64) * STEP_S * 1000
    agg = np.full(n, 100.0)
    power = np.column_stack([np.full(n, 80.0), np.full(n, 60.0), np.full(n, -30.0)])  # sum 140 W > 100 W
    apps = ["fridge", "kettle", "tv"]
    r = device_report(series(ts, agg, power, power > 0, "UTC", appliances=apps), params())
    fridge, kettle, tv, rest = (rows(r.appliance_days, a) for a in (*apps, "unexplained"))
    assert np.allclose(fridge["energy_kwh"], 2.4 * 80 / 140)
    assert np.allclose(kettle["energy_kwh"], 2.4 * 60 / 140)
    assert np.allclose(tv["energy_kwh"], 0.0)  # negative predictions count as 0 W
    assert np.allclose(rest["energy_kwh"], 0.0, atol=1e-12)
    assert np.allclose(r.days["clipped_kwh"], 0.96)  # 40 W over 24 h removed
    assert np.allclose(r.days["explained_kwh"] + r.days["unexplained_kwh"], r.days["measured_kwh"])


def test_reconciliation_failure_names_the_device_and_day() -> None:
    tz = "UTC"
    s = series(*week_series(tz), tz)
    p = params()
    r = device_report(s, p)
    t = LocalTime.of(s)
    broken = r.appliance_days.copy()
    broken.loc[2, "energy_kwh"] += 0.01  # an accounting slip in one day's remainder
    with pytest.raises(DataError, match=r"do not reconcile on 2026-01-05.*appliances \+ unexplained"):
        reconcile(s, r.days, broken, slot_energy(s, t, p), p)
    assert reconcile(s, r.days, r.appliance_days, slot_energy(s, t, p), p)["ok"]


# ---------------------------------------------------------------------------------------- tariffs
def test_time_of_use_across_midnight_in_local_time() -> None:
    tz = "Asia/Bangkok"
    tou = TimeOfUseTariff(
        kind="time_of_use",
        currency="THB",
        price_per_kwh=0.30,
        periods=[TouPeriod(start="22:00", end="06:00", price_per_kwh=0.10)],
    )
    r = device_report(series(*week_series(tz), tz), params(tariff=tou))
    fridge, kettle, rest = (rows(r.appliance_days, a) for a in ("fridge", "kettle", "unexplained"))
    # fridge: 1/30 kWh an hour, 8 night hours at 0.10 and 16 day hours at 0.30
    assert np.allclose(fridge["cost"], 8 / 30 * 0.10 + 16 / 30 * 0.30)
    assert np.allclose(kettle["cost"], 0.1 * 0.30)  # 07:00 local is day rate
    assert np.allclose(rest["cost"], 0.64 * 0.10 + 1.28 * 0.30)  # 80 W: 0.64 kWh by night, 1.28 by day
    assert np.allclose(r.days["cost"], 8 / 30 * 0.1 + 16 / 30 * 0.3 + 0.03 + 0.064 + 0.384)
    assert r.currency == "THB"


def test_tiered_blocks_count_through_the_local_month_and_restart() -> None:
    tz = "Europe/Berlin"
    n = 4 * PER_DAY  # 2026-01-29 .. 2026-02-01 local
    ts = local_start_ms("2026-01-29", tz) + np.arange(n, dtype=np.int64) * STEP_S * 1000
    agg = np.full(n, 300.0)  # 7.2 kWh a day
    power = np.column_stack([np.full(n, 100.0), np.zeros(n)])
    tiers = TieredTariff(
        kind="tiered",
        currency="EUR",
        blocks=[
            TariffBlock(up_to_kwh=5, price_per_kwh=0.1),
            TariffBlock(up_to_kwh=10, price_per_kwh=0.2),
            TariffBlock(up_to_kwh=None, price_per_kwh=0.4),
        ],
    )
    r = device_report(series(ts, agg, power, power > 0, tz), params(tariff=tiers), period="month")
    # Jan 29: 5 @0.1 + 2.2 @0.2; Jan 30: 2.8 @0.2 + 4.4 @0.4; Jan 31: 7.2 @0.4; Feb 1 restarts the count.
    expected = [0.5 + 0.44, 0.56 + 1.76, 2.88, 0.5 + 0.44]
    assert r.days["cost"].to_numpy() == pytest.approx(expected)
    assert rows(r.appliance_days, "fridge")["cost"].to_numpy() == pytest.approx(np.array(expected) / 3)
    assert r.periods["period"].tolist() == ["2026-01", "2026-02"]
    assert r.periods["cost"].to_numpy() == pytest.approx([sum(expected[:3]), expected[3]])


def test_tariff_config_errors_are_loud() -> None:
    with pytest.raises(ValidationError, match="overlap"):
        TimeOfUseTariff(
            kind="time_of_use",
            currency="USD",
            price_per_kwh=0.2,
            periods=[
                TouPeriod(start="22:00", end="06:00", price_per_kwh=0.1),
                TouPeriod(start="05:00", end="07:00", price_per_kwh=0.3),
            ],
        )
    with pytest.raises(ValidationError, match="must increase"):
        TieredTariff(
            kind="tiered",
            currency="USD",
            blocks=[
                TariffBlock(up_to_kwh=10, price_per_kwh=0.1),
                TariffBlock(up_to_kwh=5, price_per_kwh=0.2),
                TariffBlock(up_to_kwh=None, price_per_kwh=0.3),
            ],
        )
    with pytest.raises(ConfigError, match=r"report\.tariff"):
        load_params(REPO / "params.yaml", overrides={"report.tariff": {"kind": "flat", "currency": "USD"}})
    with pytest.raises(ConfigError, match="night window is empty"):
        device_report(series(*week_series("UTC"), "UTC"), params(night_start="01:00", night_end="01:00"))


# ------------------------------------------------------------------------------------ gaps and DST
def test_gaps_are_missing_hours_and_not_filled() -> None:
    tz = "Asia/Manila"
    ts, agg, power, on = week_series(tz)
    valid = np.ones(len(ts), bool)
    valid[2 * PER_DAY + 600 : 2 * PER_DAY + 720] = False  # day 3, 10:00 to 12:00 local: no readings
    window = (int(ts[0]), int(ts[-1]) + STEP_S * 1000 + 86_400_000)  # one more day without any reading
    r = device_report(series(ts, agg, power, on, tz, valid=valid), params(), window_ms=window)
    assert len(r.days) == 8
    day3 = r.days.iloc[2]
    assert (day3.hours_measured, day3.missing_hours) == pytest.approx((22.0, 2.0))
    assert day3.measured_kwh == pytest.approx(2.82 - 2 * 0.08 - 2 / 30)  # base and two fridge runs lost
    fridge3 = rows(r.appliance_days, "fridge").iloc[2]
    assert (fridge3.cycles, fridge3.on_hours) == (22, pytest.approx(8 - 2 / 3))
    last = r.days.iloc[7]
    assert (last.hours_expected, last.missing_hours, last.measured_kwh) == (24.0, 24.0, 0.0)
    assert rows(r.appliance_days, "fridge")["share"].isna().iloc[7]
    gaps = r.gaps
    assert gaps["duration_s"].tolist() == [7200.0, 86400.0]
    assert gaps["start"].iloc[0].tz_convert(tz) == pd.Timestamp("2026-01-07 10:00", tz=tz)
    assert r.periods["missing_hours"].sum() == pytest.approx(26.0)
    assert r.reconciliation["missing_hours"] == pytest.approx(26.0)


def test_daylight_saving_days_have_23_and_25_hours() -> None:
    tz = "Europe/London"
    start, end = local_start_ms("2026-03-28", tz), local_start_ms("2026-03-31", tz)
    n = (end - start) // (STEP_S * 1000)
    ts = start + np.arange(n, dtype=np.int64) * STEP_S * 1000
    zeros = np.zeros((n, 2))
    r = device_report(series(ts, np.full(n, 100.0), zeros, zeros > 0, tz), params())
    assert r.days["hours_expected"].tolist() == [24.0, 23.0, 24.0]
    assert r.days["measured_kwh"].to_numpy() == pytest.approx([2.4, 2.3, 2.4])


def always_off_bundle(tmp_path: Path) -> ModelBundle:
    spec = ModelSpec(
        arch="always_off",
        appliances=APPS,
        window_length=1,
        target="midpoint",
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=100.0,
            aggregate_std_w=50.0,
            power_mean_w=dict.fromkeys(APPS, 10.0),
            power_std_w=dict.fromkeys(APPS, 100.0),
        ),
        on_off={a: OnOffSpec.of(APPLIANCES[a]) for a in APPS},
        gap=GapPolicy(max_fill_s=30, max_invalid_fraction=0.1),
    )
    return ModelBundle.load(ModelBundle(spec, build_model(spec)).save(tmp_path / "bundle"))


def test_readings_follow_the_prepare_fill_policy(tmp_path: Path) -> None:
    """Through the service path: a 20 s hole is filled (max_fill_s 30); of a 10 min hole the first 30 s are
    filled (the gap policy is causal: the service cannot know yet that the gap lasts) and 9.5 min are
    missing time."""
    ts = pd.date_range("2026-01-05", periods=2 * 17280, freq="5s", tz="UTC")
    readings = pd.DataFrame({"timestamp": ts, "power_w": np.full(len(ts), 120.0, np.float32)})
    drop = np.zeros(len(ts), bool)
    drop[1000:1004] = True  # 4 readings: 20 s, filled
    drop[20000:20120] = True  # 120 readings: 10 min, not filled
    out = report_for_readings(
        always_off_bundle(tmp_path),
        readings[~drop],
        params=params(),
        timezone="UTC",
        device_id="d1",
    )
    assert [d["missing_hours"] for d in out["days"]] == pytest.approx([0.0, 570 / 3600])
    assert [g["duration_s"] for g in out["gaps"]] == [570.0]
    assert out["days"][0]["measured_kwh"] == pytest.approx(0.12 * 24)
    assert out["reconciliation"]["unexplained_kwh"] == pytest.approx(0.12 * (48 - 570 / 3600))


# ------------------------------------------------------------------------------------------ events
def test_events_left_on_overnight_never_cycles_off_and_above_baseline() -> None:
    tz = "Asia/Jakarta"
    ts, _, power, _ = week_series(tz, days=8)
    lighting = np.zeros(len(ts))
    lighting[1 * PER_DAY : 1 * PER_DAY + 300] = 40.0  # night of day 2: 00:00-05:00 local
    power = np.column_stack([power, lighting])
    power[3 * PER_DAY : 3 * PER_DAY + 480, 0] = 100.0  # day 4: fridge on 00:00-08:00 without a break
    power[7 * PER_DAY + 420 : 7 * PER_DAY + 450, 1] = 2000.0  # day 8: kettle 30 min (1 kWh vs 0.1)
    agg = 80.0 + power.sum(axis=1)
    apps = [*APPS, "lighting"]
    r = device_report(series(ts, agg, power, power > 0, tz, appliances=apps), params())
    ev = r.events
    got = {(k, a, str(d)) for k, a, d in zip(ev["kind"], ev["appliance"], ev["day"], strict=True)}
    assert got == {
        ("left_on_overnight", "lighting", "2026-01-06"),
        ("never_cycles_off", "fridge", "2026-01-08"),
        ("above_baseline", "kettle", "2026-01-12"),
    }
    fridge = ev[ev["kind"] == "never_cycles_off"].iloc[0]
    assert fridge["start"].tz_convert(tz) == pd.Timestamp("2026-01-08 00:00", tz=tz)
    end = pd.Timestamp("2026-01-08 08:20", tz=tz)  # the stuck run joins the usual 08:00-08:20 cycle
    assert fridge["end"].tz_convert(tz) == end
    assert fridge["value"] == pytest.approx(8 + 1 / 3)
    assert ev[ev["kind"] == "left_on_overnight"]["value"].iloc[0] == pytest.approx(5.0)
    kettle = ev[ev["kind"] == "above_baseline"].iloc[0]
    assert (kettle["value"], kettle["threshold"]) == pytest.approx((1.0, 0.3))


def test_overnight_window_across_midnight_belongs_to_the_evening() -> None:
    tz = "UTC"
    ts, _, power, _ = week_series(tz, days=3)
    tv = np.zeros(len(ts))
    tv[PER_DAY - 60 : PER_DAY + 180] = 100.0  # 23:00 on day 1 to 03:00 on day 2
    power = np.column_stack([power, tv])
    p = params(night_start="22:00", night_end="06:00", overnight_min_on_s=3 * 3600)
    r = device_report(series(ts, 80 + power.sum(1), power, power > 0, tz, appliances=[*APPS, "tv"]), p)
    (ev,) = r.events.itertuples()
    assert (ev.kind, ev.appliance, str(ev.day), ev.value) == ("left_on_overnight", "tv", "2026-01-05", 4.0)


# ------------------------------------------------------------------------------------- plain arrays
def test_report_for_series_is_json_and_checks_its_input() -> None:
    tz = "Asia/Manila"
    ts, agg, power, on = week_series(tz)
    kw = {"appliances": APPS, "interval_s": STEP_S, "timezone": tz, "params": params()}
    out = report_for_series(ts, agg, None, power, on, period="month", device_id="d1", **kw)
    again = json.loads(json.dumps(out))
    assert again["window"] == {"start": "2026-01-05T00:00:00+08:00", "end": "2026-01-12T00:00:00+08:00"}
    assert again["periods"][0]["period"] == "2026-01"
    assert {r["appliance"] for r in again["appliance_days"]} == {"fridge", "kettle", "unexplained"}
    assert again["appliance_days"][2]["cycles"] is None  # the remainder has no cycles
    bad = ts.copy()
    bad[100:] += 1000
    with pytest.raises(DataError, match=r"row 100.*not a regular 60 s grid"):
        report_for_series(bad, agg, None, power, on, **kw)
    with pytest.raises(DataError, match="unknown timezone"):
        report_for_series(ts, agg, None, power, on, **{**kw, "timezone": "Mars/Olympus"})
    with pytest.raises(DataError, match=r"power_w has shape \(10080, 1\)"):
        report_for_series(ts, agg, None, power[:, :1], on, **kw)


def test_clock_times_survive_a_params_rewrite_that_drops_quotes(tmp_path: Path) -> None:
    """`dvc exp run -S` rewrites params.yaml; an unquoted 18:00 then reads as the YAML 1.1 integer 1080."""
    import yaml

    from airwatt.config import load_params

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    text = yaml.safe_dump(params, sort_keys=False).replace("'18:00'", "18:00").replace("'22:00'", "22:00")
    (tmp_path / "params.yaml").write_text(text)
    assert yaml.safe_load(text)["report"]["tariff"]["periods"][0]["start"] == 1080  # what YAML 1.1 reads
    p = load_params(tmp_path / "params.yaml")
    periods = p.report.tariff.periods  # type: ignore[union-attr]
    assert [(x.start, x.end) for x in periods] == [("18:00", "22:00"), ("22:00", "06:00")]


def test_page_folders_are_safe_distinct_names() -> None:
    from airwatt.report.run import page_folder

    ids = ["sim-0003", "..", ".", "", "a/b", "a_b", "A_B", "a\\b", "x" * 300, "café", ".hidden", "a b"]
    folders = [page_folder(i) for i in ids]
    assert folders[0] == "sim-0003" and page_folder("a_b") == "a_b"
    assert len({f.lower() for f in folders}) == len(ids)
    for f in folders:
        assert f not in ("", ".", "..") and not f.startswith(".") and "/" not in f and "\\" not in f
        assert len(f) <= 100
    assert page_folder("a/b") == page_folder("a/b")  # stable across runs
