"""Incremental (streaming) inference of the causal model: one step per layer per new reading.

The "fast WaveNet" queue idea (Paine et al. 2016): block ``l`` of ``CausalNet`` reads its input at reading
``t`` and at ``t - 2^l``, so a device's state is, per block, the block's inputs at its last ``2^l`` readings
(a ring indexed by ``slot mod 2^l``, slots being absolute reading numbers). A new reading then costs one
pair product per block instead of a window: the same arithmetic as ``CausalNet.forward`` (the pyramid, with
BatchNorm folded) on the window ending at that reading, so the outputs agree to float rounding (the tests
check 1e-5 relative on random series, across gaps, restarts and evictions).

The state of many devices lives in preallocated slabs, one row per device (``capacity`` rows), so a batch
of devices steps in one array operation per layer and nothing is copied per call. Bytes per device:
``bytes_per_device`` (126.7 KiB for the default model: sum over blocks of 2^l x input channels x 4 bytes).

A step runs in NumPy on the model's eval-mode weights (BatchNorm folded), copied once: a step is about a
hundred operations on vectors of a few dozen values, where torch's per-operation overhead would cost three
times NumPy's. The history pass that fills a device's state (``seed``) runs in torch (a sequence pass).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from airwatt.models.base import ModelOutput
from airwatt.models.causal import CausalNet, FusedBlock
from airwatt.models.multitask import PerApplianceMLP


@dataclass(frozen=True)
class _Block:
    pair_t: np.ndarray  # (2 * C_in, C_out): [h(t - d), h(t)] -> pre-activation
    bias: np.ndarray  # (C_out,)
    mix_t: np.ndarray  # (C_out, C_out)
    mix_bias: np.ndarray  # (C_out,)
    in_ch: int


@dataclass(frozen=True)
class _Heads:
    """The trunk and both per-appliance heads as three matrix products."""

    trunk_t: np.ndarray  # (F, hidden)
    trunk_bias: np.ndarray  # (hidden,)
    first_t: np.ndarray  # (hidden, 2 * A * H): the power heads' first layers, then the on/off heads'
    first_bias: np.ndarray  # (2 * A * H,)
    second: np.ndarray  # (2 * A, H)
    second_bias: np.ndarray  # (2 * A,)


def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _head_parts(head: PerApplianceMLP) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    a, f, h = head.w1.shape
    first = head.w1.permute(1, 0, 2).reshape(f, a * h)  # (F, A * H)
    return _np(first), _np(head.b1.reshape(a * h)), _np(head.w2), _np(head.b2)


class CausalStreams:
    """Per-device streaming state of one ``CausalNet`` for up to ``capacity`` devices (rows)."""

    def __init__(self, net: CausalNet, capacity: int) -> None:
        if net.training:
            raise ValueError("streaming inference needs the model in eval mode")
        self.net = net
        self.capacity = capacity
        blocks = net._blocks()
        self.dilations = [b.dilation for b in blocks]
        # (rows, 2^l, C_in), uninitialised: memory is taken as rows are first stored (store, then step)
        self.rings = [np.empty((capacity, b.dilation, b.in_ch), np.float32) for b in blocks]
        with torch.inference_mode():
            fused = self._fused()
            self.stem_w, self.stem_b = _np(net.stem.weight.view(-1)), _np(cast(torch.Tensor, net.stem.bias))
            self.blocks = [
                _Block(_np(f.pair.T), _np(f.bias), _np(f.mix.T), _np(f.mix_bias), b.in_ch)
                for b, f in zip(blocks, fused, strict=True)
            ]
            trunk = cast(torch.nn.Linear, net.trunk[0])
            p1, pb1, p2, pb2 = _head_parts(net.power_head)
            o1, ob1, o2, ob2 = _head_parts(net.on_head)
            self.heads = _Heads(
                _np(trunk.weight.T),
                _np(trunk.bias),
                np.hstack([p1, o1]),
                np.concatenate([pb1, ob1]),
                np.vstack([p2, o2]),
                np.concatenate([pb2, ob2]),
            )
        self.n_appliances = net.n_appliances

    @property
    def bytes_per_device(self) -> int:
        return sum(r[0].nbytes for r in self.rings)

    def _fused(self) -> list[FusedBlock]:
        fused = self.net._fused_blocks()
        if any(f is None for f in fused):
            raise RuntimeError("CausalStreams runs under torch.inference_mode() with the model in eval mode")
        return cast(list[FusedBlock], fused)

    def step(self, rows: np.ndarray, slots: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance devices ``rows`` (B,) by the reading at ``slots`` (B,) with normalised value ``x`` (B,):
        the outputs at that reading, (B, A) normalised power and (B, A) on/off logits. Each row must hold
        the state up to slot - 1."""
        h = np.maximum(np.asarray(x, np.float32)[:, None] * self.stem_w + self.stem_b, 0)  # (B, C0)
        skips = [h]
        for ring, d, blk in zip(self.rings, self.dilations, self.blocks, strict=True):
            at = slots % d
            before = ring[rows, at]  # (B, C_in): this block's input at slot - d
            ring[rows, at] = h
            y = np.concatenate([before, h], axis=1) @ blk.pair_t
            y += blk.bias
            np.maximum(y, 0, out=y)
            out = y @ blk.mix_t
            out += blk.mix_bias
            out[:, : blk.in_ch] += h  # the residual path (zero-padded channels add nothing)
            h = out
            skips.append(h)
        return self._heads(np.concatenate(skips, axis=1))

    def _heads(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hd, a = self.heads, self.n_appliances
        t = features @ hd.trunk_t
        t += hd.trunk_bias
        np.maximum(t, 0, out=t)
        first = t @ hd.first_t
        first += hd.first_bias
        np.maximum(first, 0, out=first)
        b = len(features)
        out = np.einsum("bkh,kh->bk", first.reshape(b, 2 * a, -1), hd.second) + hd.second_bias  # (B, 2A)
        return out[:, :a], out[:, a:]

    def seed(self, x: torch.Tensor, keep: int) -> tuple[ModelOutput, list[np.ndarray]]:
        """Run devices' histories ``x`` (B, T) (T >= the receptive field) in one sequence pass.

        Returns the outputs at the last ``keep`` readings, (B, keep, A) each, and per block its inputs at
        the last 2^l readings, (B, 2^l, C_in), for ``store``. Equal to stepping from the first reading
        for every reading whose window lies inside ``x``.
        """
        if x.shape[1] < self.net.receptive_field:
            raise ValueError(f"seed needs at least {self.net.receptive_field} readings, got {x.shape[1]}")
        skips = self.net.sequence_skips(x)  # (B, T, C_l) each: block l's input is skips[l]
        tails = [_np(s[:, -d:]) for s, d in zip(skips, self.dilations, strict=False)]  # (B, 2^l, C_in)
        h = self.net.trunk_of([s[:, -keep:] for s in skips])
        return ModelOutput(self.net.power_head(h), self.net.on_head(h)), tails

    def store(self, rows: np.ndarray, end_slots: np.ndarray, tails: list[np.ndarray]) -> None:
        """Put ``seed``'s block inputs of histories ending at ``end_slots`` (B,) into ``rows`` (B,)."""
        for ring, d, tail in zip(self.rings, self.dilations, tails, strict=True):
            slots = end_slots[:, None] - np.arange(d - 1, -1, -1)  # (B, 2^l) ascending, the last = end
            ring[rows[:, None], slots % d] = tail
