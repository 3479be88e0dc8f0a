"""validate_dataset: derive, judge with Great Expectations, report, and publish only a good dataset."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from airwatt.atomic import atomic_dir, link_or_copy, write_json_atomic
from airwatt.config import Params
from airwatt.errors import ConfigError
from airwatt.validation.checks import Derived, Limits, Tables, derive_all, inventory_keys, load_tables
from airwatt.validation.result import ValidationResult, build_checks, make_lookup
from airwatt.validation.runner import run_suites
from airwatt.validation.suites import CHECKS, build_suites, check_severities

log = logging.getLogger(__name__)

_DEVICE_STATS = ("gap_fraction", "outage_fraction", "cadence_fraction", "submeter_excess_fraction")


def _frames(tables: Tables, d: Derived) -> dict[str, pd.DataFrame]:
    """Frame name (SuiteSpec.frame) -> DataFrame: the raw tables and the derived frames that exist."""
    frames = {"readings": tables.readings, "ground_truth": tables.ground_truth, "labels": tables.labels}
    optional = {
        "readings_per_row": d.readings,
        "devices": d.devices,
        "ground_truth_per_row": d.ground_truth,
        "labels_per_row": d.labels,
    }
    frames.update({k: v for k, v in optional.items() if v is not None})
    return frames


def _not_run(d: Derived) -> dict[str, str]:
    """Checks that could not run because a table's key columns are unusable (the schema check says why)."""
    if d.readings is None:
        why = "readings.parquet key columns unusable (see schema)"
        derived_checks = [c for c in CHECKS if c != "schema"]
        return dict.fromkeys(derived_checks, why)
    out: dict[str, str] = {}
    if d.ground_truth is None:
        why = "ground_truth.parquet key columns unusable (see schema)"
        out.update(dict.fromkeys(["timestamps_increasing", "power_range", "submeter_sum"], why))
    if d.labels is None:
        why = "labels.parquet key columns unusable (see schema)"
        out.update(dict.fromkeys(["label_order", "label_span", "label_known"], why))
    return out


def _device_stats(d: Derived) -> dict[str, dict[str, float]]:
    if d.devices is None:
        return {}
    stats = d.devices[list(_DEVICE_STATS)].astype(float)
    return {str(dev): {k: float(v) for k, v in row.items()} for dev, row in stats.iterrows()}


def publish(data_dir: Path, target: Path) -> None:
    """Copy the dataset to ``target`` atomically (hard links where the filesystem allows)."""
    if target.resolve() == data_dir.resolve() or data_dir.resolve() in target.resolve().parents:
        raise ConfigError(f"--publish {target} must not be the validated dataset {data_dir} or inside it")
    with atomic_dir(target) as tmp:
        shutil.copytree(data_dir, tmp, copy_function=link_or_copy, dirs_exist_ok=True)


def validate_dataset(
    data_dir: Path,
    params: Params,
    *,
    docs_dir: Path | None = None,
    summary_path: Path | None = None,
    publish_to: Path | None = None,
) -> ValidationResult:
    """Validate a dataset directory against the expectation suites configured by ``params.validate_``.

    Writes Data Docs to ``docs_dir`` and the JSON summary to ``summary_path`` (both atomically, pass or
    fail); copies the dataset to ``publish_to`` only when no check of severity "fail" failed.
    """
    t0 = time.perf_counter()
    cfg = params.validate_
    check_severities(cfg)
    data_dir = Path(data_dir)
    tables = load_tables(data_dir)
    m = tables.manifest
    notes = []
    if m.interval_s != params.data.interval_s:
        notes.append(
            f"manifest interval {m.interval_s:g} s; judged against data.interval_s "
            f"{params.data.interval_s:g} s"
        )
    lim = Limits(
        interval_s=params.data.interval_s,
        cadence_tolerance_s=cfg.cadence_tolerance_s,
        submeter_tolerance_w=cfg.submeter_tolerance_w,
        submeter_tolerance_fraction=cfg.submeter_tolerance_fraction,
    )
    log.info(
        "validating %s: %d readings, %d ground-truth rows, %d labels, %d devices",
        data_dir,
        len(tables.readings),
        len(tables.ground_truth),
        len(tables.labels),
        len(m.devices),
    )
    derived = derive_all(tables, lim)
    log.debug("derived frames in %.2f s", time.perf_counter() - t0)
    present = {
        "readings": derived.readings is not None,
        "ground_truth": derived.ground_truth is not None,
        "labels": derived.labels is not None,
    }
    frames = _frames(tables, derived)
    columns = {name: list(frame.columns) for name, frame in frames.items()}
    suites = build_suites(cfg, m, inventory_keys(m), present, columns)
    docs_index = None
    if docs_dir is not None:
        with atomic_dir(docs_dir) as tmp:
            gx_results = run_suites(suites, frames, docs_dir=tmp, example_rows=cfg.example_rows)
        docs_index = Path(docs_dir) / "index.html"
    else:
        gx_results = run_suites(suites, frames, docs_dir=None, example_rows=cfg.example_rows)

    lookup = make_lookup(tables, derived, lim, cfg.example_rows)
    checks = build_checks(suites, gx_results, lookup, dict(cfg.severity), _not_run(derived))
    result = ValidationResult(
        dataset=data_dir,
        checks=checks,
        rows={
            "readings": len(tables.readings),
            "ground_truth": len(tables.ground_truth),
            "labels": len(tables.labels),
        },
        devices=len(derived.devices) if derived.devices is not None else len(m.devices),
        device_stats=_device_stats(derived),
        docs_index=docs_index,
        summary_path=summary_path,
        publish_requested=publish_to,
        notes=notes,
    )
    if result.success and publish_to is not None:
        publish(data_dir, Path(publish_to))
        result.published_to = Path(publish_to)
    result.seconds = time.perf_counter() - t0
    if summary_path is not None:
        write_json_atomic(summary_path, result.summary())
    _log_outcome(result)
    return result


def _log_outcome(result: ValidationResult) -> None:
    rate = result.rows["readings"] / max(result.seconds, 1e-9)
    failed = [c.name for c in result.failed_checks]
    warned = [c.name for c in result.warned_checks]
    if result.success:
        log.info(
            "validation passed in %.1f s (%.0f readings/s); warnings: %s",
            result.seconds,
            rate,
            warned or "none",
        )
    else:
        log.error("validation failed: %s; warnings: %s", failed, warned or "none")
    if result.published_to is not None:
        log.info("published %s to %s", result.dataset, result.published_to)


__all__ = ["ValidationResult", "publish", "validate_dataset"]
