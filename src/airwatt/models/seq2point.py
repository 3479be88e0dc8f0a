"""Seq2Point (Zhang et al. 2018, "Sequence-to-point learning with neural networks for NILM"): the baseline.

Five convolutions (filters x kernel: 30x10, 30x8, 40x6, 50x5, 50x5; stride 1, "same" padding, ReLU), flatten,
dense 1024 ReLU, dense A: the multi-output variant, one output per appliance. About 30.7 M parameters for
a 599-reading window, nearly all of them in the first dense layer (50 * 599 * 1024). Power only: its on/off
state is the predicted power thresholded with each appliance's on threshold.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from airwatt.errors import ConfigError
from airwatt.models.base import ModelOutput, TargetPosition

# (filters, kernel) of the published convolution stack.
SEQ2POINT_CONVS: tuple[tuple[int, int], ...] = ((30, 10), (30, 8), (40, 6), (50, 5), (50, 5))
SEQ2POINT_DENSE = 1024


class SamePadConv1d(nn.Conv1d):
    """Stride-1 convolution with "same" padding; for even kernels the extra zero goes on the right (Keras).

    Explicit padding instead of ``padding="same"``, which warns about an internal copy for even kernels.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int) -> None:
        super().__init__(in_ch, out_ch, kernel_size)
        self.pad_left = (kernel_size - 1) // 2
        self.pad_right = kernel_size - 1 - self.pad_left

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.pad_left, self.pad_right)))


class Seq2Point(nn.Module):
    """(B, W) normalised aggregate -> (B, A) normalised power at the target reading."""

    default_target: ClassVar[TargetPosition] = "midpoint"
    default_window_length: ClassVar[int] = 599
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_appliances: int,
        window_length: int,
        *,
        target: TargetPosition | None = None,
        dense_units: int = SEQ2POINT_DENSE,
    ) -> None:
        super().__init__()
        if n_appliances < 1 or window_length < 1:
            raise ConfigError(
                f"seq2point needs n_appliances >= 1 and window_length >= 1, got {n_appliances}, "
                f"{window_length}"
            )
        self.n_appliances = n_appliances
        self.window_length = window_length
        self.target: TargetPosition = target or self.default_target
        layers: list[nn.Module] = []
        in_ch = 1
        for filters, kernel in SEQ2POINT_CONVS:
            layers += [SamePadConv1d(in_ch, filters, kernel), nn.ReLU()]
            in_ch = filters
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_ch * window_length, dense_units),
            nn.ReLU(),
            nn.Linear(dense_units, n_appliances),
        )

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.convs(x.unsqueeze(1))  # (B, W) -> (B, 50, W)
        return ModelOutput(self.dense(h), None)  # (B, A)
