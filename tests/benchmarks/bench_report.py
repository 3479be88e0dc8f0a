"""Benchmark: prediction and report time and peak memory per device-month at 5 s, and for a fleet dataset;
extrapolated to 100,000 devices.

    .venv/bin/python -m tests.benchmarks.bench_report [--arch causal] [--threads 1] [--fleet data/validated]
        [--prepared data/prepared] [--fleet-arch causal] [--skip-fleet]

1. One device-month at 5 s (518,400 readings, 13 appliances), on ``--threads`` torch and BLAS threads (one
   core by default): (a) the pure per-device report (``device_report`` on given predictions); (b) the
   per-device path of the batch job: grid (prepare's code, the model's gap policy), ``predict_series`` of
   an untrained ``--arch`` bundle (speed does not depend on the weights; a real-time model's served rule:
   one chunked sequence pass), the report data; then, apart, the charts and HTML page. Each runs in a fresh
   process; peak memory is the rise of the process's peak RSS (VmHWM, reset before the run) over its RSS
   just before (the model loaded and warmed up).
2. ``airwatt report`` on ``--fleet`` (default: the 20-device, two-week simulated fleet) with an untrained
   ``--fleet-arch`` bundle built from ``--prepared`` statistics: wall seconds and peak RSS.
3. The extrapolation to 100,000 device-months (about 52 billion readings): core-hours of (b).
Prints figures and machine_info(); not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

try:
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script: its own folder is on sys.path
    from machine import machine_info, parse_args  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
MONTH_READINGS = 30 * 17_280  # 518,400
FLEET_DEVICES = 100_000
APPLIANCES = [
    "kettle",
    "microwave",
    "fridge",
    "washing_machine",
    "freezer",
    "air_conditioner",
    "water_heater",
    "rice_cooker",
    "induction_cooker",
    "coffee_machine",
    "tv",
    "lighting",
    "fan",
]


def _status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":"))


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5" resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")


def month_readings(seed: int = 0) -> pd.DataFrame:
    """A device-month at 5 s: base load, a cycling fridge, random kettle uses, noise, 0.5 % readings lost."""
    rng = np.random.default_rng(seed)
    t_s = np.arange(MONTH_READINGS) * 5
    power = 150 + 100.0 * (t_s % 3600 < 1200) + rng.normal(0, 3, len(t_s))
    for start in rng.integers(0, len(t_s) - 40, 60):
        power[start : start + 36] += 2200
    ts = pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(t_s, unit="s")
    keep = rng.random(len(t_s)) > 0.005
    return pd.DataFrame({"timestamp": ts[keep], "power_w": power[keep].astype(np.float32)})


def bundle_for(arch: str) -> Any:
    """An untrained bundle (speed does not depend on the weights) of the 13 report appliances; a real-time
    one with a typical decision rule (bench_inference.bundle_for)."""
    from tests.benchmarks.bench_inference import bundle_for as untrained

    return untrained(arch, 512 if arch == "causal" else 599, 13)


def _one_core(threads: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads, user_api="blas")


def _core_only(queue: Any) -> None:
    from airwatt.config import load_params
    from airwatt.report import DeviceSeries, device_report

    params = load_params(REPO / "params.yaml").report
    rng = np.random.default_rng(1)
    n, a = MONTH_READINGS, len(APPLIANCES)
    agg = 150 + 1000 * rng.random(n)
    power = (rng.random((n, a)) * 100).astype(np.float32)
    series = DeviceSeries(
        "bench",
        "Asia/Manila",
        1_767_225_600_000,
        5.0,
        tuple(APPLIANCES),
        agg,
        rng.random(n) > 0.01,
        power,
        power > 50,
    )
    base = _status_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    device_report(series, params, period="month")
    queue.put((time.perf_counter() - t0, (_status_kib("VmHWM") - base) / 1024))


def _device_path(queue: Any, arch: str, threads: int, model: Path | None) -> None:
    from airwatt.config import load_params
    from airwatt.prepare.grid import grid_device
    from airwatt.report.core import DeviceSeries, device_report
    from airwatt.report.run import write_device_page

    _one_core(threads)
    p = load_params(REPO / "params.yaml")
    from airwatt.models import ModelBundle

    readings = month_readings()
    bundle = ModelBundle.load(model) if model is not None else bundle_for(arch)
    bundle.predict_series(np.full(2000, 300.0))  # warm-up (first-call allocations)
    base = _status_kib("VmRSS")
    _reset_peak()
    times = {}
    t0 = time.perf_counter()
    g = grid_device(readings, None, None, bundle.appliances, interval_s=5, max_fill_s=bundle.gap.max_fill_s)
    times["grid"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    pred = bundle.predict_series(g.aggregate_w, g.valid)
    times["predict"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    series = DeviceSeries(
        "bench",
        "Asia/Manila",
        g.start_ms,
        5.0,
        tuple(bundle.appliances),
        g.aggregate_w,
        g.valid,
        pred.power_w,
        pred.on,
    )
    report = device_report(series, p.report, period="month")
    times["report"] = time.perf_counter() - t2
    times["prediction + report"] = time.perf_counter() - t0
    peak = (_status_kib("VmHWM") - base) / 1024
    t3 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_device_page(Path(tmp), report, {})
    times["pages"] = time.perf_counter() - t3
    queue.put(
        (times, peak, (_status_kib("VmHWM") - base) / 1024, len(readings), pred.rule, float(pred.on.mean()))
    )


def _fleet(queue: Any, data: Path, prepared: Path, arch: str) -> None:
    import torch

    from airwatt.config import load_params
    from airwatt.dataset import read_manifest
    from airwatt.models import (
        ModelBundle,
        build_model,
        default_target,
        default_window_length,
        spec_from_prepared,
    )
    from airwatt.report.run import report_dataset

    p = load_params(REPO / "params.yaml")
    torch.manual_seed(0)
    spec = spec_from_prepared(
        prepared, arch, {}, default_window_length(arch), default_target(arch), max_invalid_fraction=0.1
    )
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = ModelBundle(spec, build_model(spec)).save(Path(tmp) / "bundle")
        base = _status_kib("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        report_dataset(bundle_dir, data, Path(tmp) / "reports", period="week", params=p.report)
        wall = time.perf_counter() - t0
    m = read_manifest(data)
    queue.put((wall, (_status_kib("VmHWM") - base) / 1024, len(m.devices), m.tables["readings"].rows))


def in_child(target: Any, *args: Any) -> Any:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue, *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="causal", help="model of the per-device path (untrained)")
    parser.add_argument("--fleet", type=Path, default=REPO / "data" / "validated")
    parser.add_argument("--prepared", type=Path, default=REPO / "data" / "prepared")
    parser.add_argument("--fleet-arch", default="causal", help="model of the fleet run (untrained)")
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--workers", type=int, default=1000, help="cores assumed in the extrapolation")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default: one core)")
    parser.add_argument(
        "--model",
        type=Path,
        default=REPO / "data" / "model",
        help="a trained bundle (default: make run's, when there; else an untrained --arch bundle). A served "
        "prediction computes the power heads only where an appliance is on, so its speed depends on that",
    )
    args = parse_args(parser, {"skip_fleet": True})

    core_s, core_mib = in_child(_core_only)
    print(
        f"device-month at 5 s ({MONTH_READINGS:,} slots, {len(APPLIANCES)} appliances), "
        f"{args.threads} thread(s)"
    )
    print(
        f"  report core alone (device_report on given predictions): {core_s:.2f} s, peak +{core_mib:.0f} MiB"
    )
    model = args.model if args.model is not None and args.model.is_dir() else None
    times, peak, peak_pages, n, rule, on = in_child(_device_path, args.arch, args.threads, model)
    print(
        f"  {model or f'untrained {args.arch}'} ({rule} rule, appliances on {on:.1%} of the time), "
        f"{n:,} readings: prediction + report {times['prediction + report']:.2f} s, peak +{peak:.0f} MiB"
    )
    for k in ("grid", "predict", "report"):
        print(f"    {k:<8} {times[k]:6.2f} s")
    print(f"  then the charts and HTML page: {times['pages']:.2f} s (peak +{peak_pages:.0f} MiB with them)")
    core_h = times["prediction + report"] * FLEET_DEVICES / 3600
    print(
        f"extrapolation: {FLEET_DEVICES:,} device-months ({FLEET_DEVICES * MONTH_READINGS / 1e9:.0f} billion "
        f"readings) = {core_h:,.0f} core-hours of prediction + report at this speed "
        f"({core_h / args.workers * 60:,.1f} min on {args.workers} cores); pages add "
        f"{times['pages'] * FLEET_DEVICES / 3600:,.0f} core-hours"
    )
    if not args.skip_fleet and args.fleet.is_dir():
        wall, mib, devices, readings = in_child(_fleet, args.fleet, args.prepared, args.fleet_arch)
        print(
            f"fleet {args.fleet} ({devices} devices, {readings:,} readings), "
            f"model {args.fleet_arch} (untrained), "
            f"pages on: {wall:.1f} s ({wall / devices:.2f} s/device), peak +{mib:.0f} MiB"
        )
    print(machine_info())


if __name__ == "__main__":
    main()
