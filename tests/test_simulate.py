"""The fleet simulator: determinism, the 5 s grid, appliance behaviour with known answers, faults, labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from airwatt.appliances import APPLIANCES
from airwatt.cli import app
from airwatt.config import SimulateParams, load_params
from airwatt.dataset import Dataset
from airwatt.errors import ConfigError
from airwatt.labels import derive_labels, status_from_intervals
from airwatt.simulate import fleet_sites, plot_device_day, simulate_fleet
from airwatt.simulate.appliances import MODELS
from airwatt.simulate.device import DeviceFrames, simulate_device
from airwatt.simulate.household import WashingMachine, add_wash_cycle
from airwatt.simulate.sites import INVENTORY_PROB, SiteSpec
from airwatt.simulate.timeline import Segments, Timeline
from airwatt.timeutil import to_epoch_ms

REPO = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2026-01-05T00:00:00Z")
INTERVAL_S = 5.0
DAY_N = 17_280  # 5 s readings per day


def params(**update: object) -> SimulateParams:
    return load_params(REPO / "params.yaml").simulate.model_copy(update=update)


def no_faults(**update: object) -> SimulateParams:
    quiet = {"missing_reading_fraction": 0.0, "connectivity_gaps_per_day": 0.0, "power_outages_per_week": 0.0}
    return params(**{**quiet, **update})


def simulate(out: Path, cfg: SimulateParams, days: float = 1.0, workers: int = 1) -> Dataset:
    simulate_fleet(out, cfg, start=START, days=days, interval_s=INTERVAL_S, workers=workers)
    return Dataset(out)


def first_site(
    cfg: SimulateParams, appliance: str, kind: str = "home", region: str | None = None
) -> SiteSpec:
    """The first site of the fleet with ``appliance`` (device k's site does not depend on the fleet size)."""
    for s in fleet_sites(cfg.model_copy(update={"devices": 200})):
        if s.kind == kind and appliance in s.appliances and (region is None or s.zone.region == region):
            return s
    raise AssertionError(f"no {kind} with a {appliance} in 200 devices")


def one_device(spec: SiteSpec, cfg: SimulateParams, days: float) -> DeviceFrames:
    return simulate_device(spec, cfg, START, round(days * DAY_N), INTERVAL_S)


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start index, length) of the True runs of a boolean array."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return starts, ends - starts


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """3 devices x 2 days with the default fault rates, two workers."""
    return simulate(tmp_path_factory.mktemp("sim") / "fleet", params(devices=3), days=2.0, workers=2)


# ------------------------------------------------------------------------------------------ determinism
def _tables(ds: Dataset) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    return ds.readings(), ds.ground_truth(), ds.labels()


