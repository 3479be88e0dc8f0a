"""The sampling grid of one device in UTC and in the site's local wall-clock time, and event rendering.

Appliance models think in local wall-clock seconds ("kettle at 07:10 on day 3") and in durations in seconds;
this module maps both onto sample indices of the UTC grid. Local time is counted in seconds since local
midnight of the first local day the window touches, so ``day * 86400 + time_of_day_s`` names a moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DAY_S = 86_400.0
HOUR_S = 3_600.0
MINUTE_S = 60.0


@dataclass(frozen=True)
class Timeline:
    """The 5 s grid of one device: ``n`` samples from ``start`` (UTC), with local wall-clock times."""

    start: pd.Timestamp
    n: int
    interval_s: float
    timezone: str
    local_s: np.ndarray  # (n,) wall-clock seconds since local midnight of day 0; jumps back at DST fall-back
    weekday0: int  # Monday = 0, of local day 0
    months: np.ndarray  # (n_days,) calendar month of each local day
    day_of_year: np.ndarray  # (n_days,)
    _mono_s: np.ndarray = field(repr=False)  # local_s made non-decreasing, for searchsorted

    @classmethod
    def build(cls, start: pd.Timestamp, n: int, interval_s: float, timezone: str) -> Timeline:
        utc = pd.date_range(start, periods=n, freq=pd.Timedelta(seconds=interval_s))
        local_ms = (
            utc.tz_convert(timezone).tz_localize(None).to_numpy(dtype="datetime64[ms]").astype(np.int64)
        )
        midnight0_ms = (local_ms[0] // 86_400_000) * 86_400_000
        local_s = (local_ms - midnight0_ms) / 1000.0
        n_days = int(local_s[-1] // DAY_S) + 2  # one spare day so evening routines can run past midnight
        days = pd.date_range(pd.Timestamp(midnight0_ms, unit="ms"), periods=n_days, freq="D")
        return cls(
            start=pd.Timestamp(start),
            n=n,
            interval_s=float(interval_s),
            timezone=timezone,
            local_s=local_s,
            weekday0=int(days[0].weekday()),
            months=days.month.to_numpy(),
            day_of_year=days.day_of_year.to_numpy(),
            _mono_s=np.maximum.accumulate(local_s),
        )

    @property
    def n_days(self) -> int:
        return len(self.months)

    @property
    def days(self) -> np.ndarray:
        return np.arange(self.n_days)

    def weekday(self, day: np.ndarray | int) -> np.ndarray:
        return (self.weekday0 + np.asarray(day)) % 7

    def is_weekend(self, day: np.ndarray | int) -> np.ndarray:
        return self.weekday(day) >= 5

    @property
    def first_s(self) -> float:
        return float(self.local_s[0])

    @property
    def end_s(self) -> float:
        """Local time just after the last sample."""
        return float(self._mono_s[-1] + self.interval_s)

    def hour_of_day(self) -> np.ndarray:
        """(n,) local hour of each sample, 0 <= h < 24."""
        return (self.local_s % DAY_S) / HOUR_S

    def index_at(self, t_local_s: np.ndarray) -> np.ndarray:
        """Index of the first sample at or after each local time; negative before the window, n after it."""
        t = np.asarray(t_local_s, dtype=np.float64)
        idx = np.searchsorted(self._mono_s, t, side="left").astype(np.int64)
        before = t < self._mono_s[0]
        if before.any():
            idx[before] = np.floor((t[before] - self._mono_s[0]) / self.interval_s).astype(np.int64)
        return idx


def spans_to_indices(
    tl: Timeline, start_s: np.ndarray, duration_s: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Samples covered by spans [start, start + duration) of local time: (sample index, seconds since the
    span's start, span number), clipped to the window. Consecutive spans tile without overlap."""
    i0 = tl.index_at(start_s)
    i1 = tl.index_at(np.asarray(start_s) + np.asarray(duration_s))
    lengths = np.maximum(i1 - i0, 0)
    total = int(lengths.sum())
    span = np.repeat(np.arange(len(lengths)), lengths)
    first = np.cumsum(lengths) - lengths
    pos = np.arange(total) - np.repeat(first, lengths)
    idx = i0[span] + pos
    keep = (idx >= 0) & (idx < tl.n)
    return idx[keep], pos[keep] * tl.interval_s, span[keep]


