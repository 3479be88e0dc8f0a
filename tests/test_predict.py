"""The shared prediction code: known answers on square waves, the edge, gap and gating rules, the causal
model's series predictions ignoring the future, and bundles that fail to load with the file named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from airwatt.appliances import APPLIANCES
from airwatt.config import load_params
from airwatt.errors import ConfigError, DataError
from airwatt.models import (
    GapPolicy,
    ModelBundle,
    ModelLoadError,
    ModelOutput,
    ModelSpec,
    NormStats,
    OnOffSpec,
    SeriesOutputs,
    build_model,
    spec_from_prepared,
    target_index,
)
from airwatt.models import predict as predict_module
from airwatt.models.base import TargetPosition
from airwatt.prepare import load_array, prepare

REPO = Path(__file__).resolve().parents[1]
FRIDGE = OnOffSpec.of(APPLIANCES["fridge"])  # on >= 50 W, min on 60 s, min off 12 s, max 300 W
GAP = GapPolicy(max_fill_s=30, max_invalid_fraction=0.1)


def fridge_spec(
    window_length: int, target: TargetPosition, agg_mean_w: float = 0.0, power_mean_w: float = 0.0
) -> ModelSpec:
    """One appliance (fridge); std 100 W for aggregate and power, so a model echoing its input in normalised
    units predicts watts that are easy to compute by hand."""
    return ModelSpec(
        arch="seq2point",  # any registered name: these hand-made models are never rebuilt from the spec
        appliances=["fridge"],
        window_length=window_length,
        target=target,
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=agg_mean_w,
            aggregate_std_w=100.0,
            power_mean_w={"fridge": power_mean_w},
            power_std_w={"fridge": 100.0},
        ),
        on_off={"fridge": FRIDGE},
        gap=GAP,
    )


class ReadingModel(nn.Module):
    """Power = the normalised aggregate at the target reading; with ``on_head``, a steep on/off logit that
    crosses 0 where the aggregate crosses 50 W (x = 0.5)."""

    def __init__(self, window_length: int, target: TargetPosition, on_head: bool) -> None:
        super().__init__()
        self.n_appliances, self.window_length, self.target, self.on_head = 1, window_length, target, on_head
        self.t = target_index(window_length, target)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        v = x[:, self.t : self.t + 1]  # (B, 1)
        return ModelOutput(v, (v - 0.5) * 100 if self.on_head else None)


class WindowMeanModel(nn.Module):
    """Power = the mean of the normalised window: shows exactly what each prediction's window held."""

    def __init__(self, window_length: int, target: TargetPosition) -> None:
        super().__init__()
        self.n_appliances, self.window_length, self.target = 1, window_length, target

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return ModelOutput(x.mean(dim=1, keepdim=True), None)


def square_wave(segments: list[tuple[float, int]]) -> np.ndarray:
    """Aggregate watts from (watts, readings) segments."""
    return np.concatenate([np.full(n, w, dtype=np.float64) for w, n in segments])


# Fridge runs (5 s readings, off level 30 W): 20 on, 2 off (10 s < min off 12 s: merged), 20 on, 3 off
# (15 s: not merged), 11 on (55 s < min on 60 s: dropped), 10 off, 12 on at 400 W (60 s: kept; max 300 W).
SEGMENTS = [(30, 10), (100, 20), (30, 2), (100, 20), (30, 3), (100, 11), (30, 10), (400, 12), (30, 10)]
EXPECTED_ON = [(10, 52), (76, 88)]  # [start, end) reading indices after the duration rule


def expected_on(n: int) -> np.ndarray:
    on = np.zeros(n, bool)
    for s, e in EXPECTED_ON:
        on[s:e] = True
    return on


