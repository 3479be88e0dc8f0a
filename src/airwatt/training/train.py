"""``airwatt train``: fit a registered model on a prepared directory, save its bundle, log and register it.

Wiring only: the model comes from airwatt.models, windows from airwatt.prepare, metrics from airwatt.metrics,
MLflow plumbing from airwatt.tracking, git and data versions from airwatt.lineage; Lightning does
checkpointing, early stopping, LR monitoring, progress bars, mixed precision and DDP.

Resuming: checkpoints go to ``<train.checkpoint_dir>/<model>-<hash>/`` where the hash covers everything that
shapes the weights (the model's resolved arguments, data version, optimisation params, seed) but not the keys
that only bound the run's length (max_epochs, max_steps, limit_*, patience) or where it runs (workers,
accelerator, devices, strategy, precision). A later run with the same hash resumes from its ``last.ckpt`` (and
its MLflow run), so an interrupted training continues, and raising max_epochs trains on. ``fresh=True``
(``--fresh``) starts over.

Several processes (``train.devices`` N > 1 with ``strategy: ddp`` or auto; on CPU Lightning's DDP talks gloo):
Lightning starts ranks 1..N-1 by running this process's command again (``airwatt train ...``, with
LOCAL_RANK set). ``batch_size`` stays the global batch and the data module deals each process its share of
the same draw (airwatt.training.datamodule), so N processes take the same steps over the same batches as
one. Rank zero alone creates the MLflow run, writes checkpoints, the epoch table, the bundle and the
metrics, tunes the on/off rules, logs and registers; the other ranks open no tracking store, log only
errors and return after the fit; rank zero waits for them before it returns.

Provenance: the bundle records the devices and UTC time ranges of the prepared train and val splits it
learnt from (``provenance.data_ranges``, airwatt.data_ranges; also the run's artifact
``provenance/data_ranges.json``), so evaluation can say when it scores seen data and promotion can avoid it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities import rank_zero_only

from airwatt import data_ranges, lineage, mlflow_store, tracking
from airwatt.atomic import write_json_atomic
from airwatt.config import Params, TrainParams
from airwatt.errors import ConfigError
from airwatt.models import (
    ModelBundle,
    ModelSpec,
    build_model,
    default_target,
    default_window_length,
    is_trainable,
    spec_from_prepared,
)
from airwatt.models.frame import predict_frame
from airwatt.models.registry import model_class
from airwatt.models.tuning import DecisionGrid, tune_bundle
from airwatt.prepare import ARRAYS
from airwatt.timeutil import from_epoch_ms
from airwatt.training import finetune
from airwatt.training.callbacks import EpochMetricsTable, write_rows
from airwatt.training.datamodule import WindowDataModule
from airwatt.training.module import DisaggregationModule

log = logging.getLogger(__name__)

# Keys of params.train that do not change what the weights become: left out of the resume hash.
# (model, window, target and the model's own arch kwargs enter the hash explicitly.)
RUN_KEYS = frozenset(
    [
        "max_epochs",
        "max_steps",
        "limit_train_batches",
        "limit_val_batches",
        "early_stopping_patience",
        "keep",
        "num_workers",
        "accelerator",
        "devices",
        "strategy",
        "precision",
        "checkpoint_dir",
        "decision",
        "arch",
        "model",
        "window_length",
        "target",
    ]
)
MONITOR = "val/loss"
LAST_CKPT = "last.ckpt"
RANK_EXIT_S = 120.0  # how long rank zero waits, after its own work, for the other ranks to exit
PLOT_SPAN_S = 6 * 3600.0  # predicting a whole day at 5 s costs ~10 s of CPU per run; 6 h show a cycle


@dataclass(frozen=True)
class TrainResult:
    bundle_dir: Path
    checkpoint_dir: Path
    resumed_from: Path | None
    global_step: int
    epochs: int
    metrics: dict[str, float]  # the kept epoch's validation metrics (train.keep)
    run_id: str | None
    model_version: str | None


# ------------------------------------------------------------------------------------------- the config
def resolve(cfg: TrainParams, model_name: str | None) -> tuple[TrainParams, dict[str, Any]]:
    """The train params for ``model_name`` (default ``cfg.model``) with window and target resolved, and the
    model's constructor arguments; unknown names raise ConfigError listing the known ones."""
    name = model_name or cfg.model
    model_class(name)
    cfg = cfg.model_copy(
        update={
            "model": name,
            "window_length": cfg.window_length or default_window_length(name),
            "target": cfg.target or default_target(name),
        }
    )
    return cfg, dict(cfg.arch.get(name, {}))


