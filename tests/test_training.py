"""The real training entry on a tiny simulated fleet: every model, resuming, and bad input at the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from airwatt.config import Params, load_params
from airwatt.errors import ConfigError
from airwatt.models import MODEL_NAMES, ModelBundle
from airwatt.prepare import prepare
from airwatt.simulate import simulate_fleet
from airwatt.training.train import TrainResult, checkpoint_callbacks, config_hash, resolve, train

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tiny_params(tmp: Path, **train: Any) -> Params:
    """params.yaml with a training bounded to a few batches, checkpoints under ``tmp``."""
    overrides = {
        "train.batch_size": 32,
        "train.limit_train_batches": 3,
        "train.limit_val_batches": 2,
        "train.max_epochs": 1,
        "train.num_workers": 0,
        "train.checkpoint_dir": str(tmp / "checkpoints"),
        "train.arch": {"multitask": {"widths": [8, 16], "hidden": 32, "head_hidden": 8}},
        **{f"train.{k}": v for k, v in train.items()},
    }
    return load_params(REPO / "params.yaml", overrides=overrides)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """simulate_fleet(3 devices, 1 day) -> prepare: one device per split."""
    root = tmp_path_factory.mktemp("fleet")
    params = load_params(REPO / "params.yaml", overrides={"simulate.devices": 3})
    simulate_fleet(root / "sim", params.simulate, start=params.sync.start, days=1, interval_s=5)
    prepare(root / "sim", params, root / "prepared")
    return root / "prepared"


def run_train(params: Params, prepared: Path, out: Path, **kwargs: Any) -> TrainResult:
    return train(
        params,
        prepared,
        out_dir=out / "model",
        metrics_path=out / "metrics" / "train.json",
        epochs_path=out / "metrics" / "epochs.csv",
        **kwargs,
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_fast_dev_run_of_every_model_writes_a_bundle_that_predicts(
    name: str, prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'untouched.db'}")
    result = run_train(tiny_params(tmp_path), prepared, tmp_path, model_name=name, fast_dev_run=True)
    assert result.run_id is None and result.model_version is None  # a smoke run is not tracked
    assert not (tmp_path / "untouched.db").exists()
    bundle = ModelBundle.load(result.bundle_dir)
    assert bundle.spec.arch == name
    assert bundle.spec.provenance["data_version"].startswith("sha256:")
    assert bundle.spec.gap.max_fill_s == 30  # the prepared data's gap policy travels with the model
    assert bundle.spec.offline_on_prob is not None  # every model's offline thresholds, tuned on validation
    assert (
        set(bundle.spec.offline_on_prob)
        == set(bundle.spec.provenance["offline_val_f1"])
        == set(bundle.appliances)
    )
    if bundle.real_time:  # its causal decision rule, tuned on the validation devices
        assert bundle.spec.decision is not None
        assert set(bundle.spec.decision.appliances) == set(bundle.appliances)
        assert set(bundle.spec.provenance["decision_val_f1"]) == set(bundle.appliances)
    else:
        assert bundle.spec.decision is None
    agg = np.load(prepared / "test" / "aggregate_w.npy")[:2000]
    pred = bundle.predict_series(agg)
    assert pred.power_w.shape == (2000, len(bundle.appliances))
    assert np.isfinite(pred.power_w).all()
    metrics = json.loads((tmp_path / "metrics" / "train.json").read_text())
    assert metrics["model"] == name
    epochs = pd.read_csv(tmp_path / "metrics" / "epochs.csv")
    assert len(epochs) == 1 and np.isfinite(epochs["val_loss"]).all()


def test_target_and_window_default_to_the_models_own() -> None:
    cfg = load_params(REPO / "params.yaml").train.model_copy(update={"window_length": None, "target": None})
    causal, _ = resolve(cfg, "causal")
    assert (causal.window_length, causal.target) == (512, "last")
    s2p, _ = resolve(cfg.model_copy(update={"window_length": 99}), "seq2point")
    assert (s2p.window_length, s2p.target) == (99, "midpoint")
    with pytest.raises(ConfigError, match="known models: seq2point"):
        resolve(cfg, "transformer")


def test_resume_hash_ignores_run_length_but_not_what_shapes_the_weights(tmp_path: Path) -> None:
    cfg, kw = resolve(tiny_params(tmp_path).train, "multitask")
    base = config_hash(cfg, kw, "v1")
    assert config_hash(cfg.model_copy(update={"max_epochs": 9, "num_workers": 3}), kw, "v1") == base
    assert config_hash(cfg.model_copy(update={"lr": 0.5}), kw, "v1") != base
    assert config_hash(cfg, {**kw, "hidden": 64}, "v1") != base
    assert config_hash(cfg, kw, "v2") != base


def test_power_loss_skips_appliances_never_on_in_training(prepared: Path, tmp_path: Path) -> None:
    import torch

    from airwatt.models import build_model, spec_from_prepared
    from airwatt.prepare.windows import WindowSample
    from airwatt.training.module import DisaggregationModule

    cfg, kw = resolve(tiny_params(tmp_path).train, "mean")
    spec = spec_from_prepared(
        prepared, "mean", kw, cfg.window_length, cfg.target, max_invalid_fraction=cfg.max_invalid_fraction
    )
    a = len(spec.appliances)
    mean_w = torch.tensor([spec.norm.power_mean_w[x] for x in spec.appliances])
    batch = WindowSample(
        torch.zeros(4, 1), mean_w.repeat(4, 1), torch.zeros(4, a), torch.ones(4, a), torch.ones(4, a)
    )
    batch.power_w[:, 0] += 1e4  # appliance 0 far from its training mean
    learn_all = DisaggregationModule(build_model(spec), spec, cfg)
    skip_first = DisaggregationModule(build_model(spec), spec, cfg, [False] + [True] * (a - 1))
    out = learn_all(batch.aggregate)
    assert float(learn_all._loss(out, batch)["loss_power"]) > 1.0
    assert float(skip_first._loss(out, batch)["loss_power"]) == pytest.approx(0.0, abs=1e-9)


def test_power_loss_when_on_counts_only_the_watts_an_on_answer_carries(
    prepared: Path, tmp_path: Path
) -> None:
    import torch

    from airwatt.models import build_model, spec_from_prepared
    from airwatt.models.base import ModelOutput
    from airwatt.prepare.windows import WindowSample
    from airwatt.training.module import DisaggregationModule

    cfg, kw = resolve(tiny_params(tmp_path).train, "causal")
    spec = spec_from_prepared(
        prepared, "causal", kw, 512, "last", max_invalid_fraction=cfg.max_invalid_fraction
    )
    a = len(spec.appliances)
    mean_w = torch.tensor([spec.norm.power_mean_w[x] for x in spec.appliances])
    std_w = torch.tensor([spec.norm.power_std_w[x] for x in spec.appliances])
    status = torch.tensor([[1.0] * a, [0.0] * a])  # slot 0: every appliance on; slot 1: all off
    power_w = mean_w.repeat(2, 1) + 3 * std_w * status  # on: 3 std above the mean; off: the mean
    batch = WindowSample(torch.zeros(2, 512), power_w, status, torch.ones(2, a), torch.ones(2, a))
    out = ModelOutput(torch.stack([torch.full((a,), 3.0), torch.full((a,), 5.0)]), torch.zeros(2, a))
    everywhere = DisaggregationModule(build_model(spec), spec, cfg)
    when_on = DisaggregationModule(build_model(spec), spec, cfg.model_copy(update={"power_loss_when": "on"}))
    assert float(everywhere._loss(out, batch)["loss_power"]) == pytest.approx(12.5)  # (0 + 25) / 2
    assert float(when_on._loss(out, batch)["loss_power"]) == pytest.approx(
        0.0, abs=1e-6
    )  # off slot not counted


def test_a_chunk_trains_the_same_targets_as_its_windows(prepared: Path, tmp_path: Path) -> None:
    """A causal model's one pass over a chunk gives, at each target, what its window gives alone: the loss
    of a chunk batch is the loss of the same targets as a batch of windows."""
    import torch

    from airwatt.models import build_model, spec_from_prepared
    from airwatt.prepare.windows import WindowDataset
    from airwatt.training.module import DisaggregationModule

    cfg, kw = resolve(tiny_params(tmp_path).train, "causal")
    cfg = cfg.model_copy(update={"window_length": 64})
    spec = spec_from_prepared(
        prepared, "causal", kw, 64, "last", max_invalid_fraction=cfg.max_invalid_fraction
    )
    module = DisaggregationModule(build_model(spec), spec, cfg).eval()
    chunks = WindowDataset(prepared, "train", window_length=64, target="last", stride=97, targets=16)
    windows = WindowDataset(prepared, "train", window_length=64, target="last")
    at = {int(s): k for k, s in enumerate(windows.starts)}
    picked = [i for i in range(len(chunks)) if all(int(chunks.starts[i]) + r in at for r in range(16))][:4]
    chunk_batch = torch.utils.data.default_collate([chunks[i] for i in picked])
    window_batch = torch.utils.data.default_collate(
        [windows[at[int(chunks.starts[i]) + r]] for i in picked for r in range(16)]
    )
    with torch.no_grad():
        out_c, flat = module.outputs(chunk_batch)
        out_w, _ = module.outputs(window_batch)
        torch.testing.assert_close(out_c.power, out_w.power, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(flat.power_w, window_batch.power_w)
        loss_c, loss_w = module._loss(out_c, flat)["loss"], module._loss(out_w, window_batch)["loss"]
    assert float(loss_c) == pytest.approx(float(loss_w), rel=1e-4)


def test_training_on_chunks_writes_a_bundle_and_needs_a_sequence_model(
    prepared: Path, tmp_path: Path
) -> None:
    p = tiny_params(tmp_path, model="causal", sequence_targets=256, batch_size=4)
    result = run_train(p, prepared, tmp_path / "chunks", use_mlflow=False)
    assert result.global_step == 3
    bundle = ModelBundle.load(result.bundle_dir)
    assert bundle.predict_series(np.full(600, 300.0, np.float32)).power_w.shape == (
        600,
        len(bundle.appliances),
    )
    with pytest.raises(ConfigError, match="sequence_targets 256 needs a real-time model"):
        run_train(tiny_params(tmp_path, model="seq2point", sequence_targets=256), prepared, tmp_path / "s")


@pytest.mark.slow
def test_interrupted_training_resumes_from_its_last_checkpoint(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    first = run_train(tiny_params(tmp_path, max_epochs=1), prepared, tmp_path)
    assert first.resumed_from is None and first.global_step == 3
    assert (first.checkpoint_dir / "last.ckpt").is_file()

    second = run_train(tiny_params(tmp_path, max_epochs=2), prepared, tmp_path)
    assert second.resumed_from == first.checkpoint_dir / "last.ckpt"
    assert second.global_step == 6  # continued from step 3, not restarted
    assert second.run_id == first.run_id  # and logged into the same MLflow run
    epochs = pd.read_csv(tmp_path / "metrics" / "epochs.csv")
    assert list(epochs["epoch"]) == [0, 1] and list(epochs["step"]) == [3, 6]

    (tmp_path / "metrics" / "epochs.csv").unlink()  # what `dvc repro` does to a stage's outputs first
    again = run_train(tiny_params(tmp_path, max_epochs=2), prepared, tmp_path)  # finished: nothing to fit
    assert again.resumed_from is not None and again.global_step == 6
    assert pd.read_csv(tmp_path / "metrics" / "epochs.csv").equals(epochs)

    fresh = run_train(tiny_params(tmp_path, max_epochs=1), prepared, tmp_path, fresh=True)
    assert fresh.resumed_from is None and fresh.global_step == 3


class _Worsening(L.LightningModule):
    """A module whose val/loss rises every epoch: its best checkpoint is epoch 0, its latest the final one."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return (self.w - 1).pow(2).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val/loss", float(self.current_epoch))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=2)

    def val_dataloader(self) -> DataLoader:
        return self.train_dataloader()


