"""REFIT house 2 benchmark: one house, so a time split (train on its past, test on its future).

    python -m tests.benchmarks.bench_refit [--form 8s|30s] [--val-fraction 0.15] [--test-fraction 0.15]
        [--models causal multitask ...] [--max-steps 1500] [--batch-size 256]

Imports ../shared/data/refit_house2_8s (two weeks of 2015; fridge, washing machine, dishwasher, microwave)
or refit_house2_30s (21 months; kettle, dishwasher, washing machine, microwave; ~24 % meter-outage rows),
prepares it with ``prepare.split_by: time`` (the oldest share trains, then validation, the newest share
tests), trains each model with the real `airwatt.training.train` entry, evaluates it with `airwatt.evaluate`
on the test split's time range only, and prints mean MAE and F1 over the reference appliances the data has.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from tests.benchmarks.machine import parse_args
from tests.benchmarks.nilm_bench import (
    REFERENCE,
    REPO,
    SHARED_DATA,
    add_training_args,
    print_table,
    train_and_evaluate,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--form", choices=["8s", "30s"], default="8s")
    ap.add_argument("--val-fraction", type=float, default=0.15)
    ap.add_argument("--test-fraction", type=float, default=0.15)
    ap.add_argument("--dataset", type=Path, default=None, help="an imported REFIT dataset (skips the import)")
    add_training_args(ap, max_steps=1500)
    args = parse_args(ap, {"models": ["causal"], "max_steps": 20, "batch_size": 64})
    src = SHARED_DATA / f"refit_house2_{args.form}"
    if args.dataset is None and not src.is_dir():
        raise SystemExit(f"REFIT house 2 not found at {src} (set AIRWATT_SHARED_DATA)")

    work = args.work or Path(tempfile.mkdtemp(prefix="airwatt-refit-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    from airwatt.config import load_params
    from airwatt.importers import import_dataset
    from airwatt.prepare import prepare

    base = {
        "prepare.split_by": "time",
        "prepare.val_fraction": args.val_fraction,
        "prepare.test_fraction": args.test_fraction,
    }
    params = load_params(REPO / "params.yaml", overrides=base)
    t = time.perf_counter()
    data = args.dataset or work / "refit"
    if args.dataset is None:
        import_dataset(
            "refit", src, data, interval_s=params.data.interval_s, max_fill_s=params.import_.max_fill_s
        )
    prepare(data, params, work / "prepared")
    split_file = work / "prepared" / "split.json"
    ranges = json.loads(split_file.read_text())["time_ranges"]
    print(f"import + prepare: {time.perf_counter() - t:.1f} s; time split of REFIT house 2 ({args.form}):")
    for s in ("train", "val", "test"):
        for dev, (a, b) in ranges[s].items():
            print(f"  {s:<5} {dev}: {a} .. {b}")
    rows = train_and_evaluate(args, work, data, base, {"split_file": split_file, "split": "test"})
    print(
        f"\nREFIT house 2 ({args.form}), newest {args.test_fraction:.0%} of its span (never seen in training)"
    )
    print(f"mean over the reference appliances it has, of {', '.join(REFERENCE)}")
    print_table(rows, args, work)


if __name__ == "__main__":
    main()
