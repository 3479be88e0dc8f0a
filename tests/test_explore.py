"""airwatt.explore, the notebooks' building blocks, on small datasets with known answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import REPO, square_wave_device
from mlflow import MlflowClient

from airwatt import explore
from airwatt.appliances import APPLIANCES
from airwatt.config import load_params
from airwatt.dataset import Dataset, DatasetWriter, DeviceInfo
from airwatt.evaluate import evaluate_bundle
from airwatt.labels import derive_labels
from airwatt.models import ModelBundle

START = pd.Timestamp("2026-01-05T00:00:00Z")
APPS = ["fridge", "kettle"]


@pytest.fixture
def two_days(tmp_path: Path) -> Dataset:
    """Two devices over 48 h (UTC window): "utc" misses a power value from 2026-01-06 10:00 to 11:00 (rows
    kept, power null); "berlin" (UTC+1 in January) has no rows from 2026-01-05 06:00 to 12:00 UTC."""
    with DatasetWriter(
        tmp_path / "two-days",
        name="two-days",
        appliances=APPS,
        interval_s=5,
        start=START,
        end=START + pd.Timedelta(hours=48),
        provenance={"source": "test"},
    ) as w:
        for dev, tz in (("utc", "UTC"), ("berlin", "Europe/Berlin")):
            readings, gt = square_wave_device(dev, hours=48)
            hours = (readings["timestamp"] - START) / pd.Timedelta(hours=1)
            if dev == "utc":
                readings.loc[(hours >= 34) & (hours < 35), "power_w"] = np.nan
            else:
                gone = (hours >= 6) & (hours < 12)
                readings, gt = readings[~gone], gt[~gone]
            labels = derive_labels(gt, APPS, APPLIANCES, 5)
            info = DeviceInfo(device_id=dev, timezone=tz, appliances=APPS, has_ground_truth=True)
            w.add_device(info, readings, ground_truth=gt, labels=labels)
    return Dataset(tmp_path / "two-days")


def test_coverage_is_judged_per_local_day_and_counts_null_power_as_missing(two_days: Dataset) -> None:
    cov = explore.coverage_by_day(two_days)
    assert cov.loc["utc", "2026-01-05"] == pytest.approx(1.0)
    assert cov.loc["utc", "2026-01-06"] == pytest.approx(23 / 24)  # one hour of null power
    assert np.isnan(cov.loc["utc", "2026-01-07"])  # no such local day in UTC
    # Berlin's first local day starts at 01:00 (23 h of the window), six of them without rows.
    assert cov.loc["berlin", "2026-01-05"] == pytest.approx(17 / 23)
    assert cov.loc["berlin", "2026-01-06"] == pytest.approx(1.0)
    assert cov.loc["berlin", "2026-01-07"] == pytest.approx(1.0)  # its last hour, complete

    devices = explore.device_table(two_days)
    assert devices.loc["utc", "coverage"] == pytest.approx(47 / 48)
    assert devices.loc["berlin", "coverage"] == pytest.approx(42 / 48)
    assert devices.loc["berlin", "readings"] == 42 * 720
    assert devices.loc["berlin", "timezone"] == "Europe/Berlin"


def test_the_default_day_is_the_first_whole_well_covered_local_day(two_days: Dataset) -> None:
    assert explore.first_complete_day(two_days, "utc") == "2026-01-05"
    assert explore.first_complete_day(two_days, "berlin") == "2026-01-06"  # the 5th is partial and gappy


def test_pick_device_prefers_a_held_out_test_device(two_days: Dataset, tmp_path: Path) -> None:
    split = tmp_path / "split.json"
    split.write_text('{"train": ["utc"], "val": [], "test": ["gone", "berlin"]}')
    assert explore.pick_device(two_days, split) == "berlin"
    assert explore.pick_device(two_days, tmp_path / "missing.json") == "berlin"  # the dataset's first


def test_day_labels_are_cut_to_the_local_day(two_days: Dataset) -> None:
    labels = explore.day_labels(two_days, "utc", "2026-01-05")
    kettle = labels[labels["appliance"] == "kettle"]
    assert len(kettle) == 1 and kettle["duration_s"].iloc[0] == 180  # 3 min at 07:00
    assert kettle["start"].iloc[0] == pd.Timestamp("2026-01-05T07:00:00Z")
    fridge = labels[labels["appliance"] == "fridge"]
    assert fridge["duration_s"].sum() == pytest.approx(8 * 3600, abs=24 * 5)  # 20 min of every hour
    berlin = explore.day_labels(two_days, "berlin", "2026-01-06")
    assert berlin["start"].min() >= pd.Timestamp("2026-01-06T00:00:00", tz="Europe/Berlin")
    assert berlin["end"].max() <= pd.Timestamp("2026-01-07T00:00:00", tz="Europe/Berlin")
    assert str(berlin["start"].dt.tz) == "Europe/Berlin"
    fig = explore.plot_label_intervals(labels, "labels")
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["fridge", "kettle"]


@pytest.mark.slow  # trains the session's small model when no other test did
def test_the_device_day_is_what_airwatt_evaluate_sees(
    make_dataset: Callable[..., Path], trained_bundle: Path
) -> None:
    """On a one-day UTC dataset the notebook's day is the evaluation's device: same grid, same metrics."""
    data = make_dataset("one-day", devices=1, hours=24)
    ds, bundle = Dataset(data), ModelBundle.load(trained_bundle)
    dd = explore.predict_device_day(ds, bundle, "d-0000", "2026-01-05")
    assert len(dd.frame) == 17280 and dd.frame.index[0] == START
    assert sorted(dd.appliances) == APPS  # the model's appliances in the device's inventory
    readings = ds.readings(["d-0000"])
    np.testing.assert_allclose(dd.frame["aggregate_w"].to_numpy(), readings["power_w"].to_numpy())
    np.testing.assert_allclose(
        dd.frame["kettle_truth_w"].to_numpy(), square_wave_device("d-0000")[1]["kettle"]
    )
    assert dd.frame["kettle_truth_on"].sum() == 180 / 5
    report = evaluate_bundle(bundle, data)
    for app in APPS:
        expected = report.devices["d-0000"][app]
        for key, value in expected.model_dump().items():
            got = dd.metrics.loc[app, key]
            assert (value is None and np.isnan(got)) or got == pytest.approx(value), (app, key)
    energy = explore.day_energy(dd)
    assert energy.loc["kettle", "truth_kwh"] == pytest.approx(2200 * 180 / 3.6e6)
    assert energy.loc["fridge", "truth_on_h"] == pytest.approx(8.0)


@pytest.mark.slow  # trains the session's small model when no other test did
def test_the_figure_menu_shows_one_appliance_at_a_time(
    make_dataset: Callable[..., Path], trained_bundle: Path
) -> None:
    ds = Dataset(make_dataset("one-day", devices=1, hours=24))
    dd = explore.predict_device_day(ds, ModelBundle.load(trained_bundle), "d-0000", "2026-01-05")
    fig = explore.disaggregation_figure(dd)
    names = [t.name for t in fig.data]
    assert names[0] == "aggregate" and len(names) == 1 + explore.PER_APPLIANCE * len(APPS)
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == dd.appliances and sorted(dd.appliances) == APPS
    for b in buttons:
        shown = [n for n, v in zip(names, b.args[0]["visible"], strict=True) if v]
        assert shown == ["aggregate", *[n for n in names if n.startswith(f"{b.label} ")]]
        assert b.label in b.args[1]["title.text"] and "MAE" in b.args[1]["title.text"]
    assert all(len(t.y) == 17280 and t.dx == 5000 for t in fig.data)
    assert fig.data[0].x0 == "2026-01-05T00:00:00"  # local wall-clock time of the first slot


@pytest.mark.slow
def test_expectation_table_has_a_row_per_expectation(make_dataset: Callable[..., Path]) -> None:
    from airwatt.validation import validate_dataset

    result = validate_dataset(make_dataset(devices=2, hours=2), load_params(REPO / "params.yaml"))
    table = explore.expectation_table(result)
    assert len(table) == sum(len(c.expectations) for c in result.checks)
    assert set(table["check"]) == {c.name for c in result.checks if c.expectations}
    assert table["success"].all() and "expect_column_values_to_be_between" in set(table["expectation"])


@pytest.mark.slow
def test_runs_and_registry_tables(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri, uri)
    exp = c.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    run_ids = []
    for losses in ([3.0, 2.0, 1.5], [2.5, 2.4]):
        run = c.create_run(exp)
        for epoch, loss in enumerate(losses):
            step = 10 * (epoch + 1)  # Lightning logs at the global step, with an "epoch" metric beside
            c.log_metric(run.info.run_id, "epoch", epoch, step=step)
            c.log_metric(run.info.run_id, "val/loss", loss, step=step)
        run_ids.append(run.info.run_id)
    hist = explore.metric_histories(run_ids, ["val/loss", "val/f1"], uri)
    first = hist[hist["run_id"] == run_ids[0]]
    assert first["epoch"].tolist() == [0, 1, 2] and first["value"].tolist() == [3.0, 2.0, 1.5]
    assert set(hist["key"]) == {"val/loss"}  # val/f1 was never logged

    assert explore.registered_versions("m", uri).empty
    c.create_registered_model("m")
    for run_id in run_ids:
        c.create_model_version("m", (tmp_path / "artifacts").as_uri(), run_id=run_id)
    c.set_registered_model_alias("m", "champion", "1")
    c.set_registered_model_alias("m", "candidate", "2")
    c.set_model_version_tag("m", "2", "promotion", "mean.f1 0.3 vs champion 0.5")
    versions = explore.registered_versions("m", uri)
    assert versions.index.tolist() == [2, 1]
    assert versions.loc[1, "aliases"] == "champion" and versions.loc[2, "aliases"] == "candidate"
    assert versions.loc[2, "run_id"] == run_ids[1] and versions.loc[2, "promotion"].startswith("mean.f1")
    mlflow.set_tracking_uri(None)


def test_report_week_is_the_iso_week_of_a_day_or_the_reports_choice() -> None:
    from airwatt.report import DeviceSeries, device_report

    n = 10 * 86_400 // 60  # ten days at 60 s from Monday 2026-01-05, nothing predicted
    series = DeviceSeries.from_arrays(
        START.value // 1_000_000 + np.arange(n, dtype=np.int64) * 60_000,
        np.full(n, 100.0),
        None,
        np.zeros((n, 1), np.float32),
        np.zeros((n, 1), bool),
        appliances=["fridge"],
        interval_s=60,
        timezone="UTC",
    )
    report = device_report(series, load_params(REPO / "params.yaml").report, period="week")
    chosen = explore.report_week(report)
    assert chosen.label == "week 2026-W02" and chosen.days[0].isoformat() == "2026-01-05"  # the whole week
    asked = explore.report_week(report, "2026-01-14")
    assert asked.label == "week 2026-W03" and [d.isoformat() for d in asked.days[::6]] == [
        "2026-01-12",
        "2026-01-18",
    ]
