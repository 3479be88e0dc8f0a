"""`airwatt label setup` and `airwatt label push`: the project, and tasks worth a person's time.

Push never duplicates a task: every task carries its key (dataset, device, window start) in its data and
meta, the project's existing keys are read from the server before anything is chosen, and tasks are
imported in batches, each recorded as pushed only once the server has confirmed it (its task ids). A failure
part-way leaves the confirmed batches on the server; a rerun skips them and continues.

The push report is an ``airwatt.results.PushReport`` (typed; written as the same JSON).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from airwatt.appliances import inventory_columns
from airwatt.atomic import write_json_atomic
from airwatt.config import LabelParams, Params
from airwatt.dataset import Dataset
from airwatt.dataset.schema import Manifest
from airwatt.errors import ConfigError, DataError
from airwatt.labeling.client import LabelStudioClient, LabelStudioError, Project, token_from_env
from airwatt.labeling.interface import inventory, label_config_for, submeter_channels
from airwatt.labeling.tasks import build_task
from airwatt.labeling.windows import DeviceSeries, Selected, Window, candidate_windows, select_windows
from airwatt.models.bundle import WEIGHTS_FILE
from airwatt.models.predict import ModelBundle
from airwatt.prepare.grid import grid_device
from airwatt.results import ProjectRef, PushedModel, PushedTask, PushReport

log = logging.getLogger(__name__)


def connect(cfg: LabelParams, url: str | None = None) -> LabelStudioClient:
    """A client for ``url`` (default label.url) with the token from the environment, checked once."""
    client = LabelStudioClient(url or cfg.url, token_from_env(), timeout_s=cfg.timeout_s)
    client.check()
    return client


# ------------------------------------------------------------------------------------------------ setup
@dataclass(frozen=True)
class SetupResult:
    project: Project
    action: str  # created | updated | unchanged


def setup_project(client: LabelStudioClient, manifest: Manifest, title: str) -> SetupResult:
    """Create the project, or update its labeling config when the dataset's inventory changed (idempotent)."""
    config = label_config_for(manifest)
    description = (
        "AirWatt appliance on/off labels. Draw one region per run of an appliance, from its first to its "
        f"last on reading. Labels: {', '.join(inventory(manifest))}."
    )
    found = client.find_project(title)
    if found is None:
        project = client.create_project(title, config, description)
        log.info("created Label Studio project %d %r at %s", project.id, title, client.url)
        return SetupResult(project, "created")
    if found.label_config.strip() == config.strip():
        log.info("Label Studio project %d %r is up to date", found.id, title)
        return SetupResult(found, "unchanged")
    project = client.update_project(found.id, config, description)
    log.info("updated the labeling config of project %d %r", project.id, title)
    return SetupResult(project, "updated")


# ------------------------------------------------------------------------------------------------ models
@dataclass(frozen=True)
class LoadedModel:
    uri: str
    bundle: ModelBundle
    version: str


def model_version(uri: str, bundle: ModelBundle) -> str:
    """What Label Studio records as the prediction's model_version: the registry version where there is one,
    else the architecture and a hash of the bundle's weights."""
    from airwatt.model_uri import parse_model_uri, registry_info

    ref = parse_model_uri(uri)
    info = registry_info(uri) if ref.kind == "registered" else None
    if info is not None:
        return f"{info.name}/v{info.version}"
    if ref.path is None:  # a run's model
        return uri
    digest = hashlib.sha256((ref.path / WEIGHTS_FILE).read_bytes()).hexdigest()[:12]
    return f"{bundle.spec.arch}:{digest}"


def load_models(uris: list[str]) -> list[LoadedModel]:
    from airwatt.model_uri import load_bundle

    out = []
    for uri in uris:
        bundle = load_bundle(uri)
        out.append(LoadedModel(uri, bundle, model_version(uri, bundle)))
    return out