def config_hash(cfg: TrainParams, arch_kwargs: dict[str, Any], data_version: str) -> str:
    """12 hex digits identifying what shapes the weights (module docstring)."""
    shaping = {k: v for k, v in cfg.model_dump().items() if k not in RUN_KEYS}
    key = {
        "model": cfg.model,
        "window_length": cfg.window_length,
        "target": cfg.target,
        "arch_kwargs": arch_kwargs,
        "data_version": data_version,
        **shaping,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]


def precision_of(cfg: TrainParams) -> str:
    """params precision, or bf16 autocast on CUDA and full float32 on CPU."""
    if cfg.precision:
        return cfg.precision
    return "bf16-mixed" if uses_cuda(cfg) else "32-true"


def uses_cuda(cfg: TrainParams) -> bool:
    return torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda")


# ------------------------------------------------------------------------------------------ the trainer
def make_logger(
    params: Params,
    cfg: TrainParams,
    run_id: str | None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
) -> MLFlowLogger:
    """MLFlowLogger on the explicit tracking URI (its ./mlruns default is refused by MLflow 3.x).

    The run: the one `mlflow run` opened for us (MLFLOW_RUN_ID), else ``run_id`` (a resumed training's),
    else a new one in the experiment of params.register; a child of ``parent_run_id`` when given (MLflow's
    ``mlflow.parentRunId`` tag: the protocol's fold runs nest under its parent run).
    """
    uri = mlflow_store.tracking_uri()
    reg = params.register_
    run_id = os.environ.get("MLFLOW_RUN_ID") or run_id
    tracking.ensure_experiment(reg.experiment, uri)
    return MLFlowLogger(
        experiment_name=reg.experiment,
        run_name=run_name or f"train-{cfg.model}",
        tracking_uri=uri,
        artifact_location=mlflow_store.artifact_location(uri, reg.experiment),
        run_id=run_id,
        log_model=False,
        tags={"mlflow.parentRunId": parent_run_id} if parent_run_id else None,
    )


def make_trainer(cfg: TrainParams, ckpt_dir: Path, epochs_csv: Path, fast_dev_run: bool) -> L.Trainer:
    """The Trainer, without a logger (rank zero gets one: log_to). Its ranks are known once it exists."""
    callbacks: list[L.Callback] = [*checkpoint_callbacks(ckpt_dir), EpochMetricsTable(epochs_csv)]
    if cfg.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor=MONITOR, mode="min", patience=cfg.early_stopping_patience))
    if cfg.ema_decay is not None:  # validation, checkpoints and the final weights hold the average
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    limit = cfg.limit_train_batches
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=precision_of(cfg),  # type: ignore[arg-type]
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps,
        limit_train_batches=limit if limit is not None else 1.0,
        limit_val_batches=cfg.limit_val_batches if cfg.limit_val_batches is not None else 1.0,
        log_every_n_steps=max(1, min(50, limit or 50)),
        logger=False,
        callbacks=callbacks,
        default_root_dir=ckpt_dir,
        fast_dev_run=fast_dev_run,
        use_distributed_sampler=False,  # the data module deals each rank its share (same data as one process)
        enable_model_summary=False,  # the run's log says what was trained; the layer table is not for users
        deterministic=False,
    )


def log_to(trainer: L.Trainer, logger: MLFlowLogger) -> None:
    """Rank zero's MLflow logger and learning-rate monitor (the other ranks have neither: they never open
    the tracking store, and Lightning logs from rank zero anyway)."""
    trainer.loggers = [logger]
    trainer.callbacks.append(LearningRateMonitor(logging_interval="epoch"))  # type: ignore[attr-defined]


def check_processes(trainer: L.Trainer) -> None:
    """ConfigError when several processes would re-run a command that trains more than once.

    DDP's ranks 1..N-1 run this process's command line again (Lightning's launcher, or torchrun's own
    copies): right for `airwatt train` or a script that trains once, wrong inside `airwatt protocol`, whose
    every fold, evaluation and MLflow run each rank would repeat.
    """
    import click  # the CLI's parser (typer): which command, if any, is running

    ctx = click.get_current_context(silent=True)
    if trainer.world_size > 1 and ctx is not None and ctx.info_name != "train":
        raise ConfigError(
            f"train.devices gives {trainer.world_size} training processes, which re-run the command; "
            f"`{ctx.command_path}` trains several models: set train.devices 1 for it (--set train.devices=1)"
        )