@pytest.mark.parametrize("target", ["midpoint", "last"])
def test_on_off_model_gives_the_known_intervals_and_gated_watts(target: TargetPosition):
    """The offline rule (midpoint models' own; real-time models' smoothed figures)."""
    agg = square_wave(SEGMENTS)
    bundle = ModelBundle(fridge_spec(9, target), ReadingModel(9, target, on_head=True))
    pred = bundle.predict_series(agg, rule="offline")
    assert pred.predicted.all() and pred.appliances == ["fridge"]
    np.testing.assert_array_equal(pred.on[:, 0], expected_on(len(agg)))
    # Gated power: watts where the reading's own state is on (the dropped 55 s run included), 0 W elsewhere
    # (the 30 W off level is not passed through); 400 W clipped to the fridge's 300 W maximum.
    expected_w = np.where(agg >= 50, np.minimum(agg, 300), 0.0)
    np.testing.assert_allclose(pred.power_w[:, 0], expected_w, atol=1e-3)
    np.testing.assert_array_equal(pred.prob_on[:, 0] >= 0.5, agg >= 50)
    assert pred.power_w.dtype == pred.prob_on.dtype == np.float32 and pred.on.dtype == bool


def test_the_offline_rule_uses_the_bundles_tuned_thresholds():
    """A model whose probabilities sit low (0.3 in the fridge's runs, 0.05 elsewhere), as on a house it
    never saw: 0.5 finds nothing; the threshold tuned on validation (kept in the spec) finds the runs."""
    agg = square_wave(SEGMENTS)
    prob = np.where(agg >= 50, 0.3, 0.05).astype(np.float32)[:, None]
    outputs = SeriesOutputs(np.full_like(prob, 80.0), prob, np.ones(len(agg), bool), has_on_head=True)
    untuned = ModelBundle(fridge_spec(9, "midpoint"), ReadingModel(9, "midpoint", on_head=True))
    assert not untuned.decide(outputs, "offline").on.any()
    spec = fridge_spec(9, "midpoint").model_copy(update={"offline_on_prob": {"fridge": 0.2}})
    pred = ModelBundle(spec, ReadingModel(9, "midpoint", on_head=True)).decide(outputs, "offline")
    np.testing.assert_array_equal(pred.on[:, 0], expected_on(len(agg)))
    np.testing.assert_array_equal(pred.power_w[:, 0] > 0, agg >= 50)  # gated by the same threshold


def test_power_only_model_thresholds_its_power_and_is_not_gated():
    agg = square_wave(SEGMENTS)
    bundle = ModelBundle(fridge_spec(9, "midpoint"), ReadingModel(9, "midpoint", on_head=False))
    pred = bundle.predict_series(agg)
    np.testing.assert_array_equal(pred.on[:, 0], expected_on(len(agg)))
    np.testing.assert_array_equal(pred.prob_on[:, 0], (agg >= 50).astype(np.float32))  # 1.0 / 0.0
    np.testing.assert_allclose(pred.power_w[:, 0], np.minimum(agg, 300), atol=1e-3)  # 30 W stays 30 W


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        # Window of 10 around reading i (midpoint: 5 before, 4 after); padding counts as the 20 W mean.
        ("midpoint", {0: 60.0, 1: 68.0, 5: 100.0, 24: 100.0, 27: 84.0, 29: 68.0}),
        # Window of the 10 readings ending at i: 9 padded readings before the first.
        ("last", {0: 28.0, 1: 36.0, 8: 92.0, 9: 100.0, 29: 100.0}),
    ],
)
def test_series_ends_are_padded_with_the_training_mean(target: TargetPosition, expected: dict[int, float]):
    agg = np.full(30, 100.0)
    bundle = ModelBundle(fridge_spec(10, target, agg_mean_w=20, power_mean_w=20), WindowMeanModel(10, target))
    pred = bundle.predict_series(agg, batch_size=7, rule="offline")  # batches that do not divide the series
    assert pred.predicted.all()
    for i, watts in expected.items():
        assert pred.power_w[i, 0] == pytest.approx(watts, abs=1e-3), i


def test_gaps_are_filled_with_the_mean_and_get_no_prediction():
    agg = np.full(40, 100.0)
    agg[20] = np.nan  # NaN counts as invalid even without a mask
    valid = np.ones(40, bool)
    valid[15] = False
    bundle = ModelBundle(
        fridge_spec(10, "midpoint", agg_mean_w=20, power_mean_w=20), WindowMeanModel(10, "midpoint")
    )
    pred = bundle.predict_series(agg, valid)
    assert np.flatnonzero(~pred.predicted).tolist() == [15, 20]
    assert (pred.power_w[[15, 20]] == 0).all() and (pred.prob_on[[15, 20]] == 0).all()
    assert not pred.on[[15, 20]].any()  # although 100 W is "on" and a 5 s hole is shorter than min off
    assert pred.on[[14, 16, 19, 21], 0].all()
    assert pred.power_w[12, 0] == pytest.approx(
        (9 * 100 + 20) / 10, abs=1e-3
    )  # window 7..16 holds the gap at 15
    assert pred.power_w[18, 0] == pytest.approx((8 * 100 + 2 * 20) / 10, abs=1e-3)  # 13..22: gaps 15 and 20
    assert pred.power_w[30, 0] == pytest.approx(100.0, abs=1e-3)


