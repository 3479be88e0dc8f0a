"""What an appliance model returns (power and power factor per sample) and helpers shared by the models."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.simulate.timeline import DAY_S, HOUR_S

Range = tuple[float, float]  # (low, high) of a uniform draw
SURGE_S = 5.0  # motor inrush is visible in one 5 s reading


@dataclass(frozen=True)
class Load:
    """True power of one load at every sample, and its power factor (scalar or per sample)."""

    power_w: np.ndarray  # (n,)
    pf: float | np.ndarray

    def reactive_var(self) -> np.ndarray:
        """(n,) reactive power implied by the power factor."""
        pf = np.clip(np.asarray(self.pf, dtype=np.float64), 0.05, 1.0)
        return self.power_w * np.sqrt(1.0 - pf**2) / pf


def draw1(rng: np.random.Generator, r: Range) -> float:
    """One uniform draw from a (low, high) range."""
    return float(rng.uniform(r[0], r[1]))


def draws(rng: np.random.Generator, r: Range, size: int) -> np.ndarray:
    """``size`` uniform draws from a (low, high) range."""
    return rng.uniform(r[0], r[1], size)


def merge_spans(starts_s: np.ndarray, ends_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Union of spans [start, end): sorted, non-overlapping; NaN or empty spans dropped."""
    s, e = np.asarray(starts_s, dtype=np.float64), np.asarray(ends_s, dtype=np.float64)
    ok = np.isfinite(s) & np.isfinite(e) & (e > s)
    s, e = s[ok], e[ok]
    if not len(s):
        return s, e
    order = np.argsort(s, kind="stable")
    s, e = s[order], np.maximum.accumulate(e[order])
    new = np.concatenate(([True], s[1:] > e[:-1]))
    last = np.concatenate((np.flatnonzero(new)[1:] - 1, [len(s) - 1]))  # last span of each group
    return s[new], e[last]


def daily(rng: np.random.Generator, n_days: int, prob: float) -> np.ndarray:
    """Bool per day: the habit happens that day."""
    return rng.random(n_days) < prob


def hours(rng: np.random.Generator, lo_h: float, hi_h: float, n: int) -> np.ndarray:
    """``n`` uniform offsets between lo_h and hi_h hours, in seconds."""
    return rng.uniform(lo_h, hi_h, n) * HOUR_S


def day_starts(n_days: int) -> np.ndarray:
    return np.arange(n_days) * DAY_S
