"""The LightningModule that trains any registered model (airwatt.models): one step for train/val/test.

Loss (per batch): ``power_loss_weight`` x masked MSE of the normalised power ``(power_w - mean_w) / std_w``
(mask: ``power_valid``, and only appliances that were on in the training data; with ``power_loss_when: on``
and an on/off head, only target slots where the appliance is on: the power head then learns the watts an
"on" answer carries, not their mean over on and off, which a served "on" would under-state) +
``onoff_loss_weight`` x masked BCE of the on/off logits (mask: ``status_valid``) for models that have them.

Validation metrics (``val/mae_w``, ``val/f1``, ...: the unweighted mean over the appliances where they are
defined) come from airwatt.metrics.DisaggregationMetrics on the predictions the model would serve
(airwatt.models.OutputDecoder), so training reports the definitions evaluation uses.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from airwatt.config import TrainParams
from airwatt.metrics import DisaggregationMetrics
from airwatt.models import ON_PROBABILITY_THRESHOLD, ModelOutput, ModelSpec, OutputDecoder
from airwatt.prepare.windows import WindowSample

LOGGED_VAL_METRICS = ("mae_w", "f1", "sae", "nde", "eac", "precision", "recall")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask`` is 1 (0 when nothing counts, so an empty batch adds no gradient)."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def nanmean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the defined (non-NaN) entries; NaN when there are none."""
    ok = ~torch.isnan(x)
    return x[ok].mean() if bool(ok.any()) else x.new_tensor(float("nan"))


class DisaggregationModule(L.LightningModule):
    """Wraps ``model`` (a plain nn.Module from airwatt.models) with the loss, metrics and optimizer."""

    power_mean_w: torch.Tensor
    power_std_w: torch.Tensor
    power_learnable: torch.Tensor

    def __init__(
        self, model: nn.Module, spec: ModelSpec, cfg: TrainParams, power_learnable: list[bool] | None = None
    ) -> None:
        """``power_learnable[j]``: appliance j was on in the training data. The power loss skips the others:
        their normalisation (std 1 W where the training power never varied) would turn a validation
        device's watts into targets of thousands and swamp val/loss, the checkpoint monitor."""
        super().__init__()
        self.model = model
        self.cfg = cfg
        apps = spec.appliances
        learnable = power_learnable if power_learnable is not None else [True] * len(apps)
        self.register_buffer("power_mean_w", torch.tensor([spec.norm.power_mean_w[a] for a in apps]))
        self.register_buffer("power_std_w", torch.tensor([spec.norm.power_std_w[a] for a in apps]))
        self.register_buffer("power_learnable", torch.tensor(learnable, dtype=torch.float32))
        self.decoder = OutputDecoder.from_spec(spec)
        self.val_metrics = DisaggregationMetrics(num_appliances=len(apps))

    def forward(self, aggregate: torch.Tensor) -> ModelOutput:
        return self.model(aggregate)  # (B, W) -> (B, A) power, (B, A) logits | None

    def outputs(self, batch: WindowSample) -> tuple[ModelOutput, WindowSample]:
        """The model's outputs at the batch's targets, and the batch, both flat: (N, A) each.

        A batch of windows (targets (B, A)) goes through ``forward``; a batch of chunks (targets (B, S, A),
        airwatt.prepare.windows) through the model's ``forward_sequence``, one pass giving every position,
        of which the last S are the targets, each with a whole window of history (N = B x S)."""
        if batch.power_w.dim() == 2:
            return self(batch.aggregate), batch
        s = batch.power_w.shape[1]
        sequence = cast(Callable[[torch.Tensor], ModelOutput], self.model.forward_sequence)
        out = sequence(batch.aggregate)  # (B, W + S - 1) -> (B, W + S - 1, A) each
        logits = None if out.on_logits is None else out.on_logits[:, -s:].flatten(0, 1)
        flat = WindowSample(batch.aggregate, *(t.flatten(0, 1) for t in batch[1:]))
        return ModelOutput(out.power[:, -s:].flatten(0, 1), logits), flat

    # ------------------------------------------------------------------------------------------- the step
    def _loss(self, out: ModelOutput, batch: WindowSample) -> dict[str, torch.Tensor]:
        target = (batch.power_w - self.power_mean_w) / self.power_std_w  # (B, A) normalised
        mask = batch.power_valid * self.power_learnable
        if self.cfg.power_loss_when == "on" and out.on_logits is not None:
            mask = mask * batch.status * batch.status_valid  # the watts an "on" answer carries
        mse = masked_mean((out.power.float() - target) ** 2, mask)
        losses = {"loss_power": mse, "loss": self.cfg.power_loss_weight * mse}
        if out.on_logits is not None:
            bce = F.binary_cross_entropy_with_logits(out.on_logits.float(), batch.status, reduction="none")
            losses["loss_onoff"] = masked_mean(bce, batch.status_valid)
            losses["loss"] = losses["loss"] + self.cfg.onoff_loss_weight * losses["loss_onoff"]
        return losses

    def predicted(self, out: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, A) watts and on/off as served, decoded by the bundle's own OutputDecoder (airwatt.models)."""
        power_w, prob_on = self.decoder(out)
        return power_w, prob_on >= ON_PROBABILITY_THRESHOLD

    def _step(self, batch: WindowSample, stage: str) -> torch.Tensor:
        out, batch = self.outputs(batch)
        losses = self._loss(out, batch)
        n = batch.power_w.shape[0]
        train = stage == "train"
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                on_step=train,
                on_epoch=True,
                batch_size=n,
                sync_dist=True,  # DDP: the global batch's loss (a scalar all-reduce, beside the gradients')
                prog_bar=name == "loss",
            )
        if not train:
            pred_w, pred_on = self.predicted(out)
            self.val_metrics.update(
                pred_w, batch.power_w, batch.power_valid, pred_on, batch.status, batch.status_valid
            )
        return losses["loss"]

    def training_step(self, batch: WindowSample, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: WindowSample, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: WindowSample, batch_idx: int) -> None:
        self._step(batch, "test")

    def _log_epoch_metrics(self, stage: str) -> None:
        values = self.val_metrics.compute()  # (A,) each, summed over batches and ranks
        for key in LOGGED_VAL_METRICS:
            value = nanmean(values[key]).float()  # the same on every rank: synced, it stays (Lightning asks)
            self.log(f"{stage}/{key}", value, prog_bar=key in ("mae_w", "f1"), sync_dist=True)
        self.val_metrics.reset()

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def configure_optimizers(self) -> Any:
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        if self.cfg.lr_schedule == "constant":
            return optimizer
        # one_cycle: warm up to lr over the first 10 % of the run's steps, then anneal to ~0, so the last
        # checkpoint is a settled one (a constant rate leaves val/loss jumping between validations)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.cfg.lr, total_steps=max(2, total), pct_start=0.1
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_train_epoch_start(self) -> None:
        """Submodules without a trainable weight (fine-tuning the heads only) stay in eval mode: their
        normalisation statistics are the initial model's."""
        for module in self.model.modules():
            own = list(module.parameters(recurse=False))
            if own and not any(p.requires_grad for p in own):
                module.eval()
