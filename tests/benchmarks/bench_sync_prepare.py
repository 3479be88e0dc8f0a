"""Benchmark: sync a folder of Parquet exports, re-sync it, prepare the result, and read windows.

    .venv/bin/python tests/benchmarks/bench_sync_prepare.py [--devices 20] [--days 14]

Prints figures and machine_info(); not a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from airwatt.config import load_params
from airwatt.prepare import prepare
from airwatt.prepare.windows import WindowDataset
from airwatt.sync import sync
from tests.benchmarks.machine import machine_info, parse_args

REPO = Path(__file__).resolve().parents[2]
START = pd.Timestamp("2026-01-05T00:00:00Z")


def write_exports(folder: Path, devices: int, days: float) -> int:
    """One Parquet readings file per device and day-half overlap: each device's second file repeats 1 h."""
    rng = np.random.default_rng(0)
    n = int(days * 17280)
    ts = START + pd.to_timedelta(np.arange(n) * 5, unit="s")
    rows = 0
    for d in range(devices):
        power = 80 + 100 * ((np.arange(n) * 5 % 3600) < 1200) + rng.normal(0, 3, n)
        df = pd.DataFrame({"device_id": f"dev-{d:04d}", "timestamp": ts, "power_w": power.astype("float32")})
        half = n // 2
        df.iloc[: half + 720].to_parquet(folder / f"readings-{d:04d}-a.parquet", index=False)
        df.iloc[half:].to_parquet(folder / f"readings-{d:04d}-b.parquet", index=False)
        rows += n + 720
    return rows


def timed(label: str, fn, count: int | None = None, unit: str = "rows"):
    t = time.perf_counter()
    result = fn()
    dt = time.perf_counter() - t
    rate = f", {count / dt:,.0f} {unit}/s" if count else ""
    print(f"{label:<28} {dt:7.2f} s{rate}")
    return result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--days", type=float, default=14)
    args = parse_args(ap, {"devices": 3, "days": 1})
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "exports").mkdir()
        rows = write_exports(tmp / "exports", args.devices, args.days)
        params = load_params(
            REPO / "params.yaml",
            overrides={
                "sync.source": "folder",
                "sync.path": str(tmp / "exports"),
                "sync.start": START.isoformat(),
                "sync.days": args.days,
            },
        )
        print(f"{args.devices} devices x {args.days:g} days: {rows:,} exported rows (with overlaps)")
        timed("sync (first)", lambda: sync(params, tmp / "synced"), rows)
        timed("sync (again, idempotent)", lambda: sync(params, tmp / "synced"), rows)
        timed("prepare", lambda: prepare(tmp / "synced", params, tmp / "prepared"))
        ds = WindowDataset(tmp / "prepared", "train", window_length=599, target="midpoint")
        idx = np.random.default_rng(0).integers(0, len(ds), 20_000)
        timed("20k random windows (599)", lambda: [ds[int(i)] for i in idx], 20_000, "windows")
    print(machine_info())


if __name__ == "__main__":
    main()
