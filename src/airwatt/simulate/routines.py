"""Daily and weekly routines in the site's local time: when people wake, leave, come back and sleep (homes),
when a cafe or restaurant prepares, opens, closes and is busy. All times are local seconds (see timeline.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.simulate.timeline import DAY_S, HOUR_S, Timeline, bumps, minute_grid
from airwatt.simulate.zones import Zone


def in_intervals(t_s: np.ndarray, starts_s: np.ndarray, ends_s: np.ndarray) -> np.ndarray:
    """Bool per time: inside any of the (possibly overlapping) intervals [start, end)."""
    ok = np.isfinite(starts_s) & np.isfinite(ends_s) & (ends_s > starts_s)
    s, e = np.sort(starts_s[ok]), np.sort(ends_s[ok])
    return (np.searchsorted(s, t_s, side="right") - np.searchsorted(e, t_s, side="right")) > 0


def sun_times(tl: Timeline, zone: Zone) -> tuple[np.ndarray, np.ndarray]:
    """(sunrise_s, sunset_s) per local day: day length follows the season (northern hemisphere)."""
    day_len_h = 12.0 + zone.day_length_amp_h * np.cos(2 * np.pi * (tl.day_of_year - 172) / 365.25)
    summer_time = zone.summer_time & (tl.months >= 4) & (tl.months <= 10)  # roughly April..October
    noon_h = zone.solar_noon_h + summer_time
    base = tl.days * DAY_S
    return base + (noon_h - day_len_h / 2) * HOUR_S, base + (noon_h + day_len_h / 2) * HOUR_S


@dataclass(frozen=True)
class HomeRoutine:
    """One household's days: absolute local seconds per local day (NaN: does not happen that day)."""

    occupants: int
    wake_s: np.ndarray
    leave_s: np.ndarray  # NaN when someone stays home
    back_s: np.ndarray
    sleep_s: np.ndarray  # may fall after midnight (> next day's 00:00)
    sunrise_s: np.ndarray
    sunset_s: np.ndarray

    def home_awake(self, t_s: np.ndarray) -> np.ndarray:
        """Bool per local time: someone is at home and awake."""
        leave = np.where(np.isfinite(self.leave_s), self.leave_s, self.sleep_s)
        back = np.where(np.isfinite(self.back_s), self.back_s, self.sleep_s)
        starts = np.concatenate([self.wake_s, back])
        ends = np.concatenate([leave, self.sleep_s])
        return in_intervals(t_s, starts, ends)

    def home_midday(self) -> np.ndarray:
        """Bool per day: someone is at home around noon."""
        noon = np.arange(len(self.wake_s)) * DAY_S + 12.5 * HOUR_S
        return ~((self.leave_s <= noon) & (self.back_s > noon))

    def activity_per_minute(self, tl: Timeline) -> np.ndarray:
        """(n_days * 1440,) relative kitchen activity: peaks after waking, at lunch at home, before dinner."""
        t = minute_grid(tl)
        lunch = np.where(self.home_midday(), np.arange(tl.n_days) * DAY_S + 12.5 * HOUR_S, np.nan)
        dinner = np.fmax(self.back_s, np.arange(tl.n_days) * DAY_S + 18.0 * HOUR_S) + 0.75 * HOUR_S
        profile = (
            bumps(t, self.wake_s + 0.4 * HOUR_S, 0.5 * HOUR_S)
            + 0.6 * bumps(t, lunch, 0.6 * HOUR_S)
            + bumps(t, dinner, 0.8 * HOUR_S)
            + 0.15
        )
        return profile * self.home_awake(t)


def draw_home_routine(tl: Timeline, rng: np.random.Generator, zone: Zone) -> HomeRoutine:
    """A household: 1-5 occupants; 70 % go out to work on weekdays; later, irregular weekends."""
    n_days = tl.n_days
    base = tl.days * DAY_S
    weekend = tl.is_weekend(tl.days)
    occupants = int(rng.choice([1, 2, 3, 4, 5], p=[0.15, 0.3, 0.25, 0.2, 0.1]))
    works_away = rng.random() < 0.7
    wake_h = np.clip(np.where(weekend, rng.normal(8.0, 0.7, n_days), rng.normal(6.4, 0.35, n_days)), 5, 11)
    away = works_away & ~weekend & (rng.random(n_days) > 0.05)
    outing = weekend & (rng.random(n_days) < 0.35)
    leave_h = np.where(
        away,
        wake_h + rng.uniform(0.75, 1.5, n_days),
        np.where(outing, rng.uniform(10, 13, n_days), np.nan),
    )
    back_h = np.where(
        away,
        np.clip(rng.normal(18.2, 0.6, n_days), 16.5, 21),
        np.where(outing, leave_h + rng.uniform(2, 6, n_days), np.nan),
    )
    sleep_h = np.clip(np.where(weekend, rng.normal(23.6, 0.6, n_days), rng.normal(23.0, 0.5, n_days)), 21, 26)
    sunrise, sunset = sun_times(tl, zone)
    return HomeRoutine(
        occupants=occupants,
        wake_s=base + wake_h * HOUR_S,
        leave_s=base + leave_h * HOUR_S,
        back_s=base + back_h * HOUR_S,
        sleep_s=base + sleep_h * HOUR_S,
        sunrise_s=sunrise,
        sunset_s=sunset,
    )