def test_same_seed_same_tables_whatever_the_worker_count(tmp_path: Path, fleet: Dataset) -> None:
    again = simulate(tmp_path / "again", params(devices=3), days=2.0, workers=1)
    for a, b in zip(_tables(fleet), _tables(again), strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert fleet.manifest.devices == again.manifest.devices


def test_different_seeds_give_different_fleets(tmp_path: Path) -> None:
    a = simulate(tmp_path / "a", params(devices=2, seed=1), days=0.25)
    b = simulate(tmp_path / "b", params(devices=2, seed=2), days=0.25)
    ra, rb = a.readings(), b.readings()
    n = min(len(ra), len(rb))
    assert not np.allclose(ra["power_w"].to_numpy()[:n], rb["power_w"].to_numpy()[:n])


def test_device_k_does_not_depend_on_fleet_size(tmp_path: Path) -> None:
    small = simulate(tmp_path / "two", params(devices=2), days=0.5)
    large = simulate(tmp_path / "four", params(devices=4), days=0.5, workers=2)
    dev = ["sim-0001"]
    apps = small.manifest.device("sim-0001").appliances
    assert large.manifest.device("sim-0001") == small.manifest.device("sim-0001")
    pd.testing.assert_frame_equal(small.readings(dev), large.readings(dev))
    cols = ["device_id", "timestamp", *apps]
    pd.testing.assert_frame_equal(small.ground_truth(dev)[cols], large.ground_truth(dev)[cols])
    pd.testing.assert_frame_equal(small.labels(dev), large.labels(dev))


# ------------------------------------------------------------------------------------- grid and format
def test_readings_lie_on_the_exact_5s_grid_of_the_window(fleet: Dataset) -> None:
    r = fleet.readings()
    m = fleet.manifest
    assert m.start == START and m.end == START + pd.Timedelta(days=2)
    for _, d in r.groupby("device_id"):
        offset_ms = to_epoch_ms(d["timestamp"]) - to_epoch_ms(pd.DatetimeIndex([START]))[0]
        assert (offset_ms % 5000 == 0).all()
        assert offset_ms.min() >= 0 and offset_ms.max() < 2 * 86_400_000
        steps = np.diff(offset_ms)
        assert (steps > 0).all()
        assert np.mean(steps == 5000) > 0.98  # exactly 5 s apart except at lost readings and gaps
        assert len(d) < 2 * DAY_N  # default fault rates drop some readings


def test_manifest_describes_each_site(fleet: Dataset) -> None:
    gt = fleet.ground_truth()
    for info in fleet.manifest.devices:
        assert info.has_ground_truth and info.appliances
        assert info.provenance == f"simulator seed=42 device={int(info.device_id[-4:])}"
        assert info.site_type in {"home", "cafe", "restaurant"}
        assert info.timezone.startswith(("Asia/", "Europe/"))
        assert set(info.appliances) <= set(fleet.appliances)
        assert gt.loc[gt.device_id == info.device_id, info.appliances].notna().all().all()
    assert fleet.manifest.provenance["params"]["seed"] == 42


def test_fleet_mixes_homes_cafes_and_restaurants() -> None:
    sites = fleet_sites(params(devices=20, home_fraction=0.6))
    kinds = [s.kind for s in sites]
    assert kinds.count("home") == 12
    assert {"cafe", "restaurant"} <= set(kinds)
    regions = [s.zone.region for s in sites]
    assert regions.count("sea") > regions.count("europe")


def test_every_inventory_appliance_has_a_model_in_the_vocabulary() -> None:
    names = {a for probs in INVENTORY_PROB.values() for a in probs}
    assert names <= set(MODELS) and set(MODELS) <= set(APPLIANCES)


# ------------------------------------------------------------------------------------ power and labels
def test_power_stays_within_appliance_and_supply_limits(fleet: Dataset) -> None:
    gt, r = fleet.ground_truth(), fleet.readings()
    for a in fleet.appliances:
        values = gt[a].dropna()
        assert values.min() >= 0 and values.max() <= APPLIANCES[a].max_w, a
    rated = r["device_id"].map({d.device_id: d.rated_max_w for d in fleet.manifest.devices})
    assert (r["power_w"] >= 0).all() and (r["power_w"] <= rated).all()


def test_aggregate_covers_ground_truth_plus_unlabeled_loads(fleet: Dataset) -> None:
    r, gt = fleet.readings(), fleet.ground_truth()
    noise_w = params().noise_w
    for dev in fleet.device_ids:
        apps = fleet.manifest.device(dev).appliances
        agg = r.loc[r.device_id == dev, "power_w"].to_numpy()
        sub = gt.loc[gt.device_id == dev, apps].sum(axis=1).to_numpy()
        powered = agg > 0
        excess = agg[powered] - sub[powered]
        assert (excess >= -5 * noise_w).all(), dev
        assert np.median(excess) > 10.0  # standby base load and unlabeled appliances


def test_labels_are_derived_from_the_ground_truth(fleet: Dataset) -> None:
    gt, labels = fleet.ground_truth(), fleet.labels()
    assert (labels["source"] == "sub-meter").all()
    assert (labels["start"] < labels["end"]).all()
    for dev in fleet.device_ids:
        apps = fleet.manifest.device(dev).appliances
        g = gt[gt.device_id == dev].reset_index(drop=True)
        mine = labels[labels.device_id == dev]
        again = derive_labels(g, apps, APPLIANCES, INTERVAL_S)
        assert len(again) == len(mine)
        for a in apps:
            lab = mine[mine.appliance == a]
            on = g[a].to_numpy() >= APPLIANCES[a].on_threshold_w
            inside = status_from_intervals(g["timestamp"], lab["start"], lab["end"])
            if on.sum() > 50:
                assert inside[on].mean() > 0.9, (dev, a)  # on-readings are labelled (short blips dropped)


def test_electrical_channels_agree_with_power(fleet: Dataset) -> None:
    r = fleet.readings()
    live = r[r["voltage_v"] > 0]
    assert live["voltage_v"].between(200, 250).all()
    assert live["power_factor"].between(0, 1).all()
    big = live[live["power_w"] > 200]
    vi_pf = big["voltage_v"] * big["current_a"] * big["power_factor"]
    assert ((vi_pf - big["power_w"]).abs() < 0.02 * big["power_w"] + 10).mean() > 0.99


# -------------------------------------------------------------------------------- appliance behaviours
def test_fridge_cycles_with_a_realistic_duty_and_defrosts_daily() -> None:
    cfg = no_faults()
    spec = first_site(cfg, "fridge")
    fridge = one_device(spec, cfg, days=3).ground_truth["fridge"].to_numpy()
    on = fridge >= APPLIANCES["fridge"].on_threshold_w
    assert 0.25 < on.mean() < 0.65
    starts, lengths = runs(on)
    assert 3 * 24 < len(starts) < 3 * 60  # compressor cycles of tens of minutes
    # A defrost heater draws a constant power for 15-30 min; compressor runs start with a surge and ramp.
    flat = [
        s
        for s, n in zip(starts, lengths, strict=True)
        if n * INTERVAL_S >= 900 and np.ptp(fridge[s : s + n]) < 1e-3
    ]
    assert len(flat) >= 3
    gaps_s = np.diff([0, *flat, len(fridge)]) * INTERVAL_S
    assert gaps_s.max() <= 86_400


def test_kettle_boils_at_2_to_3_kw_for_a_few_minutes() -> None:
    cfg = no_faults()
    frames = one_device(first_site(cfg, "kettle"), cfg, days=3)
    lab = frames.labels[frames.labels.appliance == "kettle"]
    assert len(lab) >= 2
    dur_s = (lab["end"] - lab["start"]).dt.total_seconds()
    assert dur_s.between(60, 330).all()
    kettle = frames.ground_truth["kettle"].to_numpy()
    on = kettle[kettle > 0]
    assert on.min() >= 2000 and on.max() <= 3000


def test_washing_machine_cycle_has_heating_motor_and_spin_phases() -> None:
    tl = Timeline.build(START, 3 * 720, INTERVAL_S, "UTC")  # 3 hours
    rng = np.random.default_rng(0)
    segs = Segments()
    end_s = add_wash_cycle(segs, 600.0, rng, WashingMachine(heat_w=2000, motor_w=200, spin_w=450), heat=True)
    power = segs.render(tl)
    assert 50 * 60 < end_s - 600 < 120 * 60
    heating_start, heating_len = runs(power > 1500)
    assert len(heating_start) == 1 and heating_len[0] * INTERVAL_S >= 600
    after = power[heating_start[0] + heating_len[0] :]
    motor = (after > 100) & (after < 600)
    assert motor.sum() * INTERVAL_S > 20 * 60 and after.max() < 600
    assert np.mean(after[after > 0] < 20) > 0.1  # drum pauses and fills between turns
    ts = pd.Series(pd.date_range(START, periods=tl.n, freq="5s"))
    lab = derive_labels(
        pd.DataFrame({"timestamp": ts, "washing_machine": power}), ["washing_machine"], APPLIANCES, INTERVAL_S
    )
    assert len(lab) == 1  # one programme is one on-interval


def test_shops_follow_local_opening_hours() -> None:
    cfg = no_faults()
    spec = first_site(cfg, "coffee_machine", kind="cafe", region="sea")
    gt = one_device(spec, cfg, days=3).ground_truth
    local = gt["timestamp"].dt.tz_convert(spec.zone.timezone)
    night = gt[local.dt.hour.between(1, 4)]
    assert night["coffee_machine"].max() < 5 and night["lighting"].max() == 0  # closed at night, local time
    noon = gt[local.dt.hour.between(11, 13)]
    lit = (noon["lighting"] > 0).groupby(local[noon.index].dt.date).mean()
    assert set(lit.round(6)) <= {0.0, 1.0} and lit.max() == 1.0  # lit all through noon on open days
    assert noon["coffee_machine"].max() > 1500


# ------------------------------------------------------------------------------------------------ faults
def test_lost_readings_follow_the_configured_fraction(tmp_path: Path) -> None:
    ds = simulate(tmp_path / "lost", no_faults(devices=3, missing_reading_fraction=0.05))
    assert 0.04 < 1 - len(ds.readings()) / (3 * DAY_N) < 0.06


def test_outages_are_rows_of_zeros_and_gaps_are_absent_rows(tmp_path: Path) -> None:
    cfg = no_faults(devices=3, connectivity_gaps_per_day=4.0, power_outages_per_week=21.0)
    ds = simulate(tmp_path / "faults", cfg, days=2.0)
    r, gt = ds.readings(), ds.ground_truth()
    outage = (r["power_w"] == 0).to_numpy()
    assert 0 < outage.mean() < 0.5
    assert (r.loc[outage, ["voltage_v", "current_a", "power_factor"]] == 0).all().all()
    assert (gt.loc[outage, ds.appliances].fillna(0) == 0).all().all()
    big_gaps = 0
    for _, d in r.groupby("device_id"):
        big_gaps += int((d["timestamp"].diff().dt.total_seconds() >= 120).sum())
    assert 6 <= big_gaps <= 40  # about 4 per device-day (Poisson; overlapping gaps merge)


def test_timeline_places_local_times_across_a_dst_change() -> None:
    tl = Timeline.build(pd.Timestamp("2026-03-28T00:00:00Z"), 2 * DAY_N, INTERVAL_S, "Europe/London")
    seven_am_sunday = 86_400 + 7 * 3600  # clocks went forward at 01:00 UTC that night
    i = int(tl.index_at(np.array([seven_am_sunday]))[0])
    assert pd.Timestamp("2026-03-28T00:00:00Z") + pd.Timedelta(seconds=i * INTERVAL_S) == pd.Timestamp(
        "2026-03-29T06:00:00Z"
    )


def test_bad_window_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an ISO 8601"):
        simulate_fleet(tmp_path / "x", params(devices=1), start="next tuesday", days=1, interval_s=5)
    with pytest.raises(ConfigError, match="no reading"):
        simulate_fleet(tmp_path / "x", params(devices=1), start=START, days=0, interval_s=5)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ CLI and plot
def test_cli_simulate_help_and_tiny_run(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["data", "simulate", "--help"]).exit_code == 0
    out = tmp_path / "cli"
    res = runner.invoke(
        app,
        [
            "data",
            "simulate",
            "--out",
            str(out),
            "--devices",
            "2",
            "--days",
            "0.1",
            "--seed",
            "3",
            "--params",
            str(REPO / "params.yaml"),
        ],
    )
    assert res.exit_code == 0, res.output
    ds = Dataset(out)
    assert ds.device_ids == ["sim-0000", "sim-0001"]
    assert ds.manifest.provenance["params"]["seed"] == 3
    assert 0 < len(ds.readings()) <= 2 * round(0.1 * DAY_N)


def test_plot_device_day_renders_a_png(fleet: Dataset, tmp_path: Path) -> None:
    fig = plot_device_day(fleet.root, "sim-0000", "2026-01-05")
    png = tmp_path / "day.png"
    fig.savefig(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes[0].collections) > 0  # the stacked appliances
