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
import os
import tempfile
import time
from pathlib import Path

from tests.benchmarks.machine import parse_args
from tests.benchmarks.nilm_bench import (
    REFERENCE,
    REPO,
    SHARED_DATA,
    TARGET_F1,
    TARGET_MAE_W,
    add_training_args,
    print_table,
    train_and_evaluate,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=SHARED_DATA / "redd")
    ap.add_argument("--test-house", type=int, default=2)
    ap.add_argument("--val-house", type=int, default=5)
    ap.add_argument("--dataset", type=Path, default=None, help="an imported REDD dataset (skips the import)")
    add_training_args(ap)
    args = parse_args(ap, {"models": ["causal"], "max_steps": 20, "batch_size": 64})
    if args.dataset is None and not args.src.is_dir():
        raise SystemExit(f"REDD not found at {args.src} (set AIRWATT_SHARED_DATA)")

    work = args.work or Path(tempfile.mkdtemp(prefix="airwatt-redd-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"

    from airwatt.config import load_params
    from airwatt.importers import import_dataset
    from airwatt.prepare import prepare

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
    rows = train_and_evaluate(args, work, data, base, {"devices": [test_dev]})
    print(f"\nREDD, test house {args.test_house} (never seen in training); mean over {', '.join(REFERENCE)}")
    print(
        f"targets: multitask mean MAE <= {TARGET_MAE_W} W, mean F1 >= {TARGET_F1}; "
        "published Seq2Point on REDD house 1: MAE 23.3 W (paper 23.7), F1 0.59"
    )
    print_table(rows, args, work)


if __name__ == "__main__":
    main()