def test_last_checkpoint_holds_the_latest_epoch_when_val_loss_rose(tmp_path: Path) -> None:
    """What a rerun resumes from is where training stopped, not the best epoch (Lightning 2.6's save_last
    writes last.ckpt only with a new best)."""
    trainer = L.Trainer(
        max_epochs=3,
        callbacks=checkpoint_callbacks(tmp_path),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Worsening())
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == trainer.global_step == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch=0-step=2.ckpt", "last.ckpt"]


def test_keep_last_puts_the_final_weights_in_the_bundle(prepared: Path, tmp_path: Path) -> None:
    result = run_train(tiny_params(tmp_path, max_epochs=2, keep="last"), prepared, tmp_path, use_mlflow=False)
    assert result.metrics["best_epoch"] == 1  # the metrics are the kept epoch's
    final = torch.load(result.checkpoint_dir / "last.ckpt", weights_only=True)["state_dict"]
    kept = ModelBundle.load(result.bundle_dir).model.state_dict()
    assert all(torch.equal(kept[k], final[f"model.{k}"]) for k in kept)


def test_ema_puts_the_averaged_weights_in_the_bundle_and_resumes(prepared: Path, tmp_path: Path) -> None:
    """train.ema_decay: validation, checkpoints and the bundle hold the moving average, not the last step's
    weights; a longer rerun resumes the average from the checkpoint."""
    params = tiny_params(tmp_path, max_epochs=1, keep="last", ema_decay=0.5)
    first = run_train(params, prepared, tmp_path, use_mlflow=False)
    ckpt = torch.load(first.checkpoint_dir / "last.ckpt", weights_only=True)
    kept = ModelBundle.load(first.bundle_dir).model.state_dict()
    assert all(torch.equal(kept[k], ckpt["state_dict"][f"model.{k}"]) for k in kept)
    raw = ckpt["current_model_state"]  # the last step's own weights, which training goes on from
    assert any(not torch.equal(kept[k], raw[f"model.{k}"]) for k in kept if k.endswith("weight"))

    second = run_train(
        tiny_params(tmp_path, max_epochs=2, keep="last", ema_decay=0.5), prepared, tmp_path, use_mlflow=False
    )
    assert second.resumed_from == first.checkpoint_dir / "last.ckpt" and second.global_step == 6
    plain = run_train(
        tiny_params(tmp_path / "plain", max_epochs=1, keep="last"),
        prepared,
        tmp_path / "plain",
        use_mlflow=False,
    )
    assert "current_model_state" not in torch.load(plain.checkpoint_dir / "last.ckpt", weights_only=True)


