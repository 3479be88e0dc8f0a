"""The cross-house protocol: how well a model does on a home it never saw (params.yaml ``protocol``).

1. **The mix.** Every source of ``protocol.sources`` (REDD, REFIT at 8 s and 30 s, the REFIT day files,
   UK-DALE days, the simulated fleet) is imported once into ``<work>/sources/<name>`` and combined into
   ``<work>/mix`` (airwatt.dataset.combine): one vocabulary, each device its own appliances, an appliance
   without truth on a device masked (never off).
2. **Folds.** Each house of ``protocol.folds`` (leave-one-house-out) and of ``protocol.cross_dataset`` is
   held out in turn: the device named exactly so is the test device, every other recording of the house
   (``<house>-30s``, ...) is excluded from every split, and all the remaining devices except
   ``protocol.val_devices`` train (prepare's explicit split plus ``exclude_devices``). The held-out house is
   never in training or validation; ``split.json`` of each fold records it and the tests check it.
3. **Runs.** For each model, fold and seed: train with the fold's data and ``train.source_weights`` =
   ``protocol.weights`` (an MLflow child run of one parent run), evaluate on the test device as served
   (a real-time model: its causal decision rule; the offline figures beside), record the per-appliance
   metrics. Results are kept per run (``<work>/results``), so an interrupted protocol resumes.
4. **Summary.** Per model: a table per appliance and fold (mean and standard deviation over seeds), the
   mean over the leave-one-house-out folds, the worst fold, the cross-dataset folds beside, and the
   switch-on events of each appliance (share of true switch-ons detected, median delay, false switch-ons a
   day: how a programme-level product would score it); printed, written to ``<work>/protocol.json`` and
   ``protocol.md`` and logged to the parent run.

The same code runs reduced (fewer steps, seeds, simulated houses) in the tests and full on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from airwatt.atomic import write_json_atomic
from airwatt.config import Params, ProtocolParams, ProtocolSource, load_params
from airwatt.errors import ConfigError, DataError
from airwatt.results import Metrics, SwitchMetrics

log = logging.getLogger(__name__)

SHARED_DATA_ENV = "AIRWATT_SHARED_DATA"
METRICS = ("f1", "mae_w")
SWITCH_METRICS = ("detected", "delay_median_s", "false_switches_per_day")


@dataclass(frozen=True)
class Fold:
    """One held-out house: its test device, its other recordings (in no split), and what kind of fold."""

    house: str
    kind: str  # "loho" | "cross_dataset"
    test: tuple[str, ...]
    excluded: tuple[str, ...]


@dataclass
class RunResult:
    model: str
    fold: str
    seed: int
    served: dict[str, dict[str, float | None]]  # appliance -> metric -> value (None: undefined)
    offline: dict[str, dict[str, float | None]]
    rule: str
    train_s: float
    eval_s: float
    run_id: str | None = None
    signature: str = ""
    adapt: dict[str, Any] | None = None  # the few-label curve (adapt_one)
    switches: dict[str, dict[str, float | None]] | None = None  # appliance -> SWITCH_METRICS, run's rule


@dataclass
class ProtocolResult:
    work: Path
    runs: list[RunResult] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    adapt: dict[str, Any] = field(default_factory=dict)
    table: str = ""
    parent_run_id: str | None = None


# ------------------------------------------------------------------------------------------------ the mix
def data_root(pp: ProtocolParams, repo: Path) -> Path:
    """``AIRWATT_SHARED_DATA`` when set, else ``protocol.data_root`` (relative to the repository)."""
    env = os.environ.get(SHARED_DATA_ENV)
    root = Path(env) if env else Path(pp.data_root)
    return root if root.is_absolute() else (repo / root).resolve()


def build_source(name: str, src: ProtocolSource, params: Params, root: Path, out: Path) -> Path:
    """One source of the mix as an AirWatt dataset at ``out`` (kept when already built)."""
    from airwatt.importers import import_dataset
    from airwatt.simulate import simulate_fleet

    if (out / "manifest.json").is_file():
        log.info("source %s: reusing %s", name, out)
        return out
    interval_s = params.data.interval_s
    if src.kind == "simulator":
        assert src.devices is not None and src.days is not None
        cfg = params.simulate.model_copy(
            update={"devices": src.devices, **({"seed": src.seed} if src.seed is not None else {})}
        )
        simulate_fleet(out, cfg, start=src.start or params.sync.start, days=src.days, interval_s=interval_s)
        return out
    assert src.path is not None
    path = root / src.path
    if src.kind == "dataset":
        if not (path / "manifest.json").is_file():
            raise DataError(f"protocol source {name!r}: not an AirWatt dataset", file=path)
        return path
    if not path.exists():
        raise DataError(
            f"protocol source {name!r}: {src.kind} data not found "
            f"(set {SHARED_DATA_ENV} or protocol.data_root)",
            file=path,
        )
    import_dataset(
        src.kind,
        path,
        out,
        interval_s=interval_s,
        max_fill_s=params.import_.max_fill_s,
        start=src.start,
        end=src.end,
    )
    return out


def build_mix(params: Params, work: Path, repo: Path) -> Path:
    """Import every source and combine them into ``<work>/mix`` (reused when its sources are unchanged)."""
    from airwatt.dataset.combine import Source, combine_datasets

    pp = _protocol(params)
    root = data_root(pp, repo)
    built = [
        Source(name, build_source(name, src, params, root, work / "sources" / name), src.device_suffix)
        for name, src in pp.sources.items()
    ]
    mix = work / "mix"
    signature = _hash({s.name: [str(s.path), s.device_suffix, _manifest_hash(s.path)] for s in built})
    stamp = work / "mix.signature"
    if (mix / "manifest.json").is_file() and stamp.is_file() and stamp.read_text() == signature:
        log.info("mix: reusing %s", mix)
        return mix
    combine_datasets(mix, built, name="protocol-mix")
    stamp.write_text(signature)
    return mix


def _manifest_hash(path: Path) -> str:
    return hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()[:16]


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# protocol keys that choose which runs happen, not what one run does: a subset reuses the full form's results
RUN_SELECTION_KEYS = ("seeds", "folds", "cross_dataset", "models")


def run_signature(params: Params, mix_hash: str, fold: Fold, model: str, seed: int) -> str:
    """What one run's result depends on: every param but the run selection, the mix, the run's coordinates."""
    dumped = params.model_dump(mode="json")
    dumped["protocol"] = {k: v for k, v in dumped["protocol"].items() if k not in RUN_SELECTION_KEYS}
    return _hash({"params": dumped, "mix": mix_hash, "fold": fold.house, "model": model, "seed": seed})


def _protocol(params: Params) -> ProtocolParams:
    if params.protocol is None:
        raise ConfigError("params.yaml has no protocol section (see docs/generalisation.md)")
    return params.protocol


# ---------------------------------------------------------------------------------------------- folds
def recordings_of(house: str, device_ids: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(test, excluded) devices of one house: the device named ``house``, and its other recordings
    (``house`` followed by "-": a source's device_suffix)."""
    test = tuple(d for d in device_ids if d == house)
    excluded = tuple(sorted(d for d in device_ids if d.startswith(f"{house}-")))
    return test, excluded


