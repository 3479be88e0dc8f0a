"""Disaggregation metrics, one definition each (written down in docs/metrics.md).

Every metric is computed from per-appliance *totals* (sums over the readings that count), never from
averages of averages:

    power totals   n, Σ|ŷ-y|, Σŷ, Σy, Σ(ŷ-y)², Σy²        ŷ predicted, y true power in W
    on/off totals  n, TP, FP, FN                          predicted on vs true on

Totals add up, so the metrics of many batches, devices or processes are the metrics of all their readings
pooled: the training loop (``DisaggregationMetrics``, a torchmetrics ``Metric`` that sums totals across steps
and DDP ranks) and ``airwatt evaluate`` (sums per-device totals) use the same formulas.

A reading counts where ``mask`` is true: the input (aggregate) and the truth are both valid there, and the
model made a prediction. Undefined values (a zero denominator) are NaN in tensors and ``null`` in JSON:

    mae_w      Σ|ŷ-y| / n                                 W; NaN when n = 0
    sae        |Σŷ - Σy| / Σy                             over the evaluated span; NaN when Σy <= 0
    nde        Σ(ŷ-y)² / Σy²                              Zhang et al. 2018 (no square root); NaN when Σy² = 0
    eac        1 - Σ|ŷ-y| / (2 Σy)                        Kolter & Johnson 2011; NaN when Σy <= 0
    precision  TP / (TP + FP)                             NaN when nothing is predicted on
    recall     TP / (TP + FN)                             NaN when the truth is never on
    f1         2TP / (2TP + FP + FN)                      NaN when the truth is never on and nothing is
                                                          predicted on (nothing to detect, nothing claimed)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

POWER_TOTALS = ("n", "abs_err_w", "pred_sum_w", "true_sum_w", "sq_err_w2", "sq_true_w2")
ONOFF_TOTALS = ("n", "tp", "fp", "fn")
POWER_KEYS = ("mae_w", "sae", "nde", "eac")
ONOFF_KEYS = ("f1", "precision", "recall")
METRIC_KEYS = ("mae_w", "sae", "nde", "f1", "precision", "recall", "eac")  # the order of the JSON report

MetricValues = dict[str, float | None]


def _columns(x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1); (N, A) unchanged."""
    return x.reshape(len(x), -1)


def power_totals(pred_w: torch.Tensor, true_w: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A, 6) float64 power totals (POWER_TOTALS order) of (N, A) or (N,) watts over readings in ``mask``.

    Values outside the mask may be NaN: they are never read.
    """
    m = _columns(mask).bool()
    zero = torch.zeros((), dtype=torch.float64, device=m.device)
    y_hat = torch.where(m, _columns(pred_w).double(), zero)
    y = torch.where(m, _columns(true_w).double(), zero)
    err = y_hat - y
    sums = (m.sum(0).double(), err.abs().sum(0), y_hat.sum(0), y.sum(0), (err**2).sum(0), (y**2).sum(0))
    return torch.stack(sums, dim=1)


def onoff_totals(pred_on: torch.Tensor, true_on: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(A, 4) float64 on/off totals (n, TP, FP, FN) of (N, A) or (N,) booleans over readings in ``mask``."""
    m = _columns(mask).bool()
    p = _columns(pred_on).bool() & m
    t = _columns(true_on).bool() & m
    sums = (m.sum(0), (p & t).sum(0), (p & ~t).sum(0), (~p & t).sum(0))
    return torch.stack(sums, dim=1).double()


def _ratio(num: torch.Tensor, den: torch.Tensor, defined: torch.Tensor) -> torch.Tensor:
    """num / den where ``defined``, NaN elsewhere (no division by zero warnings)."""
    safe = torch.where(defined, den, torch.ones_like(den))
    return torch.where(defined, num / safe, torch.full_like(num, math.nan))


def power_from_totals(totals: torch.Tensor) -> dict[str, torch.Tensor]:
    """MAE (W), SAE, NDE, EAC per appliance from (A, 6) power totals; NaN where undefined."""
    n, abs_err, pred_sum, true_sum, sq_err, sq_true = totals.double().unbind(dim=-1)
    energy = true_sum > 0
    return {
        "mae_w": _ratio(abs_err, n, n > 0),
        "sae": _ratio((pred_sum - true_sum).abs(), true_sum, energy),
        "nde": _ratio(sq_err, sq_true, sq_true > 0),
        "eac": 1.0 - _ratio(abs_err, 2.0 * true_sum, energy),
    }


