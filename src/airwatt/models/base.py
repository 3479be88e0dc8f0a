"""What every disaggregation model is: a plain ``nn.Module`` from a normalised aggregate window to
per-appliance power (normalised) and, optionally, on/off logits. No Lightning here: serving needs only torch.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

TargetPosition = Literal["midpoint", "last"]


class ModelOutput(NamedTuple):
    """(B, A) normalised power per appliance; (B, A) on/off logits, or None for power-only models
    (their on/off state is the power thresholded with the appliance's on threshold)."""

    power: torch.Tensor
    on_logits: torch.Tensor | None


def target_index(window_length: int, target: TargetPosition) -> int:
    """Index inside the window of the reading a model predicts: midpoint (W // 2) or the newest (W - 1)."""
    return window_length // 2 if target == "midpoint" else window_length - 1
