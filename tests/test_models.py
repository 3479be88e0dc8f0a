"""Every registered model honours the contract; seq2point is the published network; the causal model ignores
the future; the multi-task model can learn a square-wave appliance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from airwatt.appliances import APPLIANCES
from airwatt.errors import ConfigError
from airwatt.models import (
    MODEL_NAMES,
    GapPolicy,
    ModelBundle,
    ModelLoadError,
    ModelSpec,
    NormStats,
    OnOffSpec,
    build_model,
    create_model,
    default_target,
    default_window_length,
    is_trainable,
    target_index,
)
from airwatt.models.causal import CausalNet
from airwatt.models.decision import decision_spec

APPS4 = ["fridge", "kettle", "microwave", "dishwasher"]
W = 64  # small windows keep the contract tests fast; seq2point's published window is tested separately


def make_spec(arch: str, appliances: list[str], window_length: int = W, **arch_kwargs: object) -> ModelSpec:
    return ModelSpec(
        arch=arch,
        arch_kwargs=dict(arch_kwargs),
        appliances=appliances,
        window_length=window_length,
        target=default_target(arch),
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=300.0,
            aggregate_std_w=400.0,
            power_mean_w={a: 20.0 for a in appliances},
            power_std_w={a: 80.0 for a in appliances},
        ),
        on_off={a: OnOffSpec.of(APPLIANCES[a]) for a in appliances},
        gap=GapPolicy(max_fill_s=30, max_invalid_fraction=0.1),
        decision=(
            decision_spec(60, {a: DECISION for a in appliances}) if default_target(arch) == "last" else None
        ),
    )


DECISION = {"on_prob": 0.6, "off_prob": 0.3, "confirm_on_s": 10, "confirm_off_s": 20}


def inputs(batch: int = 8, length: int = W, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, length, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n_appliances", [1, 4])
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_outputs_one_finite_value_per_appliance_deterministically(name: str, n_appliances: int):
    torch.manual_seed(0)
    model = create_model(name, n_appliances=n_appliances, window_length=W).eval()
    x = inputs()
    with torch.no_grad():
        out = model(x)
        again = model(x)
    assert out.power.shape == (8, n_appliances)
    assert torch.isfinite(out.power).all()
    if out.on_logits is not None:
        assert out.on_logits.shape == (8, n_appliances)
        assert torch.isfinite(out.on_logits).all()
        assert torch.equal(out.on_logits, again.on_logits)
    assert torch.equal(out.power, again.power)
    assert model.target == default_target(name)
    assert (model.n_appliances, model.window_length) == (n_appliances, W)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_survives_a_bundle_round_trip(name: str, tmp_path: Path):
    torch.manual_seed(1)
    spec = make_spec(name, APPS4)
    bundle = ModelBundle(spec, build_model(spec))
    bundle.save(tmp_path / "bundle")
    loaded = ModelBundle.load(tmp_path / "bundle")
    assert loaded.spec == spec  # the gap policy and a real-time model's decision rule included
    x = inputs(seed=2)
    assert all(
        torch.equal(a, b) for a, b in zip(bundle.predict_windows(x), loaded.predict_windows(x), strict=True)
    )
    with torch.no_grad():
        assert torch.equal(bundle.model(x).power, loaded.model(x).power)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_trainable_models_get_gradients_and_baselines_have_nothing_to_fit(name: str):
    model = create_model(name, n_appliances=2, window_length=W).train()
    params = [p for p in model.parameters() if p.requires_grad]
    assert bool(params) == is_trainable(name)
    if params:
        out = model(inputs())
        loss = out.power.square().mean() + (0 if out.on_logits is None else out.on_logits.square().mean())
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_unknown_model_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'transformer'") as e:
        create_model("transformer", n_appliances=1, window_length=W)
    assert all(name in str(e.value) for name in MODEL_NAMES)


def test_unknown_architecture_argument_is_a_config_error():
    with pytest.raises(ConfigError, match=r"multitask.*widths"):
        create_model("multitask", n_appliances=1, window_length=W, depth=7)


def test_seq2point_has_the_published_parameter_count():
    """Five convolutions (30x10, 30x8, 40x6, 50x5, 50x5), dense 1024, dense A: counted by hand for W = 599."""
    w, a = 599, 4
    convs = (
        (1 * 30 * 10 + 30) + (30 * 30 * 8 + 30) + (30 * 40 * 6 + 40) + (40 * 50 * 5 + 50) + (50 * 50 * 5 + 50)
    )
    dense = (50 * w * 1024 + 1024) + (1024 * a + a)
    model = create_model("seq2point", n_appliances=a, window_length=w)
    assert sum(p.numel() for p in model.parameters()) == convs + dense == 30_711_324
    assert default_window_length("seq2point") == 599 and model.target == "midpoint"


def test_the_multitask_model_is_far_smaller_than_seq2point():
    seq2point = create_model("seq2point", n_appliances=4, window_length=599)
    multitask = create_model("multitask", n_appliances=4, window_length=599)
    n_s2p = sum(p.numel() for p in seq2point.parameters())
    n_mt = sum(p.numel() for p in multitask.parameters())
    assert n_mt * 20 < n_s2p
    assert multitask(inputs(2, 599)).on_logits is not None


def test_causal_model_refuses_a_midpoint_target():
    with pytest.raises(ConfigError, match="newest reading"):
        create_model("causal", n_appliances=1, window_length=W, target="midpoint")
    assert default_target("causal") == "last" and target_index(W, "last") == W - 1


@pytest.mark.parametrize("window_length", [64, 50])
def test_causal_model_ignores_readings_after_the_target(window_length: int):
    """forward_sequence at position t is unchanged when every reading after t changes; the windowed forward
    gives the same value as forward_sequence on the window ending at t (exactly so for a power-of-two W)."""
    torch.manual_seed(3)
    model = create_model("causal", n_appliances=3, window_length=window_length).eval()
    x = inputs(2, 300, seed=4)
    t = 200
    perturbed = x.clone()
    perturbed[:, t + 1 :] = torch.randn(2, 300 - t - 1) * 10
    with torch.no_grad():
        a, b = model.forward_sequence(x), model.forward_sequence(perturbed)
        torch.testing.assert_close(a.power[:, : t + 1], b.power[:, : t + 1], rtol=0, atol=1e-6)
        torch.testing.assert_close(a.on_logits[:, : t + 1], b.on_logits[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(a.power[:, t + 1 :], b.power[:, t + 1 :])  # the perturbation was seen later
        windowed = model(x[:, t + 1 - window_length : t + 1])
        # A window shorter than 2^L is zero-padded by forward: compare with the sequence on padded input.
        padded = torch.nn.functional.pad(
            x[:, t + 1 - window_length : t + 1], (model.receptive_field - window_length, 0)
        )
        seq = model.forward_sequence(padded)
    torch.testing.assert_close(windowed.power, seq.power[:, -1], rtol=0, atol=1e-5)
    torch.testing.assert_close(windowed.on_logits, seq.on_logits[:, -1], rtol=0, atol=1e-5)
    assert isinstance(model, CausalNet) and model.sequence_exact == (window_length == 64)
    if model.sequence_exact:
        torch.testing.assert_close(windowed.power, a.power[:, t], rtol=0, atol=1e-5)


def test_causal_inference_path_folds_batchnorm_without_changing_the_answers():
    """Eval without gradients (evaluation, serving) runs the BatchNorm-folded weights; they give the answers
    of the plain path (eval with gradients), and a weight change is never served from stale folded weights."""
    torch.manual_seed(5)
    model = create_model("causal", n_appliances=3, window_length=W)
    with torch.no_grad():  # running statistics and affine terms far from the identity, so folding matters
        for block in model.blocks:
            block.norm.running_mean.normal_()
            block.norm.running_var.uniform_(0.2, 3.0)
            block.norm.weight.normal_()
            block.norm.bias.normal_()
    model.eval()
    x = inputs(4, 3 * W, seed=6)

    def both(m: torch.nn.Module) -> tuple[torch.Tensor, ...]:
        return (m(x[:, -W:]).power, m(x[:, -W:]).on_logits, m.forward_sequence(x).power)

    with torch.enable_grad():
        plain = both(model)
    with torch.inference_mode():
        folded = both(model)
    for a, b in zip(plain, folded, strict=True):
        torch.testing.assert_close(b, a.detach(), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        model.blocks[2].norm.running_var.mul_(4.0)  # an in-place change, as an optimizer step or load makes
    with torch.enable_grad():
        plain_after = both(model)
    with torch.inference_mode():
        folded_after = both(model)
    assert not torch.allclose(plain_after[0], plain[0])
    for a, b in zip(plain_after, folded_after, strict=True):
        torch.testing.assert_close(b, a.detach(), rtol=1e-5, atol=1e-5)


def square_wave_windows(
    n: int, window_length: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Windows of a noisy base load plus a 100 W appliance on 40% of the time in runs of 10-40 readings:
    (x normalised (n, W), target power normalised (n, 1), target on (n, 1))."""
    rng = np.random.default_rng(seed)
    length = n + window_length
    on = np.zeros(length, bool)
    i = 0
    while i < length:
        run = int(rng.integers(10, 40))
        on[i : i + run] = rng.random() < 0.4
        i += run
    base = 150 + 30 * np.sin(np.arange(length) / 97) + rng.normal(0, 5, length)
    agg = base + 100 * on
    x = torch.tensor((agg - 200) / 60, dtype=torch.float32).unfold(0, window_length, 1)[:n]
    t = window_length // 2
    status = torch.tensor(on[t : t + n], dtype=torch.float32).unsqueeze(1)
    power = (status * 100 - 40) / 50  # normalised with mean 40 W, std 50 W
    return x, power, status