def onoff_from_totals(totals: torch.Tensor) -> dict[str, torch.Tensor]:
    """F1, precision, recall per appliance from (A, 4) on/off totals; NaN where undefined."""
    _, tp, fp, fn = totals.double().unbind(dim=-1)
    return {
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, (tp + fp + fn) > 0),
        "precision": _ratio(tp, tp + fp, (tp + fp) > 0),
        "recall": _ratio(tp, tp + fn, (tp + fn) > 0),
    }


def power_metrics(pred_w: torch.Tensor, true_w: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"mae_w", "sae", "nde", "eac"} of one batch: each (A,) for (N, A) inputs, a scalar for (N,)."""
    out = power_from_totals(power_totals(pred_w, true_w, mask))
    return {k: v.reshape(pred_w.shape[1:]) for k, v in out.items()}


def onoff_metrics(
    pred_on: torch.Tensor, true_on: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """{"f1", "precision", "recall"} of one batch: each (A,) for (N, A) inputs, a scalar for (N,)."""
    out = onoff_from_totals(onoff_totals(pred_on, true_on, mask))
    return {k: v.reshape(pred_on.shape[1:]) for k, v in out.items()}


class DisaggregationMetrics(Metric):
    """All metrics of A appliances, accumulated over an epoch (and summed across DDP ranks).

    >>> m = DisaggregationMetrics(num_appliances=2)
    >>> m.update(pred_w, true_w, power_valid, pred_on, true_on, status_valid)   # (B, A) each
    >>> m.compute()["mae_w"]                # (A,), NaN where undefined (torchmetrics squeezes A = 1 to ())
    >>> self.log_dict(flat_metrics(m.compute(), appliances, prefix="val/"))
    """

    full_state_update = False
    higher_is_better = None
    power: torch.Tensor  # (A, len(POWER_TOTALS)) summed totals
    onoff: torch.Tensor  # (A, len(ONOFF_TOTALS))

    def __init__(self, num_appliances: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state(
            "power", torch.zeros(num_appliances, len(POWER_TOTALS), dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state(
            "onoff", torch.zeros(num_appliances, len(ONOFF_TOTALS), dtype=torch.float64), dist_reduce_fx="sum"
        )

    def update(
        self,
        pred_w: torch.Tensor,
        true_w: torch.Tensor,
        power_mask: torch.Tensor,
        pred_on: torch.Tensor,
        true_on: torch.Tensor,
        status_mask: torch.Tensor,
    ) -> None:
        self.power += power_totals(pred_w, true_w, power_mask)
        self.onoff += onoff_totals(pred_on, true_on, status_mask)

    def compute(self) -> dict[str, torch.Tensor]:
        return {**power_from_totals(self.power), **onoff_from_totals(self.onoff)}


def flat_metrics(
    values: Mapping[str, torch.Tensor], appliances: Sequence[str], *, prefix: str = ""
) -> dict[str, float]:
    """Loggable scalars: ``{prefix}{key}/{appliance}`` per appliance and ``{prefix}{key}``, the mean over
    appliances (as in the evaluation report); undefined (NaN) values are left out."""
    out: dict[str, float] = {}
    for key, tensor in values.items():
        per_app = tensor.detach().double().cpu().reshape(-1).tolist()
        defined = [v for v in per_app if not math.isnan(v)]
        if defined:
            out[f"{prefix}{key}"] = float(np.mean(defined))
        for name, v in zip(appliances, per_app, strict=True):
            if not math.isnan(v):
                out[f"{prefix}{key}/{name}"] = v
    return out


# ------------------------------------------------------------------------------- report-level (numpy, JSON)
def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def metrics_table(
    power: np.ndarray, onoff: np.ndarray, appliances: Sequence[str], *, has_power: Sequence[bool]
) -> dict[str, MetricValues]:
    """{appliance: {METRIC_KEYS...}} from (A, 6) power and (A, 4) on/off totals; undefined values are None.

    Power metrics of an appliance whose truth has no sub-metered power (``has_power`` false: its on/off
    truth comes from annotator labels) are None, even where a zero total would give a number.
    """
    pm = power_from_totals(torch.from_numpy(np.asarray(power, dtype=np.float64)))
    om = onoff_from_totals(torch.from_numpy(np.asarray(onoff, dtype=np.float64)))
    table: dict[str, MetricValues] = {}
    for j, name in enumerate(appliances):
        values = {k: _json_float(float(pm[k][j])) if has_power[j] else None for k in POWER_KEYS}
        values |= {k: _json_float(float(om[k][j])) for k in ONOFF_KEYS}
        table[name] = {k: values[k] for k in METRIC_KEYS}
    return table


def mean_over_appliances(table: Mapping[str, Mapping[str, float | None]]) -> MetricValues:
    """Unweighted mean of each metric over the appliances where it is defined; None where it is nowhere."""
    out: MetricValues = {}
    for key in METRIC_KEYS:
        values = [x for v in table.values() if (x := v.get(key)) is not None]
        out[key] = float(np.mean(values)) if values else None
    return out


# ------------------------------------------------------------------------- switch events (real-time models)
SWITCH_KEYS = ("switch_ons", "detected", "delay_median_s", "delay_p90_s", "false_switches_per_day")


@dataclass
class SwitchEvents:
    """Switch-on events of one appliance, summed over devices (docs/metrics.md, "Switch events").

    ``delays_s`` holds one entry per detected true switch-on; the counts add up across devices."""

    delays_s: list[np.ndarray] = field(default_factory=list)
    switch_ons: int = 0
    false_switches: int = 0
    readings: int = 0

    def add(self, other: SwitchEvents) -> None:
        self.delays_s.extend(other.delays_s)
        self.switch_ons += other.switch_ons
        self.false_switches += other.false_switches
        self.readings += other.readings

    def values(self, interval_s: float) -> MetricValues:
        delays = np.concatenate(self.delays_s) if self.delays_s else np.zeros(0)
        days = self.readings * interval_s / 86400.0
        return {
            "switch_ons": float(self.switch_ons),
            "detected": float(len(delays) / self.switch_ons) if self.switch_ons else None,
            "delay_median_s": float(np.median(delays)) if len(delays) else None,
            "delay_p90_s": float(np.percentile(delays, 90)) if len(delays) else None,
            "false_switches_per_day": self.false_switches / days if days > 0 else None,
        }


def _runs(flag: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs of True in ``flag`` (ends exclusive)."""
    d = np.diff(np.concatenate([[0], flag.astype(np.int8), [0]]))
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1)


