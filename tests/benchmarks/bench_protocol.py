"""The cross-house protocol as a benchmark: the accuracy table of `airwatt protocol` plus time per fold.

    python -m tests.benchmarks.bench_protocol [--work DIR] [--fold redd-house3 ...] [--seed 1 ...]
                                              [--max-steps 1500] [--no-cross] [--no-mlflow]

Runs airwatt.protocol.run_protocol (params.yaml ``protocol``: leave-one-house-out over REDD houses 2, 3,
4, 6 and the REFIT house 2 cross-dataset fold, 3 seeds, the few-label curve) on ../shared/data and prints
the tables, the targets of the generalisation issue, the seconds of training, evaluation and fine-tuning per
fold and seed, and the machine. MLflow goes to a sqlite store in the work folder unless --no-mlflow (a bare
GPU box). A rerun with the same work folder reuses every finished run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from tests.benchmarks.machine import machine_info, parse_args

REPO = Path(__file__).resolve().parents[2]
TARGETS = "targets: LOHO served mean F1 >= 0.70, MAE <= 18.7 W, no fold below F1 0.50; k=3 gain >= 0.08"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    ap.add_argument("--fold", nargs="*", default=None, help="held-out houses [protocol.folds]")
    ap.add_argument("--seed", nargs="*", type=int, default=None, help="seeds [protocol.seeds]")
    ap.add_argument("--max-steps", type=int, default=None, help="steps per run [protocol.max_steps]")
    ap.add_argument("--no-cross", action="store_true", help="skip the cross-dataset fold")
    ap.add_argument("--no-adapt", action="store_true", help="skip the few-label curve")
    ap.add_argument("--no-mlflow", action="store_true", help="no tracking (a bare GPU box)")
    quick = {"fold": ["redd-house3"], "seed": [1], "max_steps": 20, "no_cross": True, "no_adapt": True}
    args = parse_args(ap, quick)

    work = args.work or Path(tempfile.mkdtemp(prefix="airwatt-protocol-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    overrides: dict[str, object] = {}
    if args.fold:
        overrides["protocol.folds"] = args.fold
    if args.seed:
        overrides["protocol.seeds"] = args.seed
    if args.max_steps:
        overrides["protocol.max_steps"] = args.max_steps
    if args.no_cross:
        overrides["protocol.cross_dataset"] = []
    if args.no_adapt:
        overrides["protocol.adapt"] = None

    import torch

    from airwatt.protocol import run_protocol

    t0 = time.perf_counter()
    result = run_protocol(REPO / "params.yaml", work, overrides=overrides, use_mlflow=not args.no_mlflow)
    wall_s = time.perf_counter() - t0
    print(result.table)
    print(TARGETS)
    print("\nseconds per run (train / evaluate; reused runs keep their first timing):")
    for r in result.runs:
        print(f"  {r.model} {r.fold} seed {r.seed}: {r.train_s:.0f} / {r.eval_s:.0f}")
    fold_s = [r.train_s + r.eval_s for r in result.runs]
    if fold_s:
        print(
            f"one fold (train + evaluate): median {statistics.median(fold_s):.0f} s, max {max(fold_s):.0f} s"
        )
    print(f"protocol wall time (this call): {wall_s:.0f} s; work folder {work}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    print(f"{machine_info()} | accelerator: {device}")


if __name__ == "__main__":
    main()
