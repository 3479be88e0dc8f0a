"""`airwatt label pull`: finished annotations -> label rows (source "annotator") merged into labels.parquet.

Conflict rule (docs/labeling.md quotes it):

1. One annotation per task is merged: cancelled (skipped) annotations never count; an annotation marked
   ground truth in Label Studio wins; otherwise the most recently updated one (then the highest id). The
   others are "superseded": not merged, but compared in the annotator agreement.
2. Within that annotation, overlapping or touching regions of one appliance are united into one interval.
3. The pull mirrors the server: the annotator rows of every task of this dataset (its on-intervals, and one
   "reviewed" row per appliance for the task's window: the span the person labelled, where the appliance is
   off outside its intervals) are replaced by what the server holds now (a task whose annotations were all
   deleted or cancelled loses its rows), and annotator rows whose task is gone from the project are removed
   (listed as ``deleted_task``). Sub-meter and model rows, and annotator rows without a task id, are never
   touched. prepare prefers sub-meter > annotator > model labels, and uses annotator labels only inside
   reviewed windows.

Regions are skipped, counted and listed in the report, never merged, when their label is not an appliance of
the device's inventory (``unknown_label``), their end precedes their start (``reversed_interval``), they cover
no reading (``empty_interval``), or they leave the task's window or the device's data span (``out_of_range``).
A whole task is skipped (``readings_changed``) when the dataset's readings in its window are no longer those
push showed (the fingerprint in its meta): a re-sync with another seed, source or export replaced them.

The merge is atomic (a staged copy of the dataset, the label expectations run on it, then swapped in) and
idempotent: pulling the same server state again leaves labels.parquet untouched.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from airwatt.atomic import atomic_dir, link_or_copy, write_json_atomic
from airwatt.config import Params
from airwatt.dataset import Dataset, coerce_labels
from airwatt.dataset.io import frame_to_table
from airwatt.dataset.schema import LABELS_FILE, LABELS_SCHEMA, MANIFEST_FILE, TableInfo
from airwatt.errors import ValidationFailed
from airwatt.labeling.agreement import Confusion, on_slots, summarise
from airwatt.labeling.client import LabelStudioClient, LabelStudioError
from airwatt.labeling.interface import LABELS_CONTROL
from airwatt.labeling.push import connect
from airwatt.timeutil import from_epoch_ms, to_epoch_ms

log = logging.getLogger(__name__)

LABEL_CHECKS = ("label_order", "label_span", "label_known")
SORT = ["device_id", "appliance", "start", "end", "source", "annotator_id", "task_id"]


@dataclass(frozen=True)
class TaskInfo:
    """What pull needs of a task: its id, device, window and the model's pre-annotation."""

    task_id: int
    device_id: str
    window_start_ms: int
    window_end_ms: int
    predictions: list[dict[str, Any]]
    model_appliances: list[str]
    readings_sha256: str | None = None  # the readings shown (tasks pushed before it was recorded: None)


@dataclass
class Skips:
    """Annotations and regions left out of the merge, with why."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, reason: str, task_id: int | None, annotation_id: int | None, detail: str, **extra: Any
    ) -> None:
        self.items.append(
            {"reason": reason, "task_id": task_id, "annotation_id": annotation_id, "detail": detail, **extra}
        )

    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(i["reason"] for i in self.items).items()))


def dataset_tasks(summaries: list[dict[str, Any]], dataset: str) -> tuple[list[TaskInfo], int]:
    """The project's tasks of this dataset (from their meta), and how many belong to other datasets."""
    out, other = [], 0
    for t in summaries:
        meta = t.get("meta") or {}
        if meta.get("dataset") != dataset or "device_id" not in meta:
            other += 1
            continue
        out.append(
            TaskInfo(
                task_id=int(t["id"]),
                device_id=str(meta["device_id"]),
                window_start_ms=int(meta["window_start_ms"]),
                window_end_ms=int(meta["window_end_ms"]),
                predictions=list(t.get("predictions") or []),
                model_appliances=list(meta.get("model_appliances") or []),
                readings_sha256=meta.get("readings_sha256"),
            )
        )
    return out, other