@dataclass(frozen=True)
class ShopRoutine:
    """A cafe's or restaurant's days: absolute local seconds per local day (NaN on closed days)."""

    kind: str  # "cafe" | "restaurant"
    prep_s: np.ndarray  # staff arrive, machines warm up
    open_s: np.ndarray
    close_s: np.ndarray
    leave_s: np.ndarray  # last staff leave after cleaning
    break_start_s: np.ndarray  # afternoon break (restaurants), NaN when none
    break_end_s: np.ndarray
    sunrise_s: np.ndarray
    sunset_s: np.ndarray

    def is_open(self, t_s: np.ndarray) -> np.ndarray:
        """Bool per local time: open to customers (outside the afternoon break)."""
        has_break = np.isfinite(self.break_start_s)
        starts = np.concatenate([self.open_s, self.break_end_s])
        ends = np.concatenate(
            [np.where(has_break, self.break_start_s, self.close_s), np.where(has_break, self.close_s, np.nan)]
        )
        return in_intervals(t_s, starts, ends)

    def staffed(self, t_s: np.ndarray) -> np.ndarray:
        """Bool per local time: staff on site (preparation to cleaning)."""
        return in_intervals(t_s, self.prep_s, self.leave_s)

    def busy_per_minute(self, tl: Timeline, weekend_factor: float) -> np.ndarray:
        """(n_days * 1440,) customers relative to the daily peak (about 0..1.3)."""
        t = minute_grid(tl)
        base = tl.days * DAY_S
        if self.kind == "cafe":
            peaks = [(8.5, 1.0, 1.0), (12.75, 0.8, 0.8), (15.5, 1.0, 0.45)]
        else:
            peaks = [(12.5, 0.8, 1.0), (19.3, 1.0, 1.0)]
        profile = 0.12 + sum(h * bumps(t, base + c * HOUR_S, w * HOUR_S) for c, w, h in peaks)
        weekend = tl.is_weekend((t // DAY_S).astype(np.int64))
        return profile * np.where(weekend, weekend_factor, 1.0) * self.is_open(t)


def draw_shop_routine(tl: Timeline, rng: np.random.Generator, kind: str, zone: Zone) -> ShopRoutine:
    """Opening hours: cafes 06:30-08:30 to 17:00-22:00, restaurants 10:30-11:30 to 21:00-23:00, some with an
    afternoon break; half of them close one day a week."""
    n_days = tl.n_days
    base = tl.days * DAY_S
    if kind == "cafe":
        open_h = rng.choice([6.5, 7.0, 7.5, 8.0, 8.5])
        close_h = rng.choice([17.0, 18.0, 19.0, 20.0, 22.0])
        has_break = False
    else:
        open_h = rng.choice([10.5, 11.0, 11.5])
        close_h = rng.choice([21.0, 21.5, 22.0, 23.0])
        has_break = rng.random() < 0.35
    closed_weekday = int(rng.choice([0, 1, 6])) if rng.random() < 0.5 else -1
    closed = tl.weekday(tl.days) == closed_weekday
    jitter = rng.normal(0, 0.05, n_days)
    open_s = np.where(closed, np.nan, base + (open_h + jitter) * HOUR_S)
    close_s = np.where(closed, np.nan, base + (close_h + rng.normal(0, 0.1, n_days)) * HOUR_S)
    prep_s = open_s - rng.uniform(0.5, 1.25) * HOUR_S
    leave_s = close_s + rng.uniform(0.4, 0.9) * HOUR_S
    break_start = np.where(has_break & ~closed, base + 14.5 * HOUR_S, np.nan)
    break_end = np.where(has_break & ~closed, base + 17.0 * HOUR_S, np.nan)
    sunrise, sunset = sun_times(tl, zone)
    return ShopRoutine(
        kind=kind,
        prep_s=prep_s,
        open_s=open_s,
        close_s=close_s,
        leave_s=leave_s,
        break_start_s=break_start,
        break_end_s=break_end,
        sunrise_s=sunrise,
        sunset_s=sunset,
    )
