"""The on-disk dataset format: round trip, filtered reads, atomic replacement, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airwatt.dataset import Dataset, DatasetWriter, DeviceInfo, coerce_readings, read_manifest
from airwatt.errors import DataError


def test_round_trip_keeps_rows_dtypes_and_manifest(make_dataset) -> None:
    path = make_dataset(devices=3, hours=2)
    ds = Dataset(path)
    r = ds.readings()
    assert len(r) == 3 * 2 * 720
    assert str(r["timestamp"].dtype) == "datetime64[ms, UTC]"
    assert r.groupby("device_id")["timestamp"].is_monotonic_increasing.all()
    assert ds.manifest.tables["readings"].rows == len(r)
    assert ds.device_ids == ["d-0000", "d-0001", "d-0002"]
    gt = ds.ground_truth()
    assert set(gt.columns) == {"device_id", "timestamp", "fridge", "kettle"}
    labels = ds.labels()
    # fridge: on 20 min of every hour -> 2 intervals per device in 2 hours
    assert (labels[labels.appliance == "fridge"].groupby("device_id").size() == 2).all()


def test_filtered_read_returns_only_requested_device_and_window(make_dataset) -> None:
    ds = Dataset(make_dataset(devices=3, hours=3))
    r = ds.readings(devices=["d-0001"], start="2026-01-05T01:00:00Z", end="2026-01-05T02:00:00Z")
    assert set(r["device_id"]) == {"d-0001"}
    assert r["timestamp"].min() == pd.Timestamp("2026-01-05T01:00:00Z")
    assert r["timestamp"].max() == pd.Timestamp("2026-01-05T01:59:55Z")
    assert len(r) == 720
    lab = ds.labels(devices=["d-0001"], start="2026-01-05T01:10:00Z", end="2026-01-05T01:15:00Z")
    assert len(lab) == 1 and lab["start"].iloc[0] == pd.Timestamp("2026-01-05T01:00:00Z")


def test_failed_write_leaves_previous_dataset_untouched(make_dataset, tmp_path: Path) -> None:
    path = make_dataset(devices=2, hours=1)
    before = (path / "readings.parquet").read_bytes()
    bad = pd.DataFrame({"timestamp": ["2026-01-05T00:00:00Z", "not a time"], "power_w": [1.0, 2.0]})
    with pytest.raises(DataError, match=r"row 1.*timestamp.*not a time"), DatasetWriter(path, name="x") as w:
        w.add_device(DeviceInfo(device_id="d-9"), bad)
    assert (path / "readings.parquet").read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (
            pd.DataFrame({"device_id": ["a"], "timestamp": ["2026-01-01T00:00:00Z"]}),
            r"missing column.*power_w",
        ),
        (
            pd.DataFrame(
                {
                    "device_id": ["a", "a"],
                    "timestamp": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z"],
                    "power_w": ["1.5", "abc"],
                }
            ),
            r"row 1, column 'power_w': not a number: 'abc'",
        ),
        (
            pd.DataFrame(
                {
                    "device_id": ["a", "a"],
                    "timestamp": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:05"],
                    "power_w": [1, 2],
                }
            ),
            r"row 1, column 'timestamp': mixed timezones",
        ),
        (
            pd.DataFrame({"device_id": ["a"], "timestamp": ["2026-01-01 00:00:00"], "power_w": [1]}),
            r"no timezone",
        ),
    ],
)
def test_bad_readings_name_row_and_column(frame: pd.DataFrame, match: str) -> None:
    with pytest.raises(DataError, match=match):
        coerce_readings(frame, where="export.csv")


def test_offsets_are_converted_to_utc() -> None:
    df = coerce_readings(
        pd.DataFrame({"device_id": ["a"], "timestamp": ["2026-01-01T07:00:00+07:00"], "power_w": [1]})
    )
    assert df["timestamp"].iloc[0] == pd.Timestamp("2026-01-01T00:00:00Z")


def test_manifest_errors_name_the_file(tmp_path: Path, make_dataset) -> None:
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path)
    path = make_dataset(devices=1, hours=1)
    raw = json.loads((path / "manifest.json").read_text())
    raw["schema_version"] = "9.0"
    (path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"manifest.json.*schema_version '9.0'"):
        read_manifest(path)


def test_json_writes_typed_results_as_json_and_refuse_what_they_cannot_write(tmp_path: Path) -> None:
    """A pydantic result is written as its JSON form (not the repr that ``default=str`` made of it); an
    object with no JSON form is a TypeError naming its type, and the earlier file stays."""
    from airwatt.atomic import write_json_atomic
    from airwatt.results import SwitchMetrics

    target = tmp_path / "out.json"
    m = SwitchMetrics(
        switch_ons=3.0, detected=0.5, delay_median_s=None, delay_p90_s=None, false_switches_per_day=1.0
    )
    when = pd.Timestamp("2026-01-01", tz="UTC")
    write_json_atomic(target, {"m": m, "at": when, "n": np.int64(4), "path": tmp_path})
    doc = json.loads(target.read_text())
    assert doc == {"m": m.model_dump(mode="json"), "at": str(when), "n": 4, "path": str(tmp_path)}
    with pytest.raises(TypeError, match="cannot write a object as JSON"):
        write_json_atomic(target, {"x": object()})
    assert json.loads(target.read_text()) == doc
