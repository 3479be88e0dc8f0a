"""The fleet report job (airwatt.report.fleet, `airwatt fleet report`): local periods, the same results as
the single-device report, Hive partitions by month, resume after a kill, per-partition failure isolation,
on the in-process engine and on a real local Ray cluster."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from airwatt.config import load_params
from airwatt.errors import ConfigError, DataError
from airwatt.report.fleet import (
    MARKERS_DIR,
    fleet_report,
    local_periods,
    partition_key,
    read_fleet_table,
)
from airwatt.report.run import SCHEMAS, report_dataset
from airwatt.results import FleetSummary
from airwatt.simulate import simulate_fleet
from airwatt.timeutil import from_epoch_ms, to_epoch_ms

REPO = Path(__file__).resolve().parents[1]
PARAMS = load_params(REPO / "params.yaml")
SORT = ["device_id", "day", "appliance", "period", "kind", "start"]


def simulate(out: Path, devices: int, start: str, days: float) -> Path:
    cfg = PARAMS.simulate.model_copy(update={"devices": devices})
    simulate_fleet(out, cfg, start=start, days=days, interval_s=5.0, workers=1)
    return out


def ms(text: str) -> int:
    return int(to_epoch_ms(pd.DatetimeIndex([pd.Timestamp(text)]).tz_convert("UTC"))[0])


def sorted_table(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop(columns=[c for c in ("month", "week") if c in df.columns])
    return df.sort_values([c for c in SORT if c in df.columns]).reset_index(drop=True)


def fleet_cli(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airwatt.cli", "fleet", "report", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=REPO,
    )


def corrupt_device_readings(data: Path, device_id: str) -> None:
    """Overwrite the page headers of ``device_id``'s power_w column chunks in readings.parquet: reading that
    device fails (a bad sync file), every other device still reads."""
    path = data / "readings.parquet"
    meta = pq.ParquetFile(path).metadata
    col = meta.schema.names.index("power_w")
    hit = 0
    with path.open("r+b") as f:
        for g in range(meta.num_row_groups):
            stats = meta.row_group(g).column(meta.schema.names.index("device_id")).statistics
            if stats.min != device_id:
                continue
            chunk = meta.row_group(g).column(col)
            f.seek(chunk.data_page_offset)
            f.write(b"\xff" * 64)
            hit += 1
    assert hit, f"{device_id} has no row group in {path}"


def wait_for_ray_workers_to_exit(timeout_s: float = 120) -> None:
    import psutil

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [
            p
            for p in psutil.process_iter(["cmdline"])
            if "ray::FleetWorker" in " ".join(p.info["cmdline"] or [])
        ]
        if not alive:
            return
        time.sleep(0.2)
    raise AssertionError(f"Ray workers still running {timeout_s} s after their driver was killed")


# ------------------------------------------------------------------------------------------ periods
def test_local_months_and_iso_weeks_follow_the_device_timezone() -> None:
    # Two days across a month end in UTC: in Sydney (UTC+11) January ends 11 h before UTC's.
    start, end = ms("2026-01-30T00:00:00Z"), ms("2026-02-01T00:00:00Z")
    utc = local_periods(start, end, "UTC", "month")
    assert [p[0] for p in utc] == ["2026-01"]
    syd = local_periods(start, end, "Australia/Sydney", "month")
    assert [p[0] for p in syd] == ["2026-01", "2026-02"]
    assert syd[0][1] == start and syd[1][2] == end  # cut to the window
    assert syd[0][2] == syd[1][1] == ms("2026-02-01T00:00:00+11:00")  # local midnight
    weeks = local_periods(ms("2026-03-25T00:00:00Z"), ms("2026-04-08T00:00:00Z"), "Europe/London", "week")
    assert [w[0] for w in weeks] == ["2026-W13", "2026-W14", "2026-W15"]
    # Week 13 ends with the spring-forward Sunday: week 14 starts Monday 30 March 00:00 BST (23:00 UTC),
    # so the cut week 13 (from Wednesday 25 March 00:00 UTC) is 4 days 23 hours.
    assert weeks[1][1] == weeks[0][2] == ms("2026-03-29T23:00:00Z")
    assert weeks[0][2] - weeks[0][1] == (4 * 24 + 23) * 3_600_000
    assert partition_key("month") == "month" and partition_key("week") == "week"


# ----------------------------------------------------------------------------------- local engine
def test_fleet_partitions_equal_the_single_device_report(tmp_path: Path, trained_bundle: Path) -> None:
    data = simulate(tmp_path / "data", 3, "2026-01-10T00:00:00Z", 0.5)
    single = tmp_path / "single"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each fleet worker: one core (float sums then add up in the same order)
    try:
        report_dataset(trained_bundle, data, single, period="month", params=PARAMS.report, pages=False)
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "fleet"
    s = fleet_report(trained_bundle, data, out, period="month", params=PARAMS.report, engine="local")
    assert s.partitions.model_dump() == {"planned": 3, "done": 3, "skipped": 0, "failed": 0}
    for name in SCHEMAS:
        want = sorted_table(pd.read_parquet(single / f"{name}.parquet"))
        got = read_fleet_table(out, name)
        assert set(got["month"].astype(str)) <= {"2026-01"}, name
        pd.testing.assert_frame_equal(sorted_table(got), want, check_exact=True, obj=name)
    assert len(list((out / "days" / "month=2026-01").glob("*.parquet"))) == 3
    assert pq.read_table(out / "errors.parquet").num_rows == 0
    on_disk = FleetSummary.model_validate_json((out / "fleet.json").read_text())
    assert on_disk == s and on_disk.workers == 1 and (on_disk.device_months_per_core_hour or 0) > 0

    again = fleet_report(trained_bundle, data, out, period="month", params=PARAMS.report, engine="local")
    assert again.partitions.model_dump() == {"planned": 3, "done": 0, "skipped": 3, "failed": 0}
    changed = PARAMS.report.model_copy(update={"baseline_factor": 4.0})  # other params: everything redone
    third = fleet_report(trained_bundle, data, out, period="month", params=changed, engine="local")
    assert third.partitions.done == 3


def test_new_readings_redo_only_their_period_and_bad_outputs_are_refused(
    tmp_path: Path, trained_bundle: Path
) -> None:
    data = simulate(tmp_path / "data", 2, "2026-01-31T00:00:00Z", 2)  # January and February (UTC sites)
    out = tmp_path / "fleet"
    first = fleet_report(trained_bundle, data, out, period="month", params=PARAMS.report, engine="local")
    planned = first.partitions.planned
    assert planned >= 4 and first.partitions.done == planned
    # A corrected sync changes one device's February readings: only that partition is redone.
    readings = pd.read_parquet(data / "readings.parquet")
    dev = readings["device_id"].iloc[0]
    feb = (readings["device_id"] == dev) & (readings["timestamp"] >= pd.Timestamp("2026-02-01T12:00Z"))
    readings.loc[feb, "power_w"] += 10.0
    readings.to_parquet(data / "readings.parquet", index=False)
    again = fleet_report(trained_bundle, data, out, period="month", params=PARAMS.report, engine="local")
    assert again.partitions.done == 1 and again.partitions.skipped == planned - 1

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an earlier fleet report"):
        fleet_report(trained_bundle, data, tmp_path / "other", period="month", params=PARAMS.report)
    with pytest.raises(DataError, match="not in the dataset"):
        fleet_report(trained_bundle, data, out, period="month", params=PARAMS.report, devices=["nope"])
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"

    # Without a dataset window, a device's span is its readings': one without any has nothing to report.
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["start"] = manifest["end"] = None
    (data / "manifest.json").write_text(json.dumps(manifest))
    readings[readings["device_id"] != dev].to_parquet(data / "readings.parquet", index=False)
    with pytest.raises(DataError, match="no partition to report"):
        fleet_report(
            trained_bundle, data, tmp_path / "none", period="month", params=PARAMS.report, devices=[dev]
        )
    windowless = fleet_report(trained_bundle, data, tmp_path / "rest", period="month", params=PARAMS.report)
    assert windowless.partitions.done == windowless.partitions.planned >= 1


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_killed_job_redoes_only_the_unfinished_partitions(
    tmp_path: Path, trained_bundle: Path, engine: str
) -> None:
    data = simulate(tmp_path / "data", 4, "2026-01-05T00:00:00Z", 14)  # 4 devices x 2-3 ISO weeks
    out = tmp_path / "fleet"
    args = ["--data", data, "--model", trained_bundle, "--out", out, "--period", "week", "--engine", engine]
    proc = subprocess.Popen(
        [sys.executable, "-m", "airwatt.cli", "fleet", "report", *map(str, args)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    markers = out / MARKERS_DIR
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(markers.rglob("*.json"))) < 2:
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for_ray_workers_to_exit()  # a Ray worker may finish the partition it holds: that one is done too
    finished = {p.relative_to(markers): p.stat().st_mtime_ns for p in markers.rglob("*.json")}
    assert len(finished) >= 2 and not (out / "fleet.json").exists()

    rerun = fleet_cli(*args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    s = json.loads((out / "fleet.json").read_text())
    n = s["partitions"]
    assert n["skipped"] == len(finished) and n["done"] == n["planned"] - len(finished) > 0
    for rel, mtime in finished.items():  # the finished partitions were not rewritten
        assert (markers / rel).stat().st_mtime_ns == mtime
    clean = tmp_path / "clean"
    fleet_report(trained_bundle, data, clean, period="week", params=PARAMS.report, engine="local")
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(
            sorted_table(read_fleet_table(out, name)), sorted_table(read_fleet_table(clean, name)), obj=name
        )


# ------------------------------------------------------------------------------------------- on Ray
@pytest.mark.slow
def test_ray_cluster_job_isolates_a_failing_device_and_resumes(tmp_path: Path, trained_bundle: Path) -> None:
    data = simulate(tmp_path / "data", 3, "2026-01-31T00:00:00Z", 2)
    bad = "sim-0001"
    corrupt_device_readings(data, bad)
    out = tmp_path / "fleet"
    args = ["--data", data, "--model", trained_bundle, "--out", out, "--engine", "ray", "--workers", "2"]
    first = fleet_cli(*args)
    assert first.returncode == 3, first.stderr[-3000:]  # some partitions failed, the job finished
    assert "failed: see" in first.stderr
    s = json.loads((out / "fleet.json").read_text())
    n = s["partitions"]
    assert s["engine"] == "ray" and s["workers"] == 2 and len(s["peak_rss_mib_per_worker"]) == 2
    errors = pd.read_parquet(out / "errors.parquet")
    assert set(errors["device_id"]) == {bad} and n["failed"] == len(errors) >= 1
    assert n["done"] == n["planned"] - n["failed"] and n["done"] >= 4
    assert errors["error"].str.len().min() > 0 and set(errors["period"]) <= {"2026-01", "2026-02"}
    days = read_fleet_table(out, "days")
    assert bad not in set(days["device_id"]) and set(days["month"].astype(str)) == {"2026-01", "2026-02"}

    # The same partitions on the in-process engine: identical tables.
    local = tmp_path / "local"
    fleet_report(trained_bundle, data, local, period="month", params=PARAMS.report, engine="local")
    for name in SCHEMAS:
        pd.testing.assert_frame_equal(
            sorted_table(read_fleet_table(out, name)),
            sorted_table(read_fleet_table(local, name)),
            check_exact=True,
            obj=name,
        )

    again = fleet_cli(*args)
    assert again.returncode == 3
    n2 = json.loads((out / "fleet.json").read_text())["partitions"]
    assert n2 == {"planned": n["planned"], "done": 0, "skipped": n["done"], "failed": n["failed"]}


def test_day_boundaries_of_the_partitions_cover_the_window_once() -> None:
    start, end = ms("2026-01-20T00:00:00Z"), ms("2026-03-10T00:00:00Z")
    for tz in ("UTC", "America/New_York", "Asia/Kolkata"):
        parts = local_periods(start, end, tz, "month")
        assert parts[0][1] == start and parts[-1][2] == end
        assert all(a[2] == b[1] for a, b in itertools.pairwise(parts))
        firsts = from_epoch_ms(pd.Series([p[1] for p in parts[1:]]).to_numpy()).tz_convert(tz)
        assert all(t.day == 1 and t.hour == 0 and t.minute == 0 for t in firsts)
