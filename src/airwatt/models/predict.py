"""THE prediction code: evaluation, reports, labeling, notebooks and the service all load a
``ModelBundle`` and call it here, so training and serving cannot drift apart.

Rules (the same for every model; the README quotes them):

- **Normalisation**: ``x = (aggregate_w - mean_w) / std_w`` with the training statistics in the bundle.
  Invalid readings (``valid`` False, or NaN) are filled with 0, i.e. the training mean.
- **Edges**: a midpoint model's window around reading t reaches past the ends of a series; those positions are
  padded with 0 (the normalised mean). A causal ("last") model's window is left-padded the same way.
- **Decoding** (``OutputDecoder``): power in watts is ``power * std_w + mean_w`` per appliance, clipped to
  [0, max_w]; ``prob_on = sigmoid(on_logit)``. Power-only models (seq2point, mean): ``prob_on`` is 1.0 where
  the decoded power >= the appliance's on threshold, else 0.0.
- **Series** (``predict_series``), by the model's rule:

  - *served* (real-time models, target "last"; what ``POST /detect`` answers at each reading): a reading is
    answered where the gap policy allows (``airwatt.prepare.grid.answerable``: the reading valid and at most
    ``gap.max_invalid_fraction`` of its window missing, readings before the series counting as missing);
    ``on`` is the bundle's causal decision rule (airwatt.models.decision) over the answered readings; the
    watts are the decoded power where ``on``, 0 W elsewhere. Unanswered readings: ``predicted`` False, off,
    0 W. Nothing after a reading changes its answer.
  - *offline* (midpoint models; for a real-time model the smoothed figures evaluation reports beside the
    served ones): ``predicted`` where the input reading is valid; the power is gated by ``prob_on >=``
    the appliance's offline threshold (``spec.offline_on_prob``, tuned on validation by
    airwatt.models.tuning; 0.5 in a bundle without it; power-only models: not gated); ``on`` is the same
    threshold after each appliance's minimum on/off durations (airwatt.labels.on_intervals_ms: runs closer
    than min_off_s merged, runs shorter than min_on_s dropped), a rule that looks up to min_on_s into the
    future.

- **Windows** (``predict_windows``): (B, W) windows -> the decoded power (not gated) and ``prob_on`` at each
  window's target reading.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from airwatt.appliances import appliance_spec
from airwatt.errors import AirwattError, ConfigError, DataError
from airwatt.labels import on_intervals_ms
from airwatt.models.base import ModelOutput, TargetPosition, target_index
from airwatt.models.bundle import (
    ON_PROBABILITY_THRESHOLD,
    SPEC_FILE,
    WEIGHTS_FILE,
    GapPolicy,
    ModelLoadError,
    ModelSpec,
    NormStats,
    OnOffSpec,
    read_spec,
    read_weights,
    save_bundle,
)
from airwatt.models.decision import DecisionRule, decide_on
from airwatt.models.registry import create_model, model_class
from airwatt.prepare.grid import answerable

log = logging.getLogger(__name__)

SEQUENCE_CHUNK = 8192  # readings per forward_sequence call: bounds memory on long series
Rule = Literal["served", "offline"]


@dataclass(frozen=True)
class SeriesOutputs:
    """The model's decoded outputs at every reading of one series, before any on/off rule."""

    power_w: np.ndarray  # (T, A) float32 watts in [0, max_w], not gated
    prob_on: np.ndarray  # (T, A) float32 in [0, 1]
    valid: np.ndarray  # (T,) bool: the input reading is valid
    has_on_head: bool  # False: a power-only model, prob_on is the thresholded power


@dataclass(frozen=True)
class SeriesPrediction:
    """Predictions for every reading of one device's series on the regular grid; A = len(appliances)."""

    appliances: list[str]
    power_w: np.ndarray  # (T, A) float32 watts in [0, max_w]; 0 where not predicted or off (served)
    prob_on: np.ndarray  # (T, A) float32 in [0, 1]; 0 where not predicted
    on: np.ndarray  # (T, A) bool: the rule's state (module docstring)
    predicted: np.ndarray  # (T,) bool: served: the service answers the reading; offline: the reading is valid
    rule: Rule = "offline"


