"""Candidate labeling windows and the active-learning choice among them.

A window is ``window_hours`` of one device, aligned to multiples of its length since the epoch (so the same
window always has the same start, and so the same task key, however the data grows). A window is a candidate
when at least ``min_valid_fraction`` of its slots hold a valid aggregate reading.

Scores, on the window's valid slots and the appliances both the models and the project know:

- **uncertainty**: mean binary entropy (bits, 0..1) of ``prob_on``, averaged over the models: 1 where the
  model says 0.5, 0 where it is sure;
- **disagreement** (two or more models): mean share of model pairs whose on/off state differs;
- **score** = uncertainty + disagreement.

Selection (``select_windows``): windows already pushed are left out; ``round(budget * random_share)`` windows
are drawn uniformly at random FIRST (seeded), so they are an unbiased sample of all candidates for an honest
quality estimate; the rest of the budget goes to the highest scores (ties: earlier window, then device id).
Without a model every window is drawn at random.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from airwatt.models.predict import SeriesPrediction

RANDOM = "random"
UNCERTAINTY = "uncertainty"


def task_key(dataset: str, device_id: str, start_ms: int) -> str:
    """The deterministic identity of a task: dataset name, device and window start (UTC)."""
    start = pd.Timestamp(start_ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{dataset}/{device_id}/{start}"


@dataclass
class DeviceSeries:
    """One device on its regular grid, with the models' predictions; K slots, A model appliances."""

    device_id: str
    start_ms: int
    interval_ms: int
    aggregate_w: np.ndarray  # (K,) float32, NaN where invalid
    valid: np.ndarray  # (K,) bool
    predictions: list[SeriesPrediction] = field(default_factory=list)  # one per model
    submeter_w: dict[str, np.ndarray] = field(default_factory=dict)  # appliance -> (K,) watts, NaN unknown

    def timestamps_ms(self, lo: int = 0, hi: int | None = None) -> np.ndarray:
        hi = len(self.valid) if hi is None else hi
        return self.start_ms + np.arange(lo, hi, dtype=np.int64) * self.interval_ms


@dataclass(frozen=True)
class Window:
    """One candidate: slots [lo, hi) of a device series covering [start_ms, end_ms)."""

    device_id: str
    start_ms: int
    end_ms: int
    lo: int
    hi: int
    valid_fraction: float
    uncertainty: float | None
    disagreement: float | None

    @property
    def score(self) -> float:
        return (self.uncertainty or 0.0) + (self.disagreement or 0.0)


@dataclass(frozen=True)
class Selected:
    window: Window
    key: str
    selection: str  # RANDOM | UNCERTAINTY


def binary_entropy_bits(p: np.ndarray) -> np.ndarray:
    """H(p) in bits; 0 at p in {0, 1}, 1 at p = 0.5."""
    q = np.clip(p.astype(np.float64), 1e-12, 1 - 1e-12)
    return -(q * np.log2(q) + (1 - q) * np.log2(1 - q))


def _uncertainty(
    preds: Sequence[SeriesPrediction], cols: Sequence[np.ndarray], ok: np.ndarray
) -> float | None:
    if not preds:
        return None
    per_model = [
        float(binary_entropy_bits(p.prob_on[ok][:, c]).mean()) for p, c in zip(preds, cols, strict=True)
    ]
    return float(np.mean(per_model))


def _disagreement(
    preds: Sequence[SeriesPrediction], cols: Sequence[np.ndarray], ok: np.ndarray
) -> float | None:
    if len(preds) < 2:
        return None
    pairs = [
        float((a.on[ok][:, ca] != b.on[ok][:, cb]).mean())
        for (a, ca), (b, cb) in combinations(zip(preds, cols, strict=True), 2)
    ]
    return float(np.mean(pairs))


def _columns(preds: Sequence[SeriesPrediction], appliances: Sequence[str]) -> list[np.ndarray]:
    """Per model, the column indices of ``appliances`` (the ones every model and the project know)."""
    return [np.array([p.appliances.index(a) for a in appliances], dtype=np.int64) for p in preds]


def candidate_windows(
    series: DeviceSeries, *, window_s: float, min_valid_fraction: float, appliances: Sequence[str]
) -> list[Window]:
    """The device's epoch-aligned windows with enough valid readings, scored (module docstring)."""
    window_ms = round(window_s * 1000)
    n = len(series.valid)
    if n == 0:
        return []
    slots_per_window = window_ms // series.interval_ms
    first_ms, last_ms = series.start_ms, series.start_ms + (n - 1) * series.interval_ms
    cols = _columns(series.predictions, appliances)
    use_models = bool(appliances) and bool(series.predictions)
    out = []
    for w_start in range(first_ms // window_ms * window_ms, last_ms + 1, window_ms):
        lo = max(0, -(-(w_start - series.start_ms) // series.interval_ms))
        hi = min(n, -(-(w_start + window_ms - series.start_ms) // series.interval_ms))
        ok = series.valid[lo:hi]
        fraction = float(ok.sum()) / slots_per_window
        if hi <= lo or fraction < min_valid_fraction or not ok.any():
            continue
        preds = [_slice(p, lo, hi) for p in series.predictions] if use_models else []
        out.append(
            Window(
                device_id=series.device_id,
                start_ms=w_start,
                end_ms=w_start + window_ms,
                lo=lo,
                hi=hi,
                valid_fraction=fraction,
                uncertainty=_uncertainty(preds, cols, ok) if use_models else None,
                disagreement=_disagreement(preds, cols, ok) if use_models else None,
            )
        )
    return out


def _slice(p: SeriesPrediction, lo: int, hi: int) -> SeriesPrediction:
    return SeriesPrediction(p.appliances, p.power_w[lo:hi], p.prob_on[lo:hi], p.on[lo:hi], p.predicted[lo:hi])


def select_windows(
    candidates: Sequence[Window],
    *,
    dataset: str,
    budget: int,
    random_share: float,
    seed: int,
    exclude_keys: set[str],
) -> list[Selected]:
    """Up to ``budget`` windows not pushed yet: a seeded random share first, then the highest scores."""
    keyed = [(w, task_key(dataset, w.device_id, w.start_ms)) for w in candidates]
    pool = sorted(((w, k) for w, k in keyed if k not in exclude_keys), key=lambda wk: wk[1])
    scored = any(w.uncertainty is not None for w, _ in pool)
    n_random = min(len(pool), budget if not scored else round(budget * random_share))
    rng = np.random.default_rng(seed)
    picked = set(rng.choice(len(pool), size=n_random, replace=False).tolist()) if n_random else set()
    chosen = [Selected(pool[i][0], pool[i][1], RANDOM) for i in sorted(picked)]
    rest = [wk for i, wk in enumerate(pool) if i not in picked]
    rest.sort(key=lambda wk: (-wk[0].score, wk[0].start_ms, wk[0].device_id))
    chosen += [Selected(w, k, UNCERTAINTY) for w, k in rest[: max(0, budget - len(chosen))]]
    return chosen