def quiet_other_ranks() -> None:
    """Ranks other than zero log errors only: their lines would repeat rank zero's. (Lightning's rank, from
    the environment its launcher or torchrun sets: known before the Trainer exists.)"""
    if getattr(rank_zero_only, "rank", 0) != 0:
        logging.getLogger("airwatt").setLevel(logging.ERROR)


def wait_for_other_ranks(trainer: L.Trainer) -> None:
    """Rank zero, after its own work: wait for the ranks Lightning started (they return right after the
    fit), so the command ends when all of its processes have. (A rank failing during the fit has already
    stopped this one: Lightning's launcher watches them.)"""
    launcher = getattr(trainer.strategy, "launcher", None)
    for rank, proc in enumerate(getattr(launcher, "procs", []), start=1):
        try:
            code = proc.wait(timeout=RANK_EXIT_S)
        except subprocess.TimeoutExpired:
            log.warning("training rank %d (pid %d) still runs after %.0f s", rank, proc.pid, RANK_EXIT_S)
            continue
        if code != 0:
            log.error("training rank %d (pid %d) exited with code %d after the fit", rank, proc.pid, code)


def checkpoint_callbacks(ckpt_dir: Path) -> list[ModelCheckpoint]:
    """The best checkpoint (lowest val/loss: ``best-{epoch}-{step}.ckpt``, first, so it is the trainer's
    ``checkpoint_callback``) and the latest (``last.ckpt``, written at every validation: what a rerun resumes
    from). Not ``save_last=True``: since Lightning 2.6 it writes ``last.ckpt`` only when a new best is saved,
    so it would hold the best epoch, and a rerun would go back to it."""
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-{epoch}-{step}", monitor=MONITOR, mode="min")
    latest = ModelCheckpoint(
        dirpath=ckpt_dir, filename=LAST_CKPT.removesuffix(".ckpt"), save_top_k=1, enable_version_counter=False
    )
    return [best, latest]


def checkpoint_of(trainer: L.Trainer) -> ModelCheckpoint:
    cb = trainer.checkpoint_callback
    assert isinstance(cb, ModelCheckpoint)
    return cb


def load_best_weights(trainer: L.Trainer, module: DisaggregationModule) -> Path | None:
    """Put the best checkpoint's weights (lowest val/loss) into ``module``; its path, or None."""
    best = checkpoint_of(trainer).best_model_path
    if not best or not Path(best).is_file():
        return None
    # Lightning checkpoints are pickles: we only ever load our own, local, just-written ones, and with
    # weights_only=True (tensors and plain containers, no arbitrary objects).
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    return Path(best)


