"""Benchmark: push and pull of N labeling tasks of 12 h at 5 s (8,640 readings each) against a real local
Label Studio, and the task payload size.

    .venv/bin/python tests/benchmarks/bench_labeling.py            # 1,000 tasks (100 devices x 5 days)
    .venv/bin/python tests/benchmarks/bench_labeling.py --tasks 100

The model is an untrained causal bundle (random weights): its predictions cost what a trained model's cost,
and give pre-annotations to every task. Every task is then annotated through the API (as a labeler's client
would) before the pull is timed. Needs the server's virtualenv (labeling/install-server.sh).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_info, parse_args

from airwatt.config import load_params
from airwatt.dataset import DatasetWriter, DeviceInfo
from airwatt.labeling.client import LabelStudioClient
from airwatt.labeling.pull import pull
from airwatt.labeling.push import push
from airwatt.labeling.server import local_server
from airwatt.models.bundle import GapPolicy, ModelSpec, NormStats, OnOffSpec
from airwatt.models.predict import ModelBundle, build_model

REPO = Path(__file__).resolve().parents[2]
APPS = ["fridge", "kettle"]


def write_dataset(out: Path, devices: int, days: int) -> Path:
    """Square-wave fridge and kettle on a base load, no sub-meters: 17,280 readings a day per device."""
    start = pd.Timestamp("2026-01-05T00:00:00Z")
    n = days * 17_280
    ts = pd.date_range(start, periods=n, freq="5s")
    t_s = np.arange(n) * 5
    power = 80 + np.where(t_s % 3600 < 1200, 100.0, 0.0) + np.where(t_s % 86400 // 60 == 7 * 60, 2200.0, 0.0)
    with DatasetWriter(
        out, name="bench", appliances=APPS, interval_s=5, start=start, end=start + pd.Timedelta(days=days)
    ) as w:
        for i in range(devices):
            w.add_device(
                DeviceInfo(device_id=f"d-{i:04d}", appliances=APPS, rated_max_w=10000),
                pd.DataFrame({"timestamp": ts, "power_w": power}),
            )
    return out


def untrained_bundle(out: Path) -> Path:
    spec = ModelSpec(
        arch="causal",
        appliances=APPS,
        window_length=512,
        target="last",
        interval_s=5.0,
        norm=NormStats(
            aggregate_mean_w=300.0,
            aggregate_std_w=400.0,
            power_mean_w=dict.fromkeys(APPS, 50.0),
            power_std_w=dict.fromkeys(APPS, 200.0),
        ),
        on_off={a: OnOffSpec(on_threshold_w=50, min_on_s=60, min_off_s=12, max_w=3000) for a in APPS},
        gap=GapPolicy(max_fill_s=30, max_invalid_fraction=0.1),
    )
    ModelBundle(spec, build_model(spec)).save(out)
    return out


def annotate_all(client: LabelStudioClient, project_id: int) -> tuple[int, float]:
    """One annotation per task: a kettle region at 07:00 and a fridge region at the window start."""
    t0 = time.perf_counter()
    tasks = client.task_summaries(project_id)
    for t in tasks:
        w = int(t["meta"]["window_start_ms"])
        result = [
            {
                "from_name": "appliance",
                "to_name": "ts",
                "type": "timeserieslabels",
                "value": {"start": w + s, "end": w + s + d, "instant": False, "timeserieslabels": [a]},
            }
            for a, s, d in (("fridge", 0, 1_195_000), ("kettle", 7 * 3_600_000, 55_000))
        ]
        client.create_annotation(int(t["id"]), result)
    return len(tasks), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=1000, help="tasks to push (12 h each; 2 per device-day)")
    args = parse_args(ap, {"tasks": 20})
    days = 5
    devices = -(-args.tasks // (2 * days))
    with tempfile.TemporaryDirectory(prefix="bench-labeling-") as tmp_s:
        tmp = Path(tmp_s)
        t = time.perf_counter()
        data = write_dataset(tmp / "bench", devices, days)
        bundle = untrained_bundle(tmp / "model")
        print(f"dataset: {devices} devices x {days} days at 5 s, written in {time.perf_counter() - t:.1f} s")
        t = time.perf_counter()
        with local_server(tmp / "ls") as server:
            print(f"label studio started in {time.perf_counter() - t:.1f} s at {server.url}")
            os.environ["AIRWATT_LABEL_STUDIO_TOKEN"] = server.token
            params = load_params(REPO / "params.yaml", overrides={"label.url": server.url})
            report = push(params, data, model_uris=[str(bundle)], budget=args.tasks)
            n = len(report.pushed)
            per_task = report.payload_bytes / max(n, 1)
            print(
                f"push:  {n} tasks in {report.seconds:.1f} s ({n / report.seconds:.1f} tasks/s, "
                f"scoring {report.candidates} candidate windows included)"
            )
            print(
                f"payload: {per_task / 1e3:.0f} kB per task (8,640 readings + pre-annotation), "
                f"{report.payload_bytes / 1e6:.0f} MB in all"
            )
            client = LabelStudioClient(server.url, server.token)
            project = client.find_project(params.label.project_title)
            assert project is not None
            count, secs = annotate_all(client, project.id)
            print(f"annotate (API, one request per task): {count} in {secs:.1f} s")
            pulled = pull(params, data)
            merged, rows = pulled["annotations"]["merged"], pulled["labels"]["annotator_rows"]
            print(
                f"pull:  {merged} annotations -> {rows} label rows in {pulled['seconds']:.1f} s "
                "(label expectations included)"
            )
            again = pull(params, data)
            print(f"pull again (unchanged): {again['seconds']:.1f} s")
    print(machine_info())


if __name__ == "__main__":
    main()
