"""The causal real-time model: state and power at the NEWEST reading, from past readings only.

A WaveNet-style stack: a pointwise stem, then ``L = ceil(log2(W))`` residual blocks, block ``l`` a kernel-2
convolution at dilation ``2^l`` that looks only backwards (readings ``p`` and ``p - 2^l``), so the receptive
field is exactly ``2^L`` readings and nothing after the target reading is ever read. Channels grow with depth
(``base_channels * 2^l``, at most ``max_channels``): the early blocks see a few readings and need few
features, the deep ones summarise the appliance's cycle. The features at the target are every block's output
there (summaries of the last 1, 2, 4, ..., 2^L readings), then a shared dense layer and, per appliance, an
on/off head and a power head: the heads, the training and the power gating of the multi-task model.

Two exact ways to run it:

- ``forward(x (B, W))`` computes only what the newest reading needs: block ``l`` then pairs the readings
  ``t - j * 2^l`` two by two (a pyramid; one matrix product per block, channels last), about 2 M
  multiply-adds per 512-reading window instead of ~L times that.
  Windows shorter than ``2^L`` are left-padded with 0 (the mean).
- ``forward_sequence(x (B, T))`` gives the outputs at every position of a series in one pass (dilated,
  left-padded convolutions): O(T) instead of O(T * W) for series prediction. It equals ``forward`` on each
  position's window when ``W`` is a power of two (``sequence_exact``); the tests check this.

In eval mode without gradients (evaluation, serving), both fold each block's BatchNorm into its convolution
(``CausalBlock.fused``): the same function, about 40% less time per window.

Default window: 512 readings (42.7 min at 5 s). A power of two, so the receptive field is exactly the window
and series prediction can use ``forward_sequence``; long enough to see a whole fridge cycle and the first
half-hour of a dishwasher or washing-machine programme (their min on time is 30 min); short enough to keep
the model cheap (about 0.2 M parameters; see tests/benchmarks/bench_inference.py for windows per second).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from airwatt.errors import ConfigError
from airwatt.models.base import ModelOutput, TargetPosition
from airwatt.models.multitask import PerApplianceMLP


@dataclass(frozen=True)
class FusedBlock:
    """A CausalBlock's eval-mode weights with BatchNorm folded in (see CausalBlock.fused)."""

    conv: torch.Tensor  # (out, in, 2): [..., 0] for reading p - dilation, [..., 1] for reading p
    pair: torch.Tensor  # (out, 2 * in): the same weights for channels-last [h(p - d), h(p)] pairs
    bias: torch.Tensor  # (out,)
    mix: torch.Tensor  # (out, out)
    mix_bias: torch.Tensor  # (out,)
    before_t: torch.Tensor  # (in, out): channels last, for reading p - dilation
    now_t: torch.Tensor  # (in, out): for reading p
    mix_t: torch.Tensor  # (out, out)


