"""The sync stage: folder / URL / simulator / importer sources, idempotent merges, errors naming the place."""

from __future__ import annotations

import functools
import http.server
import importlib.util
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from airwatt.config import Params, load_params
from airwatt.dataset import Dataset
from airwatt.errors import DataError
from airwatt.sync import Window, importer_window, sync

REPO = Path(__file__).resolve().parents[1]
START = pd.Timestamp("2026-01-05T00:00:00Z")
TABLES = ("readings.parquet", "ground_truth.parquet", "labels.parquet")


def module_ready(name: str) -> bool:
    """True when a package another engineer is writing exists (a bare folder is a namespace package)."""
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


def params_for(source: str, path: str | None = None, days: float = 1, **extra: Any) -> Params:
    overrides = {"sync.source": source, "sync.path": path, "sync.start": START.isoformat(), "sync.days": days}
    return load_params(REPO / "params.yaml", overrides={**overrides, **extra})


def readings_frame(device: str, start_h: float, hours: float, power_w: float = 100.0) -> pd.DataFrame:
    """5 s readings of one device from START + start_h, timestamps as ISO text with offset (as exported)."""
    n = int(hours * 720)
    ts = START + pd.Timedelta(hours=start_h) + pd.to_timedelta(np.arange(n) * 5, unit="s")
    return pd.DataFrame(
        {
            "device_id": device,
            "timestamp": [t.isoformat() for t in ts],
            "power_w": power_w + np.arange(n) % 7,
            "voltage_v": 230.0,
        }
    )