def make_folds(pp: ProtocolParams, device_ids: Sequence[str]) -> list[Fold]:
    """The protocol's folds over the mix's devices; DataError for a house the mix does not hold."""
    folds = []
    for kind, houses in (("loho", pp.folds), ("cross_dataset", pp.cross_dataset)):
        for house in houses:
            test, excluded = recordings_of(house, device_ids)
            if not test:
                raise DataError(
                    f"protocol fold {house!r}: no such device in the mix (it has {list(device_ids)})"
                )
            folds.append(Fold(house, kind, test, excluded))
    missing_val = sorted(set(pp.val_devices) - set(device_ids))
    if missing_val:
        raise DataError(f"protocol.val_devices {missing_val} are not in the mix")
    return folds


def fold_overrides(pp: ProtocolParams, fold: Fold) -> dict[str, Any]:
    """prepare params of one fold: the house's test device, its other recordings in no split, the reference
    appliances as the model's (the other sub-meters stay in the aggregate)."""
    return {
        "prepare.test_devices": list(fold.test),
        "prepare.val_devices": list(pp.val_devices),
        "prepare.exclude_devices": list(fold.excluded),
        "prepare.split_by": "device",
        "prepare.appliances": list(pp.reference),
    }


def train_overrides(
    params: Params, pp: ProtocolParams, model: str, seed: int, checkpoints: Path
) -> dict[str, Any]:
    """train params of one run: the model's protocol.train, the protocol's steps (ten validations), seed,
    training mix, augmentation."""
    return {
        **{f"train.{k}": v for k, v in pp.train.get(model, {}).items()},
        "train.augment": {**params.train.augment.model_dump(), **pp.augment},
        "train.model": model,
        "train.seed": seed,
        "train.max_steps": pp.max_steps,
        "train.max_epochs": 1000,
        "train.limit_train_batches": max(1, math.ceil(pp.max_steps / 10)),
        "train.source_weights": dict(pp.weights),
        "train.checkpoint_dir": str(checkpoints),
        "train.devices": 1,  # one process: under DDP every rank would rerun the whole protocol
    }