class CausalBlock(nn.Module):
    """Residual block: kernel-2 backward-looking convolution at ``dilation``, BN, ReLU, pointwise mix.

    The residual path zero-pads the channels from ``in_ch`` to ``out_ch`` (no extra weights).
    """

    def __init__(self, in_ch: int, out_ch: int, dilation: int) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.dilation = in_ch, out_ch, dilation
        # weight[..., 0] applies to reading p - dilation, weight[..., 1] to reading p.
        self.conv = nn.Conv1d(in_ch, out_ch, 2, bias=False)
        self.norm = nn.BatchNorm1d(out_ch)
        self.mix = nn.Conv1d(out_ch, out_ch, 1)

    def tensors(self) -> list[torch.Tensor]:
        """The parameters and running statistics ``fused`` reads."""
        bn = self.norm
        assert bn.running_mean is not None and bn.running_var is not None  # track_running_stats
        return [self.conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, *self.mix.parameters()]

    def fused(self) -> FusedBlock:
        """This block's eval-mode arithmetic with BatchNorm folded into the convolution: the same function up
        to float rounding, one pass over the activations fewer."""
        with torch.no_grad():
            bn = self.norm
            assert bn.running_mean is not None and bn.running_var is not None
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (out,)
            conv = self.conv.weight * scale[:, None, None]  # (out, in, 2)
            mix = self.mix.weight.squeeze(-1)
            return FusedBlock(
                conv=conv.contiguous(),
                pair=conv.permute(0, 2, 1).reshape(self.out_ch, 2 * self.in_ch).contiguous(),
                bias=(bn.bias - bn.running_mean * scale).contiguous(),
                mix=mix.contiguous(),
                mix_bias=cast(torch.Tensor, self.mix.bias).detach().clone(),
                before_t=conv[..., 0].T.contiguous(),
                now_t=conv[..., 1].T.contiguous(),
                mix_t=mix.T.contiguous(),
            )

    def sequence(self, h: torch.Tensor, f: FusedBlock | None = None) -> torch.Tensor:
        """(B, T, C_in) -> (B, T, C_out), every position, channels last; left-padded: position p reads only p
        and p - dilation (zeros before the start). With ``f`` (this block's ``fused()``, eval mode only): the
        same through the folded weights. Two matrix products per block (no padded copy, no transposes)."""
        d = self.dilation
        if f is not None:
            y = torch.matmul(h, f.now_t).add_(f.bias)
            y[:, d:] += torch.matmul(h[:, :-d], f.before_t)
            out = torch.matmul(torch.relu_(y), f.mix_t).add_(f.mix_bias)
            out[..., : self.in_ch] += h
            return out
        w = self.conv.weight
        y = torch.matmul(h, w[..., 1].T)
        y = torch.cat([y[:, :d], y[:, d:] + torch.matmul(h[:, :-d], w[..., 0].T)], dim=1)
        y = self.norm(y.reshape(-1, self.out_ch)).reshape(y.shape)
        residual = F.pad(h, (0, self.out_ch - self.in_ch))
        return residual + F.linear(torch.relu(y), self.mix.weight.squeeze(-1), self.mix.bias)

    def pyramid(self, h: torch.Tensor, f: FusedBlock | None = None) -> torch.Tensor:
        """(B, n, C_in) readings t - j*d (ascending, n even) -> (B, n/2, C_out) readings t - j*2d.

        d = dilation; channels last. Adjacent entries are d apart, so pairing entries (2m, 2m + 1) pairs
        each kept reading (the odd entries) with the one d before it: ``sequence``'s arithmetic there.
        With ``f`` (this block's ``fused()``, eval mode only): the same through the folded weights.
        """
        b, n, _ = h.shape
        pairs = h.reshape(b, n // 2, 2 * self.in_ch)  # [h(p - d), h(p)] per kept reading p
        kept = h[:, 1::2]  # (B, n/2, C_in): the residual path
        if f is not None:
            out = F.linear(torch.relu_(F.linear(pairs, f.pair, f.bias)), f.mix, f.mix_bias)
            out[..., : self.in_ch] += kept  # the zero-padded channels add nothing
            return out
        w = self.conv.weight.permute(0, 2, 1).reshape(
            self.out_ch, 2 * self.in_ch
        )  # (out, in, 2) -> (out, 2in)
        y = self.norm(F.linear(pairs, w).reshape(-1, self.out_ch)).reshape(b, n // 2, self.out_ch)
        residual = F.pad(kept, (0, self.out_ch - self.in_ch))
        return residual + F.linear(torch.relu(y), self.mix.weight.squeeze(-1), self.mix.bias)


class CausalNet(nn.Module):
    """(B, W) normalised aggregate -> per appliance: on/off logit and normalised power at the last reading."""

    default_target: ClassVar[TargetPosition] = "last"
    default_window_length: ClassVar[int] = 512
    trainable: ClassVar[bool] = True

    def __init__(
        self,
        n_appliances: int,
        window_length: int,
        *,
        target: TargetPosition | None = None,
        base_channels: int = 16,
        max_channels: int = 64,
        hidden: int = 128,
        head_hidden: int = 32,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if (target or "last") != "last":
            raise ConfigError(f"the causal model predicts the newest reading (target 'last'), not {target!r}")
        if n_appliances < 1 or window_length < 2 or not 1 <= base_channels <= max_channels:
            raise ConfigError(
                f"causal needs n_appliances >= 1, window_length >= 2 and 1 <= base_channels <= max_channels "
                f"(got {n_appliances}, {window_length}, {base_channels}, {max_channels})"
            )
        self.n_appliances = n_appliances
        self.window_length = window_length
        self.target: TargetPosition = "last"
        self.n_blocks = math.ceil(math.log2(window_length))
        self.receptive_field = 2**self.n_blocks
        widths = [base_channels] + [min(max_channels, base_channels * 2**i) for i in range(self.n_blocks)]
        self.stem = nn.Conv1d(1, base_channels, 1)  # pointwise, followed by ReLU
        self.blocks = nn.ModuleList(CausalBlock(widths[i], widths[i + 1], 2**i) for i in range(self.n_blocks))
        self.trunk = nn.Sequential(nn.Linear(sum(widths), hidden), nn.ReLU(), nn.Dropout(dropout))
        self.on_head = PerApplianceMLP(hidden, head_hidden, n_appliances)
        self.power_head = PerApplianceMLP(hidden, head_hidden, n_appliances)

    def _blocks(self) -> list[CausalBlock]:
        return [cast(CausalBlock, b) for b in self.blocks]

    def _fused_blocks(self) -> list[FusedBlock | None]:
        """Per block: its ``fused()`` weights in eval mode without gradients (evaluation, serving), None
        otherwise (training, or eval with gradients: BatchNorm as written).

        Cached until a parameter or running statistic changes: the key is each tensor's storage and version
        counter, which in-place updates (optimizer steps, load_state_dict) and device moves change; ``train``
        drops the cache (a module swapped in while in eval mode is not seen: call ``train`` after surgery).
        """
        blocks = self._blocks()
        if self.training or torch.is_grad_enabled():
            return [None] * len(blocks)
        cached = self.__dict__.get("_fused_cache")  # (tensors, key, fused); plain attribute, not state
        tensors = [t for b in blocks for t in b.tensors()] if cached is None else cached[0]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if cached is None or cached[1] != key:
            cached = (tensors, key, [b.fused() for b in blocks])
            self.__dict__["_fused_cache"] = cached
        return list(cached[2])

    def train(self, mode: bool = True) -> CausalNet:
        self.__dict__.pop("_fused_cache", None)
        return super().train(mode)

    @property
    def sequence_exact(self) -> bool:
        """Whether forward_sequence equals forward on every window (the window is the receptive field)."""
        return self.window_length == self.receptive_field

    def _heads(self, features: torch.Tensor) -> ModelOutput:
        h = self.trunk(features)  # (..., F) -> (..., hidden)
        return ModelOutput(self.power_head(h), self.on_head(h))  # (..., A) each

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = F.pad(x, (self.receptive_field - x.shape[1], 0))  # (B, W) -> (B, 2^L), zeros = the mean
        # the pointwise stem on one input channel, channels last: a broadcast, (B, 2^L, 1) -> (B, 2^L, C)
        h = torch.relu(x.unsqueeze(-1) * self.stem.weight.view(1, 1, -1) + cast(torch.Tensor, self.stem.bias))
        skips = [h[:, -1]]
        for block, fused in zip(self._blocks(), self._fused_blocks(), strict=True):
            h = block.pyramid(h, fused)  # (B, n, C) -> (B, n / 2, C')
            skips.append(h[:, -1])  # the newest reading, (B, C')
        return self._heads(torch.cat(skips, dim=1))  # (B, A), (B, A)

    def forward_sequence(self, x: torch.Tensor) -> ModelOutput:
        """(B, T) normalised series -> outputs at every position, (B, T, A) each; zeros before the start."""
        h = self.trunk_of(self.sequence_skips(x))
        return ModelOutput(self.power_head(h), self.on_head(h))

    def sequence_skips(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, T) normalised series -> every block's input and the last block's output at every position,
        (B, T, C_l) each, channels last (the features of a position are their concatenation)."""
        stem = self.stem
        h = torch.relu(x.unsqueeze(-1) * stem.weight.view(1, 1, -1) + cast(torch.Tensor, stem.bias))
        skips = [h]
        for block, fused in zip(self._blocks(), self._fused_blocks(), strict=True):
            h = block.sequence(h, fused)
            skips.append(h)
        return skips

    def trunk_of(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """The trunk's output (..., hidden) from ``sequence_skips``: its linear layer as one product per skip
        summed, the same function as ``trunk(cat(skips))`` without building the concatenation."""
        linear = cast(nn.Linear, self.trunk[0])
        lead = skips[0].shape[:-1]
        flat = [s.reshape(-1, s.shape[-1]) for s in skips]  # (N, C_l) each
        out = torch.addmm(linear.bias, flat[0], linear.weight[:, : flat[0].shape[1]].T)
        offset = flat[0].shape[1]
        for s in flat[1:]:
            width = s.shape[1]
            if torch.is_grad_enabled():
                out = out + s @ linear.weight[:, offset : offset + width].T
            else:
                out.addmm_(s, linear.weight[:, offset : offset + width].T)  # in place: no new tensor
            offset += width
        out = torch.relu(out) if torch.is_grad_enabled() else torch.relu_(out)
        return cast(torch.Tensor, self.trunk[2](out)).reshape(*lead, -1)  # dropout: identity in eval
