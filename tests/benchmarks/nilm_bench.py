"""Shared loop of the real-data benchmarks (bench_redd, bench_refit): train each model with the real
`airwatt.training.train` entry, evaluate it with `airwatt.evaluate` on the held-out data, print the table."""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.benchmarks.machine import machine_info

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("AIRWATT_SHARED_DATA", REPO.parent / "shared" / "data"))
REFERENCE = ("fridge", "microwave", "dishwasher", "washing_machine")
TARGET_MAE_W, TARGET_F1 = 18.7, 0.70
MODELS = ["mean", "always_off", "seq2point", "multitask", "causal"]


def add_training_args(ap: argparse.ArgumentParser, max_steps: int = 3000) -> None:
    """Flags every real-data benchmark shares."""
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--max-steps", type=int, default=max_steps)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep outputs here (default: a temporary dir)")
    ap.add_argument(
        "--no-mlflow", action="store_true", help="train without tracking (e.g. on a bare GPU box)"
    )
    ap.add_argument("--results", type=Path, default=None, help="append one JSON line per model here")
    ap.add_argument(
        "--arch-kwargs",
        type=json.loads,
        default=None,
        help="the causal model's constructor arguments as JSON, e.g. '{\"hidden\": 64}' (default: params)",
    )


def mean_over_reference(report: dict[str, Any], key: str) -> float:
    values = [report["appliances"].get(a, {}).get(key) for a in REFERENCE]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


@dataclass
class Row:
    model: str
    mae_w: float
    f1: float
    train_s: float
    windows_per_s: float
    eval_s: float
    per_appliance: dict[str, dict[str, Any]] = field(default_factory=dict)
    rule: str = "offline"  # what mae_w and f1 score: served (real-time models) or offline
    offline: dict[str, float] = field(default_factory=dict)  # a real-time model's offline mae_w and f1
    switches: dict[str, Any] = field(default_factory=dict)  # the served rule's delays and false switches


def train_and_evaluate(
    args: argparse.Namespace, work: Path, data: Path, base: dict[str, Any], evaluate_kwargs: dict[str, Any]
) -> list[Row]:
    """Train every model of ``args.models`` on ``work/prepared`` and evaluate it on ``data`` with
    ``evaluate_kwargs`` (held-out devices, or the test split of a time split)."""
    from airwatt.config import load_params
    from airwatt.evaluate import evaluate_bundle
    from airwatt.models import ModelBundle
    from airwatt.training.train import train

    rows = []
    for name in args.models:
        p = load_params(
            REPO / "params.yaml",
            overrides={
                **base,
                "train.model": name,
                "train.max_steps": args.max_steps,
                "train.max_epochs": 1000,
                "train.limit_train_batches": None,
                "train.batch_size": args.batch_size,
                "train.accelerator": args.accelerator,
                "train.num_workers": args.num_workers,
                "train.checkpoint_dir": str(work / "checkpoints"),
                **(
                    {}
                    if args.arch_kwargs is None
                    else {
                        "train.arch": {
                            **load_params(REPO / "params.yaml").train.arch,
                            "causal": args.arch_kwargs,
                        }
                    }
                ),
            },
        )
        t = time.perf_counter()
        result = train(
            p,
            work / "prepared",
            out_dir=work / "models" / name,
            metrics_path=work / "metrics" / f"{name}.json",
            epochs_path=work / "metrics" / f"{name}.csv",
            fresh=True,
            use_mlflow=not args.no_mlflow,
        )
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        device = "cuda" if gpu_name() != "none" else "cpu"
        bundle = ModelBundle.load(result.bundle_dir, device=device)
        report = evaluate_bundle(bundle, data, **evaluate_kwargs).model_dump(mode="json")  # the JSON document
        eval_s = time.perf_counter() - t
        (work / "metrics" / f"{name}-test.json").write_text(json.dumps(report, indent=2, default=str))
        windows = result.global_step * args.batch_size
        row = Row(
            name,
            mean_over_reference(report, "mae_w"),
            mean_over_reference(report, "f1"),
            train_s,
            windows / train_s if windows else 0.0,
            eval_s,
            {a: report["appliances"].get(a, {}) for a in REFERENCE},
            report["rule"],
            {k: mean_over_reference(report["offline"], k) for k in ("mae_w", "f1")}
            if "offline" in report
            else {},
            {a: report["switches"][a] for a in REFERENCE if a in report["switches"]},
        )
        if args.results is not None:
            line = {**row.__dict__, "windows": windows, "gpu": gpu_name()}
            with args.results.open("a") as f:
                f.write(json.dumps(line) + "\n")
        rows.append(row)
    return rows


def print_table(rows: list[Row], args: argparse.Namespace, work: Path) -> None:
    """The mean figures per model (a real-time model: served, with its offline figures beside), then per
    appliance, then the served rule's detection delays and false switches."""
    print(
        f"{'model':<12} {'rule':<8} {'MAE W':>8} {'F1':>6} {'offline MAE / F1':>17} {'train s':>8} "
        f"{'windows/s':>10} {'eval s':>7}"
    )
    for r in rows:
        off = f"{r.offline['mae_w']:8.1f} / {r.offline['f1']:.3f}" if r.offline else " " * 17
        figures = (
            f"{r.mae_w:8.1f} {r.f1:6.3f} {off:>17} {r.train_s:8.0f} {r.windows_per_s:10,.0f} {r.eval_s:7.1f}"
        )
        print(f"{r.model:<12} {r.rule:<8} {figures}")
    print("\nper appliance (MAE W / F1):")
    for r in rows:
        cells = [
            f"{a}={_num(v.get('mae_w')):.1f}/{_num(v.get('f1')):.2f}" for a, v in r.per_appliance.items()
        ]
        print(f"  {r.model:<12} " + "  ".join(cells))
    served = [r for r in rows if r.switches]
    if served:
        print("\nserved switch-ons (detected share, median / p90 delay s, false switches per day):")
        for r in served:
            cells = [
                f"{a}={_num(v.get('detected')):.2f}, {_num(v.get('delay_median_s')):.0f}/"
                f"{_num(v.get('delay_p90_s')):.0f} s, {_num(v.get('false_switches_per_day')):.1f}/day"
                for a, v in r.switches.items()
            ]
            print(f"  {r.model:<12} " + "  ".join(cells))
    print(f"\nsteps {args.max_steps} x batch {args.batch_size}; outputs in {work}")
    print(f"gpu: {gpu_name()}")
    print(machine_info())
