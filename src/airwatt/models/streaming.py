"""Incremental (streaming) inference of the causal model: one step per layer per new reading.

The "fast WaveNet" queue idea (Paine et al. 2016): block ``l`` of ``CausalNet`` reads its input at reading
``t`` and at ``t - 2^l``, so a device's state is, per block, the block's inputs at its last ``2^l`` readings
(a ring indexed by ``slot mod 2^l``, slots being absolute reading numbers). A new reading then costs one
pair product per block instead of a window: the same arithmetic as ``CausalNet.forward`` (the pyramid, with
BatchNorm folded) on the window ending at that reading, so the outputs agree to float rounding (the tests
check 1e-5 relative on random series, across gaps, restarts and evictions).

The state of many devices lives in preallocated slabs, one row per device (``capacity`` rows), so a batch
of devices steps in one tensor operation per layer and nothing is copied per call. Bytes per device:
``bytes_per_device`` (126.7 KiB for the default model: sum over blocks of 2^l x input channels x 4 bytes).
Eval mode only (the folded weights); callers run it under ``torch.inference_mode()``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F

from airwatt.models.base import ModelOutput
from airwatt.models.causal import CausalNet, FusedBlock


class CausalStreams:
    """Per-device streaming state of one ``CausalNet`` for up to ``capacity`` devices (rows)."""

    def __init__(self, net: CausalNet, capacity: int) -> None:
        if net.training:
            raise ValueError("streaming inference needs the model in eval mode")
        self.net = net
        self.capacity = capacity
        blocks = net._blocks()
        self.dilations = [b.dilation for b in blocks]
        self.rings = [torch.zeros(capacity, b.dilation, b.in_ch) for b in blocks]  # (rows, 2^l, C_in)

    @property
    def bytes_per_device(self) -> int:
        return sum(r[0].numel() * r.element_size() for r in self.rings)

    def _fused(self) -> list[FusedBlock]:
        fused = self.net._fused_blocks()
        if any(f is None for f in fused):
            raise RuntimeError("CausalStreams runs under torch.inference_mode() with the model in eval mode")
        return cast(list[FusedBlock], fused)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """(...) normalised readings -> (..., C0): the pointwise stem and its ReLU."""
        stem = self.net.stem
        return torch.relu(x.unsqueeze(-1) * stem.weight.view(-1) + cast(torch.Tensor, stem.bias))

    def step(self, rows: torch.Tensor, slots: torch.Tensor, x: torch.Tensor) -> ModelOutput:
        """Advance devices ``rows`` (B,) by the reading at ``slots`` (B,) with normalised value ``x`` (B,):
        the outputs at that reading, (B, A) each. Each row must hold the state up to slot - 1."""
        h = self._stem(x)  # (B, C0)
        skips = [h]
        for ring, d, f in zip(self.rings, self.dilations, self._fused(), strict=True):
            at = torch.remainder(slots, d)
            before = ring[rows, at]  # (B, C_in): this block's input at slot - d
            ring[rows, at] = h
            out = F.linear(
                torch.relu_(F.linear(torch.cat([before, h], 1), f.pair, f.bias)), f.mix, f.mix_bias
            )
            out[:, : h.shape[1]] += h  # the residual path (zero-padded channels add nothing)
            h = out
            skips.append(h)
        return self.net._heads(torch.cat(skips, dim=1))

    def seed(self, x: torch.Tensor, keep: int) -> tuple[ModelOutput, list[torch.Tensor]]:
        """Run devices' histories ``x`` (B, T) (T >= the receptive field) in one sequence pass.

        Returns the outputs at the last ``keep`` readings, (B, keep, A) each, and per block its inputs at
        the last 2^l readings, (B, 2^l, C_in), for ``store``. Equal to stepping from the first reading
        for every reading whose window lies inside ``x``.
        """
        if x.shape[1] < self.net.receptive_field:
            raise ValueError(f"seed needs at least {self.net.receptive_field} readings, got {x.shape[1]}")
        h = torch.relu(self.net.stem(x.unsqueeze(1)))  # (B, C0, T)
        skips, tails = [h[:, :, -keep:]], []
        for block, f in zip(self.net._blocks(), self._fused(), strict=True):
            tails.append(h[:, :, -block.dilation :].transpose(1, 2))  # (B, 2^l, C_in)
            h = block.sequence(h, f)
            skips.append(h[:, :, -keep:])
        features = torch.cat(skips, dim=1).transpose(1, 2)  # (B, keep, sum of widths)
        return self.net._heads(features), tails

    def store(self, rows: torch.Tensor, end_slots: torch.Tensor, tails: list[torch.Tensor]) -> None:
        """Put ``seed``'s block inputs of histories ending at ``end_slots`` (B,) into ``rows`` (B,)."""
        for ring, d, tail in zip(self.rings, self.dilations, tails, strict=True):
            slots = end_slots[:, None] - torch.arange(d - 1, -1, -1)  # (B, 2^l) ascending, the last = end
            ring[rows[:, None], torch.remainder(slots, d)] = tail
