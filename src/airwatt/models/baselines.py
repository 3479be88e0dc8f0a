"""No-skill baselines, so every metric table shows what a model that ignores its input scores.

- ``mean``: each appliance's training mean power at every reading (normalised output 0 is the training mean);
  its on/off state is that mean thresholded with the on threshold (so, for most appliances, always off).
- ``always_off``: 0 W and off everywhere (an on/off logit of -30, so the power gate outputs 0 W).

Neither needs training (``trainable = False``). Their buffers are their whole "weights": they make the
bundle's weight file non-empty and let a bundle with a tampered appliance count fail to load.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from airwatt.errors import ConfigError
from airwatt.models.base import ModelOutput, TargetPosition

OFF_LOGIT = -30.0  # sigmoid(-30) ~ 1e-13: off, and finite so losses and NaN checks stay well-defined


class _Baseline(nn.Module):
    default_target: ClassVar[TargetPosition] = "midpoint"
    default_window_length: ClassVar[int] = 1
    trainable: ClassVar[bool] = False

    def __init__(
        self, n_appliances: int, window_length: int, *, target: TargetPosition | None = None
    ) -> None:
        super().__init__()
        if n_appliances < 1 or window_length < 1:
            raise ConfigError(
                f"baselines need n_appliances >= 1 and window_length >= 1, got {n_appliances}, "
                f"{window_length}"
            )
        self.n_appliances = n_appliances
        self.window_length = window_length
        self.target: TargetPosition = target or self.default_target


class MeanPower(_Baseline):
    """Predicts each appliance's training mean power: normalised 0."""

    power_norm: torch.Tensor  # (A,) buffer of zeros

    def __init__(
        self, n_appliances: int, window_length: int, *, target: TargetPosition | None = None
    ) -> None:
        super().__init__(n_appliances, window_length, target=target)
        self.register_buffer("power_norm", torch.zeros(n_appliances))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(self.power_norm.expand(x.shape[0], -1).to(x.dtype), None)  # (B, A)


class AlwaysOff(_Baseline):
    """0 W, always off: every on/off logit is OFF_LOGIT, and the power gate turns that into 0 W."""

    on_logit: torch.Tensor  # (A,) buffer of OFF_LOGIT

    def __init__(
        self, n_appliances: int, window_length: int, *, target: TargetPosition | None = None
    ) -> None:
        super().__init__(n_appliances, window_length, target=target)
        self.register_buffer("on_logit", torch.full((n_appliances,), OFF_LOGIT))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        b = x.shape[0]
        logits = self.on_logit.expand(b, -1).to(x.dtype)  # (B, A)
        return ModelOutput(torch.zeros_like(logits), logits)
