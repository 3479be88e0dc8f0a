"""Benchmark: generate and write the default simulated fleet (params.yaml: 20 devices x 14 days at 5 s).

Run: .venv/bin/python tests/benchmarks/bench_simulate.py [--devices N] [--days D] [--workers W] [--repeat R]
Prints devices, days, readings rows, wall seconds (simulate + write, best of ``--repeat``), rows/s,
readings x channels per second, dataset size on disk, and the machine.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from airwatt.config import load_params
from airwatt.simulate import simulate_fleet

try:
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script (make bench): its own folder is on sys.path
    from machine import machine_info, parse_args  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
CHANNELS = ("power_w", "voltage_v", "current_a", "power_factor")


def _size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    p = load_params(REPO / "params.yaml")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=p.simulate.devices)
    ap.add_argument("--days", type=float, default=p.sync.days)
    ap.add_argument("--workers", type=int, default=None, help="process pool size (default 2)")
    ap.add_argument("--repeat", type=int, default=1)
    args = parse_args(ap, {"devices": 3, "days": 1})
    logging.basicConfig(level=logging.WARNING)
    cfg = p.simulate.model_copy(update={"devices": args.devices})
    best_s, rows, gt_rows, labels, size = float("inf"), 0, 0, 0, 0.0
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="bench-sim-") as tmp:
            out = Path(tmp) / "fleet"
            t0 = time.perf_counter()
            m = simulate_fleet(
                out,
                cfg,
                start=p.sync.start,
                days=args.days,
                interval_s=p.data.interval_s,
                workers=args.workers,
            )
            best_s = min(best_s, time.perf_counter() - t0)
            rows, gt_rows = m.tables["readings"].rows, m.tables["ground_truth"].rows
            labels, size = m.tables["labels"].rows, _size_mib(out)
    print(
        f"simulate+write: devices={args.devices} days={args.days:g} workers={args.workers or 2} "
        f"readings={rows:,} ground_truth_rows={gt_rows:,} labels={labels:,}"
    )
    print(
        f"  seconds={best_s:.2f}  rows/s={rows / best_s:,.0f}  "
        f"readings x {len(CHANNELS)} channels/s={rows * len(CHANNELS) / best_s:,.0f}  on disk={size:.0f} MiB"
    )
    print(machine_info())


if __name__ == "__main__":
    main()