class Segments:
    """A list of power segments in local time, rendered to a (n,) power array in one vectorised pass.

    A segment draws ``level_w`` (ramping linearly to ``end_w`` when given); with ``period_s`` > 0 it pulses:
    on for the first ``on_s`` of every period, ``alt_w`` otherwise. Overlapping segments add up.
    """

    def __init__(self) -> None:
        self._cols: dict[str, list[float]] = {
            k: [] for k in ("start", "dur", "level", "end", "alt", "period", "on")
        }

    def __len__(self) -> int:
        return len(self._cols["start"])

    def add(
        self,
        start_s: float,
        duration_s: float,
        level_w: float,
        *,
        end_w: float | None = None,
        alt_w: float = 0.0,
        period_s: float = 0.0,
        on_s: float = 0.0,
    ) -> None:
        c = self._cols
        c["start"].append(start_s)
        c["dur"].append(duration_s)
        c["level"].append(level_w)
        c["end"].append(level_w if end_w is None else end_w)
        c["alt"].append(alt_w)
        c["period"].append(period_s)
        c["on"].append(on_s)

    def add_many(self, start_s: np.ndarray, duration_s: np.ndarray, level_w: np.ndarray | float) -> None:
        """Constant-power segments, vectorised."""
        start_s = np.asarray(start_s, dtype=np.float64)
        level = np.broadcast_to(np.asarray(level_w, dtype=np.float64), start_s.shape)
        c = self._cols
        c["start"].extend(start_s.tolist())
        c["dur"].extend(np.broadcast_to(duration_s, start_s.shape).tolist())
        c["level"].extend(level.tolist())
        c["end"].extend(level.tolist())
        zeros = [0.0] * len(start_s)
        c["alt"].extend(zeros)
        c["period"].extend(zeros)
        c["on"].extend(zeros)

    def render(self, tl: Timeline) -> np.ndarray:
        """(n,) power in W: the sum of all segments."""
        if not len(self):
            return np.zeros(tl.n)
        a = {k: np.asarray(v, dtype=np.float64) for k, v in self._cols.items()}
        idx, pos_s, seg = spans_to_indices(tl, a["start"], a["dur"])
        dur = a["dur"][seg]
        frac = np.divide(pos_s, dur, out=np.zeros_like(pos_s), where=dur > 0)
        value = a["level"][seg] + (a["end"][seg] - a["level"][seg]) * frac
        period = a["period"][seg]
        pulsing = period > 0
        if pulsing.any():
            off = pulsing & (np.mod(pos_s, np.where(pulsing, period, 1.0)) >= a["on"][seg])
            value = np.where(off, a["alt"][seg], value)
        return np.bincount(idx, weights=value, minlength=tl.n)

    def render_mask(self, tl: Timeline) -> np.ndarray:
        """(n,) bool: inside at least one segment whose power is positive (union, for thermostats)."""
        return self.render(tl) > 0


def trim_overlaps(start_s: np.ndarray, duration_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort spans by start and cut each one short where the next begins (one appliance does one thing)."""
    order = np.argsort(start_s, kind="stable")
    s, d = np.asarray(start_s)[order], np.asarray(duration_s)[order]
    if len(s) > 1:
        d = d.copy()
        d[:-1] = np.minimum(d[:-1], np.diff(s))
    return s, d


def poisson_times(tl: Timeline, rng: np.random.Generator, rate_per_h: np.ndarray) -> np.ndarray:
    """Event times (local s, sorted) of a Poisson process whose rate is given per local minute.

    ``rate_per_h`` has shape (n_days * 1440,): events per hour in each minute of each local day.
    """
    counts = rng.poisson(np.asarray(rate_per_h) / 60.0)
    minute_start = np.repeat(np.arange(len(counts)) * MINUTE_S, counts)
    return np.sort(minute_start + rng.uniform(0, MINUTE_S, size=len(minute_start)))


def minute_grid(tl: Timeline) -> np.ndarray:
    """Local time (s) of every minute of every local day: shape (n_days * 1440,)."""
    return np.arange(tl.n_days * 1440) * MINUTE_S


def bumps(t_s: np.ndarray, centers_s: np.ndarray, width_s: float) -> np.ndarray:
    """Sum of Gaussian bumps (height 1) at ``centers_s``: a smooth daily activity profile."""
    c = np.asarray(centers_s, dtype=np.float64)
    c = c[np.isfinite(c)]
    if not len(c):
        return np.zeros_like(t_s, dtype=np.float64)
    out = np.zeros_like(t_s, dtype=np.float64)
    for ci in c:  # one pass per anchor (a few per day), vectorised over the minutes
        lo, hi = np.searchsorted(t_s, [ci - 4 * width_s, ci + 4 * width_s])
        out[lo:hi] += np.exp(-0.5 * ((t_s[lo:hi] - ci) / width_s) ** 2)
    return out


def smooth_noise(tl: Timeline, rng: np.random.Generator, knot_s: float, sigma: float) -> np.ndarray:
    """(n,) a slowly varying zero-mean signal: Gaussian knots every ``knot_s``, linearly interpolated."""
    t = np.arange(tl.n) * tl.interval_s
    k = int(t[-1] // knot_s) + 2 if tl.n else 2
    knots = rng.normal(0.0, sigma, size=k)
    return np.interp(t, np.arange(k) * knot_s, knots)


def random_walk(
    tl: Timeline, rng: np.random.Generator, knot_s: float, step: float, pull: float
) -> np.ndarray:
    """(n,) a mean-reverting random walk (AR(1) knots every ``knot_s``), linearly interpolated."""
    t = np.arange(tl.n) * tl.interval_s
    k = int(t[-1] // knot_s) + 2 if tl.n else 2
    steps = rng.normal(0.0, step, size=k)
    knots = np.empty(k)
    x = 0.0
    for i in range(k):  # k is small (one knot per several minutes)
        x = (1.0 - pull) * x + steps[i]
        knots[i] = x
    return np.interp(t, np.arange(k) * knot_s, knots)