@dataclass(frozen=True)
class OutputDecoder:
    """ModelOutput (normalised) -> (power_w, prob_on), by the rules in the module docstring."""

    mean_w: torch.Tensor  # (A,)
    std_w: torch.Tensor  # (A,)
    max_w: torch.Tensor  # (A,)
    on_threshold_w: torch.Tensor  # (A,)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> OutputDecoder:
        def vec(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        apps = spec.appliances
        return cls(
            vec([spec.norm.power_mean_w[a] for a in apps]),
            vec([spec.norm.power_std_w[a] for a in apps]),
            vec([spec.on_off[a].max_w for a in apps]),
            vec([spec.on_off[a].on_threshold_w for a in apps]),
        )

    def raw(self, output: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., A) normalised outputs -> (..., A) watts (not gated) and (..., A) on-probability, float32."""
        dev = output.power.device
        power_w = output.power.float() * self.std_w.to(dev) + self.mean_w.to(dev)
        power_w = torch.minimum(power_w.clamp(min=0.0), self.max_w.to(dev))
        if output.on_logits is None:
            return power_w, (power_w >= self.on_threshold_w.to(dev)).float()
        return power_w, torch.sigmoid(output.on_logits.float())

    def raw_numpy(self, power: np.ndarray, on_logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``raw`` on NumPy outputs of a model with on/off heads (the streaming step), float32."""
        cached = self.__dict__.get("_numpy")
        if cached is None:
            cached = tuple(v.numpy().astype(np.float32) for v in (self.std_w, self.mean_w, self.max_w))
            object.__setattr__(self, "_numpy", cached)
        std, mean, top = cached
        power_w = np.minimum(np.maximum(power * std + mean, 0), top)
        return power_w.astype(np.float32), (1.0 / (1.0 + np.exp(-on_logits))).astype(np.float32)

    def __call__(self, output: ModelOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """``raw`` with the power of models with on/off heads gated by ``prob_on >= 0.5`` (the per-reading
        rule of the training metrics and of the offline rule)."""
        power_w, prob_on = self.raw(output)
        if output.on_logits is None:
            return power_w, prob_on
        return torch.where(prob_on >= ON_PROBABILITY_THRESHOLD, power_w, 0.0), prob_on


def spec_problems(spec: ModelSpec) -> list[str]:
    """What makes a spec unusable: appliances without normalisation or on/off parameters, an unknown arch."""
    problems = []
    if not spec.appliances:
        problems.append("no appliances")
    for what, keys in (
        ("norm.power_mean_w", spec.norm.power_mean_w),
        ("norm.power_std_w", spec.norm.power_std_w),
        ("on_off", spec.on_off),
    ):
        missing = [a for a in spec.appliances if a not in keys]
        if missing:
            problems.append(f"{what} lacks {', '.join(missing)}")
    if "target" in spec.arch_kwargs and spec.arch_kwargs["target"] != spec.target:
        problems.append(f"arch_kwargs.target {spec.arch_kwargs['target']!r} is not target {spec.target!r}")
    if spec.offline_on_prob is not None:
        if set(spec.offline_on_prob) != set(spec.appliances):
            problems.append(f"offline_on_prob names {sorted(spec.offline_on_prob)}, not the appliances")
        bad = {a: p for a, p in spec.offline_on_prob.items() if not 0.0 < p <= 1.0}
        if bad:
            problems.append(f"offline_on_prob outside (0, 1]: {bad}")
    try:
        model_class(spec.arch)
    except ConfigError as e:
        problems.append(str(e))
    return problems


def build_model(spec: ModelSpec) -> nn.Module:
    """The (untrained) model a spec describes: its arch, arguments, appliance count, window and target."""
    kwargs = {**spec.arch_kwargs, "target": spec.target}
    return create_model(
        spec.arch, n_appliances=len(spec.appliances), window_length=spec.window_length, **kwargs
    )


def _model_mismatch(spec: ModelSpec, model: nn.Module) -> list[str]:
    expected = {
        "n_appliances": len(spec.appliances),
        "window_length": spec.window_length,
        "target": spec.target,
    }
    return [
        f"model.{k} is {getattr(model, k, None)!r}, the spec says {v!r}"
        for k, v in expected.items()
        if getattr(model, k, None) != v
    ]


@dataclass(frozen=True, eq=False)
class ModelBundle:
    """A model and the spec that says how to use it; the model is put in eval mode."""

    spec: ModelSpec
    model: nn.Module
    decoder: OutputDecoder = field(init=False, repr=False)

    def __post_init__(self) -> None:
        problems = spec_problems(self.spec) + _model_mismatch(self.spec, self.model)
        if problems:
            raise ConfigError(f"model and spec disagree ({self.spec.arch}): {'; '.join(problems)}")
        self.model.eval()
        object.__setattr__(self, "decoder", OutputDecoder.from_spec(self.spec))

    # ---- artifact -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, bundle_dir: str | Path, *, device: str | torch.device = "cpu") -> ModelBundle:
        """Read a bundle directory; anything missing or inconsistent raises ModelLoadError naming it."""
        bundle_dir = Path(bundle_dir)
        spec_path, weights_path = bundle_dir / SPEC_FILE, bundle_dir / WEIGHTS_FILE
        try:
            spec = read_spec(bundle_dir)
        except ValidationError as e:
            raise ModelLoadError(f"{spec_path}: invalid model spec: {_first_error(e)}") from None
        problems = spec_problems(spec)
        if problems:
            raise ModelLoadError(f"{spec_path}: inconsistent model spec: {'; '.join(problems)}")
        try:
            model = build_model(spec)
        except AirwattError as e:
            raise ModelLoadError(f"{spec_path}: cannot build the model: {e}") from None
        try:
            state = read_weights(bundle_dir)
        except ModelLoadError:
            raise
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise ModelLoadError(f"{weights_path}: unreadable weights ({type(e).__name__}: {e})") from None
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            detail = " ".join(str(e).split())[:400]
            raise ModelLoadError(
                f"{weights_path}: weights do not fit the {spec.arch!r} model described in {spec_path} "
                f"({len(spec.appliances)} appliances, window {spec.window_length}): {detail}"
            ) from None
        log.info("loaded %s model from %s (%s)", spec.arch, bundle_dir, ", ".join(spec.appliances))
        return cls(spec, model.to(device))

    def save(self, out_dir: str | Path) -> Path:
        """Write the bundle directory (model.json + weights.safetensors) atomically."""
        return save_bundle(out_dir, self.spec, self.model)

    # ---- what the model expects ----------------------------------------------------------------------
    @property
    def appliances(self) -> list[str]:
        return list(self.spec.appliances)

    @property
    def window_length(self) -> int:
        return self.spec.window_length

    @property
    def target(self) -> TargetPosition:
        return self.spec.target

    @property
    def interval_s(self) -> float:
        return self.spec.interval_s

    @property
    def device(self) -> torch.device:
        tensor = next(itertools.chain(self.model.parameters(), self.model.buffers()), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def normalise(self, aggregate_w: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """Watts -> the model's input scale, float32; invalid or NaN readings become 0 (the training mean)."""
        agg = np.asarray(aggregate_w, dtype=np.float64)
        ok = np.isfinite(agg) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(agg)
        x = (agg - self.spec.norm.aggregate_mean_w) / self.spec.norm.aggregate_std_w
        return np.where(ok, x, 0.0).astype(np.float32)

    # ---- prediction ----------------------------------------------------------------------------------
    @property
    def gap(self) -> GapPolicy:
        return self.spec.gap

    @property
    def real_time(self) -> bool:
        return self.spec.real_time

    @property
    def decision_rule(self) -> DecisionRule:
        """The compiled causal decision rule (real-time models; ``prob_on >= 0.5`` if the bundle has none)."""
        rule = self.__dict__.get("_decision_rule")
        if rule is None:
            rule = DecisionRule.of(self.spec.decision_or_plain(), self.appliances, self.interval_s)
            object.__setattr__(self, "_decision_rule", rule)
        return rule

    @property
    def offline_thresholds(self) -> np.ndarray:
        """(A,) float32: the offline rule's on-probability threshold of each appliance (tuned on validation;
        ``prob_on >= 0.5`` for a bundle without them)."""
        return np.array([self.spec.offline_threshold(a) for a in self.appliances], dtype=np.float32)

    @property
    def history_length(self) -> int:
        """Readings the served answer at a reading depends on: the window plus the decision memory."""
        return self.window_length + self.decision_rule.memory - 1 if self.real_time else self.window_length

    def predict_windows(self, x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, W) normalised windows -> (B, A) watts (not gated) and (B, A) on-probability at each window's
        target reading, on the model's device."""
        if x_norm.ndim != 2 or x_norm.shape[1] != self.window_length:
            raise DataError(
                f"expected windows of shape (B, {self.window_length}) for the {self.spec.arch} model, "
                f"got {tuple(x_norm.shape)}"
            )
        with torch.inference_mode():
            return self.decoder.raw(self.model(x_norm.to(self.device, torch.float32)))

    def series_outputs(
        self, aggregate_w: np.ndarray, valid: np.ndarray | None = None, *, batch_size: int = 1024
    ) -> SeriesOutputs:
        """The decoded outputs at every reading of one device's aggregate series (T,) on the regular
        ``interval_s`` grid, before any on/off rule (``decide``)."""
        agg, ok = _checked_series(aggregate_w, valid, batch_size)
        x = torch.from_numpy(self.normalise(agg, ok))
        power_w, prob_on, has_on_head = self._series_outputs(x, batch_size)  # (T, A) each
        return SeriesOutputs(power_w, prob_on, ok, has_on_head)

    def decide(self, out: SeriesOutputs, rule: Rule | None = None) -> SeriesPrediction:
        """The on/off rule over a series' outputs: ``served`` (the default of real-time models) or
        ``offline`` (the default of the others); see the module docstring."""
        rule = rule or ("served" if self.real_time else "offline")
        if rule == "served":
            if not self.real_time:
                raise ConfigError(
                    f"the {self.spec.arch} model predicts the {self.target} reading: not served"
                )
            known = answerable(out.valid, self.window_length, self.gap.max_invalid_fraction)
            on = decide_on(self.decision_rule, out.prob_on, known) & known[:, None]
            power_w = np.where(on, out.power_w, np.float32(0.0))
            prob_on = np.where(known[:, None], out.prob_on, np.float32(0.0))
            return SeriesPrediction(self.appliances, power_w, prob_on, on, known, "served")
        gated = out.prob_on >= self.offline_thresholds
        power_w = np.where(gated, out.power_w, np.float32(0.0)) if out.has_on_head else out.power_w
        power_w = np.where(out.valid[:, None], power_w, np.float32(0.0))
        prob_on = np.where(out.valid[:, None], out.prob_on, np.float32(0.0))
        on = self.apply_durations(gated) & out.valid[:, None]
        return SeriesPrediction(self.appliances, power_w, prob_on, on, out.valid.copy(), "offline")

    def predict_series(
        self,
        aggregate_w: np.ndarray,
        valid: np.ndarray | None = None,
        *,
        batch_size: int = 1024,
        rule: Rule | None = None,
    ) -> SeriesPrediction:
        """Predict every reading of one device's aggregate series (T,) on the regular ``interval_s`` grid,
        by the model's rule (``rule`` to choose: module docstring)."""
        rule = rule or ("served" if self.real_time else "offline")
        if rule == "served" and self._use_sequence_path() and hasattr(self.model, "sequence_skips"):
            agg, ok = _checked_series(aggregate_w, valid, batch_size)
            return self._served_sequence(torch.from_numpy(self.normalise(agg, ok)), ok)
        return self.decide(self.series_outputs(aggregate_w, valid, batch_size=batch_size), rule)

    def _served_sequence(self, x: torch.Tensor, ok: np.ndarray) -> SeriesPrediction:
        """The served rule in one chunked sequence pass: per chunk the on-probabilities, the decision rule
        over them (its bounded memory carried over from the chunk before) and the power heads only where an
        appliance is on (the served watts are 0 W elsewhere). The same answers as
        ``decide(series_outputs(...), "served")`` (tested), without the power heads' work where all is off."""
        model: Any = self.model
        w, a, rule = self.window_length, len(self.appliances), self.decision_rule
        keep = rule.memory - 1  # probabilities carried into the next chunk's decisions
        known = answerable(ok, w, self.gap.max_invalid_fraction)
        power_w = np.zeros((len(x), a), np.float32)
        prob_on = np.zeros((len(x), a), np.float32)
        on = np.zeros((len(x), a), bool)
        d = self.decoder
        padded = F.pad(x.to(self.device), (w - 1, 0))  # (T + W - 1,): zeros before the start
        carried_p, carried_k = np.zeros((0, a), np.float32), np.zeros(0, bool)
        with torch.inference_mode():
            for lo in range(0, len(x), SEQUENCE_CHUNK):
                skips = model.sequence_skips(padded[lo : lo + SEQUENCE_CHUNK + w - 1].unsqueeze(0))
                h = model.trunk_of([s[0, w - 1 :] for s in skips])  # (n, hidden)
                prob = torch.sigmoid(model.on_head(h).float()).cpu().numpy()  # (n, A)
                hi = lo + len(prob)
                ext_p, ext_k = np.concatenate([carried_p, prob]), np.concatenate([carried_k, known[lo:hi]])
                decided = decide_on(rule, ext_p, ext_k)
                state = decided[len(carried_p) :] & known[lo:hi, None]
                carried_p, carried_k = ext_p[len(ext_p) - keep :], ext_k[len(ext_k) - keep :]
                for j in np.flatnonzero(state.any(axis=0)):
                    rows = np.flatnonzero(state[:, j])
                    p = model.power_head.forward_one(h[torch.from_numpy(rows).to(h.device)], int(j)).float()
                    watts = torch.minimum((p * d.std_w[j] + d.mean_w[j]).clamp(min=0.0), d.max_w[j])
                    power_w[lo + rows, j] = watts.cpu().numpy()
                prob_on[lo:hi] = np.where(known[lo:hi, None], prob, np.float32(0.0))
                on[lo:hi] = state
        return SeriesPrediction(self.appliances, power_w, prob_on, on, known, "served")

    def _series_outputs(self, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray, bool]:
        """(T,) normalised series -> (T, A) watts and on-probability (numpy float32), and whether the model
        has on/off heads."""
        n_app = len(self.spec.appliances)
        if len(x) == 0:
            empty = np.zeros((0, n_app), np.float32)
            return empty, empty.copy(), True  # nothing to gate
        w = self.window_length
        offset = target_index(w, self.target)
        x = x.to(self.device)
        if self._use_sequence_path():
            return self._sequence_outputs(x)
        padded = F.pad(x, (offset, w - 1 - offset))  # (T + W - 1,): window i has reading i at ``offset``
        windows = padded.unfold(0, w, 1)  # (T, W), a view
        power, prob, heads = [], [], True
        with torch.inference_mode():
            for lo in range(0, len(windows), batch_size):
                out = self.model(windows[lo : lo + batch_size])
                heads = out.on_logits is not None
                p, q = self.decoder.raw(out)  # (b, A) each
                power.append(p.cpu())
                prob.append(q.cpu())
        return torch.cat(power).numpy(), torch.cat(prob).numpy(), heads

    def _use_sequence_path(self) -> bool:
        return (
            self.target == "last"
            and hasattr(self.model, "forward_sequence")
            and bool(getattr(self.model, "sequence_exact", False))
        )

    def _sequence_outputs(self, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
        """Causal models with an exact forward_sequence: O(T), chunks carrying W - 1 readings of context."""
        w = self.window_length
        padded = F.pad(x, (w - 1, 0))  # (T + W - 1,): zeros before the start
        power, prob = [], []
        forward_sequence: Callable[[torch.Tensor], ModelOutput] = getattr(self.model, "forward_sequence")  # noqa: B009
        with torch.inference_mode():
            for lo in range(0, len(x), SEQUENCE_CHUNK):
                chunk = padded[lo : lo + SEQUENCE_CHUNK + w - 1]
                out = forward_sequence(chunk.unsqueeze(0))  # (1, n + W - 1, A) each
                on_logits = None if out.on_logits is None else out.on_logits[0, w - 1 :]
                p, q = self.decoder.raw(ModelOutput(out.power[0, w - 1 :], on_logits))  # (n, A) each
                power.append(p.cpu())
                prob.append(q.cpu())
        return torch.cat(power).numpy(), torch.cat(prob).numpy(), True

    def apply_durations(self, state: np.ndarray) -> np.ndarray:
        """(T, A) per-reading on/off -> (T, A) after each appliance's minimum on/off durations, in seconds."""
        n = len(state)
        step_ms = round(self.spec.interval_s * 1000)
        ts_ms = np.arange(n, dtype=np.int64) * step_ms
        out = np.zeros(state.shape, dtype=bool)
        for j, name in enumerate(self.spec.appliances):
            # The labelling rule of airwatt.labels on the 0/1 state, so predictions and labels agree.
            rule = replace(self.spec.on_off[name].appliance_spec(name), on_threshold_w=0.5)
            starts, ends = on_intervals_ms(ts_ms, state[:, j].astype(np.float32), rule, self.spec.interval_s)
            # As airwatt.labels.status_from_intervals: inside [start, end).
            inside = np.searchsorted(starts, ts_ms, side="right") - np.searchsorted(ends, ts_ms, side="right")
            out[:, j] = inside > 0
        return out


def _checked_series(
    aggregate_w: np.ndarray, valid: np.ndarray | None, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """(the series, its valid readings) after checking the shapes; DataError or ConfigError naming them."""
    agg = np.asarray(aggregate_w)
    if agg.ndim != 1:
        raise DataError(f"aggregate_w must be one series of shape (T,), got shape {agg.shape}")
    if valid is not None and np.shape(valid) != agg.shape:
        raise DataError(f"valid has shape {np.shape(valid)}, aggregate_w {agg.shape}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, not {batch_size}")
    ok = np.isfinite(agg) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(agg)
    return agg, ok


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {err['msg']} ({e.error_count()} error(s))"


def spec_from_prepared(
    prepared_dir: str | Path,
    arch: str,
    arch_kwargs: dict[str, Any],
    window_length: int,
    target: TargetPosition,
    appliances: list[str] | None = None,
    provenance: dict[str, Any] | None = None,
    *,
    max_invalid_fraction: float,
) -> ModelSpec:
    """The spec of a model trained on a prepared directory: its norm_stats.json (fitted on the training
    devices), the on/off parameters of airwatt.appliances and the gap policy (the prepared data's
    ``max_fill_s``, the training windows' ``max_invalid_fraction``); ``appliances`` defaults to all of the
    data's. The decision rule of a real-time model is tuned after training (airwatt.training.tune)."""
    path = Path(prepared_dir) / "norm_stats.json"
    if not path.is_file():
        raise DataError("normalisation statistics not found (run `airwatt data prepare` first)", file=path)
    stats = json.loads(path.read_text())
    per_app: dict[str, dict[str, Any]] = stats["appliances"]
    chosen = list(per_app) if appliances is None else list(appliances)
    missing = [a for a in chosen if a not in per_app]
    if missing or not chosen:
        raise DataError(
            f"appliances {missing or chosen} are not in the prepared data (it has: {', '.join(per_app)})",
            file=path,
        )
    unfitted = [a for a in chosen if not per_app[a]["fitted"]]
    if unfitted:
        log.warning("%s: no training ground truth for %s; the model cannot learn them", path, unfitted)
    if target not in ("midpoint", "last"):
        raise ConfigError(f"target must be 'midpoint' or 'last', not {target!r}")
    kwargs = dict(arch_kwargs)
    if kwargs.pop("target", target) != target:
        raise ConfigError(f"arch_kwargs target {arch_kwargs['target']!r} contradicts target {target!r}")
    model_class(arch)  # unknown names fail here, before training
    return ModelSpec(
        arch=arch,
        arch_kwargs=kwargs,
        appliances=chosen,
        window_length=window_length,
        target=target,
        interval_s=float(stats["interval_s"]),
        norm=NormStats(
            aggregate_mean_w=float(stats["aggregate"]["mean_w"]),
            aggregate_std_w=float(stats["aggregate"]["std_w"]),
            power_mean_w={a: float(per_app[a]["mean_w"]) for a in chosen},
            power_std_w={a: float(per_app[a]["std_w"]) for a in chosen},
        ),
        on_off={a: OnOffSpec.of(appliance_spec(a)) for a in chosen},
        gap=GapPolicy(
            max_fill_s=prepared_max_fill_s(prepared_dir), max_invalid_fraction=max_invalid_fraction
        ),
        provenance=dict(provenance or {}),
    )


def prepared_max_fill_s(prepared_dir: str | Path) -> float:
    """The gap-filling rule a prepared directory was made with (its train/index.json)."""
    path = Path(prepared_dir) / "train" / "index.json"
    if not path.is_file():
        raise DataError("prepared split index not found (run `airwatt data prepare` first)", file=path)
    return float(json.loads(path.read_text())["max_fill_s"])