def _airwatt(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["airwatt", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.slow
def test_cli_unknown_model_is_a_one_line_error_with_exit_2(prepared: Path, tmp_path: Path) -> None:
    proc = _airwatt("train", "--data", str(prepared), "--model", "transformer", cwd=REPO)
    assert proc.returncode == 2
    assert "unknown model 'transformer'" in proc.stderr and "multitask" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_cli_train_on_a_folder_that_was_not_prepared_names_it(tmp_path: Path) -> None:
    proc = _airwatt("train", "--data", str(tmp_path), "--fast-dev-run", cwd=REPO)
    assert proc.returncode == 2
    assert str(tmp_path) in proc.stderr and "prepare" in proc.stderr
    assert "Traceback" not in proc.stderr


# ------------------------------------------------------------------------ the DVC stages and MLproject
def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: <repo>/mlflow.db
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC copy of the project, shrunk by params only (4 devices, 1 day, a few batches)."""
    import shutil

    import yaml

    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", "MLproject", ".gitignore"):
        shutil.copy2(REPO / name, repo / name)
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["simulate"]["devices"] = 4
    params["sync"]["days"] = 1
    params["train"].update(
        limit_train_batches=3, limit_val_batches=2, max_epochs=1, batch_size=32, num_workers=0
    )
    params["train"]["arch"]["multitask"] = {"widths": [8, 16], "hidden": 32, "head_hidden": 8}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "test@airwatt.local"], repo)
    _run(["git", "config", "user.name", "AirWatt Test"], repo)
    _run(["dvc", "init", "-q"], repo)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "init"], repo)
    return repo


@pytest.mark.slow
def test_dvc_repro_trains_registers_and_promotes_then_exp_run_overrides_lr(pipeline_repo: Path) -> None:
    repo = pipeline_repo
    out = _run(["dvc", "repro"], repo).stdout
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert ModelBundle.load(repo / "data/model").spec.provenance["data_version"].startswith("dvc:")
    promotion = json.loads((repo / "data/metrics/promotion.json").read_text())
    assert promotion["promoted"] and promotion["champion_version"] == 1
    metrics = json.loads(_run(["dvc", "metrics", "show", "--json"], repo).stdout)
    files = {f for ws in metrics.values() for f in ws.get("data", {})}
    assert {"data/metrics/train.json", "data/metrics/evaluate_summary.json"} <= files
    summary = json.loads((repo / "data/metrics/evaluate_summary.json").read_text())
    report = json.loads((repo / "data/metrics/evaluate.json").read_text())
    assert report["rule"] == "served"  # the causal model is scored on what the service answers
    keys = ("mean", "appliances", "switches", "offline")
    assert summary == {k: report[k] for k in keys}
    assert (repo / "data/metrics/train_epochs.csv").is_file() and any((repo / "data/metrics").glob("*/*.png"))

    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "first run"], repo)
    exp = _run(["dvc", "exp", "run", "-S", "train.lr=0.002"], repo).stdout
    assert "Running stage 'train'" in exp and "Running stage 'sync'" not in exp
    promotion = json.loads((repo / "data/metrics/promotion.json").read_text())
    assert promotion["candidate_version"] == 2 and promotion["champion_version"] in (1, 2)


@pytest.mark.slow
def test_mlflow_run_of_the_train_entry_point(pipeline_repo: Path) -> None:
    if not (pipeline_repo / "data/prepared/split.json").is_file():
        _run(["dvc", "repro", "prepare"], pipeline_repo)
    proc = _run(
        ["mlflow", "run", ".", "-e", "train", "--env-manager", "local", "-P", "model=causal"], pipeline_repo
    )
    assert "succeeded" in proc.stdout + proc.stderr
    assert ModelBundle.load(pipeline_repo / "data/model").spec.arch == "causal"
