"""Appliance vocabulary and on/off labels from sub-metered power, on square waves with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from airwatt.appliances import APPLIANCES, ApplianceSpec, normalize_appliance
from airwatt.errors import DataError
from airwatt.labels import derive_labels, on_intervals_ms, status_from_intervals


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("washer dryer", "washing_machine"),
        ("WashingMachine", "washing_machine"),
        ("washing_machine", "washing_machine"),
        ("dish washer", "dishwasher"),
        ("Dishwasher", "dishwasher"),
        ("fridge", "fridge"),
        ("CE appliance", "consumer_electronics"),
        ("electric space heater", "space_heater"),
        ("waste disposal unit", "waste_disposal"),
        ("Kettle", "kettle"),
    ],
)
def test_names_from_public_datasets_map_to_one_vocabulary(raw: str, canonical: str) -> None:
    assert normalize_appliance(raw) == canonical


def test_unknown_appliance_names_the_source() -> None:
    with pytest.raises(DataError, match=r"house_1/labels.dat: unknown appliance name 'flux capacitor'"):
        normalize_appliance("flux capacitor", where="house_1/labels.dat")


def test_standard_thresholds_match_the_published_table() -> None:
    # Kelly & Knottenbelt (seconds): on W, min on, min off, max W
    assert APPLIANCES["kettle"] == ApplianceSpec("kettle", 2000, 12, 0, 3100, "kelly2015")
    assert APPLIANCES["washing_machine"].min_on_s == 1800 and APPLIANCES["washing_machine"].min_off_s == 160
    assert APPLIANCES["fridge"].on_threshold_w == 50


def _ms(seconds: np.ndarray) -> np.ndarray:
    return (np.asarray(seconds) * 1000).astype(np.int64)


def test_short_off_gaps_merge_and_short_runs_drop() -> None:
    fridge = APPLIANCES["fridge"]  # on >= 50 W, min on 60 s, min off 12 s
    t = np.arange(0, 600, 5)
    p = np.zeros(len(t))
    p[(t >= 50) & (t < 150)] = 100  # 100 s on
    p[(t >= 160) & (t < 200)] = 100  # 10 s off-gap (< 12 s) -> merged with the previous run
    p[(t >= 300) & (t < 330)] = 100  # 30 s on (< 60 s) -> dropped
    starts, ends = on_intervals_ms(_ms(t), p, fridge, interval_s=5)
    assert starts.tolist() == [50_000] and ends.tolist() == [200_000]


def test_threshold_is_inclusive_and_nan_counts_as_off() -> None:
    spec = ApplianceSpec("x", 100, 0, 0, 1000)
    t = np.arange(0, 50, 5)
    p = np.array([0, 100, 100, np.nan, 99.9, 100, 0, 0, 0, 200], dtype=float)
    starts, ends = on_intervals_ms(_ms(t), p, spec, interval_s=5)
    assert starts.tolist() == [5000, 25000, 45000]
    assert ends.tolist() == [15000, 30000, 50000]  # the last run ends one interval after its last reading


def test_status_round_trips_through_intervals() -> None:
    ts = pd.date_range("2026-01-05", periods=720, freq="5s", tz="UTC")
    fridge_w = np.where((np.arange(720) * 5 % 1800) < 600, 120.0, 2.0)  # 10 min on every 30 min
    gt = pd.DataFrame({"timestamp": ts, "fridge": fridge_w})
    labels = derive_labels(gt, ["fridge"], APPLIANCES, interval_s=5)
    assert len(labels) == 2 and (labels["source"] == "sub-meter").all()
    assert (labels["end"] - labels["start"] == pd.Timedelta(minutes=10)).all()
    status = status_from_intervals(gt["timestamp"], labels["start"], labels["end"])
    assert np.array_equal(status, fridge_w >= 50)


def test_a_connectivity_gap_splits_an_on_run() -> None:
    fridge = APPLIANCES["fridge"]
    # On for 5 min, then 3 h without readings, then on for 5 min: two labels, not one 3-hour label.
    t = np.concatenate((np.arange(0, 300, 5), np.arange(3 * 3600, 3 * 3600 + 300, 5)))
    p = np.full(len(t), 100.0)
    starts, ends = on_intervals_ms(_ms(t), p, fridge, interval_s=5)
    assert starts.tolist() == [0, 3 * 3600 * 1000]
    assert ends.tolist() == [300_000, (3 * 3600 + 300) * 1000]
