"""The multi-appliance multi-task model: one network for all appliances of a site, two heads per appliance.

Architecture (defaults; about 0.7 M parameters for 4 appliances, ~40x fewer than Seq2Point's 30.7 M, and
~4x its speed on CPU):

- a 1-D convolutional encoder over the whole window: a stem (kernel 7) and six stages (``widths`` 16, 32,
  48, 64, 96, 128 channels), each a residual block of two kernel-5 convolutions (dilations 1 and 2); every
  stage after the first halves the time resolution (stride-2 convolution), so the last stage (19 positions
  for 599 readings) sees the whole window;
- features: each stage's feature vector at the target reading (fine stages locate edges to the reading,
  coarse ones describe the appliance's cycle) plus mean- and max-pooled context of the last stage;
- a shared dense layer, then per appliance an on/off head (one logit: detection) and a power head
  (normalised power: prediction), each a small MLP of its own.

Training (what the heads mean): ``on_logits`` against the on/off status (BCE), ``power`` against the
normalised power ``(power_w - mean_w) / std_w`` of every window, on or off (MSE or L1). At inference the power
is gated by the detection: watts where the on-probability is >= 0.5, 0 W elsewhere (airwatt.models.predict).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from airwatt.errors import ConfigError
from airwatt.models.base import ModelOutput, TargetPosition, target_index


class PerApplianceMLP(nn.Module):
    """An independent two-layer MLP per appliance, batched: (B, F) -> (B, A), one output per appliance."""

    def __init__(self, in_features: int, hidden: int, n_appliances: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(n_appliances, in_features, hidden))
        self.b1 = nn.Parameter(torch.zeros(n_appliances, hidden))
        self.w2 = nn.Parameter(torch.empty(n_appliances, hidden))
        self.b2 = nn.Parameter(torch.zeros(n_appliances))
        # nn.Linear's default scale: uniform in +-1/sqrt(fan_in).
        nn.init.uniform_(self.w1, -(in_features**-0.5), in_features**-0.5)
        nn.init.uniform_(self.w2, -(hidden**-0.5), hidden**-0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # (..., F) -> (..., A * H): every appliance's first layer in one matrix product -> (..., A)
        a, f, hidden = self.w1.shape
        first = torch.matmul(features, self.w1.permute(1, 0, 2).reshape(f, a * hidden))
        h = first.view(*features.shape[:-1], a, hidden)
        if torch.is_grad_enabled():
            h = torch.relu(h + self.b1)
            return (h * self.w2).sum(-1) + self.b2
        h = h.add_(self.b1).relu_().mul_(self.w2)  # in place: no (..., A, H) temporaries at inference
        return h.sum(-1).add_(self.b2)

    def forward_one(self, features: torch.Tensor, j: int) -> torch.Tensor:
        """Appliance ``j``'s output alone: (N, F) -> (N,), the same function as ``forward(...)[:, j]``."""
        return torch.relu(features @ self.w1[j] + self.b1[j]) @ self.w2[j] + self.b2[j]


class ResBlock(nn.Module):
    """Two "same" convolutions (dilations 1 and 2) with batch norm and a residual connection."""

    def __init__(self, channels: int, kernel_size: int) -> None:
        super().__init__()

        def conv(dilation: int) -> nn.Conv1d:
            pad = dilation * (kernel_size - 1) // 2
            return nn.Conv1d(channels, channels, kernel_size, padding=pad, dilation=dilation, bias=False)

        self.body = nn.Sequential(
            conv(1), nn.BatchNorm1d(channels), nn.ReLU(), conv(2), nn.BatchNorm1d(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.body(x))


def _stage(in_ch: int, out_ch: int, kernel_size: int, downsample: bool) -> nn.Sequential:
    """Optional stride-2 transition (length L -> ceil(L / 2)), then one residual block."""
    layers: list[nn.Module] = []
    if downsample or in_ch != out_ch:
        stride = 2 if downsample else 1
        layers += [
            nn.Conv1d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm1d(out_ch),
            nn.ReLU(),
        ]
    layers.append(ResBlock(out_ch, kernel_size))
    return nn.Sequential(*layers)


class MultiTaskNet(nn.Module):
    """(B, W) normalised aggregate -> per appliance: on/off logit and normalised power at the target."""

    default_target: ClassVar[TargetPosition] = "midpoint"
    default_window_length: ClassVar[int] = 599
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_appliances: int,
        window_length: int,
        *,
        target: TargetPosition | None = None,
        widths: Sequence[int] = (16, 32, 48, 64, 96, 128),
        kernel_size: int = 5,
        hidden: int = 256,
        head_hidden: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if n_appliances < 1 or not widths or kernel_size % 2 == 0:
            raise ConfigError(
                f"multitask needs n_appliances >= 1, at least one width and an odd kernel_size "
                f"(got {n_appliances}, {list(widths)}, {kernel_size})"
            )
        if window_length < 2 ** (len(widths) - 1):
            raise ConfigError(
                f"multitask window_length {window_length} is too short for {len(widths) - 1} halvings "
                f"(needs >= {2 ** (len(widths) - 1)}); use fewer widths"
            )
        self.n_appliances = n_appliances
        self.window_length = window_length
        self.target: TargetPosition = target or self.default_target
        self.stem = nn.Sequential(
            nn.Conv1d(1, widths[0], 7, padding=3, bias=False), nn.BatchNorm1d(widths[0]), nn.ReLU()
        )
        self.stages = nn.ModuleList(
            _stage(widths[max(i - 1, 0)], w, kernel_size, downsample=i > 0) for i, w in enumerate(widths)
        )
        # Index of the target reading at each stage: a stride-2 stage maps position p to p // 2.
        t = target_index(window_length, self.target)
        self._target_at = [t >> i for i in range(len(widths))]
        n_features = sum(widths) + 2 * widths[-1]
        self.trunk = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.on_head = PerApplianceMLP(hidden, head_hidden, n_appliances)
        self.power_head = PerApplianceMLP(hidden, head_hidden, n_appliances)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        h = self.stem(x.unsqueeze(1))  # (B, W) -> (B, C0, W)
        at_target = []
        for stage, t in zip(self.stages, self._target_at, strict=True):
            h = stage(h)  # (B, Ci, ~W / 2^i)
            at_target.append(h[:, :, t])  # (B, Ci)
        context = [h.mean(dim=2), h.amax(dim=2)]  # (B, C_last) each
        features = self.trunk(torch.cat(at_target + context, dim=1))  # (B, hidden)
        return ModelOutput(self.power_head(features), self.on_head(features))  # (B, A), (B, A)