# ----------------------------------------------------------------------------------------------- runs
def _per_appliance(
    table: Mapping[str, Metrics | SwitchMetrics], names: Sequence[str], keys: Sequence[str] = METRICS
) -> dict[str, dict[str, float | None]]:
    """The ``keys`` figures (F1 and MAE by default) of each appliance of ``names`` in a report's table; None
    where it was not scored."""
    return {a: {m: getattr(table[a], m) if a in table else None for m in keys} for a in names}


def run_one(
    params: Params,
    params_path: Path,
    work: Path,
    mix: Path,
    fold: Fold,
    model: str,
    seed: int,
    *,
    parent_run_id: str | None,
    use_mlflow: bool,
    extra: dict[str, Any],
) -> RunResult:
    """Prepare the fold (when not done), train one model and seed, evaluate it on the fold's test device."""
    from airwatt.evaluate import evaluate_bundle
    from airwatt.models import ModelBundle
    from airwatt.prepare import prepare
    from airwatt.training.train import train

    pp = _protocol(params)
    fold_dir = work / "folds" / fold.house
    fold_params = load_params(params_path, overrides={**extra, **fold_overrides(pp, fold)})
    prepared = fold_dir / "prepared"
    _prepare_once(prepare, mix, fold_params, prepared)
    overrides = {
        **extra,
        **fold_overrides(pp, fold),
        **train_overrides(params, pp, model, seed, work / "checkpoints"),
    }
    run_params = load_params(params_path, overrides=overrides)
    t = time.perf_counter()
    result = train(
        run_params,
        prepared,
        out_dir=fold_dir / "models" / f"{model}-seed{seed}",
        metrics_path=fold_dir / "metrics" / f"{model}-seed{seed}.json",
        epochs_path=fold_dir / "metrics" / f"{model}-seed{seed}.csv",
        fresh=True,
        use_mlflow=use_mlflow,
        parent_run_id=parent_run_id,
        run_name=f"{model}-{fold.house}-seed{seed}",
        register=False,
    )
    train_s = time.perf_counter() - t
    t = time.perf_counter()
    bundle = ModelBundle.load(result.bundle_dir, device=_eval_device())
    report = evaluate_bundle(bundle, mix, devices=list(fold.test))
    eval_s = time.perf_counter() - t
    names = list(bundle.appliances)
    headline = _per_appliance(report.appliances, names)
    served = report.rule == "served"  # an offline (midpoint) model has only offline figures
    run = RunResult(
        model,
        fold.house,
        seed,
        headline if served else {},
        (_per_appliance(report.offline.appliances, names) if report.offline else {}) if served else headline,
        report.rule,
        train_s,
        eval_s,
        result.run_id,
        switches=_per_appliance(report.switches, names, SWITCH_METRICS),
    )
    write_json_atomic(fold_dir / "metrics" / f"{model}-seed{seed}-test.json", report)
    if result.run_id is not None:
        _log_run_metrics(result.run_id, run, pp.reference)
    return run


def _prepare_once(prepare: Callable[..., Any], mix: Path, params: Params, out: Path) -> None:
    """Prepare a fold's data unless ``out`` already holds this split of this mix."""
    key = _hash({"prepare": params.prepare.model_dump(), "mix": _manifest_hash(mix)})
    stamp = out.with_name("prepared.signature")
    if (out / "split.json").is_file() and stamp.is_file() and stamp.read_text() == key:
        return
    prepare(mix, params, out)
    stamp.write_text(key)


