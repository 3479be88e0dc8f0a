"""Machine facts printed by every benchmark, so figures are never quoted without the machine."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any


def machine_info() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            mem_gib = int(f.readline().split()[1]) / 1024**2
    except OSError:
        mem_gib = float("nan")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {platform.node()} | {cpu} | {cores} cores | {mem_gib:.0f} GiB | "
        f"Python {sys.version.split()[0]} | {platform.system()} {platform.release()}"
    )


def parse_args(
    ap: argparse.ArgumentParser, quick: dict[str, Any], argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """``ap.parse_args`` with ``--quick``: a short run (seconds to a minute) that checks the benchmark works,
    with these defaults (options given on the command line still win). Its figures are not for quoting."""
    shown = ", ".join(f"--{k.replace('_', '-')} {_shown(v)}" for k, v in quick.items())
    ap.add_argument("--quick", action="store_true", help=f"a short smoke run: {shown}")
    known, _ = ap.parse_known_args(argv)
    if known.quick:
        ap.set_defaults(**quick)
    args = ap.parse_args(argv)
    if args.quick:
        print(f"--quick: a short run ({shown}); its figures are not for quoting")
    return args


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)
