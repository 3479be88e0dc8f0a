"""Streaming inference of the causal model equals the full-window forward pass: on random series, across
gaps (readings at the training mean), across restarts (a state seeded from history and continued) and for
devices stepping together from different points in time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from airwatt.models.causal import CausalNet
from airwatt.models.streaming import CausalStreams

RTOL = 1e-5


def random_net(window: int, seed: int, appliances: int = 3) -> CausalNet:
    torch.manual_seed(seed)
    net = CausalNet(appliances, window, base_channels=8, max_channels=32, hidden=32, head_hidden=8)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for b in net._blocks():
            b.norm.running_mean.uniform_(-0.5, 0.5)
            b.norm.running_var.uniform_(0.5, 2.0)
    return net.eval()


def windows_of(net: CausalNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The full-window forward pass at every position with a whole window: (B, T - W + 1, A) each."""
    w = net.window_length
    b, t = x.shape
    win = x.unfold(1, w, 1).reshape(-1, w)
    out = net(win)
    assert out.on_logits is not None
    return out.power.reshape(b, t - w + 1, -1), out.on_logits.reshape(b, t - w + 1, -1)


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=RTOL, atol=RTOL * scale)


@pytest.mark.parametrize("seed", range(4))
def test_stepping_equals_the_window_forward_with_gaps_and_a_restart(seed: int) -> None:
    net = random_net(64, seed)
    rng = np.random.default_rng(seed)
    t_len, w = 400, 64
    x = torch.from_numpy(rng.normal(0, 1, (2, t_len)).astype(np.float32))
    x[:, 150:190] = 0  # a gap: invalid readings enter as 0, the training mean
    x[1, 300:305] = 0
    with torch.inference_mode():
        ref_power, ref_logit = windows_of(net, x)
        streams = CausalStreams(net, capacity=5)
        rows = np.array([4, 1])
        first_slot = np.array([10**9, 7 * 10**8])  # absolute slots: any phase of the rings
        seed_len = 100
        out, tails = streams.seed(x[:, :seed_len], keep=seed_len - w + 1)
        assert_close(out.power, ref_power[:, : seed_len - w + 1])
        streams.store(rows, first_slot + seed_len - 1, tails)
        restart_at = 250
        for t in range(seed_len, t_len):
            if t == restart_at:  # evicted and re-seeded from the history a client resends
                out, tails = streams.seed(x[:, t - w : t], keep=1)
                streams.store(rows, first_slot + t - 1, tails)
            power, logits = streams.step(rows, first_slot + t, x[:, t].numpy())
            assert_close(torch.from_numpy(power), ref_power[:, t - w + 1])
            assert_close(torch.from_numpy(logits), ref_logit[:, t - w + 1])


def test_devices_at_different_times_step_together_without_touching_each_other() -> None:
    net = random_net(32, 7)
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.normal(0, 1, (3, 200)).astype(np.float32))
    with torch.inference_mode():
        ref_power, _ = windows_of(net, x)
        streams = CausalStreams(net, capacity=3)
        starts = [32, 60, 100]  # each device seeded up to another reading
        for d, s in enumerate(starts):
            _, tails = streams.seed(x[d : d + 1, :s], keep=1)
            streams.store(np.array([d]), np.array([s - 1]), tails)
        for j in range(80):
            slots = np.array([s + j for s in starts])
            power, _ = streams.step(np.arange(3), slots, x.numpy()[np.arange(3), slots])
            for d in range(3):
                assert_close(torch.from_numpy(power[d]), ref_power[d, int(slots[d]) - 32 + 1])


def test_bytes_per_device_is_the_sum_of_the_layer_queues() -> None:
    net = CausalNet(13, 512).eval()
    streams = CausalStreams(net, capacity=2)
    per_block = [b.dilation * b.in_ch * 4 for b in net._blocks()]
    assert streams.bytes_per_device == sum(per_block) == 32432 * 4  # 126.7 KiB for the default model
    with pytest.raises(ValueError, match="eval mode"):
        CausalStreams(CausalNet(1, 8).train(), capacity=1)
