"""Multi-process training (Lightning DDP, gloo on CPU) through the real `airwatt train`, against one process.

"Same data seen": ``train.batch_size`` is the global batch, B / N windows per process, and process r of N
takes positions r, r + N, ... of the epoch's seeded draw, so the k-th global batch holds the windows one
process puts in its k-th batch (airwatt.training.datamodule). The model here (seq2point) has neither
BatchNorm nor dropout and the simulated fleet's training targets are all valid, so the averaged per-process
gradient is one process's gradient up to float rounding: training loss and the summed validation metrics
agree to 1e-3 (measured: to 6 digits). Ranks drawing the same windows instead differ by 0.4-40 %.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import click
import pandas as pd
import pytest
import torch
import yaml

from airwatt.config import load_params
from airwatt.errors import ConfigError
from airwatt.models import ModelBundle
from airwatt.training.datamodule import EpochDraw
from airwatt.training.train import check_processes

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
EXACT = 1e-3  # relative: float rounding of the gradient all-reduce, through Adam, over 10 steps
VAL_LOSS = 0.02  # relative: val/loss is a mean of per-batch masked means, and the batches group differently


# ------------------------------------------------------------------------------------------ the draw
@pytest.mark.parametrize("weighted", [False, True])
def test_processes_split_each_global_batch_of_the_one_process_draw(weighted: bool) -> None:
    n, batch, processes = 103, 8, 2
    weights = torch.linspace(0.1, 1.0, n, dtype=torch.double) if weighted else None
    one = list(EpochDraw(n, seed=7, weights=weights))
    shards = [list(EpochDraw(n, 7, rank, processes, weights)) for rank in range(processes)]
    assert len(one) == n and [len(s) for s in shards] == [n // processes] * processes  # as many steps
    if not weighted:
        assert set(shards[0]).isdisjoint(shards[1])  # a window in one process only
    per = batch // processes
    for k in range(len(shards[0]) // per):  # the k-th global batch: the one process's k-th batch
        together = sorted(i for s in shards for i in s[k * per : (k + 1) * per])
        assert together == sorted(one[k * batch : (k + 1) * batch])
    again = EpochDraw(n, 7, weights=weights)
    again.set_epoch(1)
    assert list(again) != one and list(EpochDraw(n, 7, weights=weights)) == one  # seeded per epoch


def test_several_processes_refuse_a_command_that_trains_several_models() -> None:
    two = SimpleNamespace(world_size=2)
    with click.Context(click.Command("protocol"), info_name="protocol"):
        with pytest.raises(ConfigError, match=r"train\.devices 1"):
            check_processes(two)  # type: ignore[arg-type]
        check_processes(SimpleNamespace(world_size=1))  # type: ignore[arg-type]
    with click.Context(click.Command("train"), info_name="train"):
        check_processes(two)  # type: ignore[arg-type]
    check_processes(two)  # type: ignore[arg-type]  # a script or notebook calling train() once


# ---------------------------------------------------------------------------------- `airwatt train`
@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simulate_fleet(3 devices, 1 day) -> prepare: one device per split, 178 training windows below."""
    from airwatt.prepare import prepare
    from airwatt.simulate import simulate_fleet

    root = tmp_path_factory.mktemp("ddp-fleet")
    params = load_params(REPO / "params.yaml", overrides={"simulate.devices": 3})
    simulate_fleet(root / "sim", params.simulate, start=params.sync.start, days=1, interval_s=5)
    prepare(root / "sim", params, root / "prepared")
    return root / "prepared"