def _eval_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def reference_mean(
    per_appliance: dict[str, dict[str, float | None]], reference: Sequence[str], metric: str
) -> float:
    """Mean of ``metric`` over the reference appliances where it is defined (NaN when nowhere)."""
    values = [per_appliance.get(a, {}).get(metric) for a in reference]
    defined = [v for v in values if v is not None and not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def _log_run_metrics(run_id: str, run: RunResult, reference: Sequence[str]) -> None:
    from airwatt import tracking

    metrics: dict[str, float] = {}
    for rule, figures in (("served", run.served), ("offline", run.offline)):
        for m in METRICS:
            metrics[f"test.{rule}.mean.{m}"] = reference_mean(figures, reference, m)
            for a in reference:
                v = figures.get(a, {}).get(m)
                if v is not None:
                    metrics[f"test.{rule}.{a}.{m}"] = v
    c = tracking.client()
    for k, v in metrics.items():
        if not math.isnan(v):
            c.log_metric(run_id, k, float(v))
    c.set_tag(run_id, "protocol.fold", run.fold)


# ------------------------------------------------------------------------------------ few-label curve
def slice_device(mix: Path, device: str, start: pd.Timestamp, end: pd.Timestamp, out: Path) -> Path:
    """One device of ``mix`` in [start, end) as its own dataset (labels clipped to the window); kept when
    already written."""
    from airwatt.dataset import Dataset, DatasetWriter

    if (out / "manifest.json").is_file():
        return out
    ds = Dataset(mix)
    info = ds.manifest.device(device)
    readings = ds.readings([device], start, end).drop(columns="device_id")
    gt = ds.ground_truth([device], start, end).drop(columns="device_id") if info.has_ground_truth else None
    labels = ds.labels([device], start, end).drop(columns="device_id")
    if len(labels):
        labels = labels.assign(start=labels["start"].clip(lower=start), end=labels["end"].clip(upper=end))
    if readings.empty:
        raise DataError(f"protocol adapt: no readings in [{start}, {end})", device=device)
    with DatasetWriter(
        out,
        name=f"{device}-site",
        appliances=ds.appliances,
        interval_s=ds.manifest.interval_s,
        start=start,
        end=end,
        provenance={"sliced_from": str(mix), "device": device},
    ) as w:
        w.add_device(info, readings, ground_truth=gt, labels=labels)
    return out


def device_span(mix: Path, device: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """[first reading, last reading + one interval) of a device."""
    from airwatt.dataset import Dataset

    ds = Dataset(mix)
    ts = ds.readings([device], columns=["timestamp"])["timestamp"]
    return ts.min(), ts.max() + pd.Timedelta(seconds=ds.manifest.interval_s)


def adapt_one(
    params_path: Path,
    work: Path,
    mix: Path,
    fold: Fold,
    run: RunResult,
    bundle_dir: Path,
    *,
    pp: ProtocolParams,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The few-label curve of one fold and seed: k = 0 (the trained model) and each k of adapt.days that the
    house allows, fine-tuned on its first k days, all scored on its last eval_days (module docstring)."""
    from airwatt.evaluate import evaluate_bundle
    from airwatt.models import ModelBundle
    from airwatt.prepare import prepare
    from airwatt.training.train import train

    ap = pp.adapt
    assert ap is not None
    house = fold.test[0]
    first, last = device_span(mix, house)
    eval_start = (last - pd.Timedelta(days=ap.eval_days)).floor("s")
    site_dir = work / "adapt" / fold.house
    eval_ds = slice_device(mix, house, eval_start, last, site_dir / "eval")
    base = ModelBundle.load(bundle_dir, device=_eval_device())
    names = list(base.appliances)
    curve: dict[str, Any] = {
        "0": _per_appliance(evaluate_bundle(base, eval_ds, devices=[house]).appliances, names)
    }
    skipped: list[float] = []
    for k in ap.days:
        end = (first + pd.Timedelta(days=k)).floor("s")
        if end > eval_start:
            skipped.append(k)
            continue
        days_ds = slice_device(mix, house, first, end, site_dir / f"days-{k:g}")
        site_params = {
            **extra,
            "prepare.split_by": "time",
            "prepare.val_devices": [],
            "prepare.test_devices": [],
            "prepare.exclude_devices": [],
            "prepare.val_fraction": ap.val_fraction,
            "prepare.test_fraction": 0.0,
            "prepare.appliances": names,
        }
        prepared = site_dir / f"prepared-{k:g}"
        _prepare_once(prepare, days_ds, load_params(params_path, overrides=site_params), prepared)
        tune = {
            **site_params,
            **{f"train.{k}": v for k, v in pp.train.get(run.model, {}).items()},
            "train.init_from": str(bundle_dir),
            "train.finetune": ap.finetune,
            "train.seed": run.seed,
            "train.max_steps": ap.max_steps,
            "train.max_epochs": 1000,
            "train.limit_train_batches": max(1, math.ceil(ap.max_steps / 5)),
            "train.source_weights": {},
            "train.checkpoint_dir": str(work / "checkpoints"),
            "train.devices": 1,
        }
        name = f"{run.model}-seed{run.seed}-k{k:g}"
        result = train(
            load_params(params_path, overrides=tune),
            prepared,
            out_dir=site_dir / "models" / name,
            metrics_path=site_dir / "metrics" / f"{name}.json",
            epochs_path=site_dir / "metrics" / f"{name}.csv",
            fresh=True,
            use_mlflow=False,
        )
        tuned = ModelBundle.load(result.bundle_dir, device=_eval_device())
        curve[f"{k:g}"] = _per_appliance(evaluate_bundle(tuned, eval_ds, devices=[house]).appliances, names)
    if skipped:
        log.info("%s: %s labelled days do not fit before its last %g days", house, skipped, ap.eval_days)
    return {"eval": [eval_start.isoformat(), last.isoformat()], "served": curve, "not_available": skipped}


def _log_adapt_metrics(run_id: str, adapt: dict[str, Any], reference: Sequence[str]) -> None:
    from airwatt import tracking

    c = tracking.client()
    for k, figures in adapt["served"].items():
        for m in METRICS:
            v = reference_mean(figures, reference, m)
            if not math.isnan(v):
                c.log_metric(run_id, f"adapt.k{k}.served.mean.{m}", v)


def summarise_adapt(runs: Sequence[RunResult], pp: ProtocolParams) -> dict[str, Any]:
    """Per model and fold: the served mean F1 / MAE per k (mean over seeds); the mean gain of each k over
    k = 0 on the folds that allow it."""
    out: dict[str, Any] = {}
    for model in dict.fromkeys(r.model for r in runs if r.adapt):
        folds: dict[str, Any] = {}
        for r in (r for r in runs if r.model == model and r.adapt):
            assert r.adapt is not None
            f = folds.setdefault(r.fold, {})
            for k, figures in r.adapt["served"].items():
                cell = f.setdefault(k, {m: [] for m in METRICS})
                for m in METRICS:
                    cell[m].append(reference_mean(figures, pp.reference, m))
        table = {
            fold: {k: {m: _stats(v)[0] for m, v in cell.items()} for k, cell in ks.items()}
            for fold, ks in folds.items()
        }
        gains: dict[str, Any] = {}
        for k in dict.fromkeys(k for ks in table.values() for k in ks if k != "0"):
            per_fold = {
                f: ks[k]["f1"] - ks["0"]["f1"]
                for f, ks in table.items()
                if k in ks and not math.isnan(ks[k]["f1"] - ks["0"]["f1"])
            }
            gains[k] = {"mean_f1_gain": _stats(list(per_fold.values()))[0], "folds": per_fold}
        out[model] = {"folds": table, "gain": gains}
    return out


def format_adapt(adapt: dict[str, Any], pp: ProtocolParams) -> str:
    """Markdown: per model, the served mean F1 / MAE per fold (rows) and labelled days k (columns)."""
    lines: list[str] = []
    assert pp.adapt is not None
    ks = ["0", *[f"{k:g}" for k in pp.adapt.days]]
    for model, a in adapt.items():
        lines.append(
            f"\n{model}, few-label curve (served mean F1 / MAE W on each house's last "
            f"{pp.adapt.eval_days:g} days, mean over seeds; fine-tuning: {pp.adapt.finetune}):\n"
        )
        lines.append("| fold | " + " | ".join(f"k = {k}" for k in ks) + " |")
        lines.append("|---" * (len(ks) + 1) + "|")
        for fold, cells in a["folds"].items():
            row = [
                f"{_fmt(cells[k]['f1'], 2)} / {_fmt(cells[k]['mae_w'], 1)}" if k in cells else "n/a"
                for k in ks
            ]
            lines.append(f"| {fold} | " + " | ".join(row) + " |")
        for k, g in a["gain"].items():
            lines.append(
                f"\nk = {k}: mean F1 gain over k = 0 {_fmt(g['mean_f1_gain'], 3)} on {len(g['folds'])} folds"
            )
    return "\n".join(lines).strip() + "\n"


# -------------------------------------------------------------------------------------------- summary
def _stats(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    return statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0


def summarise(runs: Sequence[RunResult], folds: Sequence[Fold], pp: ProtocolParams) -> dict[str, Any]:
    """Per model: per fold and appliance mean/std over seeds; the LOHO mean, worst fold; cross-dataset."""
    out: dict[str, Any] = {}
    for model in dict.fromkeys(r.model for r in runs):
        mine = [r for r in runs if r.model == model]
        per_fold: dict[str, Any] = {}
        for fold in folds:
            seeds = [r for r in mine if r.fold == fold.house]
            if not seeds:
                continue
            cells: dict[str, Any] = {}
            for rule in ("served", "offline"):
                figures: dict[str, Any] = {}
                for a in [*pp.reference, "mean"]:
                    figures[a] = {}
                    for m in METRICS:
                        vals = [
                            reference_mean(getattr(r, rule), pp.reference, m)
                            if a == "mean"
                            else _num(getattr(r, rule).get(a, {}).get(m))
                            for r in seeds
                        ]
                        mean, std = _stats(vals)
                        figures[a][m] = {"mean": mean, "std": std, "seeds": vals}
                cells[rule] = figures
            per_fold[fold.house] = {
                "kind": fold.kind,
                "seeds": [r.seed for r in seeds],
                **cells,
                "switches": _switch_cells(seeds, pp.reference),
            }
        loho = [f for f in folds if f.kind == "loho" and f.house in per_fold]
        headline: dict[str, Any] = {}
        for rule in ("served", "offline"):
            h: dict[str, Any] = {}
            for m in METRICS:
                all_runs = [v for f in loho for v in per_fold[f.house][rule]["mean"][m]["seeds"]]
                mean, std = _stats(all_runs)
                h[m] = {"mean": mean, "std": std}
            fold_f1 = {f.house: per_fold[f.house][rule]["mean"]["f1"]["mean"] for f in loho}
            defined = {k: v for k, v in fold_f1.items() if not math.isnan(v)}
            worst = min(defined, key=defined.__getitem__) if defined else None
            h["worst_fold"] = {"fold": worst, "f1": defined.get(worst, math.nan) if worst else math.nan}
            headline[rule] = h
        out[model] = {"folds": per_fold, "loho": headline}
    return out


def _switch_cells(seeds: Sequence[RunResult], reference: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per appliance: each switch-event figure's mean over the seeds where it is defined (runs recorded
    before the protocol kept switch events count as undefined)."""
    out: dict[str, dict[str, Any]] = {}
    for a in reference:
        out[a] = {}
        for m in SWITCH_METRICS:
            vals = [_num((r.switches or {}).get(a, {}).get(m)) for r in seeds]
            out[a][m] = {"mean": _stats(vals)[0], "seeds": vals}
    return out


def _num(v: float | None) -> float:
    return math.nan if v is None else float(v)


def format_table(summary: dict[str, Any], pp: ProtocolParams) -> str:
    """Markdown tables: per model and rule, F1 and MAE per appliance (rows) and fold (columns)."""
    lines: list[str] = []
    for model, s in summary.items():
        folds = list(s["folds"])
        for rule in ("served", "offline"):
            if all(math.isnan(v) for f in folds for v in s["folds"][f][rule]["mean"]["mae_w"]["seeds"]):
                continue  # no figures under this rule (an offline model is never served)
            lines.append(f"\n{model}, {rule} (F1 / MAE W, mean ± std over seeds):\n")
            head = _fold_heads(s)
            lines.append("| appliance | " + " | ".join(head) + " |")
            lines.append("|---" * (len(folds) + 1) + "|")
            for a in [*pp.reference, "mean"]:
                cells = []
                for f in folds:
                    c = s["folds"][f][rule][a]
                    cells.append(f"{_pm(c['f1'], 2)} / {_pm(c['mae_w'], 1)}")
                lines.append(f"| {'**mean**' if a == 'mean' else a} | " + " | ".join(cells) + " |")
            h = s["loho"][rule]
            f1 = h["f1"]
            lines.append(
                f"\nleave-one-house-out ({rule}): mean F1 {_fmt(f1['mean'], 3)} ± {_fmt(f1['std'], 3)}, "
                f"MAE {_fmt(h['mae_w']['mean'], 1)} ± {_fmt(h['mae_w']['std'], 1)} W; worst fold "
                f"{h['worst_fold']['fold']} F1 {_fmt(h['worst_fold']['f1'], 3)}"
            )
        lines.extend(_format_switches(model, s, pp))
    return "\n".join(lines).strip() + "\n"


def _fold_heads(s: dict[str, Any]) -> list[str]:
    """A model's fold columns, the cross-dataset ones marked."""
    return [f"{f}{' (cross)' if c['kind'] == 'cross_dataset' else ''}" for f, c in s["folds"].items()]


def _format_switches(model: str, s: dict[str, Any], pp: ProtocolParams) -> list[str]:
    """The switch-on event table of one model (the rule its runs were scored by), mean over seeds."""
    folds = list(s["folds"])
    lines = [
        f"\n{model}, switch-on events (share of true switch-ons detected / median delay min / false "
        "switch-ons a day, mean over seeds):\n",
        "| appliance | " + " | ".join(_fold_heads(s)) + " |",
        "|---" * (len(folds) + 1) + "|",
    ]
    for a in pp.reference:
        cells = []
        for f in folds:
            c = s["folds"][f]["switches"][a]
            detected, delay_s = c["detected"]["mean"], c["delay_median_s"]["mean"]
            cells.append(
                f"{_fmt(100 * detected, 0)}{'' if math.isnan(detected) else ' %'} / "
                f"{_fmt(delay_s / 60, 1)} / {_fmt(c['false_switches_per_day']['mean'], 1)}"
            )
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return lines


def _pm(cell: dict[str, float], digits: int) -> str:
    """ "mean ± std", or "n/a" where undefined in every seed."""
    if math.isnan(cell["mean"]):
        return "n/a"
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def _fmt(v: float, digits: int) -> str:
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


# ----------------------------------------------------------------------------------------------- entry
def run_protocol(
    params_path: Path,
    work: Path,
    *,
    overrides: dict[str, Any] | None = None,
    use_mlflow: bool = True,
    repo: Path | None = None,
) -> ProtocolResult:
    """Run the whole protocol (module docstring); ``overrides`` as load_params' (e.g. a reduced form)."""
    from airwatt import tracking
    from airwatt.dataset import read_manifest

    extra = dict(overrides or {})
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    snapshot = work / "params.yaml"  # every run reads this copy: editing params.yaml mid-protocol is safe
    snapshot.write_text(Path(params_path).read_text())
    repo = repo or tracking.repo_root(Path(params_path).resolve().parent)
    params_path = snapshot
    params = load_params(params_path, overrides=extra)
    pp = _protocol(params)
    mix = build_mix(params, work, repo)
    folds = make_folds(pp, read_manifest(mix).device_ids)
    total = len(pp.models) * len(folds) * len(pp.seeds)
    log.info(
        "protocol: %d folds x %d seeds x %d models = %d runs",
        len(folds),
        len(pp.seeds),
        len(pp.models),
        total,
    )
    parent = _start_parent(params, pp, work) if use_mlflow else None
    runs: list[RunResult] = []
    done = 0
    for model in pp.models:
        for fold in folds:
            for seed in pp.seeds:
                done += 1
                signature = run_signature(params, _manifest_hash(mix), fold, model, seed)
                cached = _cached(work, model, fold, seed, signature)
                if cached is not None:
                    log.info(
                        "[%d/%d] %s %s seed %d: reusing the result", done, total, model, fold.house, seed
                    )
                    runs.append(cached)
                    continue
                log.info("[%d/%d] %s, held out %s, seed %d", done, total, model, fold.house, seed)
                run = run_one(
                    params,
                    params_path,
                    work,
                    mix,
                    fold,
                    model,
                    seed,
                    parent_run_id=parent,
                    use_mlflow=use_mlflow,
                    extra=extra,
                )
                run.signature = signature
                if pp.adapt is not None and run.served:  # the curve is of what a real-time model serves
                    bundle_dir = work / "folds" / fold.house / "models" / f"{model}-seed{seed}"
                    run.adapt = adapt_one(params_path, work, mix, fold, run, bundle_dir, pp=pp, extra=extra)
                    if run.run_id is not None:
                        _log_adapt_metrics(run.run_id, run.adapt, pp.reference)
                write_json_atomic(_result_path(work, model, fold, seed), run.__dict__)
                runs.append(run)
    summary = summarise(runs, folds, pp)
    table = format_table(summary, pp)
    adapt = summarise_adapt(runs, pp) if pp.adapt is not None and any(r.adapt for r in runs) else {}
    if adapt:
        table += "\n" + format_adapt(adapt, pp)
    doc = {
        "folds": [f.__dict__ for f in folds],
        "summary": summary,
        "adapt": adapt,
        "runs": [r.__dict__ for r in runs],
    }
    write_json_atomic(work / "protocol.json", _finite(doc))
    (work / "protocol.md").write_text(table)
    if parent is not None:
        _finish_parent(parent, summary, adapt, work)
    return ProtocolResult(work, runs, summary, adapt, table, parent)


def _result_path(work: Path, model: str, fold: Fold, seed: int) -> Path:
    return work / "results" / model / fold.house / f"seed{seed}.json"


def _cached(work: Path, model: str, fold: Fold, seed: int, signature: str) -> RunResult | None:
    path = _result_path(work, model, fold, seed)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return RunResult(**doc) if doc.get("signature") == signature else None


def _finite(obj: Any) -> Any:
    """NaN -> None, so protocol.json is strict JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


def _start_parent(params: Params, pp: ProtocolParams, work: Path) -> str:
    from airwatt import tracking

    uri = tracking.tracking_uri()
    exp = tracking.ensure_experiment(params.register_.experiment, uri)
    c = tracking.client(uri)
    run = c.create_run(
        exp, run_name=f"protocol-{time.strftime('%Y%m%d-%H%M%S')}", tags={"protocol": "cross-house"}
    )
    flat = tracking.flatten({"protocol": pp.model_dump(mode="json")}, "")
    tracking.log_run_params(run.info.run_id, {**flat, "work": str(work), **tracking.git_state()})
    log.info("protocol: MLflow parent run %s", run.info.run_id)
    return str(run.info.run_id)


def _finish_parent(run_id: str, summary: dict[str, Any], adapt: dict[str, Any], work: Path) -> None:
    from airwatt import tracking

    c = tracking.client()
    for model, a in adapt.items():
        for k, g in a["gain"].items():
            if not math.isnan(g["mean_f1_gain"]):
                c.log_metric(run_id, f"{model}.adapt.k{k}.f1_gain", g["mean_f1_gain"])
    for model, s in summary.items():
        for rule, h in s["loho"].items():
            for m in METRICS:
                if not math.isnan(h[m]["mean"]):
                    c.log_metric(run_id, f"{model}.{rule}.loho.{m}", h[m]["mean"])
                    c.log_metric(run_id, f"{model}.{rule}.loho.{m}_std", h[m]["std"])
            if not math.isnan(h["worst_fold"]["f1"]):
                c.log_metric(run_id, f"{model}.{rule}.worst_fold.f1", h["worst_fold"]["f1"])
            for fold, f in s["folds"].items():
                v = f[rule]["mean"]["f1"]["mean"]
                if not math.isnan(v):
                    c.log_metric(run_id, f"{model}.{rule}.{fold}.f1", v)
    c.log_artifact(run_id, str(work / "protocol.md"))
    c.log_artifact(run_id, str(work / "protocol.json"))
    c.set_terminated(run_id)