def test_empty_series_and_bad_shapes():
    bundle = ModelBundle(fridge_spec(9, "midpoint"), ReadingModel(9, "midpoint", on_head=True))
    empty = bundle.predict_series(np.zeros(0))
    assert empty.power_w.shape == (0, 1) and empty.on.shape == (0, 1) and empty.predicted.shape == (0,)
    with pytest.raises(DataError, match=r"shape \(T,\)"):
        bundle.predict_series(np.zeros((3, 3)))
    with pytest.raises(DataError, match=r"\(B, 9\)"):
        bundle.predict_windows(torch.zeros(2, 8))


def small_spec(arch: str, appliances: list[str], window_length: int, **arch_kwargs: object) -> ModelSpec:
    target: TargetPosition = "last" if arch == "causal" else "midpoint"
    return ModelSpec(
        arch=arch,
        arch_kwargs=dict(arch_kwargs),
        appliances=appliances,
        window_length=window_length,
        target=target,
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=300.0,
            aggregate_std_w=400.0,
            power_mean_w={a: 30.0 for a in appliances},
            power_std_w={a: 200.0 for a in appliances},
        ),
        on_off={a: OnOffSpec.of(APPLIANCES[a]) for a in appliances},
        gap=GAP,
    )


def random_bundle(arch: str, window_length: int, seed: int = 0, **arch_kwargs: object) -> ModelBundle:
    torch.manual_seed(seed)
    spec = small_spec(arch, ["fridge", "kettle"], window_length, **arch_kwargs)
    model = build_model(spec)
    with torch.no_grad():  # make the on-probabilities straddle 0.5 so gating and durations are exercised
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return ModelBundle(spec, model)


