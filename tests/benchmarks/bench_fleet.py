"""Benchmark: the fleet report job (``airwatt fleet report``) on the local Ray cluster; projected to
100,000 devices a month.

    .venv/bin/python -m tests.benchmarks.bench_fleet [--model data/model] [--month-devices 200]
        [--scaling-devices 24] [--workers 2] [--skip-fleet] [--skip-month] [--skip-scaling] [--keep DIR]

1. The 20-device, two-week simulated fleet (params.yaml ``simulate`` and ``sync``), by month, on
   ``--workers`` Ray workers.
2. A ``--month-devices`` simulated month (January 2026, 31 days at 5 s), by month, on ``--workers``.
3. Scaling: the first ``--scaling-devices`` devices of that month on 1 worker, then on 2.

Each run starts its own local Ray cluster (``ray.init()``) and writes a fresh output. Figures per run:
partitions, wall seconds, start-up (cluster and model load), device-months computed per core-hour of the
workers once up (one core each), the same with the start-up, and each worker's peak RSS. The projection:
100,000 device-months / (device-months per core-hour). Needs a trained model (``make run`` writes
data/model): a served prediction runs the power heads only where an appliance is on, so an untrained
model, on nearly everywhere, is slower than a real one. Prints figures and machine_info(); not a test.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

try:
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script: its own folder is on sys.path
    from machine import machine_info, parse_args  # type: ignore[no-redef]

from airwatt.config import load_params
from airwatt.dataset import read_manifest
from airwatt.report.fleet import fleet_report
from airwatt.results import FleetSummary
from airwatt.simulate import simulate_fleet

REPO = Path(__file__).resolve().parents[2]
FLEET_DEVICES = 100_000


def _simulate(out: Path, devices: int, days: float, start: str) -> list[str]:
    params = load_params(REPO / "params.yaml", overrides={"simulate.devices": devices})
    if not (out / "manifest.json").is_file():
        simulate_fleet(out, params.simulate, start=start, days=days, interval_s=5.0)
    return read_manifest(out).device_ids


def _run(
    name: str, model: str, data: Path, out: Path, workers: int, devices: list[str] | None
) -> FleetSummary:
    params = load_params(REPO / "params.yaml")
    shutil.rmtree(out, ignore_errors=True)
    s = fleet_report(
        model, data, out, period="month", params=params.report, engine="ray", workers=workers, devices=devices
    )
    n = s.partitions
    rate = s.device_months_per_core_hour or float("nan")
    print(
        f"{name}: {n.planned} partitions ({n.done} done, {n.failed} failed), "
        f"{s.device_months_computed:.1f} device-months, {s.workers} worker(s): "
        f"wall {s.wall_s:.1f} s "
        f"(start-up {s.startup_s:.1f} s); {rate:.0f} device-months per core-hour "
        f"({s.device_months_per_core_hour_with_startup or float('nan'):.0f} with start-up); "
        f"peak RSS per worker {', '.join(f'{m:.0f}' for m in s.peak_rss_mib_per_worker)} MiB; "
        f"100,000 devices a month: {FLEET_DEVICES / rate:.1f} core-hours",
        flush=True,
    )
    return s


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "data" / "model"), help="bundle dir or MLflow model URI")
    ap.add_argument("--month-devices", type=int, default=200)
    ap.add_argument("--month-days", type=float, default=31)
    ap.add_argument("--scaling-devices", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-fleet", action="store_true")
    ap.add_argument("--skip-month", action="store_true")
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument(
        "--keep", type=Path, default=None, help="keep the simulated data here (reused if present)"
    )
    args = parse_args(
        ap, {"month_devices": 4, "month_days": 2, "scaling_devices": 2, "skip_fleet": True}, argv
    )
    if not Path(args.model).exists() and "://" not in args.model and ":/" not in args.model:
        raise SystemExit(f"{args.model}: no model bundle; run `make run` first (it writes data/model)")
    logging.basicConfig(level=logging.WARNING)
    # Ray starts its workers at nice 15 (to keep its own services responsive): any other work on the machine
    # would then take their CPU. Measure them at the benchmark's own priority.
    os.environ.setdefault("RAY_worker_niceness", "0")
    print(machine_info(), flush=True)
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    root.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    try:
        if not args.skip_fleet:
            p = load_params(REPO / "params.yaml")
            fleet = root / "fleet-20"
            _simulate(fleet, p.simulate.devices, p.sync.days, p.sync.start)
            results["fleet"] = _run(
                "simulated fleet", args.model, fleet, root / "out-fleet", args.workers, None
            )
        if not (args.skip_month and args.skip_scaling):
            month = root / f"month-{args.month_devices}"
            ids = _simulate(month, args.month_devices, args.month_days, "2026-01-01T00:00:00Z")
        if not args.skip_month:
            results["month"] = _run(
                f"{args.month_devices}-device month",
                args.model,
                month,
                root / "out-month",
                args.workers,
                None,
            )
        if not args.skip_scaling:
            some = ids[: args.scaling_devices]
            one = _run("scaling, 1 worker", args.model, month, root / "out-1", 1, some)
            two = _run("scaling, 2 workers", args.model, month, root / "out-2", 2, some)
            speedup = (one.wall_s - one.startup_s) / (two.wall_s - two.startup_s)
            print(f"throughput 1 -> 2 workers ({len(some)} device-months, after start-up): x{speedup:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
