"""Validation throughput on a 20-device two-week dataset (~4.84 M readings at 5 s).

    .venv/bin/python tests/benchmarks/bench_validate.py [--devices 20] [--days 14] [--source simulator|square]
        [--data DIR] [--docs]

The dataset comes from the fleet simulator (airwatt.simulate.simulate_fleet) when it is importable, otherwise
from a vectorised square-wave generator; it is written under a temporary directory (or --data is used as is).
Prints rows, seconds, rows/s for the whole validate_dataset call (read, derive, GX, report), and the machine.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from airwatt.config import load_params  # noqa: E402
from benchmarks.machine import machine_info, parse_args  # noqa: E402


def square_fleet(out: Path, devices: int, days: float, start: str, interval_s: float) -> None:
    """A fleet of square-wave devices (fridge 100 W, 20 min per hour; kettle 2200 W at 07:00 daily)."""
    from airwatt.appliances import APPLIANCES
    from airwatt.dataset import DatasetWriter, DeviceInfo
    from airwatt.labels import derive_labels

    n = round(days * 86400 / interval_s)
    t0 = pd.Timestamp(start)
    ts = pd.Series(pd.date_range(t0, periods=n, freq=pd.Timedelta(seconds=interval_s)))
    t_s = np.arange(n) * interval_s
    fridge = np.where((t_s % 3600) < 1200, 100.0, 0.0)
    tod = t_s % 86400
    kettle = np.where((tod >= 7 * 3600) & (tod < 7 * 3600 + 180), 2200.0, 0.0)
    gt = pd.DataFrame({"timestamp": ts, "fridge": fridge, "kettle": kettle})
    labels = derive_labels(gt, ["fridge", "kettle"], APPLIANCES, interval_s)
    rng = np.random.default_rng(0)
    end = t0 + pd.Timedelta(seconds=n * interval_s)
    with DatasetWriter(
        out, name="bench", appliances=["fridge", "kettle"], interval_s=interval_s, start=t0, end=end
    ) as w:
        for i in range(devices):
            power = 80.0 + fridge + kettle + rng.normal(0, 3, n)
            readings = pd.DataFrame(
                {"timestamp": ts, "power_w": power, "voltage_v": 230.0 + rng.normal(0, 1, n)}
            )
            info = DeviceInfo(device_id=f"sq-{i:04d}", appliances=["fridge", "kettle"], rated_max_w=10000)
            w.add_device(info, readings, ground_truth=gt, labels=labels)


def make_dataset(out: Path, source: str, devices: int, days: float) -> str:
    params = load_params(REPO / "params.yaml")
    if source == "simulator":
        try:
            from airwatt.simulate import simulate_fleet
        except ImportError:
            source = "square"
        else:
            cfg = params.simulate.model_copy(update={"devices": devices})
            simulate_fleet(out, cfg, start=params.sync.start, days=days, interval_s=params.data.interval_s)
            return "simulator"
    square_fleet(out, devices, days, params.sync.start, params.data.interval_s)
    return "square"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--days", type=float, default=14)
    ap.add_argument("--source", choices=["simulator", "square"], default="simulator")
    ap.add_argument("--data", type=Path, help="validate this dataset instead of generating one")
    ap.add_argument("--docs", action="store_true", help="also build Data Docs (in the temporary directory)")
    args = parse_args(ap, {"devices": 3, "days": 1})
    logging.basicConfig(level=logging.WARNING)

    t_import = time.perf_counter()
    from airwatt.validation import validate_dataset
    from airwatt.validation.runner import import_gx

    import_gx()
    t_import = time.perf_counter() - t_import
    params = load_params(REPO / "params.yaml")
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        data = args.data
        source = "given"
        if data is None:
            data = Path(tmp) / "fleet"
            t = time.perf_counter()
            source = make_dataset(data, args.source, args.devices, args.days)
            print(f"generated {source} dataset in {time.perf_counter() - t:.1f} s")
        docs = Path(tmp) / "docs" if args.docs else None
        t = time.perf_counter()
        result = validate_dataset(data, params, docs_dir=docs, summary_path=Path(tmp) / "summary.json")
        seconds = time.perf_counter() - t
    rows = result.rows["readings"]
    print(f"source:  {source}, {result.devices} devices, Data Docs: {'yes' if docs else 'no'}")
    gt, labels = result.rows["ground_truth"], result.rows["labels"]
    print(f"rows:    {rows:,d} readings, {gt:,d} ground truth, {labels:,d} labels")
    print(f"seconds: {seconds:.1f} (plus {t_import:.1f} s to import great_expectations once)")
    print(f"rows/s:  {rows / seconds:,.0f} readings/s")
    print(
        f"verdict: {'passed' if result.success else 'FAILED'}; failed/warned checks: "
        f"{[c.name for c in result.failed_checks]} / {[c.name for c in result.warned_checks]}"
    )
    print(machine_info())


if __name__ == "__main__":
    main()
