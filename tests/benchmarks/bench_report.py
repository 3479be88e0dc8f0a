"""Benchmark: report time and peak memory per device-month at 5 s, and for a fleet dataset; extrapolated.

    .venv/bin/python -m tests.benchmarks.bench_report [--arch causal] [--fleet data/validated]
        [--prepared data/prepared] [--fleet-arch mean] [--skip-fleet]

1. One device-month at 5 s (518,400 readings, 13 appliances): (a) the pure per-device report
   (``device_report`` on given predictions); (b) the whole per-device path of the batch job: grid
   (prepare's code), ``predict_series`` of an untrained ``--arch`` bundle (speed does not depend on the
   weights), the report, charts and HTML page. Each runs in a fresh process; peak memory is the rise of
   the process's peak RSS (VmHWM, reset before the run) over its RSS just before.
2. ``airwatt report`` on ``--fleet`` (default: the 20-device, two-week simulated fleet) with an untrained
   ``--fleet-arch`` bundle built from ``--prepared`` statistics: wall seconds and peak RSS.
3. The extrapolation to 100,000 devices x one month (about 52 billion readings): CPU-hours for (b), and
   the wall time on N workers.
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
    from tests.benchmarks.machine import machine_info
except ModuleNotFoundError:  # run as a script: its own folder is on sys.path
    from machine import machine_info  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
MONTH_READINGS = 30 * 17_280  # 518,400
FLEET_DEVICES = 100_000
APPLIANCES = ["kettle", "microwave", "fridge", "washing_machine", "freezer", "air_conditioner",
              "water_heater", "rice_cooker", "induction_cooker", "coffee_machine", "tv", "lighting",
              "fan"]  # fmt: skip


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
    import torch

    from airwatt.appliances import APPLIANCES as SPECS
    from airwatt.models import (
        ModelBundle,
        ModelSpec,
        NormStats,
        OnOffSpec,
        build_model,
        default_target,
        default_window_length,
    )

    spec = ModelSpec(
        arch=arch, appliances=APPLIANCES, window_length=default_window_length(arch),
        target=default_target(arch), interval_s=5, norm=NormStats(aggregate_mean_w=600, aggregate_std_w=700,
                                     power_mean_w=dict.fromkeys(APPLIANCES, 40.0),
                                     power_std_w=dict.fromkeys(APPLIANCES, 200.0)),
        on_off={a: OnOffSpec.of(SPECS[a]) for a in APPLIANCES},
    )  # fmt: skip
    torch.manual_seed(0)
    return ModelBundle(spec, build_model(spec))


def _core_only(queue: Any) -> None:
    from airwatt.config import load_params
    from airwatt.report import DeviceSeries, device_report

    params = load_params(REPO / "params.yaml").report
    rng = np.random.default_rng(1)
    n, a = MONTH_READINGS, len(APPLIANCES)
    agg = 150 + 1000 * rng.random(n)
    power = (rng.random((n, a)) * 100).astype(np.float32)
    series = DeviceSeries("bench", "Asia/Manila", 1_767_225_600_000, 5.0, tuple(APPLIANCES), agg,
                          rng.random(n) > 0.01, power, power > 50)  # fmt: skip
    base = _status_kib("VmRSS")
    _reset_peak()
    t0 = time.perf_counter()
    device_report(series, params, period="month")
    queue.put((time.perf_counter() - t0, (_status_kib("VmHWM") - base) / 1024))


def _device_path(queue: Any, arch: str) -> None:
    import torch

    from airwatt.config import load_params
    from airwatt.report.core import device_report
    from airwatt.report.run import series_from_readings, write_device_page

    torch.set_num_threads(torch.get_num_threads())
    p = load_params(REPO / "params.yaml")
    readings = month_readings()
    bundle = bundle_for(arch)
    base = _status_kib("VmRSS")
    _reset_peak()
    times = {}
    t0 = time.perf_counter()
    series = series_from_readings(bundle, readings, device_id="bench", timezone="Asia/Manila",
                                  max_fill_s=p.prepare.max_fill_s)  # fmt: skip
    times["grid+predict"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    assert series is not None
    report = device_report(series, p.report, period="month")
    times["report"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_device_page(Path(tmp), report, {})
    times["pages"] = time.perf_counter() - t2
    times["total"] = time.perf_counter() - t0
    queue.put((times, (_status_kib("VmHWM") - base) / 1024, len(readings)))


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
    spec = spec_from_prepared(prepared, arch, {}, default_window_length(arch), default_target(arch))
    with tempfile.TemporaryDirectory() as tmp:
        bundle_dir = ModelBundle(spec, build_model(spec)).save(Path(tmp) / "bundle")
        base = _status_kib("VmRSS")
        _reset_peak()
        t0 = time.perf_counter()
        report_dataset(bundle_dir, data, Path(tmp) / "reports", period="week", params=p.report,
                       max_fill_s=p.prepare.max_fill_s)  # fmt: skip
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
    parser.add_argument("--workers", type=int, default=1000, help="workers assumed in the extrapolation")
    args = parser.parse_args()

    core_s, core_mib = in_child(_core_only)
    print(f"device-month at 5 s ({MONTH_READINGS:,} slots, {len(APPLIANCES)} appliances)")
    print(f"  report core (device_report):   {core_s:7.2f} s   peak +{core_mib:6.0f} MiB")
    times, path_mib, n = in_child(_device_path, args.arch)
    print(
        f"  whole per-device path ({args.arch}, {n:,} readings): {times['total']:.2f} s, "
        f"peak +{path_mib:.0f} MiB"
    )
    for k in ("grid+predict", "report", "pages"):
        print(f"    {k:<14} {times[k]:7.2f} s")
    cpu_h = times["total"] * FLEET_DEVICES / 3600
    print(
        f"extrapolation: {FLEET_DEVICES:,} devices x 1 month "
        f"({FLEET_DEVICES * MONTH_READINGS / 1e9:.0f} billion "
        f"readings) = {cpu_h:,.0f} process-hours at this speed; {cpu_h / args.workers * 60:,.1f} min on "
        f"{args.workers} such workers; report core alone {core_s * FLEET_DEVICES / 3600:,.0f} process-hours"
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
