"""Normalisation statistics, fitted on the TRAINING devices only (the artifact models carry).

norm_stats.json::

    {"fitted_on": "train", "devices": [...],
     "aggregate": {"mean_w", "std_w", "count"},                 over valid aggregate slots
     "appliances": {name: {"mean_w", "std_w", "max_w", "count", "fitted"}}}   over valid ground truth

Valid slots include those forward-filled over short gaps (see grid.py). An appliance without ground truth in
any training device gets mean 0, std 1, max null and ``fitted: false``; a std below 1e-6 W is stored as 1 so
that dividing by it is always safe. Moments are accumulated in float64, chunk by chunk (Chan et al.), so the
memory-mapped arrays are never loaded whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

CHUNK_SLOTS = 1 << 20
MIN_STD_W = 1e-6


@dataclass
class Moments:
    """Running count, mean and sum of squared deviations; mergeable."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    max: float = float("-inf")

    def add(self, x: np.ndarray) -> None:
        if x.size == 0:
            return
        x = x.astype(np.float64)
        n, mean = x.size, float(x.mean())
        m2 = float(((x - mean) ** 2).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta**2 * self.count * n / total
        self.count = total
        self.max = max(self.max, float(x.max()))

    def as_dict(self, *, with_max: bool) -> dict[str, Any]:
        fitted = self.count > 0
        std = float(np.sqrt(self.m2 / self.count)) if fitted else 1.0
        out: dict[str, Any] = {
            "mean_w": self.mean if fitted else 0.0,
            "std_w": std if std >= MIN_STD_W else 1.0,
            "count": self.count,
        }
        if with_max:
            out["max_w"] = self.max if fitted else None
            out["fitted"] = fitted
        return out


def fit_norm_stats(
    aggregate_w: np.ndarray,
    valid: np.ndarray,
    power_w: np.ndarray,
    power_valid: np.ndarray,
    appliances: list[str],
) -> dict[str, Any]:
    """Aggregate and per-appliance statistics over the valid slots of (training) arrays."""
    agg = Moments()
    per_app = [Moments() for _ in appliances]
    for lo in range(0, len(valid), CHUNK_SLOTS):
        hi = lo + CHUNK_SLOTS
        v = np.asarray(valid[lo:hi])
        agg.add(np.asarray(aggregate_w[lo:hi])[v])
        p, pv = np.asarray(power_w[lo:hi]), np.asarray(power_valid[lo:hi])
        for j, m in enumerate(per_app):
            m.add(p[pv[:, j], j])
    return {
        "aggregate": agg.as_dict(with_max=False),
        "appliances": {a: m.as_dict(with_max=True) for a, m in zip(appliances, per_app, strict=True)},
    }