def write_export(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        df.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        df.to_json(path, orient="records", lines=True)
    return path


def label_frame(device: str, rows: list[tuple[str, float, float]], source: str = "annotator") -> pd.DataFrame:
    """Labels (appliance, start hour, end hour) as exported: ISO text."""
    return pd.DataFrame(
        {
            "device_id": device,
            "appliance": [r[0] for r in rows],
            "start": [(START + pd.Timedelta(hours=r[1])).isoformat() for r in rows],
            "end": [(START + pd.Timedelta(hours=r[2])).isoformat() for r in rows],
            "source": source,
            "annotator_id": "ann-1",
        }
    )


@pytest.fixture
def export_folder(tmp_path: Path) -> Path:
    """Two devices exported in three formats with overlaps, a repeated row, a row before the window and
    a label exported twice. Expected unique readings: a: 0-3 h (2160), b: 0-1 h (720)."""
    folder = tmp_path / "exports"
    a1 = readings_frame("a", 0, 2)
    a2 = readings_frame("a", 1, 2, power_w=500.0)  # overlaps a1 by one hour; newer file: its values win
    b = readings_frame("b", 0, 1)
    b = pd.concat([readings_frame("b", -0.5, 0.01), b, b.iloc[[10]]], ignore_index=True)  # before + repeat
    write_export(a1, folder / "2026-01-05" / "readings.csv")
    write_export(a2, folder / "2026-01-06" / "readings.parquet")
    write_export(b, folder / "2026-01-06" / "readings_b.jsonl")
    labels = label_frame("a", [("Kettle", 0.5, 0.6), ("washer dryer", 1.0, 1.5)])
    write_export(labels, folder / "2026-01-05" / "labels.csv")
    write_export(labels.iloc[[0]], folder / "2026-01-06" / "labels.jsonl")  # the same label again
    gt = pd.DataFrame({"device_id": "a", "timestamp": a1["timestamp"], "Kettle": 0.0})
    write_export(gt, folder / "2026-01-05" / "ground_truth.csv")
    (folder / "devices.json").write_text(
        json.dumps([{"device_id": "a", "site_type": "cafe", "timezone": "Asia/Ho_Chi_Minh"}])
    )
    return folder


def table_bytes(root: Path) -> dict[str, bytes]:
    return {t: (root / t).read_bytes() for t in TABLES}


def test_folder_sync_dedupes_overlaps_and_keeps_the_window(export_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "synced"
    manifest = sync(params_for("folder", str(export_folder)), out)
    ds = Dataset(out)
    r = ds.readings()
    assert not r.duplicated(["device_id", "timestamp"]).any()
    assert r.groupby("device_id").size().to_dict() == {"a": 3 * 720, "b": 720}
    assert r["timestamp"].min() >= START  # the row exported before the window is dropped
    # In the overlap hour the newer export (2026-01-06/readings.parquet) wins.
    overlap = r[(r.device_id == "a") & (r.timestamp >= START + pd.Timedelta(hours=1))]
    assert (overlap["power_w"] >= 500).all()
    labels = ds.labels()
    assert sorted(labels["appliance"]) == ["kettle", "washing_machine"]  # normalised, exported twice
    assert manifest.device("a").site_type == "cafe"
    assert manifest.device("b").site_type == "home"  # not in devices.json: defaults
    assert manifest.device("a").has_ground_truth and not manifest.device("b").has_ground_truth
    assert manifest.provenance["source"] == "folder"
    assert manifest.provenance["window"] == {"start": START.isoformat(), "end": "2026-01-06T00:00:00+00:00"}
    assert manifest.tables["readings"].rows == len(r)


def test_resync_adds_nothing_and_new_exports_add_only_new_rows(export_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "synced"
    params = params_for("folder", str(export_folder))
    sync(params, out)
    first = table_bytes(out)
    first_manifest = (out / "manifest.json").read_text()
    sync(params, out)
    assert table_bytes(out) == first
    assert (out / "manifest.json").read_text() == first_manifest

    # A new export that overlaps the old ones by 30 min and adds 30 min of new readings.
    write_export(readings_frame("a", 2.5, 1, power_w=500.0), export_folder / "2026-01-07" / "readings.csv")
    sync(params, out)
    counts = Dataset(out).readings().groupby("device_id").size().to_dict()
    assert counts == {"a": int(3.5 * 720), "b": 720}
    second = table_bytes(out)
    sync(params, out)
    assert table_bytes(out) == second


def test_resync_takes_devices_and_rows_from_the_source_only(export_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "synced"
    sync(params_for("folder", str(export_folder)), out)
    # Device b's export and devices.json disappear from the folder: b goes; a keeps the metadata it had.
    for f in export_folder.rglob("readings_b.jsonl"):
        f.unlink()
    (export_folder / "devices.json").unlink()
    m = sync(params_for("folder", str(export_folder)), out)
    assert set(Dataset(out).device_ids) == {"a"}
    assert m.device("a").site_type == "cafe"
    assert json.loads((out / "sync_report.json").read_text())["devices"]["gone"] == ["b"]
    # A window that starts 2 h later keeps only the rows inside it.
    later = params_for("folder", str(export_folder), **{"sync.start": "2026-01-05T02:00:00Z"})
    sync(later, out)
    r = Dataset(out).readings()
    assert r["timestamp"].min() == START + pd.Timedelta(hours=2)
    assert set(r["device_id"]) == {"a"}
    labels = Dataset(out).labels()
    assert labels.empty  # both labels ended before 02:00


# ------------------------------------------------------------------ re-syncs and Label Studio labels
def add_pulled(out: Path, device: str, task_id: int, start_h: float, end_h: float) -> pd.DataFrame:
    """What `airwatt label pull` adds for one task: a kettle on-interval and the reviewed window."""
    from airwatt.dataset import coerce_labels
    from airwatt.dataset.io import frame_to_table
    from airwatt.dataset.schema import LABELS_SCHEMA

    t0, t1 = START + pd.Timedelta(hours=start_h), START + pd.Timedelta(hours=end_h)
    rows = coerce_labels(
        pd.DataFrame(
            {
                "device_id": device,
                "appliance": "kettle",
                "start": [t0 + pd.Timedelta(minutes=5), t0],
                "end": [t0 + pd.Timedelta(minutes=8), t1],
                "source": ["annotator", "reviewed"],
                "annotator_id": "labeler@airwatt.local",
                "task_id": task_id,
            }
        )
    )
    ds = Dataset(out)
    labels = coerce_labels(pd.concat([ds.labels(), rows], ignore_index=True))
    pq.write_table(frame_to_table(labels, LABELS_SCHEMA), out / "labels.parquet")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["tables"]["labels"]["rows"] = len(labels)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return rows


def pulled_tasks(out: Path) -> dict[int, str]:
    """task id -> device of the Label Studio rows in labels.parquet."""
    labels = Dataset(out).labels()
    mine = labels[labels["task_id"].notna()]
    return {int(t): str(d) for t, d in zip(mine["task_id"], mine["device_id"], strict=True)}


def archived_tasks(out: Path) -> dict[int, str]:
    """task id -> reason, from sync_report.json, checked against archived_labels.parquet."""
    report = json.loads((out / "sync_report.json").read_text())["labels"]["archived"]
    listed = {int(i["task_id"]): i["reason"] for i in report["items"]}
    path = out / "archived_labels.parquet"
    stored = pd.read_parquet(path) if path.is_file() else pd.DataFrame({"task_id": [], "reason": []})
    assert {int(t): r for t, r in zip(stored["task_id"], stored["reason"], strict=True)} == listed
    return listed


def test_pulled_labels_stay_while_they_apply_and_are_archived_then_restored(
    export_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "synced"
    params = params_for("folder", str(export_folder))
    sync(params, out)
    add_pulled(out, "a", 1, 0.5, 1.0)
    add_pulled(out, "a", 2, 2.5, 3.0)
    add_pulled(out, "b", 3, 0.0, 0.5)
    with_labels = Dataset(out).labels().sort_values(["device_id", "task_id", "start", "source"])

    sync(params, out)  # nothing changed: every task stays
    assert pulled_tasks(out) == {1: "a", 2: "a", 3: "b"} and archived_tasks(out) == {}

    # A newer export rewrites a's 2.5-3 h (task 2's span) and b's export goes away.
    newer = export_folder / "2026-01-07" / "readings.csv"
    write_export(readings_frame("a", 2.5, 0.5, power_w=900.0), newer)
    b_export = next(export_folder.rglob("readings_b.jsonl"))
    b_bytes = b_export.read_bytes()
    b_export.unlink()
    sync(params, out)
    assert pulled_tasks(out) == {1: "a"}
    assert archived_tasks(out) == {2: "readings_changed", 3: "device_gone"}

    # The window moves past task 1.
    later = params_for("folder", str(export_folder), **{"sync.start": "2026-01-05T02:00:00Z"})
    sync(later, out)
    assert pulled_tasks(out) == {}
    assert archived_tasks(out) == {1: "outside_window", 2: "readings_changed", 3: "device_gone"}
    report = json.loads((out / "sync_report.json").read_text())
    assert report["labels"]["archived"]["rows"] == 6 and report["labels"]["kept"] == {"tasks": 0, "rows": 0}

    # Everything changed back: every task applies again and is restored, the archive is empty.
    newer.unlink()
    b_export.write_bytes(b_bytes)
    sync(params, out)
    assert archived_tasks(out) == {} and not (out / "archived_labels.parquet").exists()
    restored = Dataset(out).labels().sort_values(["device_id", "task_id", "start", "source"])
    pd.testing.assert_frame_equal(restored.reset_index(drop=True), with_labels.reset_index(drop=True))


SETTING_CHANGES = {
    "simulate.seed": ({"simulate.seed": 43}, {0: "readings_changed", 1: "readings_changed"}),
    "simulate.devices": ({"simulate.devices": 2}, {1: "device_gone"}),
    "sync.start": ({"sync.start": "2026-01-05T06:00:00Z"}, {0: "outside_window", 1: "outside_window"}),
    "sync.days": ({"sync.days": 0.0625}, {0: "readings_changed", 1: "outside_window"}),  # 1.5 h
}


@pytest.mark.slow
@pytest.mark.parametrize("change", [*SETTING_CHANGES, "sync.source"])
def test_a_resync_after_a_setting_changes_holds_only_the_new_sources_window(
    change: str, export_folder: Path, tmp_path: Path
) -> None:
    """Each setting sync reads, changed and synced again into the same folder (data/synced is persisted):
    the result is what a sync into an empty folder writes, plus the Label Studio labels that still apply;
    the others are archived with their reason. Changed back, the labels return."""
    if not module_ready("airwatt.simulate"):
        pytest.skip("airwatt.simulate is not in this checkout yet")
    base = {"simulate.devices": 3, "simulate.seed": 42}
    out = tmp_path / "synced"
    sync(params_for("simulator", days=0.5, **base), out)
    add_pulled(out, "sim-0000", 0, 0.5, 1.5)  # task 0 early on the first device
    add_pulled(out, "sim-0002", 1, 1.0, 2.0)  # task 1 on the last device
    before = Dataset(out).labels().sort_values(["device_id", "task_id", "start", "source"])

    if change == "sync.source":
        changed, expected = params_for("folder", str(export_folder)), {0: "device_gone", 1: "device_gone"}
    else:
        update, expected = SETTING_CHANGES[change]
        changed = params_for("simulator", days=update.get("sync.days", 0.5), **{**base, **update})
    sync(changed, out)
    fresh = tmp_path / "fresh"
    sync(changed, fresh)
    for table in ("readings.parquet", "ground_truth.parquet"):
        assert (out / table).read_bytes() == (fresh / table).read_bytes(), table
    assert Dataset(out).device_ids == Dataset(fresh).device_ids
    labels, fresh_labels = Dataset(out).labels(), Dataset(fresh).labels()
    from_source = labels[labels["task_id"].isna()].reset_index(drop=True)
    pd.testing.assert_frame_equal(from_source, fresh_labels.reset_index(drop=True))
    kept = {0, 1} - set(expected)
    assert set(pulled_tasks(out)) == kept
    assert archived_tasks(out) == expected

    sync(params_for("simulator", days=0.5, **base), out)  # the setting changed back
    assert archived_tasks(out) == {}
    after = Dataset(out).labels().sort_values(["device_id", "task_id", "start", "source"])
    pd.testing.assert_frame_equal(after.reset_index(drop=True), before.reset_index(drop=True))


def test_sync_logs_counts_per_device(export_folder: Path, tmp_path: Path, caplog) -> None:
    caplog.set_level("DEBUG", logger="airwatt.sync")
    sync(params_for("folder", str(export_folder)), tmp_path / "synced")
    # b: 720 in the window + 1 repeated row -> 721 read, 1 duplicate, 720 written
    assert "b: 721 rows read, 0 already synced, 1 duplicates dropped, 720 written" in caplog.text
    assert "a: 2880 rows read, 0 already synced, 720 duplicates dropped, 2160 written" in caplog.text


# ---------------------------------------------------------------------------------------------- bad input
def _corrupt(folder: Path, file: str, mutate) -> None:
    path = next(folder.rglob(file))
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype=str)
    elif path.suffix == ".parquet":
        df = pd.read_parquet(path)
    else:
        df = pd.read_json(path, lines=True, dtype=False)
    write_export(mutate(df), path)


def _set(column: str, row: int, value: Any):
    def mutate(df: pd.DataFrame) -> pd.DataFrame:
        df[column] = df[column].astype(object if value is None else str)
        df.loc[row, column] = value
        return df

    return mutate


BAD_INPUTS = [
    # (file, mutation, expected message: file, user row, column)
    (
        "readings.csv",
        _set("timestamp", 5, "yesterday"),
        r"readings.csv, row 7, column 'timestamp': unparsable",
    ),
    (
        "readings.csv",
        _set("timestamp", 3, "2026-01-05 00:00:15"),
        r"row 5, column 'timestamp': mixed timezones",
    ),
    (
        "readings.parquet",
        _set("power_w", 4, "n/a"),
        r"readings.parquet, row 5, column 'power_w': not a number",
    ),
    (
        "readings_b.jsonl",
        _set("power_w", 2, "12W"),
        r"readings_b.jsonl, row 3, column 'power_w': not a number",
    ),
    ("readings.csv", lambda df: df.drop(columns=["power_w"]), r"readings.csv: missing column.*power_w"),
    ("readings.csv", lambda df: df.rename(columns={"timestamp": "time"}), r"missing column.*timestamp"),
    ("readings.csv", _set("device_id", 9, None), r"readings.csv, row 11, column 'device_id': missing"),
    (
        "labels.csv",
        _set("appliance", 1, "hovercraft"),
        r"labels.csv, row 3, column 'appliance': unknown appliance",
    ),
    ("labels.csv", _set("source", 0, "guess"), r"labels.csv, row 2, column 'source'"),
    ("labels.jsonl", _set("end", 0, "soon"), r"labels.jsonl, row 1, column 'end': unparsable"),
    ("ground_truth.csv", lambda df: df.rename(columns={"Kettle": "hovercraft"}), r"column 'hovercraft'"),
]


@pytest.mark.parametrize(("file", "mutate", "match"), BAD_INPUTS)
def test_bad_exports_name_file_row_column_and_leave_out_untouched(
    export_folder: Path, tmp_path: Path, file: str, mutate, match: str
) -> None:
    out = tmp_path / "synced"
    params = params_for("folder", str(export_folder))
    sync(params, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _corrupt(export_folder, file, mutate)
    with pytest.raises(DataError, match=match):
        sync(params, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_jsonl_rows_are_line_numbers_counting_blank_lines(export_folder: Path, tmp_path: Path) -> None:
    path = next(export_folder.rglob("readings_b.jsonl"))
    lines = path.read_text().splitlines()
    lines[4] = lines[4].replace('"power_w":', '"power_w":"x",  "old":')
    path.write_text("\n".join([*lines[:2], "", "", *lines[2:]]) + "\n")  # two blank lines before it
    with pytest.raises(DataError, match=r"readings_b.jsonl, row 7, column 'power_w'"):
        sync(params_for("folder", str(export_folder)), tmp_path / "out")


def test_missing_folder_files_and_bad_devices_json_are_named(export_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="export folder not found"):
        sync(params_for("folder", str(tmp_path / "nope")), tmp_path / "out")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="no readings files"):
        sync(params_for("folder", str(empty)), tmp_path / "out")
    (export_folder / "devices.json").write_text(json.dumps([{"device_id": "a", "site_type": "castle"}]))
    with pytest.raises(DataError, match=r"devices.json, column 'site_type': entry 1"):
        sync(params_for("folder", str(export_folder)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_refuses_to_replace_a_directory_that_is_not_a_dataset(export_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "precious"
    out.mkdir()
    (out / "thesis.tex").write_text("do not delete")
    with pytest.raises(DataError, match="not an AirWatt dataset"):
        sync(params_for("folder", str(export_folder)), out)
    assert (out / "thesis.tex").read_text() == "do not delete"


# ---------------------------------------------------------------------------------------------- url
@pytest.fixture
def http_base(export_folder: Path) -> Iterator[str]:
    """A real HTTP server on a free loopback port serving the export folder."""
    files = sorted(p.relative_to(export_folder).as_posix() for p in export_folder.rglob("*") if p.is_file())
    (export_folder / "index.json").write_text(json.dumps({"files": files}))
    handler = functools.partial(QuietHandler, directory=str(export_folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_url_sync_equals_folder_sync(export_folder: Path, http_base: str, tmp_path: Path) -> None:
    via_url = sync(params_for("url", http_base), tmp_path / "url")
    sync(params_for("folder", str(export_folder)), tmp_path / "folder")
    assert table_bytes(tmp_path / "url") == table_bytes(tmp_path / "folder")
    assert via_url.provenance["files"][0].startswith(http_base)
    sync(params_for("url", http_base), tmp_path / "url")  # idempotent over HTTP too
    assert table_bytes(tmp_path / "url") == table_bytes(tmp_path / "folder")


def test_url_single_file_and_errors_name_the_url(http_base: str, tmp_path: Path) -> None:
    one = http_base + "2026-01-06/readings_b.jsonl"
    m = sync(params_for("url", one), tmp_path / "one")
    assert m.device_ids == ["b"] and m.tables["readings"].rows == 720
    with pytest.raises(DataError, match=r"missing/index.json: download failed: HTTP 404"):
        sync(params_for("url", http_base + "missing/"), tmp_path / "x")
    bad = http_base + "2026-01-05/readings.csv"
    (Path(tmp_path / "exports" / "2026-01-05" / "readings.csv")).write_text(
        "device_id,timestamp,power_w\na,b,c\n"
    )
    with pytest.raises(DataError, match=rf"{bad}, row 2, column 'timestamp'"):
        sync(params_for("url", bad), tmp_path / "x")


# ---------------------------------------------------------------------------------------------- simulator
def test_simulator_sync_is_idempotent(tmp_path: Path) -> None:
    if not module_ready("airwatt.simulate"):
        pytest.skip("airwatt.simulate is not in this checkout yet")
    params = params_for("simulator", days=1, **{"simulate.devices": 3})
    out = tmp_path / "sim"
    m = sync(params, out)
    assert len(m.devices) == 3
    r = Dataset(out).readings()
    assert not r.duplicated(["device_id", "timestamp"]).any()
    assert r["timestamp"].min() >= START and r["timestamp"].max() < START + pd.Timedelta(days=1)
    first = table_bytes(out)
    sync(params, out)
    assert table_bytes(out) == first


# ---------------------------------------------------------------------------------------------- importers
def test_importer_window_uses_the_first_days_when_outside_the_source() -> None:
    span = Window(pd.Timestamp("2013-06-15T00:00:00Z"), pd.Timestamp("2013-06-20T00:00:00Z"))
    requested = Window(START, START + pd.Timedelta(days=14))
    assert importer_window(requested, span) == Window(span.start, span.start + pd.Timedelta(days=14))
    inside = Window(pd.Timestamp("2013-06-16T00:00:00Z"), pd.Timestamp("2013-06-17T00:00:00Z"))
    assert importer_window(inside, span) == inside


@pytest.mark.slow
@pytest.mark.realdata
def test_importer_sync_keeps_the_first_days(shared_data: Path, tmp_path: Path) -> None:
    if not module_ready("airwatt.importers"):
        pytest.skip("airwatt.importers is not in this checkout yet")
    params = params_for("ukdale", str(shared_data / "ukdale_days"), days=1)
    m = sync(params, tmp_path / "uk")
    r = Dataset(tmp_path / "uk").readings()
    assert len(r) > 0 and not r.duplicated(["device_id", "timestamp"]).any()
    assert m.provenance["window"]["start"].startswith("2013-")
    assert r["timestamp"].max() - r["timestamp"].min() < pd.Timedelta(days=1)
    first = table_bytes(tmp_path / "uk")
    sync(params, tmp_path / "uk")
    assert table_bytes(tmp_path / "uk") == first