def aggregate_series(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 200 + 150 * (rng.random(n) < 0.3) + 2000 * (np.arange(n) % 97 < 9) + rng.normal(0, 20, n)


@pytest.mark.parametrize("window_length", [64, 50])  # 64: forward_sequence path; 50: windowed path
def test_causal_series_prediction_ignores_later_readings(window_length: int):
    bundle = random_bundle("causal", window_length)
    agg = aggregate_series(400, seed=1)
    later = agg.copy()
    t = 250
    later[t + 1 :] = aggregate_series(400 - t - 1, seed=2) * 3
    a, b = bundle.predict_series(agg), bundle.predict_series(later)
    assert a.rule == "served"
    np.testing.assert_allclose(a.power_w[: t + 1], b.power_w[: t + 1], rtol=0, atol=1e-4)
    np.testing.assert_allclose(a.prob_on[: t + 1], b.prob_on[: t + 1], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(a.on[: t + 1], b.on[: t + 1])
    np.testing.assert_array_equal(a.predicted[: t + 1], b.predicted[: t + 1])
    assert not np.allclose(a.prob_on[t + 1 :], b.prob_on[t + 1 :])


def test_chunked_forward_sequence_equals_the_windowed_path(monkeypatch: pytest.MonkeyPatch):
    bundle = random_bundle("causal", 64)
    agg = aggregate_series(450, seed=3)
    monkeypatch.setattr(predict_module, "SEQUENCE_CHUNK", 100)  # chunk borders inside the series
    assert bundle._use_sequence_path()
    sequence = bundle.predict_series(agg)
    monkeypatch.setattr(ModelBundle, "_use_sequence_path", lambda self: False)
    windowed = bundle.predict_series(agg, batch_size=64)
    np.testing.assert_allclose(sequence.power_w, windowed.power_w, rtol=0, atol=1e-3)
    np.testing.assert_allclose(sequence.prob_on, windowed.prob_on, rtol=0, atol=1e-5)
    assert sequence.prob_on.std() > 0.01  # the comparison was not between constant outputs


@pytest.mark.parametrize(("arch", "window_length"), [("multitask", 64), ("seq2point", 32), ("causal", 64)])
def test_series_and_window_predictions_agree(arch: str, window_length: int):
    """The service's newest-reading path and the series path give the same watts and probabilities."""
    bundle = (
        random_bundle(arch, window_length, widths=[16, 32])
        if arch == "multitask"
        else random_bundle(arch, window_length)
    )
    agg = aggregate_series(300, seed=4)
    pred = bundle.series_outputs(agg)
    offset = target_index(window_length, bundle.target)
    starts = np.arange(100, 200)
    windows = np.stack([bundle.normalise(agg[s : s + window_length]) for s in starts])
    power_w, prob_on = bundle.predict_windows(torch.from_numpy(windows))
    np.testing.assert_allclose(power_w.numpy(), pred.power_w[starts + offset], rtol=0, atol=1e-3)
    np.testing.assert_allclose(prob_on.numpy(), pred.prob_on[starts + offset], rtol=0, atol=1e-5)
    assert ((power_w >= 0) & (power_w <= torch.tensor([300.0, 3100.0]))).all()


def test_bundle_refuses_a_model_that_does_not_match_its_spec():
    with pytest.raises(ConfigError, match="window_length"):
        ModelBundle(fridge_spec(9, "midpoint"), ReadingModel(10, "midpoint", on_head=True))


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    return random_bundle("multitask", 64, widths=[16, 32]).save(tmp_path / "bundle")


def edit_spec(bundle_dir: Path, **changes: object) -> None:
    path = bundle_dir / "model.json"
    spec = json.loads(path.read_text())
    spec.update(changes)
    path.write_text(json.dumps(spec))


def test_missing_or_corrupt_weights_name_the_file(saved: Path):
    weights = saved / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:200])  # truncated
    with pytest.raises(ModelLoadError, match=r"weights\.safetensors"):
        ModelBundle.load(saved)
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=str(weights)):
        ModelBundle.load(saved)
    weights.unlink()
    with pytest.raises(ModelLoadError, match=f"{weights}: weights not found"):
        ModelBundle.load(saved)


def test_a_spec_with_another_appliance_count_does_not_load(saved: Path):
    spec = json.loads((saved / "model.json").read_text())
    three = [*spec["appliances"], "microwave"]
    norm = spec["norm"]
    edit_spec(
        saved,
        appliances=three,
        norm={**norm, "power_mean_w": {a: 0 for a in three}, "power_std_w": {a: 1 for a in three}},
        on_off={**spec["on_off"], "microwave": OnOffSpec.of(APPLIANCES["microwave"]).model_dump()},
    )
    with pytest.raises(ModelLoadError, match=r"weights do not fit the 'multitask' model.*3 appliances") as e:
        ModelBundle.load(saved)
    assert str(saved) in str(e.value)


def test_inconsistent_or_invalid_specs_do_not_load(saved: Path):
    spec = json.loads((saved / "model.json").read_text())
    edit_spec(saved, appliances=[*spec["appliances"], "microwave"])
    with pytest.raises(ModelLoadError, match=r"model\.json: inconsistent model spec: .*lacks microwave"):
        ModelBundle.load(saved)
    edit_spec(saved, appliances=spec["appliances"], arch="transformer")
    with pytest.raises(ModelLoadError, match="unknown model 'transformer'"):
        ModelBundle.load(saved)
    edit_spec(saved, arch="multitask", window_length=-1)
    with pytest.raises(ModelLoadError, match=r"model\.json: invalid model spec: window_length"):
        ModelBundle.load(saved)
    edit_spec(saved, arch=spec["arch"], window_length=spec["window_length"], offline_on_prob={"kettle": 0.3})
    with pytest.raises(ModelLoadError, match=r"offline_on_prob names \['kettle'\], not the appliances"):
        ModelBundle.load(saved)
    edit_spec(saved, offline_on_prob=dict.fromkeys(spec["appliances"], 1.5))
    with pytest.raises(ModelLoadError, match=r"offline_on_prob outside \(0, 1\]"):
        ModelBundle.load(saved)
    (saved / "model.json").unlink()
    with pytest.raises(ModelLoadError, match="model spec not found"):
        ModelBundle.load(saved)


