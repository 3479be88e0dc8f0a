"""Validation with Great Expectations: one corrupted copy per check must fail for the right reason.

Each test corrupts a clean square-wave dataset (conftest's make_dataset: 3 devices, 5 s, base load 80 W,
fridge 100 W, kettle 2200 W, rated max 10 kW) at a known device and row, then asserts that the check's name,
the device and the row appear in the result, and that no unrelated "fail" check fired.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from airwatt.config import Params, load_params
from airwatt.dataset import DatasetWriter, DeviceInfo
from airwatt.dataset.io import frame_to_table
from airwatt.validation import ValidationResult, validate_dataset

REPO = Path(__file__).resolve().parents[1]
HOURS = 12
ROWS_PER_DEVICE = HOURS * 3600 // 5


@pytest.fixture(scope="module")
def params() -> Params:
    return load_params(REPO / "params.yaml")


def with_severity(params: Params, **severity: str) -> Params:
    """params with some checks' severities changed (e.g. cadence="fail")."""
    cfg = params.validate_
    new = cfg.model_copy(update={"severity": {**cfg.severity, **severity}})
    return params.model_copy(update={"validate_": new})


@pytest.fixture
def clean(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset("clean", devices=3, hours=HOURS)


def corrupt(src: Path, table: str, edit: Callable[[pd.DataFrame], pd.DataFrame]) -> Path:
    """A copy of dataset ``src`` with ``table`` (readings, ground_truth, labels) rewritten by ``edit``.

    Columns keep their Parquet type unless ``edit`` changed their dtype (then the new dtype is written).
    """
    dst = src.with_name(src.name + f"-bad-{table}")
    shutil.copytree(src, dst)
    path = dst / f"{table}.parquet"
    original = pq.read_schema(path)
    before = pq.read_table(path).to_pandas()
    df = edit(before.copy())
    fields = [
        original.field(c)
        if c in original.names and df[c].dtype == before[c].dtype
        else pa.field(c, pa.from_numpy_dtype(df[c].dtype))
        for c in df.columns
    ]
    pq.write_table(frame_to_table(df, pa.schema(fields)), path)
    return dst


def row_of(device_index: int, i: int) -> int:
    """Row number in readings.parquet of the i-th reading of device ``device_index`` (sorted by device)."""
    return device_index * ROWS_PER_DEVICE + i


def failed_names(result: ValidationResult) -> set[str]:
    return {c.name for c in result.checks if not c.success}


def assert_fails_for(result: ValidationResult, check: str, *, device: str, row: str | None = None) -> str:
    """The check failed, names the device (and the row), and the text shows it; returns the text."""
    outcome = result.check(check)
    assert not outcome.success, result.format_text()
    assert device in outcome.devices, (outcome.devices, result.format_text())
    text = result.format_text()
    assert check in text and device in text
    if row is not None:
        assert row in text, text
    return text


# ---------------------------------------------------------------------------------------------- clean
@pytest.mark.slow
def test_clean_dataset_passes_writes_docs_summary_and_publishes(
    clean: Path, params: Params, tmp_path: Path
) -> None:
    docs, summary, pub = tmp_path / "docs", tmp_path / "metrics" / "validate.json", tmp_path / "published"
    result = validate_dataset(clean, params, docs_dir=docs, summary_path=summary, publish_to=pub)
    assert result.success, result.format_text()
    assert failed_names(result) == set()
    assert "PASSED" in result.format_text()
    index = (docs / "index.html").read_text()
    assert "airwatt.readings" in index and "airwatt.labels" in index
    metrics = json.loads(summary.read_text())
    assert metrics["success"] is True
    assert metrics["checks"]["gap_fraction"]["success"] is True
    assert metrics["per_device"]["d-0000"]["gap_fraction"] == 0
    assert metrics["per_device"]["d-0000"]["outage_fraction"] == 0
    assert sorted(p.name for p in pub.iterdir()) == sorted(p.name for p in clean.iterdir())
    assert pq.read_table(pub / "readings.parquet").num_rows == 3 * ROWS_PER_DEVICE


# ---------------------------------------------------------------------------------------------- schema
def test_missing_column_fails_schema(clean: Path, params: Params) -> None:
    bad = corrupt(clean, "readings", lambda df: df.drop(columns=["power_factor"]))
    result = validate_dataset(bad, params)
    assert not result.success
    assert failed_names(result) == {"schema"}
    assert "power_factor" in result.format_text()


def test_missing_power_column_fails_schema_and_skips_derived_checks(clean: Path, params: Params) -> None:
    bad = corrupt(clean, "readings", lambda df: df.drop(columns=["power_w"]))
    result = validate_dataset(bad, params)
    assert not result.success
    assert "power_w" in result.format_text()
    assert result.check("schema").not_run is None and not result.check("schema").success
    assert result.check("gap_fraction").not_run is not None
    assert "not run: readings.parquet" in result.format_text()


def test_wrong_dtype_fails_schema(clean: Path, params: Params) -> None:
    bad = corrupt(clean, "readings", lambda df: df.astype({"power_w": "float64"}))
    result = validate_dataset(bad, params)
    assert not result.success
    assert "schema" in failed_names(result)
    assert "power_w of type float32" in result.format_text()
    assert "observed float64" in result.format_text()


def test_device_missing_from_manifest_fails_schema(clean: Path, params: Params) -> None:
    def rename(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[df["device_id"] == "d-0002", "device_id"] = "d-9999"
        return df

    result = validate_dataset(corrupt(clean, "readings", rename), params)
    assert_fails_for(result, "schema", device="d-9999", row=f"readings.parquet row {row_of(2, 0)}")


# ---------------------------------------------------------------------------------------------- time
def test_duplicate_timestamp_fails_timestamps_increasing(clean: Path, params: Params) -> None:
    i = row_of(1, 100)
    bad = corrupt(clean, "readings", lambda df: pd.concat([df.iloc[: i + 1], df.iloc[i:]], ignore_index=True))
    result = validate_dataset(bad, params)
    assert not result.success
    text = assert_fails_for(
        result, "timestamps_increasing", device="d-0001", row=f"readings.parquet row {i + 1}"
    )
    assert "2026-01-05T00:08:20Z" in text  # the duplicated reading: 100 x 5 s after midnight
    assert {c.name for c in result.failed_checks} == {"timestamps_increasing"}


def test_backwards_timestamp_fails_timestamps_increasing(clean: Path, params: Params) -> None:
    i = row_of(2, 500)

    def swap(df: pd.DataFrame) -> pd.DataFrame:
        ts = df["timestamp"].copy()
        ts.iloc[[i, i + 1]] = ts.iloc[[i + 1, i]].to_numpy()
        return df.assign(timestamp=ts)

    result = validate_dataset(corrupt(clean, "readings", swap), params)
    assert_fails_for(result, "timestamps_increasing", device="d-0002", row=f"readings.parquet row {i + 1}")


def test_off_cadence_is_a_warning_until_made_fail(clean: Path, params: Params) -> None:
    def jitter(df: pd.DataFrame) -> pd.DataFrame:
        dev = df["device_id"] == "d-0001"
        odd = dev & (np.arange(len(df)) % 2 == 1)
        df.loc[odd, "timestamp"] = df.loc[odd, "timestamp"] + pd.Timedelta(seconds=2.5)
        return df

    bad = corrupt(clean, "readings", jitter)
    warned = validate_dataset(bad, params)
    assert warned.success, "cadence is severity warn in params.yaml: reported, not failing"
    text = assert_fails_for(warned, "cadence", device="d-0001", row=f"readings.parquet row {row_of(1, 1)}")
    assert "WARN cadence" in text
    failed = validate_dataset(bad, with_severity(params, cadence="fail"))
    assert not failed.success
    assert [c.name for c in failed.failed_checks] == ["cadence"]


def test_gap_fraction_over_threshold_names_device(clean: Path, params: Params) -> None:
    start, stop = row_of(2, 1000), row_of(2, 1000 + ROWS_PER_DEVICE // 5)  # 20 % of the device's slots
    bad = corrupt(clean, "readings", lambda df: df.drop(index=range(start, stop)).reset_index(drop=True))
    result = validate_dataset(bad, with_severity(params, gap_fraction="fail"))
    assert not result.success
    assert_fails_for(result, "gap_fraction", device="d-0002", row=f"readings.parquet row {start}")
    assert result.device_stats["d-0002"]["gap_fraction"] == pytest.approx(0.2, abs=1e-3)
    assert result.device_stats["d-0001"]["gap_fraction"] == 0
    assert "d-0001" not in result.check("gap_fraction").devices


def test_null_power_counts_as_gap(clean: Path, params: Params) -> None:
    def blank(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row_of(0, 0) : row_of(0, ROWS_PER_DEVICE // 4), "power_w"] = np.nan
        return df

    result = validate_dataset(corrupt(clean, "readings", blank), params)
    assert_fails_for(result, "gap_fraction", device="d-0000")
    assert result.device_stats["d-0000"]["gap_fraction"] == pytest.approx(0.25, abs=1e-3)


# ---------------------------------------------------------------------------------------------- power
@pytest.mark.parametrize("value", [-5.0, np.inf, 20000.0, -np.inf])
def test_power_out_of_range_fails(clean: Path, params: Params, value: float) -> None:
    i = row_of(1, 321)

    def poke(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[i, "power_w"] = value
        return df

    result = validate_dataset(corrupt(clean, "readings", poke), params)
    assert not result.success
    assert_fails_for(result, "power_range", device="d-0001", row=f"readings.parquet row {i}")
    assert {c.name for c in result.failed_checks} == {"power_range"}


def test_outage_rows_flagged(clean: Path, params: Params) -> None:
    def outage(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row_of(0, 2000) : row_of(0, 2000) + ROWS_PER_DEVICE // 10, "power_w"] = 0.0
        return df

    result = validate_dataset(corrupt(clean, "readings", outage), params)
    assert result.success, "outage_rows is severity warn"
    assert_fails_for(result, "outage_rows", device="d-0000", row=f"readings.parquet row {row_of(0, 2000)}")
    assert result.device_stats["d-0000"]["outage_fraction"] == pytest.approx(0.1, abs=1e-3)


def test_submeter_sum_above_aggregate_fails(clean: Path, params: Params) -> None:
    i = row_of(2, 3000)

    def inflate(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[i : i + ROWS_PER_DEVICE // 20, "fridge"] = 5000.0  # 5 % of rows, far above the aggregate
        return df

    result = validate_dataset(
        corrupt(clean, "ground_truth", inflate), with_severity(params, submeter_sum="fail")
    )
    assert not result.success
    assert_fails_for(result, "submeter_sum", device="d-0002", row=f"ground_truth.parquet row {i}")


def test_negative_submetered_power_fails_power_range(clean: Path, params: Params) -> None:
    i = row_of(0, 42)

    def negative(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[i, "kettle"] = -20.0
        return df

    result = validate_dataset(corrupt(clean, "ground_truth", negative), params)
    assert not result.success
    assert_fails_for(result, "power_range", device="d-0000", row=f"ground_truth.parquet row {i}")


def test_readings_only_dataset_passes(params: Params, tmp_path: Path) -> None:
    """No sub-meters and no labels: the ground-truth and label suites run on empty tables and pass."""
    ts = pd.Series(pd.date_range("2026-01-05T00:00:00Z", periods=720, freq="5s"))
    readings = pd.DataFrame({"timestamp": ts, "power_w": 150.0 + 50.0 * (np.arange(720) % 60 < 20)})
    with DatasetWriter(tmp_path / "bare", name="bare", interval_s=5) as w:
        w.add_device(DeviceInfo(device_id="m-1"), readings)
    result = validate_dataset(tmp_path / "bare", params)
    assert result.success, result.format_text()
    assert failed_names(result) == set()
    assert result.rows == {"readings": 720, "ground_truth": 0, "labels": 0}


def test_severity_map_must_name_every_check(clean: Path, params: Params) -> None:
    from airwatt.errors import ConfigError

    cfg = params.validate_
    broken = params.model_copy(
        update={"validate_": cfg.model_copy(update={"severity": {"schema": "fail", "cadense": "warn"}})}
    )
    with pytest.raises(ConfigError, match="cadense"):
        validate_dataset(clean, broken)


# ---------------------------------------------------------------------------------------------- labels
def test_label_outside_data_span_fails(clean: Path, params: Params) -> None:
    def late(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[len(df) - 1, "end"] = df.loc[len(df) - 1, "end"] + pd.Timedelta(days=2)
        return df

    bad = corrupt(clean, "labels", late)
    labels = pq.read_table(bad / "labels.parquet").to_pandas()
    device = labels["device_id"].iloc[-1]
    result = validate_dataset(bad, params)
    assert not result.success
    assert_fails_for(result, "label_span", device=device, row=f"labels.parquet row {len(labels) - 1}")
    assert {c.name for c in result.failed_checks} == {"label_span"}


def test_label_end_before_start_fails(clean: Path, params: Params) -> None:
    def swap(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[3, ["start", "end"]] = df.loc[3, ["end", "start"]].to_numpy()
        return df

    bad = corrupt(clean, "labels", swap)
    device = pq.read_table(bad / "labels.parquet").to_pandas()["device_id"].iloc[3]
    result = validate_dataset(bad, params)
    assert not result.success
    assert_fails_for(result, "label_order", device=device, row="labels.parquet row 3")


@pytest.mark.parametrize("appliance", ["hovercraft", "microwave"])
def test_unknown_label_appliance_fails(clean: Path, params: Params, appliance: str) -> None:
    """ "hovercraft" is outside the vocabulary; "microwave" is in it but not in the device's inventory."""

    def rename(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[5, "appliance"] = appliance
        return df

    bad = corrupt(clean, "labels", rename)
    device = pq.read_table(bad / "labels.parquet").to_pandas()["device_id"].iloc[5]
    result = validate_dataset(bad, params)
    assert not result.success
    text = assert_fails_for(result, "label_known", device=device, row="labels.parquet row 5")
    assert appliance in text
    assert {c.name for c in result.failed_checks} == {"label_known"}


# ---------------------------------------------------------------------------------------------- outputs
@pytest.mark.slow
def test_failure_leaves_publish_untouched_and_still_writes_docs_and_summary(
    clean: Path, params: Params, tmp_path: Path
) -> None:
    pub = tmp_path / "published"
    pub.mkdir()
    (pub / "previous-good.txt").write_text("keep me")
    docs, summary = tmp_path / "docs", tmp_path / "validate.json"

    def negative(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[7, "power_w"] = -100.0
        return df

    result = validate_dataset(
        corrupt(clean, "readings", negative), params, docs_dir=docs, summary_path=summary, publish_to=pub
    )
    assert not result.success
    assert [p.name for p in pub.iterdir()] == ["previous-good.txt"]
    assert (pub / "previous-good.txt").read_text() == "keep me"
    assert "left untouched" in result.format_text()
    assert (docs / "index.html").is_file()
    metrics = json.loads(summary.read_text())
    assert metrics["success"] is False
    assert metrics["checks"]["power_range"]["success"] is False
    assert metrics["checks"]["power_range"]["unexpected_count"] == 1
    assert metrics["checks"]["schema"]["success"] is True


def test_cli_exit_codes_and_message(clean: Path, tmp_path: Path) -> None:
    from airwatt.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["data", "validate", str(clean), "--params", str(REPO / "params.yaml")])
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.output

    def negative(df: pd.DataFrame) -> pd.DataFrame:
        df.loc[row_of(2, 9), "power_w"] = -1.0
        return df

    bad = corrupt(clean, "readings", negative)
    summary = tmp_path / "s.json"
    out = runner.invoke(
        app, ["data", "validate", str(bad), "--params", str(REPO / "params.yaml"), "--summary", str(summary)]
    )
    assert out.exit_code == 1, out.output
    assert "FAIL power_range" in out.output
    assert f"readings.parquet row {row_of(2, 9)}" in out.output and "d-0002" in out.output
    assert json.loads(summary.read_text())["success"] is False


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_refit_30s_outages_are_flagged(shared_data: Path, params: Params, tmp_path: Path) -> None:
    """REFIT house 2, October 2013 (30 s means): meter outages are rows where every column reads 0 W."""
    raw = pd.read_csv(shared_data / "refit_house2_30s" / "REFIT_House2_2013-10.gzip", compression="gzip")
    all_zero = (raw.drop(columns="Time") == 0).all(axis=1)
    ts = pd.to_datetime(raw["Time"]).dt.tz_localize("UTC")  # local times treated as UTC: fine for this check
    readings = pd.DataFrame({"timestamp": ts, "power_w": raw["Aggregate"]})
    apps = ["kettle", "dishwasher", "washing_machine", "microwave"]
    gt = pd.DataFrame({"timestamp": ts, **{a: raw[c] for a, c in zip(apps, raw.columns[2:], strict=True)}})
    out = tmp_path / "refit"
    with DatasetWriter(out, name="refit-h2-2013-10", appliances=apps, interval_s=30) as w:
        w.add_device(
            DeviceInfo(device_id="refit-h2", appliances=apps, rated_max_w=23000), readings, ground_truth=gt
        )

    p = params.model_copy(update={"data": params.data.model_copy(update={"interval_s": 30})})
    result = validate_dataset(out, with_severity(p, outage_rows="fail"))
    assert not result.success
    first_outage = int(np.flatnonzero(all_zero.to_numpy())[0])
    assert_fails_for(result, "outage_rows", device="refit-h2", row=f"readings.parquet row {first_outage}")
    assert result.device_stats["refit-h2"]["outage_fraction"] == pytest.approx(all_zero.mean(), abs=1e-6)
    assert result.check("outage_rows").unexpected_percent == pytest.approx(100 * all_zero.mean(), abs=1e-3)