def write_params(path: Path, devices: int, checkpoints: Path, **train: Any) -> Path:
    """params.yaml with a small seq2point trained over whole epochs (5 steps of 32 windows each)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(
        model="seq2point",
        window_length=99,
        stride=97,
        val_stride=60,
        batch_size=32,
        limit_train_batches=None,
        limit_val_batches=None,
        max_epochs=2,
        num_workers=0,
        accelerator="cpu",
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        checkpoint_dir=str(checkpoints),
    )
    params["train"].update(train)
    params["train"]["arch"]["seq2point"] = {"dense_units": 32}
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def airwatt_train(run: Path, data: Path, params: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`airwatt train` in ``run`` (its working directory), tracking to ``run``/mlflow.db."""
    run.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{run / 'mlflow.db'}",
    }
    args = ["airwatt", "train", "--data", str(data), "--params", str(params), "--out", "model"]
    args += ["--metrics", "train.json", "--epochs", "epochs.csv", *extra]
    proc = subprocess.run(args, cwd=run, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, f"airwatt train exited {proc.returncode}\n{proc.stderr[-4000:]}"
    return proc


def tracked(run: Path) -> tuple[list[Any], list[Any]]:
    """The MLflow runs and registered model versions in ``run``/mlflow.db."""
    from mlflow import MlflowClient

    reg = load_params(REPO / "params.yaml").register_
    uri = f"sqlite:///{run / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)  # not a registry URI another test set for the process
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiment_ids=experiments)
    return runs, client.search_model_versions(f"name='{reg.model_name}'")


@pytest.mark.slow
def test_two_processes_train_what_one_does_and_only_rank_zero_writes(prepared: Path, tmp_path: Path) -> None:
    one = airwatt_train(
        tmp_path / "one", prepared, write_params(tmp_path / "one.yaml", 1, tmp_path / "ck-one")
    )
    two = airwatt_train(
        tmp_path / "two", prepared, write_params(tmp_path / "two.yaml", 2, tmp_path / "ck-two")
    )
    assert "MEMBER: 2/2" in two.stderr and "MEMBER" not in one.stderr  # two processes, then one
    for proc, name in ((one, "one"), (two, "two")):
        run = tmp_path / name
        assert proc.stderr.count("trained seq2point") == 1  # rank zero logs
        assert proc.stderr.count("registered version 1") == 1  # the CLI's last line, once
        assert {p.name for p in run.iterdir()} == {"mlflow.db", "mlruns", "model", "train.json", "epochs.csv"}
        runs, versions = tracked(run)
        assert len(runs) == 1 and len(versions) == 1 and versions[0].run_id == runs[0].info.run_id
        assert ModelBundle.load(run / "model").spec.arch == "seq2point"
        (ckpt_dir,) = (p for p in (tmp_path / f"ck-{name}").iterdir() if p.is_dir())
        assert sorted(p.name for p in ckpt_dir.iterdir()) == ["best-epoch=1-step=10.ckpt", "last.ckpt"]

    a, b = (pd.read_csv(tmp_path / name / "epochs.csv") for name in ("one", "two"))
    assert list(a["step"]) == list(b["step"]) == [5, 10]  # the same optimizer steps
    for column in ("train_loss", "val_mae_w"):
        assert b[column].to_numpy() == pytest.approx(a[column].to_numpy(), rel=EXACT), column
    assert b["val_f1"].to_numpy() == pytest.approx(a["val_f1"].to_numpy(), abs=0.01)
    assert b["val_loss"].to_numpy() == pytest.approx(a["val_loss"].to_numpy(), rel=VAL_LOSS)

    # resuming with two processes: global step and the MLflow run continue; --fresh starts over
    def again(max_epochs: int, *extra: str) -> subprocess.CompletedProcess[str]:
        params = write_params(tmp_path / "two.yaml", 2, tmp_path / "ck-two", max_epochs=max_epochs)
        return airwatt_train(tmp_path / "two", prepared, params, *extra)

    assert "resuming from" in again(3).stderr
    assert list(pd.read_csv(tmp_path / "two" / "epochs.csv")["step"]) == [5, 10, 15]
    runs, versions = tracked(tmp_path / "two")
    assert len(runs) == 1 and len(versions) == 2  # the same run, a second version
    assert "resuming from" not in again(1, "--fresh").stderr
    assert list(pd.read_csv(tmp_path / "two" / "epochs.csv")["step"]) == [5]
    runs, versions = tracked(tmp_path / "two")
    assert len(runs) == 2 and len(versions) == 3
