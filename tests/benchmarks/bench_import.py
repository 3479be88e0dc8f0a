"""Benchmark: import time of the public NILM data in ../shared/data, rows in and out.

Run: .venv/bin/python tests/benchmarks/bench_import.py [--repeat 3]
Prints one line per dataset form (best of ``--repeat`` wall times), peak memory, and the machine.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from airwatt.importers import import_dataset

try:
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script (make bench): its own folder is on sys.path
    from machine import machine_info, parse_args  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("AIRWATT_SHARED_DATA", REPO.parent / "shared" / "data"))
CASES = [  # (label, kind, source under ../shared/data)
    ("REDD synchronised, houses 2-6", "redd", "redd"),
    ("REFIT 8 s, house 2 (14 days)", "refit", "refit_house2_8s"),
    ("REFIT 30 s, house 2 (21 months)", "refit", "refit_house2_30s"),
    ("UK-DALE 6 s, 3 days", "ukdale", "ukdale_days"),
]


def source_rows(src: Path) -> int:
    """Data rows in the source files (lines minus one header line each)."""
    rows = 0
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        opener = gzip.open if f.suffix == ".gzip" else open
        with opener(f, "rb") as fh:
            rows += sum(1 for _ in fh) - 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="runs per dataset; the best time is printed")
    args = parse_args(parser, {"repeat": 1})
    if not SHARED_DATA.is_dir():
        sys.exit(f"public NILM data not found at {SHARED_DATA} (set AIRWATT_SHARED_DATA)")
    logging.basicConfig(level=logging.WARNING)
    print(f"{'dataset':<34} {'rows in':>11} {'rows out':>11} {'best s':>8} {'rows in/s':>11}")
    with tempfile.TemporaryDirectory(prefix="bench_import.") as tmp:
        for label, kind, folder in CASES:
            src = SHARED_DATA / folder
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                manifest = import_dataset(kind, src, Path(tmp) / kind)
                times.append(time.perf_counter() - t0)
            rows_in = source_rows(src)
            rows_out = manifest.tables["readings"].rows
            best = min(times)
            print(f"{label:<34} {rows_in:>11,d} {rows_out:>11,d} {best:>8.2f} {rows_in / best:>11,.0f}")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"peak memory (max RSS): {peak_gib:.2f} GiB; rows out = 5 s slots incl. filled and null gap rows")
    print(machine_info())


if __name__ == "__main__":
    main()
