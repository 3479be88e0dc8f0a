"""Machine facts printed by every benchmark, so figures are never quoted without the machine."""

from __future__ import annotations

import os
import platform
import sys


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