def switch_events(
    pred_on: np.ndarray, true_on: np.ndarray, mask: np.ndarray, interval_s: float
) -> SwitchEvents:
    """Switch events of one appliance on one device's grid, counting only readings in ``mask`` (T,).

    A true switch-on is the first reading of a truly-on run whose previous reading counts and is off. It is
    detected at the first reading of the run where the prediction is on; its delay is the time from the
    switch-on to that reading (0 when the prediction was already on). A false switch is a predicted
    switch-on (previous reading counts and is predicted off) whose predicted on-run never overlaps truth.
    """
    mask = np.asarray(mask, bool)
    pred = np.asarray(pred_on, bool) & mask
    truth = np.asarray(true_on, bool) & mask
    before_counts = np.concatenate([[False], mask[:-1]])
    t_start, t_end = _runs(truth)
    observed = (t_start > 0) & before_counts[t_start] & ~np.concatenate([[False], truth[:-1]])[t_start]
    t_start, t_end = t_start[observed], t_end[observed]
    idx = np.arange(len(pred))
    next_on = np.minimum.accumulate(np.where(pred, idx, len(pred))[::-1])[::-1] if len(pred) else idx
    first = next_on[t_start] if len(t_start) else np.zeros(0, np.int64)
    hit = first < t_end
    p_start, p_end = _runs(pred)
    switched = (p_start > 0) & before_counts[p_start] & ~np.concatenate([[False], pred[:-1]])[p_start]
    truth_before = np.concatenate([[0], np.cumsum(truth)])
    overlaps = truth_before[p_end] - truth_before[p_start] > 0
    return SwitchEvents(
        delays_s=[(first[hit] - t_start[hit]).astype(np.float64) * interval_s],
        switch_ons=len(t_start),
        false_switches=int((switched & ~overlaps).sum()),
        readings=int(mask.sum()),
    )