def choose_annotation(
    annotations: list[dict[str, Any]],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(the merged annotation, the valid others) by rule 1 of the module docstring."""
    valid = [a for a in annotations if not a.get("was_cancelled")]
    if not valid:
        return None, []
    ranked = sorted(
        valid,
        key=lambda a: (bool(a.get("ground_truth")), str(a.get("updated_at") or ""), int(a["id"])),
        reverse=True,
    )
    return ranked[0], ranked[1:]


class RegionArgs(TypedDict):
    """The keyword arguments of ``regions_to_intervals`` shared by every annotation of a task."""

    interval_s: float
    allowed: set[str]
    span_ms: tuple[int, int]


def regions_to_intervals(
    result: list[dict[str, Any]],
    task: TaskInfo,
    *,
    interval_s: float,
    allowed: set[str],
    span_ms: tuple[int, int],
    skips: Skips | None = None,
    annotation_id: int | None = None,
) -> dict[str, list[tuple[int, int]]]:
    """appliance -> sorted, united [start, end) intervals (epoch ms) of one annotation's regions."""
    step = round(interval_s * 1000)
    w0 = task.window_start_ms
    lo_ms, hi_ms = max(task.window_start_ms, span_ms[0]), min(task.window_end_ms, span_ms[1])
    out: dict[str, list[tuple[int, int]]] = {}

    def skip(reason: str, detail: str) -> None:
        if skips is not None:
            skips.add(reason, task.task_id, annotation_id, detail, device_id=task.device_id)

    for region in result:
        if region.get("type") != "timeserieslabels" or region.get("from_name") != LABELS_CONTROL:
            continue
        value = region.get("value") or {}
        names = value.get("timeserieslabels") or []
        try:
            a_ms, b_ms = round(float(value["start"])), round(float(value["end"]))
        except (KeyError, TypeError, ValueError):
            skip("out_of_range", f"region without numeric start/end: {value!r}"[:200])
            continue
        where = f"{names} {a_ms}..{b_ms} ms"
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            skip("unknown_label", f"label(s) {unknown or names} not in {task.device_id}'s inventory: {where}")
            continue
        if b_ms < a_ms:
            skip("reversed_interval", f"end before start: {where}")
            continue
        outside = a_ms < task.window_start_ms or b_ms >= task.window_end_ms
        if outside or a_ms >= span_ms[1] or b_ms < span_ms[0]:
            skip("out_of_range", f"outside the task window or the device's data span: {where}")
            continue
        start = max(w0 + -(-(a_ms - w0) // step) * step, lo_ms)  # first slot at or after a
        end = min(w0 + ((b_ms - w0) // step + 1) * step, hi_ms)  # one step past the last slot at or before b
        if end <= start:
            skip("empty_interval", f"covers no reading: {where}")
            continue
        for name in names:
            out.setdefault(name, []).append((start, end))
    return {name: _unite(iv) for name, iv in out.items()}


def _unite(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(intervals):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


# ------------------------------------------------------------------------------------------------ pull
@dataclass
class DeviceSpan:
    first_ms: int
    end_ms: int  # last reading + interval
    reading_ms: np.ndarray  # sorted timestamps of non-null readings


def device_spans(ds: Dataset, devices: list[str]) -> dict[str, DeviceSpan]:
    r = ds.readings(devices, columns=["device_id", "timestamp", "power_w"]) if devices else None
    out: dict[str, DeviceSpan] = {}
    if r is None or r.empty:
        return out
    step = round(ds.manifest.interval_s * 1000)
    for dev, g in r.groupby("device_id", sort=False):
        ms = to_epoch_ms(g["timestamp"])
        out[str(dev)] = DeviceSpan(
            int(ms.min()), int(ms.max()) + step, np.sort(ms[g["power_w"].notna().to_numpy()])
        )
    return out


def task_grid(span: DeviceSpan, task: TaskInfo, interval_s: float) -> np.ndarray:
    """The window's slots holding a reading (epoch ms): the grid agreement is measured on."""
    step = round(interval_s * 1000)
    inside = span.reading_ms[
        (span.reading_ms >= task.window_start_ms) & (span.reading_ms < task.window_end_ms)
    ]
    return np.unique(task.window_start_ms + (inside - task.window_start_ms) // step * step)


def _rows(
    intervals: dict[str, list[tuple[int, int]]],
    task: TaskInfo,
    annotator: str,
    reviewed: list[str],
    span: DeviceSpan,
) -> list[dict[str, Any]]:
    """The annotator's on-intervals, plus one "reviewed" row per appliance of the labeling config: the task's
    window (inside the data span), where those intervals are the whole truth (off elsewhere in it)."""
    row = {"device_id": task.device_id, "annotator_id": annotator, "task_id": task.task_id}
    on = [
        {**row, "appliance": a, "start": s, "end": e, "source": "annotator"}
        for a, ivs in intervals.items()
        for s, e in ivs
    ]
    start, end = max(task.window_start_ms, span.first_ms), min(task.window_end_ms, span.end_ms)
    if start >= end:
        return on
    return on + [{**row, "appliance": a, "start": start, "end": end, "source": "reviewed"} for a in reviewed]


def _as_labels(rows: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["device_id", "appliance", "start", "end", "source", "annotator_id", "task_id"]
    df = pd.DataFrame(rows, columns=cols)
    df["start"] = from_epoch_ms(df["start"].to_numpy(dtype=np.int64))
    df["end"] = from_epoch_ms(df["end"].to_numpy(dtype=np.int64))
    return coerce_labels(df)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(SORT, kind="stable", na_position="first").reset_index(drop=True)


@dataclass
class _Pulled:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skips: Skips = field(default_factory=Skips)
    annotators: dict[str, Confusion] = field(default_factory=dict)
    model: dict[str, dict[str, Confusion]] = field(default_factory=dict)  # model_version -> appliance -> pool
    annotations: int = 0
    merged_annotations: int = 0
    superseded: int = 0
    cancelled: int = 0


def _agree(
    pool: dict[str, Confusion],
    grid: np.ndarray,
    a: dict[str, list[tuple[int, int]]],
    b: dict[str, list[tuple[int, int]]],
    appliances: list[str],
) -> None:
    for name in appliances:
        ia, ib = a.get(name, []), b.get(name, [])
        sa = on_slots(grid, np.array([s for s, _ in ia], np.int64), np.array([e for _, e in ia], np.int64))
        sb = on_slots(grid, np.array([s for s, _ in ib], np.int64), np.array([e for _, e in ib], np.int64))
        pool.setdefault(name, Confusion()).add(sa, sb)


def collect(
    annotations_of: dict[int, list[dict[str, Any]]], tasks: list[TaskInfo], ds: Dataset, users: dict[int, str]
) -> _Pulled:
    """Convert the merged annotation of every annotated task, and pool agreement counts."""
    out = _Pulled()
    m = ds.manifest
    spans = device_spans(ds, sorted({t.device_id for t in tasks}))
    for task in tqdm(tasks, desc="pulling annotations", unit="task", leave=False):
        span = spans.get(task.device_id)
        if span is None:
            out.skips.add("out_of_range", task.task_id, None, f"device {task.device_id} has no readings here")
            continue
        try:
            allowed = set(m.device(task.device_id).appliances) or set(m.appliances)
        except KeyError:
            out.skips.add("unknown_label", task.task_id, None, f"device {task.device_id} not in the dataset")
            continue
        if task.readings_sha256 and task.readings_sha256 != _fingerprint(ds, task):
            out.skips.add(
                "readings_changed",
                task.task_id,
                None,
                f"device {task.device_id}'s readings in the task's window are not those it showed "
                "(the dataset was synced again since the push); not merged",
                device_id=task.device_id,
            )
            continue
        annotations = annotations_of.get(task.task_id, [])
        out.annotations += sum(1 for a in annotations if not a.get("was_cancelled"))  # cancelled: apart
        chosen, others = choose_annotation(annotations)
        if chosen is None:
            continue
        kw: RegionArgs = {
            "interval_s": m.interval_s,
            "allowed": allowed,
            "span_ms": (span.first_ms, span.end_ms),
        }
        merged = regions_to_intervals(
            chosen.get("result") or [], task, skips=out.skips, annotation_id=chosen["id"], **kw
        )
        annotator = users.get(int(chosen.get("completed_by") or -1), f"ls-user-{chosen.get('completed_by')}")
        out.rows += _rows(merged, task, annotator, sorted(allowed), span)
        out.merged_annotations += 1
        out.superseded += len(others)
        grid = task_grid(span, task, m.interval_s)
        names = sorted(allowed)
        for other in others:
            if other.get("completed_by") != chosen.get("completed_by"):
                _agree(
                    out.annotators,
                    grid,
                    merged,
                    regions_to_intervals(other.get("result") or [], task, **kw),
                    names,
                )
        for pred in task.predictions:
            pred_iv = regions_to_intervals(pred.get("result") or [], task, **kw)
            pool = out.model.setdefault(str(pred.get("model_version") or "unknown"), {})
            _agree(pool, grid, merged, pred_iv, [n for n in task.model_appliances if n in allowed])
    return out


def _fingerprint(ds: Dataset, task: TaskInfo) -> str:
    from airwatt.sync.carry import readings_fingerprint

    start = pd.Timestamp(task.window_start_ms, unit="ms", tz="UTC")
    end = pd.Timestamp(task.window_end_ms, unit="ms", tz="UTC")
    readings = ds.readings([task.device_id], start, end, columns=["timestamp", "power_w"])
    return readings_fingerprint(readings, start, end)


def merge_labels(
    existing: pd.DataFrame, new: pd.DataFrame, replace_tasks: set[int], project_task_ids: set[int]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(merged labels, removed rows of deleted tasks) by rule 3 of the module docstring."""
    task = existing["task_id"]
    is_annot = existing["source"].isin(["annotator", "reviewed"]) & task.notna()
    ids = task.fillna(-1).astype("int64")
    deleted = is_annot & ~ids.isin(list(project_task_ids))
    replaced = is_annot & ids.isin(list(replace_tasks))
    kept = existing[~(deleted | replaced)]
    merged = pd.concat([kept, new], ignore_index=True) if len(new) else kept
    return _sorted(coerce_labels(merged)), existing[deleted]


def write_labels(data_dir: Path, labels: pd.DataFrame, params: Params) -> dict[str, Any]:
    """Swap in a copy of the dataset with these labels, once the label expectations pass on it."""
    from airwatt.validation import validate_dataset

    ds = Dataset(data_dir)
    with atomic_dir(data_dir) as tmp:
        for item in data_dir.iterdir():
            if item.name in (LABELS_FILE, MANIFEST_FILE):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name, copy_function=link_or_copy)
            else:
                link_or_copy(item, tmp / item.name)
        pq.write_table(frame_to_table(labels, LABELS_SCHEMA), tmp / LABELS_FILE, compression="zstd")
        tables = {**ds.manifest.tables, "labels": TableInfo(file=LABELS_FILE, rows=len(labels))}
        manifest = ds.manifest.model_copy(update={"tables": tables})
        (tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        result = validate_dataset(tmp, params)
        checks = {c.name: c for c in result.checks if c.name in LABEL_CHECKS}
        failed = [c for c in checks.values() if not c.success]
        if failed:
            detail = "; ".join(e.describe() for c in failed for e in c.expectations if not e.success)
            raise ValidationFailed(
                f"{data_dir}: the merged labels fail {', '.join(c.name for c in failed)} ({detail}); "
                "labels.parquet left unchanged"
            )
    return {name: c.success for name, c in checks.items()}


def pull(
    params: Params,
    data_dir: Path,
    *,
    url: str | None = None,
    report_path: Path | None = None,
    client: LabelStudioClient | None = None,
) -> dict[str, Any]:
    """Pull finished annotations into the dataset's labels.parquet; returns the pull report."""
    t0 = time.perf_counter()
    cfg = params.label
    data_dir = Path(data_dir)
    ds = Dataset(data_dir)
    client = client or connect(cfg, url)
    project = client.find_project(cfg.project_title)
    if project is None:
        raise LabelStudioError(
            f"no project titled {cfg.project_title!r} at {client.url}; run `airwatt label setup` and "
            "`airwatt label push` first"
        )
    summaries = client.task_summaries(project.id)
    tasks, other = dataset_tasks(summaries, ds.manifest.name)
    annotated = [
        t
        for t, s in zip(tasks, _summaries_of(summaries, tasks), strict=True)
        if s.get("annotations") or s.get("cancelled_annotations")
    ]
    exported = client.annotations(project.id, [t.task_id for t in annotated])
    pulled = collect(exported, annotated, ds, client.users())
    pulled.cancelled = sum(int(s.get("cancelled_annotations") or 0) for s in _summaries_of(summaries, tasks))
    pulled.annotations += pulled.cancelled

    existing = _sorted(coerce_labels(ds.labels()))
    new = _as_labels(pulled.rows)
    merged, removed = merge_labels(
        existing, new, {t.task_id for t in tasks}, {int(s["id"]) for s in summaries}
    )
    for _, row in removed[removed["source"] == "annotator"].iterrows():  # reviewed rows go with them
        pulled.skips.add(
            "deleted_task",
            int(row["task_id"]),
            None,
            f"{row['device_id']}/{row['appliance']} {row['start']}..{row['end']} by {row['annotator_id']}: "
            "its task is gone from the project; removed from labels.parquet",
            device_id=str(row["device_id"]),
        )
    changed = not merged.equals(existing)
    checks = write_labels(data_dir, merged, params) if changed else None
    report: dict[str, Any] = {
        "url": client.url,
        "project": {"id": project.id, "title": project.title},
        "dataset": ds.manifest.name,
        "data_dir": str(data_dir),
        "tasks": {"dataset": len(tasks), "annotated": len(annotated), "other_datasets": other},
        "annotations": {
            "seen": pulled.annotations,
            "merged": pulled.merged_annotations,
            "superseded": pulled.superseded,
            "cancelled": pulled.cancelled,
        },
        "labels": {
            "annotator_rows": int((merged["source"] == "annotator").sum()),
            "reviewed_rows": int((merged["source"] == "reviewed").sum()),
            "pulled_rows": len(new),
            "removed_deleted_task_rows": len(removed),
            "total_rows": len(merged),
            "changed": changed,
        },
        "label_checks": checks,
        "skipped": {"counts": pulled.skips.counts(), "items": pulled.skips.items},
        "agreement": {
            "annotators": summarise(pulled.annotators),
            "model": {version: summarise(pool) for version, pool in sorted(pulled.model.items())},
        },
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if report_path is not None:
        write_json_atomic(report_path, report)
    log.info(
        "pulled %d annotations of %d tasks from %s: %d annotator label rows (%s); skipped %s",
        pulled.merged_annotations,
        len(annotated),
        client.url,
        report["labels"]["annotator_rows"],
        "labels.parquet updated" if changed else "unchanged",
        pulled.skips.counts() or "none",
    )
    return report


def _summaries_of(summaries: list[dict[str, Any]], tasks: list[TaskInfo]) -> list[dict[str, Any]]:
    by_id = {int(s["id"]): s for s in summaries}
    return [by_id[t.task_id] for t in tasks]