@pytest.fixture
def one_thread():
    """Small tensors train far faster on one thread than on two contended ones (the 2-core CI box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_multitask_model_learns_a_square_wave_appliance(one_thread: None):
    """A few hundred plain-torch steps on CPU: detection and power far better than the no-skill baseline."""
    torch.manual_seed(5)
    window_length = 64
    model = create_model("multitask", n_appliances=1, window_length=window_length, widths=(16, 32, 48))
    x, power, status = square_wave_windows(4000, window_length, seed=6)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(300):
        idx = torch.randint(0, len(x), (64,), generator=torch.Generator().manual_seed(step))
        out = model(x[idx])
        loss = torch.nn.functional.mse_loss(out.power, power[idx])
        loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out.on_logits, status[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_test, power_test, status_test = square_wave_windows(1000, window_length, seed=7)
    model.eval()
    with torch.no_grad():
        out = model(x_test)
    on = out.on_logits > 0
    tp = (on & (status_test > 0)).sum().item()
    f1 = 2 * tp / (on.sum().item() + status_test.sum().item())
    mae_w = ((torch.where(on, out.power, -0.8) - power_test).abs().mean() * 50).item()
    baseline_mae_w = ((0 - power_test).abs().mean() * 50).item()  # the mean model
    assert f1 > 0.95, f1
    assert mae_w < baseline_mae_w / 4, (mae_w, baseline_mae_w)


def test_a_schema_1_bundle_still_loads_with_its_gap_policy_and_the_plain_rule(tmp_path: Path) -> None:
    """Bundles written before the gap policy and decision rule were typed fields of the spec."""
    import json

    spec = make_spec("causal", APPS4)
    path = ModelBundle(spec, build_model(spec)).save(tmp_path / "old")
    raw = json.loads((path / "model.json").read_text())
    for key in ("gap", "decision"):
        del raw[key]
    raw.update(schema_version="1", provenance={"max_fill_s": 20.0})
    (path / "model.json").write_text(json.dumps(raw))
    loaded = ModelBundle.load(path)
    assert loaded.spec.gap == GapPolicy(max_fill_s=20.0, max_invalid_fraction=0.1)
    assert loaded.spec.decision is None
    rule = loaded.decision_rule  # prob_on >= 0.5 per reading, one reading of memory
    assert (rule.on_prob == 0.5).all() and (rule.n_on == 1).all() and rule.memory == 1
    raw["schema_version"] = "0"
    (path / "model.json").write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match="schema_version '0' is not one of 1, 2"):
        ModelBundle.load(path)
