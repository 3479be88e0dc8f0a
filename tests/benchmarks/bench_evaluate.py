"""Benchmark: `airwatt evaluate` on a dataset (default data/validated, the 20-device simulated fleet).

Run: .venv/bin/python tests/benchmarks/bench_evaluate.py [--data DIR] [--prepared DIR] [--arch mean]
     [--split test|all] [--plots] [--repeat R]
The model is an untrained bundle of ``--arch`` built from the prepared normalisation statistics (``mean``, the
default, costs almost nothing to run, so the figure is the evaluation's own cost: reading, gridding, duration
rule, metrics, plots). Prints devices, grid readings, best wall seconds, readings/s, and the machine.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from airwatt.evaluate import evaluate
from airwatt.models import (
    ModelBundle,
    build_model,
    default_target,
    default_window_length,
    spec_from_prepared,
)

try:
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script (make bench): its own folder is on sys.path
    from machine import machine_info, parse_args  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "validated")
    parser.add_argument("--prepared", type=Path, default=REPO / "data" / "prepared")
    parser.add_argument("--arch", default="mean", help="model architecture (untrained weights)")
    parser.add_argument("--split", default="test", help="a split of <prepared>/split.json, or 'all'")
    parser.add_argument("--plots", action="store_true", help="also write the plots")
    parser.add_argument("--repeat", type=int, default=2)
    args = parse_args(parser, {"repeat": 1})
    logging.basicConfig(level=logging.WARNING)
    window = default_window_length(args.arch)
    spec = spec_from_prepared(
        args.prepared, args.arch, {}, window, default_target(args.arch), max_invalid_fraction=0.1
    )
    split_file = None if args.split == "all" else args.prepared / "split.json"
    split = None if args.split == "all" else args.split
    with tempfile.TemporaryDirectory(prefix="bench_evaluate.") as tmp:
        bundle_dir = ModelBundle(spec, build_model(spec)).save(Path(tmp) / "bundle")
        times, report = [], {}
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = evaluate(
                bundle_dir,
                args.data,
                Path(tmp) / "eval.json",
                split_file=split_file,
                split=split,
                plots_dir=Path(tmp) / "plots" if args.plots else None,
            )
            times.append(time.perf_counter() - t0)
    readings = max(v.onoff for v in report.data.readings.values())
    best = min(times)
    print(f"dataset {args.data} ({args.split}), model {args.arch} (untrained), plots {args.plots}")
    print(f"{'devices':>8} {'readings':>10} {'best s':>8} {'readings/s':>11}")
    print(f"{len(report.data.devices):>8} {readings:>10,d} {best:>8.2f} {readings / best:>11,.0f}")
    print(json.dumps({"mean": report.mean.model_dump(mode="json")}))
    print(machine_info())


if __name__ == "__main__":
    main()
