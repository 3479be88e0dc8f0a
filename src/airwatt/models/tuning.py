"""Tune the on/off rules per appliance on validation data: the causal decision rule of real-time models
(airwatt.models.decision) and the offline rule's threshold of every model.

The objective is the served F1 of each appliance: the rule's state at every reading the service answers,
against the truth, pooled over the validation devices (readings the service leaves unanswered count as
off, as in evaluation). The search is coordinate-wise over the candidate values in params.yaml
``train.decision``: the on-probability first (no band, no confirmation), then the hysteresis band, then the
on and the off confirmation, then the on-probability once more with the others fixed. The search starts
from the labelling rule made causal (``start_rule``: ``prob_on >= 0.5``, confirmations as long as the
appliance's minimum on and off durations, within the memory), and a candidate replaces the current values
only when it gains more than ``min_gain`` F1 (a few validation devices are a small sample: near-ties keep
the start). A confirmation is never longer than the appliance's own minimum duration, so no activation the
truth counts is confirmed away. An appliance never on in the validation truth keeps the start rule. Test
data is never read here.

The offline rule (airwatt.models.predict: ``prob_on >=`` a threshold, then the appliance's minimum on and
off durations) is tuned the same way, on the same validation outputs: per appliance, the threshold among
``train.decision.on_prob`` whose offline state scores the best validation F1 (the readings with a valid
input), starting from 0.5 and replacing it only for more than ``min_gain``. Why: on houses a model never
saw its probabilities sit low, and a fixed 0.5 then misses whole programmes (docs/generalisation.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from airwatt.models.bundle import ON_PROBABILITY_THRESHOLD
from airwatt.models.decision import ApplianceDecision, DecisionRule, DecisionSpec, decide_on
from airwatt.prepare.grid import answerable

if TYPE_CHECKING:
    from airwatt.models.predict import ModelBundle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TuningSeries:
    """One validation device: (T, A) on-probabilities, (T,) answered readings, (T, A) truth and its mask,
    and (T,) the readings with a valid input (offline scoring; None: every reading)."""

    prob_on: np.ndarray
    known: np.ndarray
    truth_on: np.ndarray
    truth_valid: np.ndarray
    valid: np.ndarray | None = None


@dataclass(frozen=True)
class DecisionGrid:
    """Candidate values (params.yaml ``train.decision``)."""

    memory_s: float
    on_prob: Sequence[float]
    band: Sequence[float]
    confirm_s: Sequence[float]
    min_gain: float = 0.01


def _f1(rule: DecisionRule, series: Sequence[TuningSeries], j: int) -> float:
    tp = fp = fn = 0
    for s in series:
        on = decide_on(rule, s.prob_on[:, j : j + 1], s.known)[:, 0] & s.known
        truth, mask = s.truth_on[:, j], s.truth_valid[:, j]
        tp += int((on & truth & mask).sum())
        fp += int((on & ~truth & mask).sum())
        fn += int((~on & truth & mask).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def _rule(p: ApplianceDecision, memory_s: float, interval_s: float) -> DecisionRule:
    return DecisionRule.of(DecisionSpec(memory_s=memory_s, appliances={"a": p}), ["a"], interval_s)


def start_rule(confirms_on: Sequence[float], confirms_off: Sequence[float]) -> ApplianceDecision:
    """The labelling rule made causal: ``prob_on >= 0.5``, and the longest confirmations allowed (the
    appliance's minimum durations, within the memory)."""
    return ApplianceDecision(
        on_prob=0.5,
        off_prob=0.5,
        confirm_on_s=max(confirms_on, default=0.0),
        confirm_off_s=max(confirms_off, default=0.0),
    )


def tune_appliance(
    series: Sequence[TuningSeries],
    j: int,
    grid: DecisionGrid,
    interval_s: float,
    max_confirm_s: tuple[float, float] | None = None,
) -> tuple[ApplianceDecision, float]:
    """The best parameters of appliance column ``j`` by the coordinate search, and their F1.
    ``max_confirm_s``: the longest on and off confirmations allowed (the appliance's minimum durations)."""
    cap_on, cap_off = max_confirm_s or (0.0, 0.0)
    confirms_on = [c for c in grid.confirm_s if c <= min(grid.memory_s, max(interval_s, cap_on))]
    confirms_off = [c for c in grid.confirm_s if c <= min(grid.memory_s, max(interval_s, cap_off))]
    current = start_rule(confirms_on, confirms_off)
    if not any((s.truth_on[:, j] & s.truth_valid[:, j]).any() for s in series):
        return current, float("nan")
    best = _f1(_rule(current, grid.memory_s, interval_s), series, j)

    def try_all(candidates: list[ApplianceDecision]) -> None:
        nonlocal current, best
        for cand in candidates:
            f1 = _f1(_rule(cand, grid.memory_s, interval_s), series, j)
            if f1 > best + grid.min_gain:  # near-ties keep the plainer values (they come first)
                current, best = cand, f1

    def with_(**kw: float) -> ApplianceDecision:
        return current.model_copy(update=kw)

    try_all([with_(on_prob=p, off_prob=p) for p in grid.on_prob])
    bands = [b for b in grid.band if b > 0]
    try_all([with_(off_prob=max(0.0, current.on_prob - b)) for b in bands])
    band = current.on_prob - current.off_prob
    try_all([with_(confirm_on_s=c) for c in confirms_on])
    try_all([with_(confirm_off_s=c) for c in confirms_off])
    try_all([with_(on_prob=p, off_prob=max(0.0, p - band)) for p in grid.on_prob])
    return current, best


def tune_decision(
    series: Sequence[TuningSeries],
    appliances: Sequence[str],
    grid: DecisionGrid,
    interval_s: float,
    max_confirm_s: Mapping[str, tuple[float, float]] | None = None,
) -> tuple[DecisionSpec, dict[str, float | None]]:
    """The tuned rule of every appliance and its validation F1 (None: no truth-on to tune on)."""
    params: dict[str, ApplianceDecision] = {}
    scores: dict[str, float | None] = {}
    for j, name in enumerate(appliances):
        p, f1 = tune_appliance(series, j, grid, interval_s, (max_confirm_s or {}).get(name))
        params[name] = p
        scores[name] = None if np.isnan(f1) else f1
        log.info("decision rule %s: %s (validation served F1 %s)", name, p.model_dump(), scores[name])
    return DecisionSpec(memory_s=grid.memory_s, appliances=params), scores


def _counts(on: np.ndarray, s: TuningSeries) -> np.ndarray:
    """(3, A) true positives, false positives and false negatives of a (T, A) state against the truth."""
    truth, mask = s.truth_on, s.truth_valid
    return np.stack([(on & truth & mask).sum(0), (on & ~truth & mask).sum(0), (~on & truth & mask).sum(0)])


def tune_offline(
    series: Sequence[TuningSeries],
    appliances: Sequence[str],
    grid: DecisionGrid,
    smooth: Callable[[np.ndarray], np.ndarray],
) -> tuple[dict[str, float], dict[str, float | None]]:
    """The offline rule's threshold of every appliance and its validation F1 (None: no truth-on to tune
    on). ``smooth``: (T, A) per-reading states -> (T, A) after the minimum durations (the bundle's
    ``apply_durations``)."""
    candidates = list(dict.fromkeys([ON_PROBABILITY_THRESHOLD, *grid.on_prob]))  # 0.5 first: ties keep it
    f1 = np.zeros((len(candidates), len(appliances)))
    for i, p in enumerate(candidates):
        tp, fp, fn = np.sum([_counts(_offline_on(s, p, smooth), s) for s in series], axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            f1[i] = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    has_truth = np.any([(s.truth_on & s.truth_valid).any(0) for s in series], axis=0)
    thresholds: dict[str, float] = {}
    scores: dict[str, float | None] = {}
    for j, name in enumerate(appliances):
        best_i = 0
        for i in range(1, len(candidates)):
            if has_truth[j] and f1[i, j] > f1[best_i, j] + grid.min_gain:
                best_i = i
        thresholds[name] = float(candidates[best_i])
        scores[name] = float(f1[best_i, j]) if has_truth[j] else None
        log.info("offline rule %s: prob_on >= %s (validation F1 %s)", name, thresholds[name], scores[name])
    return thresholds, scores


def _offline_on(s: TuningSeries, threshold: float, smooth: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    valid = np.ones(len(s.prob_on), bool) if s.valid is None else s.valid
    return smooth(s.prob_on >= threshold) & valid[:, None]


def validation_series(bundle: ModelBundle, prepared_dir: Path) -> list[TuningSeries]:
    """The prepared validation devices (``<prepared>/val``) predicted by ``bundle`` as the service would
    answer them: its outputs, the answered readings, and the truth in the bundle's appliance order."""
    from airwatt.prepare import load_array

    split = Path(prepared_dir) / "val"
    index = json.loads((split / "index.json").read_text())
    cols = [index["appliances"].index(a) for a in bundle.appliances]
    arrays = {k: load_array(split / f"{k}.npy") for k in ("aggregate_w", "valid", "status", "status_valid")}
    out = []
    for dev in index["devices"]:
        sl = slice(dev["offset"], dev["offset"] + dev["length"])
        valid = np.asarray(arrays["valid"][sl], bool)
        outputs = bundle.series_outputs(np.asarray(arrays["aggregate_w"][sl]), valid)
        known = answerable(outputs.valid, bundle.window_length, bundle.gap.max_invalid_fraction)
        status = np.asarray(arrays["status"][sl][:, cols], bool)
        mask = np.asarray(arrays["status_valid"][sl][:, cols], bool) & valid[:, None]
        out.append(TuningSeries(outputs.prob_on, known, status, mask, outputs.valid))
    return out


def tune_bundle(bundle: ModelBundle, prepared_dir: Path, grid: DecisionGrid) -> ModelBundle:
    """``bundle`` with its rules tuned on the prepared validation devices: the offline thresholds of every
    model and the decision rule of a real-time one, with each appliance's validation F1 in its provenance
    (``offline_val_f1``, ``decision_val_f1``)."""
    from airwatt.models.predict import ModelBundle

    series = validation_series(bundle, prepared_dir)
    thresholds, offline_f1 = tune_offline(series, bundle.appliances, grid, bundle.apply_durations)
    update: dict[str, object] = {"offline_on_prob": thresholds}
    provenance = {**bundle.spec.provenance, "offline_val_f1": offline_f1}
    if bundle.real_time:
        on_off = bundle.spec.on_off
        caps = {a: (on_off[a].min_on_s, on_off[a].min_off_s) for a in bundle.appliances}
        update["decision"], provenance["decision_val_f1"] = tune_decision(
            series, bundle.appliances, grid, bundle.interval_s, caps
        )
    return ModelBundle(bundle.spec.model_copy(update={**update, "provenance": provenance}), bundle.model)