# ------------------------------------------------------------------------------------------------ series
def device_series(
    ds: Dataset, device_id: str, models: list[LoadedModel], *, submetered: list[str], max_fill_s: float
) -> DeviceSeries | None:
    """One device on prepare's grid, with the first model's gap policy (``max_fill_s``, prepare's, without a
    model), and every model's predictions (the one prediction path, each by its own rule)."""
    readings = ds.readings([device_id], columns=["timestamp", "power_w"])
    if readings.empty:
        return None
    info = ds.manifest.device(device_id)
    gt_apps = [a for a in submetered if info.has_ground_truth]
    gt = ds.ground_truth([device_id]) if gt_apps else None
    interval_s = ds.manifest.interval_s
    max_fill_s = models[0].bundle.spec.gap.max_fill_s if models else max_fill_s
    g = grid_device(readings, gt, None, gt_apps, interval_s=interval_s, max_fill_s=max_fill_s)
    preds = [m.bundle.predict_series(g.aggregate_w, g.valid) for m in models]
    sub = {a: np.where(g.power_valid[:, j], g.power_w[:, j], np.nan) for j, a in enumerate(gt_apps)}
    return DeviceSeries(device_id, g.start_ms, round(interval_s * 1000), g.aggregate_w, g.valid, preds, sub)


def window_fingerprint(ds: Dataset, w: Window) -> str:
    """The fingerprint of a device's readings in a task's window (airwatt.sync.carry.readings_fingerprint):
    pull merges a task's annotations only while the dataset still holds those readings."""
    from airwatt.sync.carry import readings_fingerprint

    start, end = pd.Timestamp(w.start_ms, unit="ms", tz="UTC"), pd.Timestamp(w.end_ms, unit="ms", tz="UTC")
    readings = ds.readings([w.device_id], start, end, columns=["timestamp", "power_w"])
    return readings_fingerprint(readings, start, end)


def _check_models(models: list[LoadedModel], manifest: Manifest, labels: list[str]) -> list[str]:
    """The appliances pre-annotated and scored: those of the first model that the project labels (and that
    every model predicts)."""
    for m in models:
        if abs(m.bundle.interval_s - manifest.interval_s) > 1e-9:
            raise ConfigError(
                f"model {m.uri} works at {m.bundle.interval_s:g} s, dataset {manifest.name!r} at "
                f"{manifest.interval_s:g} s"
            )
    if not models:
        return []
    common = [a for a in models[0].bundle.appliances if a in labels]
    common = [a for a in common if all(a in m.bundle.appliances for m in models)]
    if not common:
        raise ConfigError(
            f"model {models[0].uri} predicts none of the project's labels ({', '.join(labels)})"
        )
    return common


def registered(scored: list[str], inventory: list[str]) -> list[str]:
    """The scored appliances a device has: all of them when its inventory is empty (not registered), else
    those it registered (an appliance the site does not have is never pre-annotated or scored)."""
    return [scored[j] for j in inventory_columns(scored, inventory)]


# ------------------------------------------------------------------------------------------------ push
def existing_keys(client: LabelStudioClient, project_id: int) -> dict[str, int]:
    """task key -> task id of every task already in the project."""
    out = {}
    for t in client.task_summaries(project_id):
        key = (t.get("meta") or {}).get("task_key")
        if key:
            out[str(key)] = int(t["id"])
    return out


def _window_record(s: Selected, task_id: int | None) -> PushedTask:
    w: Window = s.window
    return PushedTask(
        key=s.key,
        task_id=task_id,
        device_id=w.device_id,
        window_start_ms=w.start_ms,
        selection=s.selection,
        score=None if w.uncertainty is None else round(w.score, 6),
        uncertainty=w.uncertainty,
        disagreement=w.disagreement,
        valid_fraction=round(w.valid_fraction, 4),
    )