def test_spec_from_prepared_data_carries_its_statistics_and_predicts_its_devices(
    make_dataset, tmp_path: Path
):
    data = make_dataset(devices=3, hours=3)
    prepared = tmp_path / "prepared"
    prepare(data, load_params(REPO / "params.yaml"), prepared)
    stats = json.loads((prepared / "norm_stats.json").read_text())
    spec = spec_from_prepared(
        prepared,
        "multitask",
        {"widths": [16, 32]},
        64,
        "midpoint",
        provenance={"run": "t"},
        max_invalid_fraction=0.1,
    )
    assert spec.appliances == ["fridge", "kettle"] and spec.interval_s == 5
    assert spec.norm.aggregate_mean_w == stats["aggregate"]["mean_w"]
    assert spec.norm.power_std_w["fridge"] == stats["appliances"]["fridge"]["std_w"]
    assert spec.on_off["kettle"].on_threshold_w == APPLIANCES["kettle"].on_threshold_w
    assert spec.arch_kwargs == {"widths": [16, 32]} and spec.provenance == {"run": "t"}
    assert spec.gap == GapPolicy(max_fill_s=30, max_invalid_fraction=0.1)  # prepare.max_fill_s

    bundle = ModelBundle(spec, build_model(spec))
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle"))
    test_dir = prepared / "test"
    agg, valid = load_array(test_dir / "aggregate_w.npy"), load_array(test_dir / "valid.npy")
    pred = loaded.predict_series(np.asarray(agg), np.asarray(valid))
    assert pred.power_w.shape == (len(agg), 2)
    np.testing.assert_array_equal(pred.predicted, valid)

    only = spec_from_prepared(
        prepared, "causal", {}, 64, "last", appliances=["kettle"], max_invalid_fraction=0.1
    )
    assert only.appliances == ["kettle"] and list(only.on_off) == ["kettle"]
    with pytest.raises(DataError, match=r"norm_stats\.json.*\['microwave'\] are not in the prepared data"):
        spec_from_prepared(
            prepared, "multitask", {}, 64, "midpoint", appliances=["microwave"], max_invalid_fraction=0.1
        )
    with pytest.raises(ConfigError, match="unknown model"):
        spec_from_prepared(prepared, "transformer", {}, 64, "midpoint", max_invalid_fraction=0.1)
    with pytest.raises(DataError, match="run `airwatt data prepare` first"):
        spec_from_prepared(tmp_path, "multitask", {}, 64, "midpoint", max_invalid_fraction=0.1)


def test_the_chunked_served_pass_equals_the_served_rule_over_whole_outputs(monkeypatch: pytest.MonkeyPatch):
    """predict_series of a real-time model (one chunked pass, the decision rule's memory carried across
    chunks, power heads only where on) gives what the served rule over the whole series' outputs gives."""
    from airwatt.models.decision import decision_spec

    bundle = random_bundle("causal", 64)
    rule = {"on_prob": 0.55, "off_prob": 0.4, "confirm_on_s": 15, "confirm_off_s": 10}
    spec = bundle.spec.model_copy(
        update={"decision": decision_spec(40, dict.fromkeys(bundle.appliances, rule))}
    )
    bundle = ModelBundle(spec, bundle.model)
    agg = aggregate_series(900, seed=5)
    valid = np.ones(900, bool)
    valid[300:340] = False  # a gap: unanswered readings across a chunk border
    monkeypatch.setattr(predict_module, "SEQUENCE_CHUNK", 128)  # chunk borders inside the memory
    fast = bundle.predict_series(agg, valid)
    whole = bundle.decide(bundle.series_outputs(agg, valid), "served")
    assert fast.rule == whole.rule == "served"
    np.testing.assert_array_equal(fast.on, whole.on)
    np.testing.assert_array_equal(fast.predicted, whole.predicted)
    np.testing.assert_allclose(fast.prob_on, whole.prob_on, rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.power_w, whole.power_w, rtol=1e-5, atol=1e-3)
    assert 0.05 < whole.on.mean() < 0.95  # the states were not all alike
