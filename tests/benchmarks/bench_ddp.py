"""Multi-process training (Lightning DDP) next to one process: wall time and windows per second.

    python -m tests.benchmarks.bench_ddp [--processes 1 2] [--accelerator cpu] [--model causal]
        [--epochs 4] [--steps 50] [--batch-size 256] [--threads T] [--fleet-devices 4] [--days 2]

Simulates and prepares a small fleet, then runs the real `airwatt train` (a subprocess: DDP's ranks re-run
the command) once per process count with the same params: ``batch_size`` is the global batch, split between
the processes, so every run takes the same steps over the same windows. Prints per run the command's wall
time (start-up, fit, decision-rule tuning, MLflow logging and registration), the fit's steady rate (windows
per second between the first and the last epoch's validation, from the MLflow run's val/loss timestamps:
start-up and the first epoch left out), the speed-up over the first run, the last val/loss (the same data
gives nearly the same figure), the load average and the machine. On CPU Lightning gives each of N processes
cores / N torch threads unless OMP_NUM_THREADS is set (``--threads``): ``--threads 1`` compares the
processes at one thread each, apart from torch's own threading of one process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

try:
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script (make bench): its own folder is on sys.path
    from machine import machine_info, parse_args  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Timing:
    processes: int
    wall_s: float
    fit_windows: int  # windows trained between the first and the last validation
    fit_s: float
    val_loss: float

    @property
    def windows_per_s(self) -> float:
        return self.fit_windows / self.fit_s if self.fit_s > 0 else float("nan")


def prepare_fleet(work: Path, devices: int, days: float) -> Path:
    from airwatt.config import load_params
    from airwatt.prepare import prepare
    from airwatt.simulate import simulate_fleet

    params = load_params(REPO / "params.yaml", overrides={"simulate.devices": devices})
    simulate_fleet(work / "sim", params.simulate, start=params.sync.start, days=days, interval_s=5)
    prepare(work / "sim", params, work / "prepared")
    return work / "prepared"


def write_params(path: Path, args: argparse.Namespace, processes: int, checkpoints: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(
        model=args.model,
        batch_size=args.batch_size,
        max_epochs=args.epochs,
        max_steps=-1,
        limit_train_batches=args.steps,
        limit_val_batches=args.val_steps,
        num_workers=0,
        accelerator=args.accelerator,
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
        checkpoint_dir=str(checkpoints),
    )
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def train_once(work: Path, data: Path, args: argparse.Namespace, processes: int, k: int) -> Timing:
    """`airwatt train` with ``processes`` processes in its own folder (k-th run) and tracking store."""
    run = work / f"run{k}-{processes}"
    run.mkdir()
    params = write_params(run / "params.yaml", args, processes, run / "checkpoints")
    uri = f"sqlite:///{run / 'mlflow.db'}"
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_TRACKING_URI": uri}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)  # torch's threads per process (Lightning then keeps them)
    cmd = ["airwatt", "train", "--data", str(data), "--params", str(params), "--out", "model"]
    cmd += ["--metrics", "train.json", "--epochs", "epochs.csv"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=run, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"airwatt train ({processes} processes) exited {proc.returncode}\n{proc.stderr}")
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    (tracked,) = client.search_runs([e.experiment_id for e in client.search_experiments()])  # rank zero's
    history = sorted(client.get_metric_history(tracked.info.run_id, "val/loss"), key=lambda m: m.step)
    first, last = history[0], history[-1]
    return Timing(
        processes=processes,
        wall_s=wall_s,
        fit_windows=(last.step - first.step) * args.batch_size,
        fit_s=(last.timestamp - first.timestamp) / 1000,
        val_loss=last.value,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--processes",
        type=int,
        nargs="+",
        default=[1, 2],
        help="process counts, run in turn (repeat one to see the noise: 1 2 1 2)",
    )
    ap.add_argument("--accelerator", default="cpu", help="cpu | gpu (one process per GPU)")
    ap.add_argument("--model", default=None, help="[params: train.model]")
    ap.add_argument("--epochs", type=int, default=4, help="epochs (the first is not timed)")
    ap.add_argument("--steps", type=int, default=50, help="optimizer steps per epoch")
    ap.add_argument("--val-steps", type=int, default=5, help="validation batches per epoch")
    ap.add_argument("--batch-size", type=int, default=None, help="global batch [params: train.batch_size]")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process (OMP_NUM_THREADS)")
    ap.add_argument("--fleet-devices", type=int, default=4, help="simulated devices")
    ap.add_argument("--days", type=float, default=2, help="simulated days")
    ap.add_argument("--work", type=Path, default=None, help="work folder (default: a new temporary one)")
    args = parse_args(ap, {"epochs": 2, "steps": 5, "val_steps": 2, "fleet_devices": 3, "days": 1})
    train = yaml.safe_load((REPO / "params.yaml").read_text())["train"]
    args.model = args.model or train["model"]
    args.batch_size = args.batch_size or train["batch_size"]

    work = args.work or Path(tempfile.mkdtemp(prefix="airwatt-bench-ddp-"))
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_fleet(work, args.fleet_devices, args.days)
    timings = [train_once(work, data, args, n, k) for k, n in enumerate(args.processes)]

    print(
        f"airwatt train {args.model} on {args.accelerator}: {args.epochs} epochs x {args.steps} steps x "
        f"{args.batch_size} windows (global batch), {args.val_steps} validation batches per epoch; torch "
        f"threads per process: {args.threads or 'default (cores / processes on CPU)'}"
    )
    base = timings[0]
    for t in timings:
        print(
            f"  processes={t.processes}  wall_s={t.wall_s:.1f}  fit_s={t.fit_s:.1f} "
            f"({t.fit_windows} windows)  windows/s={t.windows_per_s:,.0f}  "
            f"speed-up={t.windows_per_s / base.windows_per_s:.2f}x  last val/loss={t.val_loss:.4f}"
        )
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; work folder {work}")
    print(machine_info())


if __name__ == "__main__":
    main()
