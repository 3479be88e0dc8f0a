"""Labeling without a server: config, window choice, region conversion, merge rule, agreement, bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, square_wave_device
from typer.testing import CliRunner

from airwatt.appliances import APPLIANCES
from airwatt.cli import app
from airwatt.config import load_params
from airwatt.dataset import DatasetWriter, DeviceInfo, coerce_labels, read_manifest
from airwatt.errors import ConfigError
from airwatt.labeling.agreement import Confusion, on_slots
from airwatt.labeling.client import LabelStudioClient, LabelStudioError
from airwatt.labeling.interface import inventory, label_config_for
from airwatt.labeling.pull import TaskInfo, choose_annotation, merge_labels, regions_to_intervals
from airwatt.labeling.tasks import regions
from airwatt.labeling.windows import (
    RANDOM,
    UNCERTAINTY,
    DeviceSeries,
    Window,
    candidate_windows,
    select_windows,
    task_key,
)
from airwatt.labels import on_intervals_ms
from airwatt.models.predict import SeriesPrediction
from airwatt.prepare.grid import grid_device

T0_MS = 1767571200000  # 2026-01-05T00:00:00Z, a multiple of 12 h
STEP_MS = 5000
HOUR_MS = 3_600_000


def write_beta_dataset(out: Path, devices: int = 2, hours: float = 36, ground_truth: bool = False) -> Path:
    """Square-wave devices (fridge, kettle) whose aggregate is known; no sub-meters unless asked."""
    apps = ["fridge", "kettle"]
    start = pd.Timestamp("2026-01-05T00:00:00Z")
    with DatasetWriter(
        out, name=out.name, appliances=apps, interval_s=5, start=start, end=start + pd.Timedelta(hours=hours)
    ) as w:
        for i in range(devices):
            readings, gt = square_wave_device(f"b-{i}", hours=hours)
            w.add_device(
                DeviceInfo(device_id=f"b-{i}", appliances=apps, rated_max_w=10000),
                readings,
                ground_truth=gt if ground_truth else None,
            )
    return out


def fake_series(prob_on: np.ndarray, valid: np.ndarray | None = None, start_ms: int = T0_MS) -> DeviceSeries:
    n = len(prob_on)
    valid = np.ones(n, bool) if valid is None else valid
    pred = SeriesPrediction(
        ["fridge"],
        np.zeros((n, 1), np.float32),
        prob_on[:, None].astype(np.float32),
        prob_on[:, None] >= 0.5,
        valid.copy(),
    )
    return DeviceSeries("dev", start_ms, STEP_MS, np.full(n, 100.0, np.float32), valid, [pred])


# ------------------------------------------------------------------------------------------------ config
def test_label_config_has_one_label_per_inventory_appliance_and_submeter_channels(tmp_path: Path) -> None:
    beta = read_manifest(write_beta_dataset(tmp_path / "beta", devices=1, hours=1))
    metered = read_manifest(write_beta_dataset(tmp_path / "metered", devices=1, hours=1, ground_truth=True))
    root = ET.fromstring(label_config_for(beta))
    assert [e.get("value") for e in root.iter("Label")] == ["kettle", "fridge"]  # vocabulary order
    assert [e.get("column") for e in root.iter("Channel")] == ["aggregate_w"]
    channels = [e.get("column") for e in ET.fromstring(label_config_for(metered)).iter("Channel")]
    assert channels == ["aggregate_w", "kettle_w", "fridge_w"]
    assert inventory(beta) == ["kettle", "fridge"]


# ------------------------------------------------------------------------------------------------ windows
def test_candidate_windows_are_epoch_aligned_and_scored_by_uncertainty() -> None:
    n = 36 * 720  # 36 h at 5 s from T0 + 6 h: windows at T0 (6 h of data), +12 h, +24 h, +36 h (6 h)
    prob = np.full(n, 0.02)
    prob[12 * 720 : 18 * 720] = 0.5  # the model hesitates from T0 + 18 h to T0 + 24 h
    valid = np.ones(n, bool)
    valid[-720 * 5 :] = False  # 5 of the last window's 6 hours are missing
    s = fake_series(prob, valid, start_ms=T0_MS + 6 * HOUR_MS)
    windows = candidate_windows(s, window_s=12 * 3600, min_valid_fraction=0.6, appliances=["fridge"])
    assert [w.start_ms for w in windows] == [T0_MS + 12 * HOUR_MS, T0_MS + 24 * HOUR_MS]
    assert all(w.start_ms % (12 * HOUR_MS) == 0 for w in windows)
    assert windows[0].uncertainty is not None and windows[1].uncertainty is not None
    assert windows[0].uncertainty > windows[1].uncertainty + 0.3
    loose = candidate_windows(s, window_s=12 * 3600, min_valid_fraction=0.5, appliances=["fridge"])
    assert len(loose) == 3  # the half-covered first window now counts
    assert windows[0].disagreement is None  # one model


def test_a_device_inventory_restricts_pre_annotations_and_scoring() -> None:
    from airwatt.labeling.push import registered
    from airwatt.labeling.tasks import build_task
    from airwatt.labeling.windows import Selected

    n = 12 * 720
    on = np.zeros((n, 2), bool)
    on[100:300, 0] = True  # fridge
    on[1000:1100, 1] = True  # kettle
    probs = on.astype(np.float32)
    pred = SeriesPrediction(["fridge", "kettle"], np.zeros((n, 2), np.float32), probs, on, np.ones(n, bool))
    s = DeviceSeries("dev", T0_MS, STEP_MS, np.full(n, 100.0, np.float32), np.ones(n, bool), [pred])
    assert registered(["fridge", "kettle"], ["fridge", "tv"]) == ["fridge"]
    assert registered(["fridge", "kettle"], []) == ["fridge", "kettle"]  # no inventory: every appliance

    def labels_of(apps: list[str]) -> set[str]:
        w = candidate_windows(s, window_s=12 * 3600, min_valid_fraction=0.5, appliances=apps)[0]
        chosen = Selected(w, "k", "random")
        task = build_task(
            s, chosen, dataset="d", interval_s=5, submetered=[], appliances=apps, model_version="1"
        )
        assert task["meta"]["model_appliances"] == apps
        return {lab for r in task["predictions"][0]["result"] for lab in r["value"]["timeserieslabels"]}

    assert labels_of(registered(["fridge", "kettle"], [])) == {"fridge", "kettle"}
    assert labels_of(registered(["fridge", "kettle"], ["fridge"])) == {"fridge"}  # never the kettle


def _windows(k: int) -> list[Window]:
    return [
        Window("dev", T0_MS + i * 12 * HOUR_MS, T0_MS + (i + 1) * 12 * HOUR_MS, 0, 1, 1.0, i / k, None)
        for i in range(k)
    ]


def test_selection_takes_a_random_share_then_the_most_uncertain_and_skips_pushed_keys() -> None:
    cands = _windows(40)
    pushed = {task_key("ds", "dev", cands[-1].start_ms)}  # the most uncertain one was pushed already
    chosen = select_windows(cands, dataset="ds", budget=10, random_share=0.2, seed=3, exclude_keys=pushed)
    assert len(chosen) == 10 and len({c.key for c in chosen}) == 10
    assert sum(c.selection == RANDOM for c in chosen) == 2
    assert not {c.key for c in chosen} & pushed
    top = sorted((c for c in chosen if c.selection == UNCERTAINTY), key=lambda c: -c.window.score)
    randoms = {c.key for c in chosen if c.selection == RANDOM}
    expected = [w for w in reversed(cands[:-1]) if task_key("ds", "dev", w.start_ms) not in randoms][:8]
    assert [c.window for c in top] == expected
    again = select_windows(cands, dataset="ds", budget=10, random_share=0.2, seed=3, exclude_keys=pushed)
    assert [c.key for c in again] == [c.key for c in chosen]  # deterministic


def test_random_share_is_uniform_over_all_candidates() -> None:
    """The random share is drawn before the uncertain ones, so the top windows are in it as often as any."""
    cands = _windows(20)
    hits = np.zeros(20)
    for seed in range(400):
        for c in select_windows(
            cands, dataset="ds", budget=5, random_share=0.2, seed=seed, exclude_keys=set()
        ):
            if c.selection == RANDOM:
                hits[(c.window.start_ms - T0_MS) // (12 * HOUR_MS)] += 1
    assert hits[-5:].mean() == pytest.approx(hits[:5].mean(), rel=0.5)  # the top 5 are not excluded
    assert hits.sum() == 400


def test_without_a_model_every_window_is_drawn_at_random() -> None:
    cands = [Window("d", T0_MS + i * 12 * HOUR_MS, 0, 0, 1, 1.0, None, None) for i in range(6)]
    chosen = select_windows(cands, dataset="ds", budget=4, random_share=0.2, seed=1, exclude_keys=set())
    assert len(chosen) == 4 and {c.selection for c in chosen} == {RANDOM}


# ------------------------------------------------------------------------------------------------ regions
def _task(start_ms: int = T0_MS, hours: int = 12) -> TaskInfo:
    return TaskInfo(7, "b-0", start_ms, start_ms + hours * HOUR_MS, [], ["fridge"])


def test_prediction_regions_round_trip_to_the_same_intervals() -> None:
    ts = T0_MS + np.arange(12 * 720, dtype=np.int64) * STEP_MS
    t_s = (ts - T0_MS) / 1000
    power = np.where((t_s % 3600) < 1200, 100.0, 0.0)
    expected = on_intervals_ms(ts, power, APPLIANCES["fridge"], 5)
    result = regions(ts, (power > 0)[:, None], ["fridge"], 5)
    assert len(result) == len(expected[0]) == 12
    got = regions_to_intervals(
        result, _task(), interval_s=5, allowed={"fridge"}, span_ms=(T0_MS, ts[-1] + STEP_MS)
    )
    assert got["fridge"] == list(zip(expected[0].tolist(), expected[1].tolist(), strict=True))


def _region(label: str, start: float, end: float) -> dict:
    return {
        "type": "timeserieslabels",
        "from_name": "appliance",
        "to_name": "ts",
        "value": {"start": start, "end": end, "timeserieslabels": [label]},
    }


def test_bad_regions_are_skipped_with_their_reason() -> None:
    from airwatt.labeling.pull import Skips

    skips = Skips()
    span = (T0_MS, T0_MS + 12 * HOUR_MS)
    result = [
        _region("fridge", T0_MS + 60_000 + 1200, T0_MS + 120_000),  # snaps to [65 s, 125 s)
        _region("fridge", T0_MS + 100_000, T0_MS + 200_000),  # overlaps the first: united
        _region("hovercraft", T0_MS, T0_MS + 60_000),
        _region("kettle", T0_MS + 60_000, T0_MS + 30_000),
        _region("fridge", T0_MS - HOUR_MS, T0_MS + 60_000),
        _region("fridge", T0_MS + 61_000, T0_MS + 64_000),  # between two readings
    ]
    got = regions_to_intervals(
        result,
        _task(),
        interval_s=5,
        allowed={"fridge", "kettle"},
        span_ms=span,
        skips=skips,
        annotation_id=3,
    )
    assert got == {"fridge": [(T0_MS + 65_000, T0_MS + 205_000)]}
    assert skips.counts() == {
        "empty_interval": 1,
        "out_of_range": 1,
        "reversed_interval": 1,
        "unknown_label": 1,
    }
    assert all(i["task_id"] == 7 and i["annotation_id"] == 3 for i in skips.items)


def test_one_annotation_per_task_ground_truth_then_latest() -> None:
    a = {"id": 1, "updated_at": "2026-01-02T00:00:00Z", "ground_truth": False}
    b = {"id": 2, "updated_at": "2026-01-03T00:00:00Z", "ground_truth": False}
    c = {"id": 3, "updated_at": "2026-01-01T00:00:00Z", "ground_truth": True}
    x = {"id": 4, "updated_at": "2026-01-09T00:00:00Z", "was_cancelled": True}
    assert choose_annotation([a, b, x])[0] is b
    assert choose_annotation([a, b, c, x]) == (c, [b, a])
    assert choose_annotation([x]) == (None, [])


# ------------------------------------------------------------------------------------------------ merge
def _labels(rows: list[tuple]) -> pd.DataFrame:
    cols = ["device_id", "appliance", "start", "end", "source", "annotator_id", "task_id"]
    df = pd.DataFrame(rows, columns=cols)
    for c in ("start", "end"):
        df[c] = pd.to_datetime(df[c], utc=True)
    return coerce_labels(df)


def test_merge_replaces_pulled_tasks_removes_deleted_tasks_and_keeps_other_sources() -> None:
    existing = _labels([
        ("b-0", "fridge", "2026-01-05T01:00Z", "2026-01-05T02:00Z", "sub-meter", None,    None),
        ("b-0", "fridge", "2026-01-05T03:00Z", "2026-01-05T04:00Z", "annotator", "ann@x", 1),
        ("b-0", "kettle", "2026-01-05T05:00Z", "2026-01-05T06:00Z", "annotator", "ann@x", 2),
        ("b-1", "kettle", "2026-01-05T05:00Z", "2026-01-05T06:00Z", "annotator", "old@x", None),
    ])  # fmt: skip
    new = _labels([("b-0", "fridge", "2026-01-05T03:30Z", "2026-01-05T04:00Z", "annotator", "ann@x", 1)])
    merged, removed = merge_labels(existing, new, replace_tasks={1}, project_task_ids={1, 5})
    assert len(removed) == 1 and int(removed["task_id"].iloc[0]) == 2  # task 2 is gone from the project
    annot = merged[merged["task_id"].notna()]
    assert len(annot) == 1 and annot["start"].iloc[0] == pd.Timestamp("2026-01-05T03:30Z")
    assert set(merged["source"]) == {"sub-meter", "annotator"} and len(merged) == 3  # no-task row kept
    again, removed_again = merge_labels(merged, new, replace_tasks={1}, project_task_ids={1, 5})
    assert again.equals(merged) and removed_again.empty  # idempotent


def test_prepare_grid_uses_annotator_labels_where_there_is_no_submeter() -> None:
    readings, _ = square_wave_device("b-0", hours=2)
    labels = _labels([("b-0", "kettle", "2026-01-05T00:30Z", "2026-01-05T00:40Z", "annotator", "a@x", 1)])
    g = grid_device(readings, None, labels, ["fridge", "kettle"], interval_s=5, max_fill_s=30)
    assert g.status_sources == {"kettle": "annotator"}
    on = np.flatnonzero(g.status[:, 1])
    assert (on[0], on[-1] + 1) == (30 * 12, 40 * 12)  # slot = 5 s
    assert g.status_valid[:, 1].all() and not g.status_valid[:, 0].any()  # fridge: no label at all


def test_annotator_targets_are_known_only_inside_reviewed_windows() -> None:
    """Active learning labels a few windows of a device: outside them the appliance is unknown, not off; an
    appliance reviewed but never labelled on is off inside the window."""
    readings, _ = square_wave_device("b-0", hours=4)
    labels = _labels([
        ("b-0", "kettle", "2026-01-05T00:30Z", "2026-01-05T00:40Z", "annotator", "a@x", 1),
        ("b-0", "kettle", "2026-01-05T00:00Z", "2026-01-05T01:00Z", "reviewed",  "a@x", 1),
        ("b-0", "fridge", "2026-01-05T00:00Z", "2026-01-05T01:00Z", "reviewed",  "a@x", 1),
        ("b-0", "kettle", "2026-01-05T03:00Z", "2026-01-05T04:00Z", "reviewed",  "b@x", 2),
    ])  # fmt: skip
    g = grid_device(readings, None, labels, ["fridge", "kettle"], interval_s=5, max_fill_s=30)
    assert g.status_sources == {"fridge": "annotator", "kettle": "annotator"}
    hour = 720  # slots
    kettle_known = np.flatnonzero(g.status_valid[:, 1])
    assert len(kettle_known) == 2 * hour and kettle_known[0] == 0 and kettle_known[-1] == 4 * hour - 1
    assert not g.status_valid[hour : 3 * hour, 1].any()  # between the two reviewed windows: unknown
    assert g.status[:, 1].sum() == 10 * 12  # the 10 labelled minutes
    assert g.status_valid[:hour, 0].all() and not g.status_valid[hour:, 0].any()
    assert not g.status[:, 0].any()  # reviewed, never on: off


# ------------------------------------------------------------------------------------------------ agreement
def test_agreement_iou_and_kappa_on_known_slots() -> None:
    grid = T0_MS + np.arange(10, dtype=np.int64) * STEP_MS
    a = on_slots(grid, np.array([T0_MS]), np.array([T0_MS + 4 * STEP_MS]))  # slots 0-3
    b = on_slots(grid, np.array([T0_MS + 2 * STEP_MS]), np.array([T0_MS + 6 * STEP_MS]))  # slots 2-5
    c = Confusion()
    c.add(a, b)
    assert (c.both, c.only_a, c.only_b, c.neither) == (2, 2, 2, 4)
    assert c.iou() == pytest.approx(2 / 6)
    assert c.kappa() == pytest.approx((0.6 - 0.52) / 0.48)
    same = Confusion()
    same.add(a, a)
    assert same.iou() == 1.0 and same.kappa() == 1.0
    assert Confusion().iou() is None


# ------------------------------------------------------------------------------------------------ bad input
@pytest.mark.slow
def test_unreachable_server_is_a_clear_error_naming_the_url() -> None:
    from airwatt.labeling.server import free_port

    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(LabelStudioError, match=rf"cannot reach Label Studio at {url}.*check that the server"):
        LabelStudioClient(url, "x" * 40, timeout_s=5).check()


@pytest.mark.slow
def test_cli_exits_2_naming_the_url_when_the_server_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from airwatt.cli import run
    from airwatt.labeling.server import free_port

    data = write_beta_dataset(tmp_path / "beta", devices=1, hours=1)
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRWATT_LABEL_STUDIO_TOKEN", "t" * 40)
    monkeypatch.setattr(
        "sys.argv",
        [
            "airwatt",
            "label",
            "setup",
            "--data",
            str(data),
            "--url",
            url,
            "--params",
            str(REPO / "params.yaml"),
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 2
    assert url in capsys.readouterr().err


def test_missing_token_names_the_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AIRWATT_LABEL_STUDIO_TOKEN", "LABEL_STUDIO_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    from airwatt.labeling.push import connect

    with pytest.raises(ConfigError, match="AIRWATT_LABEL_STUDIO_TOKEN or LABEL_STUDIO_API_KEY"):
        connect(load_params(REPO / "params.yaml").label)


def test_label_section_in_params_has_no_token() -> None:
    p = load_params(REPO / "params.yaml")
    assert p.label.url == "http://127.0.0.1:8080" and p.label.window_hours == 12
    assert not any("token" in k or "key" in k for k in p.label.model_dump())


def test_cli_lists_label_commands() -> None:
    out = CliRunner().invoke(app, ["label", "--help"]).output
    assert all(cmd in out for cmd in ("setup", "push", "pull"))
