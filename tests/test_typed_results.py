"""Typed results (issue 17): evaluate.json, promotion.json, the push report and report.json are pydantic
models (airwatt.results) whose files keep the JSON shape the platform and DVC read.

The key paths below were recorded from the dict-building code before the models replaced it, on these same
fixtures: a renamed, dropped, added or reordered key fails. Tables keyed by appliance, device or table name
are ``*``; ``model.arch_kwargs``, ``model.provenance`` and ``params`` are open blocks, not walked."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from pydantic import BaseModel
from test_champion_gate import at, baseline_bundle, record
from test_labeling import write_beta_dataset
from typer.testing import CliRunner

from airwatt import promotion
from airwatt.cli import app
from airwatt.config import load_params
from airwatt.data_ranges import DataRanges
from airwatt.errors import DataError
from airwatt.evaluate import evaluate
from airwatt.labeling.client import Project
from airwatt.labeling.push import push
from airwatt.report.run import report_dataset
from airwatt.results import EvaluationReport, EvaluationSummary, PromotionReport, PushReport, ReportSummary

pytestmark = pytest.mark.slow  # the session's small trained model

OPAQUE = {"model.arch_kwargs", "model.provenance", "params"}
EVALUATION_TABLES = {
    *("data.skipped_devices", "data.readings", "data.answered", "data.plotted_days"),
    *("data.selection.time_ranges", "appliances", "switches", "offline.appliances", "devices", "devices.*"),
    *("overlap.devices", "overlap.evaluated", "overlap.excluded"),
}
REPORT_TABLES = {"data.skipped_devices", "tables", "devices"}

_MODEL = """model model.uri model.registry model.arch model.arch_kwargs model.appliances model.window_length
    model.target model.interval_s model.provenance"""
_EVAL_DATA = """data data.path data.name data.devices data.skipped_devices data.selection
    data.selection.devices data.selection.split_file data.selection.split data.selection.time_ranges
    data.appliances_missing data.interval_s data.max_fill_s data.max_invalid_fraction data.readings
    data.readings.* data.readings.*.power data.readings.*.onoff data.answered data.answered.*
    data.plotted_days rule"""
_METRICS = ["mae_w", "sae", "nde", "f1", "precision", "recall", "eac"]
_SCORES = (
    "appliances appliances.* "
    + " ".join(f"appliances.*.{m}" for m in _METRICS)
    + " mean "
    + " ".join(f"mean.{m}" for m in _METRICS)
)
_SWITCHES = """switches switches.* switches.*.switch_ons switches.*.detected switches.*.delay_median_s
    switches.*.delay_p90_s switches.*.false_switches_per_day"""
_OFFLINE = "offline " + " ".join(f"offline.{k}" for k in _SCORES.split())
_DEVICES = "devices devices.* devices.*.* " + " ".join(f"devices.*.*.{m}" for m in _METRICS)
# a real-time model on held-out data, and an offline one on data it partly trained on
EVALUATE_SERVED_KEYS = f"""{_MODEL} {_EVAL_DATA} {_SCORES} {_SWITCHES} {_OFFLINE} {_DEVICES}
    overlap overlap.with_training overlap.provenance overlap.devices overlap.hours overlap.evaluated
    overlap.evaluated.* overlap.excluded""".split()
EVALUATE_OFFLINE_KEYS = f"""{_MODEL} {_EVAL_DATA} {_SCORES} {_SWITCHES} {_DEVICES}
    overlap overlap.with_training overlap.provenance overlap.devices overlap.devices.* overlap.hours
    overlap.evaluated overlap.evaluated.* overlap.excluded""".split()
PROMOTION_KEYS = [
    "model_name",
    "candidate_version",
    "champion_version_before",
    "champion_version",
    "promoted",
    "reason",
    "metric",
    "candidate_metric",
    "champion_metric",
    "candidate_overlaps_training",
    "compared_devices",
    "compared_hours",
]
PUSH_KEYS = [
    "url",
    "project",
    "project.id",
    "project.title",
    "dataset",
    "data_dir",
    "models",
    "models[].uri",
    "models[].version",
    "candidates",
    "already_pushed",
    "selected",
    "pushed",
    "pushed[].key",
    "pushed[].task_id",
    "pushed[].device_id",
    "pushed[].window_start_ms",
    "pushed[].selection",
    "pushed[].score",
    "pushed[].uncertainty",
    "pushed[].disagreement",
    "pushed[].valid_fraction",
    "payload_bytes",
    "complete",
    "seconds",
]
REPORT_KEYS = f"""{_MODEL} data data.path data.name data.devices data.skipped_devices data.window
    data.window.start data.window.end period currency tariff params max_fill_s tables tables.* tables.*.file
    tables.*.rows devices devices.* devices.*.timezone devices.*.site_type devices.*.totals
    devices.*.totals.measured_kwh devices.*.totals.appliances_kwh devices.*.totals.unexplained_kwh
    devices.*.totals.clipped_kwh devices.*.totals.cost devices.*.totals.max_error_kwh
    devices.*.totals.tolerance_kwh devices.*.totals.missing_hours devices.*.totals.ok devices.*.events
    devices.*.gaps devices.*.view devices.*.view.label devices.*.view.first_day devices.*.view.last_day
    devices.*.page totals totals.measured_kwh totals.appliances_kwh totals.unexplained_kwh totals.clipped_kwh
    totals.cost totals.missing_hours totals.events""".split()
REPORT_KEYS_WITHOUT_PAGES = [k for k in REPORT_KEYS if not k.startswith(("devices.*.view", "devices.*.page"))]


def key_paths(doc: Any, tables: frozenset[str] | set[str] = frozenset(), prefix: str = "") -> list[str]:
    """Every key path of a JSON document, in first-seen order; keys of ``tables`` are ``*``."""
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            path = f"{prefix}.{'*' if prefix in tables else k}".lstrip(".")
            out.append(path)
            if path not in OPAQUE:
                out += key_paths(v, tables, path)
    elif isinstance(doc, list):
        for v in doc:
            out += key_paths(v, tables, prefix + "[]")
    return list(dict.fromkeys(out))


def round_trips(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """The file parses into ``model`` and re-dumps (as the writers write) to the identical text."""
    text = path.read_text()
    parsed = model.model_validate_json(text)
    assert json.dumps(parsed.model_dump(mode="json"), indent=2, default=str) + "\n" == text
    doc: dict[str, Any] = json.loads(text)
    return doc


@pytest.fixture
def tiny(make_dataset: Callable[..., Path]) -> Path:
    return make_dataset(devices=2, hours=24)


# ------------------------------------------------------------------------------------------ evaluate
def test_evaluate_json_round_trips_and_keeps_its_keys(
    trained_bundle: Path, tiny: Path, tmp_path: Path
) -> None:
    served = evaluate(trained_bundle, tiny, tmp_path / "served.json")
    assert isinstance(served, EvaluationReport) and served.offline is not None
    doc = round_trips(tmp_path / "served.json", EvaluationReport)
    assert doc == served.model_dump(mode="json")
    assert key_paths(doc, EVALUATION_TABLES) == EVALUATE_SERVED_KEYS

    mean = baseline_bundle(tmp_path / "mean", "mean", record({"d-0000": [(0, 1)]}, {}))
    offline = evaluate(mean, tiny, tmp_path / "offline.json", devices=["d-0000", "d-0001"])
    assert offline.rule == "offline" and offline.offline is None  # no "offline" key at all
    doc = round_trips(tmp_path / "offline.json", EvaluationReport)
    assert key_paths(doc, EVALUATION_TABLES) == EVALUATE_OFFLINE_KEYS
    assert offline.overlap is not None and offline.overlap.with_training is True


# ----------------------------------------------------------------------------------------- promotion
@pytest.fixture
def fake_promotion(monkeypatch: pytest.MonkeyPatch, trained_bundle: Path) -> Iterator[None]:
    """``airwatt promote`` with the registry left out: the candidate is really evaluated (its report written
    where the CLI says), the decision is fixed."""

    def promote(candidate: str, evaluate_model: Any, cfg: Any, *, report_path: Path, **_: Any) -> Any:
        if not report_path.exists():
            evaluate_model(trained_bundle, report_path, True, None)
        compared = DataRanges.of({"b": [(at(0), at(1))]})
        return promotion.Promotion("m", "2", "1", "2", True, "why", "mean.f1", 0.5, 0.4, False, compared)

    monkeypatch.setattr(promotion, "promote", promote)
    yield


def run_promote(data: Path, tmp_path: Path) -> Any:
    args = [
        "promote",
        "--data",
        str(data),
        "--candidate",
        "models:/m/2",
        "--out",
        str(tmp_path / "evaluate.json"),
    ]
    args += ["--summary", str(tmp_path / "summary.json"), "--decision", str(tmp_path / "promotion.json")]
    return CliRunner().invoke(app, [*args, "--params", str(REPO / "params.yaml")])


@pytest.mark.usefixtures("fake_promotion")
def test_promote_writes_promotion_json_and_the_summary_in_their_shapes(tiny: Path, tmp_path: Path) -> None:
    result = run_promote(tiny, tmp_path)
    assert result.exit_code == 0, result.output
    decision = round_trips(tmp_path / "promotion.json", PromotionReport)
    assert key_paths(decision) == PROMOTION_KEYS
    assert decision["candidate_version"] == 2 and decision["compared_devices"] == ["b"]
    assert decision["compared_hours"] == 1.0
    summary = round_trips(tmp_path / "summary.json", EvaluationSummary)
    report = EvaluationReport.read(tmp_path / "evaluate.json")
    assert list(summary) == ["mean", "appliances", "switches", "offline"]  # the order it always had
    assert summary["mean"] == report.mean.model_dump() and summary["mean"]["f1"] == report.mean.f1
    assert promotion.metric_value(report, "mean.f1") == report.mean.f1
    assert promotion.metric_value(report, "appliances.fridge.f1") == report.appliances["fridge"].f1
    assert promotion.metric_value(report, "appliances.no_such.f1") is None


@pytest.mark.usefixtures("fake_promotion")
def test_a_malformed_stored_report_names_the_file_not_a_key(
    trained_bundle: Path, tiny: Path, tmp_path: Path
) -> None:
    stored = tmp_path / "evaluate.json"
    evaluate(trained_bundle, tiny, stored)
    doc = json.loads(stored.read_text())
    del doc["mean"]
    stored.write_text(json.dumps(doc, indent=2))
    with pytest.raises(
        DataError, match=r"evaluate\.json: not a valid evaluation report: mean: Field required"
    ):
        EvaluationReport.read(stored)
    result = run_promote(tiny, tmp_path)  # the summary reads the stored report back
    assert isinstance(result.exception, DataError), result.output
    assert str(stored) in str(result.exception) and "mean" in str(result.exception)
    assert not (tmp_path / "summary.json").exists()
    with pytest.raises(DataError, match=r"nope\.json: evaluation report not found"):
        EvaluationReport.read(tmp_path / "nope.json")


# ---------------------------------------------------------------------------------------------- push
class MemoryLabelStudio:
    """The few Label Studio calls ``push`` makes, in memory."""

    url = "http://label-studio.invalid"

    def __init__(self) -> None:
        self.tasks: list[dict[str, Any]] = []
        self.project: Project | None = None

    def check(self) -> None:
        pass

    def find_project(self, title: str) -> Project | None:
        return self.project

    def create_project(self, title: str, label_config: str, description: str) -> Project:
        self.project = Project(1, title, label_config)
        return self.project

    def update_project(self, project_id: int, label_config: str, description: str) -> Project:
        assert self.project is not None
        self.project = Project(project_id, self.project.title, label_config)
        return self.project

    def task_summaries(self, project_id: int) -> list[dict[str, Any]]:
        return [{"id": i, "meta": t["meta"]} for i, t in enumerate(self.tasks)]

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        first = len(self.tasks)
        self.tasks += tasks
        return list(range(first, len(self.tasks)))


def test_push_report_round_trips_and_keeps_its_keys(trained_bundle: Path, tmp_path: Path) -> None:
    data = write_beta_dataset(tmp_path / "beta", devices=2, hours=36)
    params = load_params(REPO / "params.yaml", overrides={"label.budget": 4, "label.random_share": 0.5})
    client: Any = MemoryLabelStudio()
    report = push(
        params, data, model_uris=[str(trained_bundle)], report_path=tmp_path / "push.json", client=client
    )
    assert isinstance(report, PushReport) and report.complete and len(report.pushed) == 4
    doc = round_trips(tmp_path / "push.json", PushReport)
    assert doc == report.model_dump(mode="json")
    assert key_paths(doc) == PUSH_KEYS
    again = push(params, data, model_uris=[], client=client)
    assert again.already_pushed == 4 and again.pushed and all(p.task_id is not None for p in again.pushed)


# -------------------------------------------------------------------------------------------- report
@pytest.mark.parametrize("pages", [True, False])
def test_report_json_round_trips_and_keeps_its_keys(
    trained_bundle: Path, tiny: Path, tmp_path: Path, pages: bool
) -> None:
    params = load_params(REPO / "params.yaml").report
    summary = report_dataset(
        trained_bundle, tiny, tmp_path / "out", period="week", params=params, pages=pages
    )
    assert isinstance(summary, ReportSummary)
    doc = round_trips(tmp_path / "out" / "report.json", ReportSummary)
    assert doc == summary.model_dump(mode="json")
    assert key_paths(doc, REPORT_TABLES) == (REPORT_KEYS if pages else REPORT_KEYS_WITHOUT_PAGES)
    assert summary.totals.measured_kwh == pytest.approx(
        sum(d.totals.measured_kwh for d in summary.devices.values())
    )
    assert summary.params == params