def push(
    params: Params,
    data_dir: Path,
    *,
    model_uris: list[str],
    budget: int | None = None,
    url: str | None = None,
    report_path: Path | None = None,
    devices: list[str] | None = None,
    client: LabelStudioClient | None = None,
) -> PushReport:
    """Choose up to ``budget`` new windows of the dataset, import them as tasks; returns the push report."""
    t0 = time.perf_counter()
    cfg = params.label
    budget = cfg.budget if budget is None else budget
    ds = Dataset(data_dir)
    client = client or connect(cfg, url)
    project = setup_project(client, ds.manifest, cfg.project_title).project
    labels = inventory(ds.manifest)
    submetered = submeter_channels(ds.manifest)
    models = load_models(model_uris)
    scored_apps = _check_models(models, ds.manifest, labels)
    unknown = sorted(set(devices or []) - set(ds.device_ids))
    if unknown:
        raise DataError(f"devices {unknown} are not in the dataset", file=Path(data_dir) / "manifest.json")
    pushed_before = existing_keys(client, project.id)

    series: dict[str, DeviceSeries] = {}
    device_apps: dict[str, list[str]] = {}
    candidates: list[Window] = []
    for dev in tqdm(devices or ds.device_ids, desc="scoring windows", unit="device", leave=False):
        s = device_series(ds, dev, models, submetered=submetered, max_fill_s=params.prepare.max_fill_s)
        if s is None:
            continue
        series[dev] = s
        device_apps[dev] = registered(scored_apps, ds.manifest.device(dev).appliances)
        candidates += candidate_windows(
            s,
            window_s=cfg.window_hours * 3600,
            min_valid_fraction=cfg.min_valid_fraction,
            appliances=device_apps[dev],
        )
    chosen = select_windows(
        candidates,
        dataset=ds.manifest.name,
        budget=budget,
        random_share=cfg.random_share,
        seed=cfg.seed,
        exclude_keys=set(pushed_before),
    )
    report = PushReport(
        url=client.url,
        project=ProjectRef(id=project.id, title=project.title),
        dataset=ds.manifest.name,
        data_dir=str(data_dir),
        models=[PushedModel(uri=m.uri, version=m.version) for m in models],
        candidates=len(candidates),
        already_pushed=sum(1 for w in candidates if _key(ds, w) in pushed_before),
        selected=len(chosen),
    )
    version = models[0].version if models else None
    try:
        for lo in tqdm(
            range(0, len(chosen), cfg.import_batch), desc="importing tasks", unit="batch", leave=False
        ):
            batch = chosen[lo : lo + cfg.import_batch]
            tasks = [
                build_task(
                    series[s.window.device_id],
                    s,
                    dataset=ds.manifest.name,
                    interval_s=ds.manifest.interval_s,
                    submetered=submetered,
                    appliances=device_apps[s.window.device_id],
                    model_version=version,
                    readings_sha256=window_fingerprint(ds, s.window),
                )
                for s in batch
            ]
            report.payload_bytes += sum(len(json.dumps(t, separators=(",", ":"))) for t in tasks)
            ids = client.import_tasks(project.id, tasks)
            report.pushed += [_window_record(s, i) for s, i in zip(batch, ids, strict=True)]
    except LabelStudioError as e:
        done = len(report.pushed)
        _finish(report, report_path, t0)
        raise LabelStudioError(
            f"{e}. {done} of {len(chosen)} tasks were pushed before the failure"
            f"{f' (listed in {report_path})' if report_path else ''}; "
            "rerun `airwatt label push` to continue: "
            "pushed windows are skipped, never duplicated"
        ) from None
    report.complete = True
    _finish(report, report_path, t0)
    counts = {sel: sum(1 for p in report.pushed if p.selection == sel) for sel in ("uncertainty", "random")}
    log.info(
        "pushed %d tasks to project %d at %s (%d by uncertainty, %d at random; %d candidates, "
        "%d pushed before)",
        len(report.pushed),
        project.id,
        client.url,
        counts["uncertainty"],
        counts["random"],
        len(candidates),
        report.already_pushed,
    )
    return report


def _key(ds: Dataset, w: Window) -> str:
    from airwatt.labeling.windows import task_key

    return task_key(ds.manifest.name, w.device_id, w.start_ms)


def _finish(report: PushReport, report_path: Path | None, t0: float) -> None:
    report.seconds = round(time.perf_counter() - t0, 3)
    if report_path is not None:
        write_json_atomic(report_path, report.model_dump(mode="json"))
