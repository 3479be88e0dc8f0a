"""REDD benchmark: train on REDD houses, test on a house never seen in training (issue 3's accuracy targets).

    python -m tests.benchmarks.bench_redd [--test-house 2] [--val-house 5] [--models multitask seq2point ...]
                                          [--max-steps 3000] [--batch-size 256] [--accelerator auto]

Imports ../shared/data/redd (houses 2-6), prepares it with the held-out houses as explicit val/test
devices, trains each model with the real `airwatt.training.train` entry (MLflow into a temporary sqlite
store), evaluates it with `airwatt.evaluate` on the test house, and prints mean MAE and mean F1 over the
reference appliances (fridge, microwave, dishwasher, washing machine; on thresholds 50, 200, 10, 20 W), beside
the issue's targets and the published Seq2Point figures. Also prints training windows/s and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.machine import machine_info

REPO = Path(__file__).resolve().parents[2]
SHARED_REDD = Path(os.environ.get("AIRWATT_SHARED_DATA", REPO.parent / "shared" / "data")) / "redd"
REFERENCE = ("fridge", "microwave", "dishwasher", "washing_machine")
TARGET_MAE_W, TARGET_F1 = 18.7, 0.70


def _mean(report: dict[str, Any], key: str) -> float:
    values = [report["appliances"].get(a, {}).get(key) for a in REFERENCE]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else math.nan


def _num(value: float | None) -> float:
    return math.nan if value is None else value


def _gpu() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=SHARED_REDD)
    ap.add_argument("--test-house", type=int, default=2)
    ap.add_argument("--val-house", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=["mean", "always_off", "seq2point", "multitask", "causal"])
    ap.add_argument("--max-steps", type=int, default=3000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--accelerator", default="auto")
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep outputs here (default: a temporary dir)")
    ap.add_argument("--dataset", type=Path, default=None, help="an imported REDD dataset (skips the import)")
    ap.add_argument(
        "--no-mlflow", action="store_true", help="train without tracking (e.g. on a bare GPU box)"
    )
    ap.add_argument("--results", type=Path, default=None, help="append one JSON line per model here")
    args = ap.parse_args()
    if args.dataset is None and not args.src.is_dir():
        raise SystemExit(f"REDD not found at {args.src} (set AIRWATT_SHARED_DATA)")

    work = args.work or Path(tempfile.mkdtemp(prefix="airwatt-redd-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    from airwatt.config import load_params
    from airwatt.evaluate import evaluate_bundle
    from airwatt.importers import import_dataset
    from airwatt.models import ModelBundle
    from airwatt.prepare import prepare
    from airwatt.training.train import train

    test_dev, val_dev = f"redd-house{args.test_house}", f"redd-house{args.val_house}"
    base = {"prepare.test_devices": [test_dev], "prepare.val_devices": [val_dev]}
    params = load_params(REPO / "params.yaml", overrides=base)
    t = time.perf_counter()
    data = args.dataset or work / "redd"
    if args.dataset is None:
        import_dataset(
            "redd", args.src, data, interval_s=params.data.interval_s, max_fill_s=params.import_.max_fill_s
        )
    prepare(data, params, work / "prepared")
    print(
        f"import + prepare: {time.perf_counter() - t:.1f} s; test {test_dev}, val {val_dev}, "
        f"train the other REDD houses"
    )

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
        device = "cuda" if _gpu() != "none" else "cpu"
        report = evaluate_bundle(
            ModelBundle.load(result.bundle_dir, device=device),
            data,
            max_fill_s=p.prepare.max_fill_s,
            devices=[test_dev],
        )
        eval_s = time.perf_counter() - t
        (work / "metrics" / f"{name}-test.json").write_text(json.dumps(report, indent=2, default=str))
        windows = result.global_step * args.batch_size
        if args.results is not None:
            line = {
                "model": name,
                "mean_mae_w": _mean(report, "mae_w"),
                "mean_f1": _mean(report, "f1"),
                "train_s": train_s,
                "windows": windows,
                "eval_s": eval_s,
                "gpu": _gpu(),
                "appliances": {a: report["appliances"].get(a) for a in REFERENCE},
            }
            with args.results.open("a") as f:
                f.write(json.dumps(line) + "\n")
        rows.append(
            (
                name,
                _mean(report, "mae_w"),
                _mean(report, "f1"),
                train_s,
                windows / train_s if windows else 0,
                eval_s,
                {a: report["appliances"].get(a, {}) for a in REFERENCE},
            )
        )

    print(f"\nREDD, test house {args.test_house} (never seen in training); mean over {', '.join(REFERENCE)}")
    print(
        f"targets: multitask mean MAE <= {TARGET_MAE_W} W, mean F1 >= {TARGET_F1}; "
        "published Seq2Point on REDD house 1: MAE 23.3 W (paper 23.7), F1 0.59"
    )
    print(f"{'model':<12} {'MAE W':>8} {'F1':>6} {'train s':>8} {'windows/s':>10} {'eval s':>7}")
    for name, mae, f1, train_s, wps, eval_s, _ in rows:
        print(f"{name:<12} {mae:8.1f} {f1:6.3f} {train_s:8.0f} {wps:10,.0f} {eval_s:7.1f}")
    print("\nper appliance (MAE W / F1):")
    for name, *_, per in rows:
        cells = [f"{a}={_num(v.get('mae_w')):.1f}/{_num(v.get('f1')):.2f}" for a, v in per.items()]
        print(f"  {name:<12} " + "  ".join(cells))
    print(f"\nsteps {args.max_steps} x batch {args.batch_size}; outputs in {work}")
    print(f"gpu: {_gpu()}")
    print(machine_info())


if __name__ == "__main__":
    main()