# ---------------------------------------------------------------------------------------------- plots
def plot_span(prepared: Path) -> dict[str, Any] | None:
    """The busiest PLOT_SPAN_S (most on-readings over all appliances) of the first validation device, as
    grid arrays with UTC timestamps; None when there is no validation device."""
    split = prepared / "val"
    index = json.loads((split / "index.json").read_text())
    if not index["devices"]:
        return None
    dev = index["devices"][0]
    span = int(PLOT_SPAN_S / index["interval_s"])
    lo, n = dev["offset"], dev["length"]
    on = np.load(split / "status.npy", mmap_mode="r")[lo : lo + n].sum(axis=1)  # (n,) appliances on
    starts = range(0, max(1, n - span + 1), max(1, span // 4))
    best = max(starts, key=lambda s: int(on[s : s + span].sum()))
    sel = slice(lo + best, lo + min(n, best + span))
    arrays = {k: np.asarray(np.load(split / f"{k}.npy", mmap_mode="r")[sel]) for k in ARRAYS}
    step_ms = round(index["interval_s"] * 1000)
    start_ms = dev["start_ms"] + best * step_ms
    ts = from_epoch_ms(start_ms + np.arange(sel.stop - sel.start, dtype=np.int64) * step_ms)
    return {"device_id": dev["device_id"], "appliances": index["appliances"], "timestamps": ts, **arrays}


def log_plots(run_id: str, bundle: ModelBundle, prepared: Path, uri: str) -> int:
    """A disaggregation PNG per appliance known on a validation device (plot_span); the number logged."""
    from airwatt.plots import plot_disaggregation

    day = plot_span(prepared)
    if day is None:
        return 0
    pred = bundle.predict_series(day["aggregate_w"], day["valid"])
    client = mlflow_store.client(uri)
    logged = 0
    for j, name in enumerate(bundle.appliances):
        k = day["appliances"].index(name)
        if not day["status_valid"][:, k].any():
            continue
        has_power = bool(day["power_valid"][:, k].any())
        fig = plot_disaggregation(
            day["timestamps"],
            day["aggregate_w"],
            np.where(day["power_valid"][:, k], day["power_w"][:, k], np.nan) if has_power else None,
            pred.power_w[:, j],
            name,
            prob_on=pred.prob_on[:, j],
            truth_on=day["status"][:, k] & day["status_valid"][:, k],
            title=f"{name}: validation device {day['device_id']}, {day['timestamps'][0]:%Y-%m-%d %H:%M} UTC",
        )
        client.log_figure(run_id, fig, f"plots/{name}.png")
        logged += 1
    return logged


def model_examples(bundle: ModelBundle, prepared: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An input example (readings of a validation device: one window plus a minute) and its prediction."""
    day = plot_span(prepared)
    assert day is not None
    n = min(len(day["valid"]), bundle.window_length + 12)
    ok = day["valid"][:n]
    readings = pd.DataFrame(
        {"timestamp": day["timestamps"][:n][ok].tz_localize(None), "power_w": day["aggregate_w"][:n][ok]}
    ).astype({"power_w": "float64"})
    return readings, predict_frame(bundle, readings)


# ----------------------------------------------------------------------------------------- the entry
def train(
    params: Params,
    data_dir: Path,
    *,
    out_dir: Path,
    metrics_path: Path,
    epochs_path: Path,
    model_name: str | None = None,
    fresh: bool = False,
    fast_dev_run: bool = False,
    use_mlflow: bool = True,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    register: bool = True,
) -> TrainResult:
    """Train, save the bundle to ``out_dir`` and the train metrics; log and register unless fast_dev_run.

    ``use_mlflow=False`` trains without MLflow (no run, no registration): for machines without a tracking
    store, such as a lent GPU box running a benchmark. ``parent_run_id`` nests the run under another (the
    cross-house protocol's folds); ``register=False`` logs the model to the run without a registry version.
    """
    data_dir = Path(data_dir)
    quiet_other_ranks()
    cfg, arch_kwargs = resolve(params.train, model_name)
    L.seed_everything(cfg.seed, workers=True)
    data_version = lineage.dataset_version(data_dir)
    initial = finetune.load_initial(cfg.init_from) if cfg.init_from else None
    if initial is not None:
        assert cfg.init_from is not None
        spec = finetune.initial_spec(initial, cfg.init_from, data_dir)
        cfg = cfg.model_copy(
            update={"model": spec.arch, "window_length": spec.window_length, "target": spec.target}
        )
        arch_kwargs = dict(spec.arch_kwargs)
    else:
        assert cfg.window_length is not None and cfg.target is not None
        spec = spec_from_prepared(
            data_dir,
            cfg.model,
            arch_kwargs,
            cfg.window_length,
            cfg.target,
            max_invalid_fraction=cfg.max_invalid_fraction,
        )
    assert cfg.window_length is not None and cfg.target is not None
    ckpt_dir = Path(cfg.checkpoint_dir) / f"{cfg.model}-{config_hash(cfg, arch_kwargs, data_version)}"
    last = ckpt_dir / LAST_CKPT
    resume = last if last.is_file() and not fresh and not fast_dev_run else None
    trainer = make_trainer(cfg, ckpt_dir, epochs_path, fast_dev_run)
    check_processes(trainer)
    if fresh and ckpt_dir.is_dir() and trainer.is_global_zero:
        shutil.rmtree(ckpt_dir)  # our own checkpoints of this config: a stale "best" must not win later

    model = build_model(spec) if initial is None else finetune.initial_model(spec, initial, cfg.finetune)
    module = DisaggregationModule(model, spec, cfg, power_learnable(data_dir, spec))
    dm = WindowDataModule(
        data_dir,
        window_length=cfg.window_length,
        target=cfg.target,
        stride=cfg.stride,
        val_stride=cfg.val_stride,
        max_invalid_fraction=cfg.max_invalid_fraction,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        pin_memory=uses_cuda(cfg),
        source_weights=cfg.source_weights,
        seed=cfg.seed,
        augment=cfg.augment,
        aggregate_norm=None if initial is None else (spec.norm.aggregate_mean_w, spec.norm.aggregate_std_w),
        targets=sequence_targets(cfg, model),
    )
    run_id = None
    if trainer.is_global_zero:
        if use_mlflow and not fast_dev_run:
            logger = make_logger(
                params, cfg, previous_run_id(ckpt_dir) if resume else None, parent_run_id, run_name
            )
            log_to(trainer, logger)
            run_id = logger.run_id
        sidecar = {"run_id": run_id, "data_version": data_version, "train": cfg.model_dump()}
        write_json_atomic(sidecar_path(ckpt_dir), sidecar)
        dm.setup("fit")
        mix = dm.mix()
        log.info("training mix: %s", json.dumps(mix))
        if dm.bank is not None:
            log.info(
                "augmentation: activations per appliance %s, distractors %s, from %d training devices",
                dm.bank.sizes,
                dm.bank.distractor_sizes,
                len(dm.bank.devices),
            )
        if run_id is not None:
            logged = run_params(cfg, arch_kwargs, data_dir, data_version) | tracking.flatten({"mix": mix}, "")
            tracking.log_run_params(run_id, logged)
    if resume:
        log.info("resuming from %s (global step and epoch continue)", resume)

    if is_trainable(cfg.model):
        rows = fit(trainer, module, dm, resume)
    else:
        rows = validate_only(trainer, module, dm, epochs_path)
    best = best_row(rows, cfg.keep)
    if not trainer.is_global_zero:  # DDP: rank 0 saves, logs and registers
        return TrainResult(out_dir, ckpt_dir, resume, trainer.global_step, len(rows), best, None, None)

    provenance = {
        "data_version": data_version,
        "data_dir": str(data_dir),
        "run_id": run_id,
        **lineage.git_state(),
        data_ranges.RECORD_KEY: data_ranges.training_record(data_dir),  # what it trained and validated on
    }
    if initial is not None:
        assert cfg.init_from is not None
        provenance |= finetune.provenance_of(cfg.init_from, initial, cfg.finetune)
    bundle = ModelBundle(spec.model_copy(update={"provenance": provenance}), module.model.cpu())
    bundle = tune_bundle(bundle, data_dir, decision_grid(cfg))
    bundle.save(out_dir)
    summary: dict[str, Any] = {"model": cfg.model, "global_step": trainer.global_step, "epochs": len(rows)}
    summary |= best
    version = track(params, run_id, bundle, out_dir, data_dir, register) if run_id is not None else None
    if version is not None:
        summary["model_version"] = int(version)
    write_json_atomic(metrics_path, {k: None if _is_nan(v) else v for k, v in summary.items()})
    log.info("trained %s: %s", cfg.model, json.dumps(summary, default=str))
    wait_for_other_ranks(trainer)
    return TrainResult(out_dir, ckpt_dir, resume, trainer.global_step, len(rows), best, run_id, version)


def fit(
    trainer: L.Trainer, module: DisaggregationModule, dm: WindowDataModule, resume: Path | None
) -> list[dict[str, float | int]]:
    """Fit (from ``resume`` when given), then keep the weights ``train.keep`` says (the best checkpoint's,
    or the final ones the module holds); returns the per-epoch rows."""
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    table = next(cb for cb in trainer.callbacks if isinstance(cb, EpochMetricsTable))  # type: ignore[attr-defined]
    if trainer.is_global_zero:  # the only rank that goes on with the weights
        if module.cfg.keep == "best":
            load_best_weights(trainer, module)
        # a rerun of a finished training fits no epoch: the table comes from the checkpoint's state, and its
        # file is written again (DVC removes a stage's outputs before running it)
        write_rows(table.path, table.rows)
    return list(table.rows)


def validate_only(
    trainer: L.Trainer, module: DisaggregationModule, dm: WindowDataModule, epochs_path: Path
) -> list[dict[str, float | int]]:
    """A model with nothing to fit (the baselines): one validation pass gives its metrics."""
    log.info("%s has no trainable parameters: validating only", type(module.model).__name__)
    results = trainer.validate(module, datamodule=dm, verbose=False)
    row: dict[str, float | int] = {"epoch": 0, "step": 0, "train_loss": math.nan}
    row |= {k.replace("/", "_"): float(v) for k, v in results[0].items()}
    if trainer.is_global_zero:
        write_rows(epochs_path, [row])
    return [row]


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def run_params(
    cfg: TrainParams, arch_kwargs: dict[str, Any], data_dir: Path, data_version: str
) -> dict[str, Any]:
    """What a run records as MLflow params: the whole train section (flattened) and the data it read."""
    return {
        **tracking.flatten(cfg.model_dump(mode="json"), "train."),
        **tracking.flatten({"arch_kwargs": arch_kwargs}, "train."),
        "data.dir": str(data_dir),
        "data.version": data_version,
        **{f"git.{k.removeprefix('git_')}": v for k, v in lineage.git_state().items()},
    }


def track(
    params: Params, run_id: str, bundle: ModelBundle, bundle_dir: Path, data_dir: Path, register: bool = True
) -> str | None:
    """Plots, the pyfunc model with signature and input example, and the registry version (candidate;
    None with ``register=False``)."""
    uri = mlflow_store.tracking_uri()
    tracking.tag_run(run_id, bundle.spec.provenance)
    plots = log_plots(run_id, bundle, data_dir, uri)
    log.info("logged %d disaggregation plots to run %s", plots, run_id)
    example_in, example_out = model_examples(bundle, data_dir)
    model_uri = tracking.log_bundle_model(run_id, bundle_dir, example_in, example_out, uri)
    return tracking.register(model_uri, run_id, params.register_, uri) if register else None


def best_row(rows: list[dict[str, float | int]], keep: str = "best") -> dict[str, float]:
    """The epoch whose weights were kept, as the train metrics: the lowest val_loss (``keep`` best), or the
    last epoch (``keep`` last). Its epoch is ``best_epoch`` either way."""
    if not rows:
        return {}
    row = (
        rows[-1]
        if keep == "last"
        else min(rows, key=lambda r: math.inf if math.isnan(r["val_loss"]) else r["val_loss"])
    )
    return {("best_epoch" if k == "epoch" else k): float(v) for k, v in row.items() if k != "step"}


def sidecar_path(ckpt_dir: Path) -> Path:
    """``<checkpoint dir>.json``: the config and MLflow run of a checkpoint dir (beside it, as Lightning warns
    about files it did not write inside)."""
    return ckpt_dir.with_name(f"{ckpt_dir.name}.json")


def previous_run_id(ckpt_dir: Path) -> str | None:
    """The MLflow run of an interrupted training (from the sidecar), when it still exists in the store."""
    path = sidecar_path(ckpt_dir)
    if not path.is_file():
        return None
    run_id = json.loads(path.read_text()).get("run_id")
    return run_id if run_id and tracking.run_exists(run_id) else None


def power_learnable(data_dir: Path, spec: ModelSpec) -> list[bool]:
    """Per appliance of ``spec``: was it ever on (max >= on threshold) in the training ground truth?"""
    stats = json.loads((data_dir / "norm_stats.json").read_text())["appliances"]
    learnable = []
    for name in spec.appliances:
        max_w = stats[name].get("max_w")
        learnable.append(max_w is not None and max_w >= spec.on_off[name].on_threshold_w)
    skipped = [a for a, ok in zip(spec.appliances, learnable, strict=True) if not ok]
    if skipped:
        log.warning("never on in the training data, left out of the power loss: %s", ", ".join(skipped))
    return learnable


def sequence_targets(cfg: TrainParams, model: torch.nn.Module) -> int:
    """train.sequence_targets, checked: chunks need a model whose one pass over a series equals its
    window-by-window outputs (``sequence_exact``: the causal model with a power-of-two window)."""
    if cfg.sequence_targets == 1:
        return 1
    if not getattr(model, "sequence_exact", False):
        raise ConfigError(
            f"train.sequence_targets {cfg.sequence_targets} needs a real-time model with an exact sequence "
            f"form (causal with a power-of-two window); {cfg.model} with window {cfg.window_length} has "
            "none: set it to 1"
        )
    return cfg.sequence_targets


def decision_grid(cfg: TrainParams) -> DecisionGrid:
    """params.yaml ``train.decision`` as the tuning search's candidates."""
    d = cfg.decision
    return DecisionGrid(
        memory_s=d.memory_s, on_prob=d.on_prob, band=d.band, confirm_s=d.confirm_s, min_gain=d.min_gain
    )
