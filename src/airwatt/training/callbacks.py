"""A per-epoch table of the validation metrics, for ``dvc plots`` (one row per epoch, written atomically).

Lightning's CSVLogger writes one sparse row per logging call (step and epoch metrics interleaved) into
versioned folders; DVC plots want one dense row per epoch at a fixed path. The rows live in the callback's
state, which Lightning stores in every checkpoint, so a resumed run keeps the epochs before the interruption.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.trainer.states import TrainerFn

from airwatt.atomic import atomic_path

EPOCH_COLUMNS = ("val/loss", "val/mae_w", "val/f1", "val/precision", "val/recall")


class EpochMetricsTable(L.Callback):
    """Writes ``path`` (CSV: epoch, step, train_loss, then EPOCH_COLUMNS with ``/`` as ``_``) after every
    fit epoch (rank zero writes). ``train_loss`` is the mean training loss of the epoch's batches, averaged
    over the DDP processes (each takes as many steps): one process's figure for the same global batches."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, float | int]] = []
        self._loss_sum: torch.Tensor | float = 0.0
        self._batches = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._batches = 0.0, 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum += loss.detach()  # a tensor: no device sync per step
            self._batches += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module's epoch-end logging; before ModelCheckpoint (Lightning runs checkpoints last), so
        # the row is in the checkpoint's state.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        m = trainer.callback_metrics
        mean = torch.as_tensor(self._loss_sum / self._batches if self._batches else math.nan)
        train_loss = trainer.strategy.reduce(mean.to(pl_module.device), reduce_op="mean")  # every rank calls
        row: dict[str, float | int] = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": float(train_loss),
        }
        for key in EPOCH_COLUMNS:
            value = float(m[key]) if key in m else math.nan
            row[key.replace("/", "_")] = value
        self.rows = [r for r in self.rows if r["epoch"] != row["epoch"]] + [row]
        if trainer.is_global_zero:
            write_rows(self.path, self.rows)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))


def write_rows(path: Path, rows: list[dict[str, float | int]]) -> None:
    """The table as CSV, atomically (columns: epoch, step, the metric columns)."""
    columns = ["epoch", "step", "train_loss", *(k.replace("/", "_") for k in EPOCH_COLUMNS)]
    with atomic_path(path) as tmp:
        pd.DataFrame(rows, columns=columns).to_csv(tmp, index=False, float_format="%.6g")
