"""Kitchen appliances: kettles, microwaves, rice cookers, induction cookers, coffee machines."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.simulate.loads import Load, Range, daily, day_starts, draw1, draws, hours
from airwatt.simulate.sites import SiteContext
from airwatt.simulate.timeline import HOUR_S, Segments, poisson_times, trim_overlaps


def dinner_time_s(ctx: SiteContext) -> np.ndarray:
    """Per day: when a household eats dinner (after coming home, not before 18:45)."""
    h = ctx.home
    return np.fmax(h.back_s, day_starts(ctx.tl.n_days) + 18 * HOUR_S) + 0.75 * HOUR_S


def _home_meals(
    ctx: SiteContext, rng: np.random.Generator, probs: tuple[float, float, float], lead_h: Range
) -> np.ndarray:
    """Start times of a cooking habit before breakfast, lunch (when home) and dinner, with probabilities."""
    h, n = ctx.home, ctx.tl.n_days
    base = day_starts(n)
    breakfast = np.where(daily(rng, n, probs[0]), h.wake_s + hours(rng, 0.1, 0.5, n), np.nan)
    at_noon = h.home_midday() & daily(rng, n, probs[1])
    lunch = np.where(at_noon, base + 12.5 * HOUR_S - hours(rng, *lead_h, n), np.nan)
    dinner = np.where(daily(rng, n, probs[2]), dinner_time_s(ctx) - hours(rng, *lead_h, n), np.nan)
    t = np.concatenate([breakfast, lunch, dinner])
    return np.sort(t[np.isfinite(t)])


# ---------------------------------------------------------------------------------------------- kettle
@dataclass(frozen=True)
class KettleParams:
    power_w: Range
    boil_s: Range = (90, 270)  # depends on how full it is
    per_day: float = 1.5  # boils per day on average


KETTLE_SEA_HOME = KettleParams((2000, 2400), per_day=1.5)
KETTLE_EU_HOME = KettleParams((2200, 3000), per_day=4.0)
KETTLE_SHOP = KettleParams((2200, 3000), per_day=5.0)
KETTLE_HOME = {"sea": KETTLE_SEA_HOME, "europe": KETTLE_EU_HOME}


def kettle(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """Boils following the site's activity profile; power sags 3 % as the element heats."""
    p = KETTLE_SHOP if not ctx.spec.is_home else KETTLE_HOME[ctx.region]
    per_day = p.per_day * (0.7 + 0.15 * ctx.home.occupants if ctx.spec.is_home else 1.0)
    power_w = draw1(rng, p.power_w)
    starts = poisson_times(ctx.tl, rng, ctx.rate_per_h(per_day))
    starts, dur = trim_overlaps(starts, draws(rng, p.boil_s, len(starts)))
    segs = Segments()
    for t, d in zip(starts, dur, strict=True):
        segs.add(t, d, power_w, end_w=power_w * 0.97)
    return Load(segs.render(ctx.tl), 1.0)


# ------------------------------------------------------------------------------------------- microwave
@dataclass(frozen=True)
class MicrowaveParams:
    power_w: Range  # drawn at full power (magnetron output is about 2/3 of it)
    run_s: Range
    per_day: float
    standby_w: Range = (1.5, 4.0)  # clock display
    full_power_share: float = 0.7  # else a medium setting: magnetron on 14 s of every 24 s
    pf: float = 0.95


MICROWAVE_SEA_HOME = MicrowaveParams((1000, 1500), (30, 300), 1.2)
MICROWAVE_EU_HOME = MicrowaveParams((1000, 1500), (30, 300), 2.0)
MICROWAVE_CAFE = MicrowaveParams((1200, 1800), (30, 180), 10.0)
MICROWAVE_RESTAURANT = MicrowaveParams((1200, 1800), (30, 180), 15.0)


def microwave(ctx: SiteContext, rng: np.random.Generator) -> Load:
    if ctx.spec.is_home:
        p = MICROWAVE_SEA_HOME if ctx.region == "sea" else MICROWAVE_EU_HOME
    else:
        p = MICROWAVE_CAFE if ctx.spec.kind == "cafe" else MICROWAVE_RESTAURANT
    power_w, standby_w = draw1(rng, p.power_w), draw1(rng, p.standby_w)
    starts = poisson_times(ctx.tl, rng, ctx.rate_per_h(p.per_day))
    starts, dur = trim_overlaps(starts, draws(rng, p.run_s, len(starts)))
    full = rng.random(len(starts)) < p.full_power_share
    segs = Segments()
    for t, d, f in zip(starts, dur, full, strict=True):
        segs.add(t, d, power_w - standby_w, period_s=0.0 if f else 24.0, on_s=14.0)
    return Load(segs.render(ctx.tl) + standby_w, p.pf)


# ----------------------------------------------------------------------------------------- rice cooker
@dataclass(frozen=True)
class RiceCookerParams:
    cook_w: Range
    warm_w: Range  # keep-warm element
    cook_s: Range  # the last 20 % simmers: element on 8 s of every 20 s
    pf: float = 1.0


RICE_HOME = RiceCookerParams((500, 1000), (35, 70), (1500, 2400))
RICE_SHOP = RiceCookerParams((1000, 1400), (60, 120), (2100, 3000))


def _rice_events(ctx: SiteContext, rng: np.random.Generator, cook_s: Range) -> tuple[np.ndarray, np.ndarray]:
    """(starts, keep-warm until) per cooking: before meals at home; at opening and for dinner at shops."""
    n = ctx.tl.n_days
    base = day_starts(n)
    if ctx.spec.is_home:
        starts = _home_meals(ctx, rng, (0.2, 0.3, 0.85), (cook_s[1] / HOUR_S, 1.0))
        return starts, starts + hours(rng, 1.0, 4.5, len(starts))
    s = ctx.shop
    morning = s.prep_s + hours(rng, 0, 0.3, n)
    lunch_end = np.fmin(
        np.where(np.isfinite(s.break_start_s), s.break_start_s, s.close_s), base + 14.5 * HOUR_S
    )
    if ctx.spec.kind == "cafe":
        return morning, lunch_end
    evening = np.where(s.close_s > base + 18 * HOUR_S, base + 16.5 * HOUR_S + hours(rng, 0, 1, n), np.nan)
    starts, ends = np.concatenate([morning, evening]), np.concatenate([lunch_end, s.close_s])
    ok = np.isfinite(starts) & np.isfinite(ends)
    return starts[ok], ends[ok]


def rice_cooker(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """Cook at full power, simmer in pulses, then keep warm at a few tens of watts until unplugged."""
    p = RICE_HOME if ctx.spec.is_home else RICE_SHOP
    cook_w, warm_w = draw1(rng, p.cook_w), draw1(rng, p.warm_w)
    starts, until = _rice_events(ctx, rng, p.cook_s)
    starts, total = trim_overlaps(starts, until - starts)
    cook = np.minimum(draws(rng, p.cook_s, len(starts)), total)
    segs = Segments()
    for t, c, tot in zip(starts, cook, total, strict=True):
        segs.add(t, 0.8 * c, cook_w)
        segs.add(t + 0.8 * c, 0.2 * c, cook_w, alt_w=warm_w, period_s=20.0, on_s=8.0)
        if tot > c:
            segs.add(t + c, tot - c, warm_w)
    return Load(segs.render(ctx.tl), p.pf)


# ------------------------------------------------------------------------------------ induction cooker
@dataclass(frozen=True)
class InductionParams:
    max_w: Range
    session_s: Range
    step_s: Range = (120, 480)  # the cook changes the level this often
    pulse_on_w: float = 1100.0  # below this level the coil pulses at this power...
    pulse_period_s: float = 8.0  # ...with this period
    pf: float = 0.98


INDUCTION_HOME = InductionParams((1800, 2200), (600, 2700))
INDUCTION_SHOP = InductionParams((2500, 3400), (300, 1500))
LEVELS = np.array([0.15, 0.3, 0.5, 0.7, 1.0])
LEVEL_WEIGHTS = np.array([0.15, 0.25, 0.25, 0.2, 0.15])


def _induction_session(
    segs: Segments, rng: np.random.Generator, p: InductionParams, max_w: float, start_s: float, dur_s: float
) -> None:
    """Level steps, the first at full power (boil); low levels pulse."""
    t, end, level = start_s, start_s + dur_s, 1.0
    while t < end:
        step = min(draw1(rng, p.step_s), end - t)
        power = max_w * level
        if power < p.pulse_on_w:
            on_s = p.pulse_period_s * power / p.pulse_on_w
            segs.add(t, step, p.pulse_on_w, period_s=p.pulse_period_s, on_s=on_s)
        else:
            segs.add(t, step, power)
        t += step
        level = float(rng.choice(LEVELS, p=LEVEL_WEIGHTS))


def induction_cooker(ctx: SiteContext, rng: np.random.Generator) -> Load:
    p = INDUCTION_HOME if ctx.spec.is_home else INDUCTION_SHOP
    max_w = draw1(rng, p.max_w)
    if ctx.spec.is_home:
        starts = _home_meals(ctx, rng, (0.3, 0.35, 0.7), (0.3, 0.8))
    else:
        starts = poisson_times(ctx.tl, rng, ctx.rate_per_h(25.0 if ctx.spec.kind == "restaurant" else 6.0))
    starts, dur = trim_overlaps(starts, draws(rng, p.session_s, len(starts)))
    segs = Segments()
    for t, d in zip(starts, dur, strict=True):
        _induction_session(segs, rng, p, max_w, t, d)
    return Load(segs.render(ctx.tl), p.pf)


# -------------------------------------------------------------------------------------- coffee machine
@dataclass(frozen=True)
class CoffeeParams:
    boiler_w: Range
    warmup_s: Range
    idle_every_s: Range  # keeping the boiler hot: a short heat every few minutes
    idle_on_s: Range
    reheat_s: Range  # after each shot
    pump_w: Range = (40, 60)
    shot_s: float = 28.0
    standby_w: float = 1.0
    pf: float = 1.0


COFFEE_SHOP = CoffeeParams((2000, 3200), (900, 1800), (150, 300), (15, 40), (20, 45))
COFFEE_HOME = CoffeeParams((1200, 1450), (60, 120), (80, 100), (10, 15), (15, 25))


def _coffee_days(ctx: SiteContext, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(machine on, machine off, shot times): opening hours and customers at shops; a morning (and some
    weekend afternoon) session at home with one or two cups."""
    tl, n = ctx.tl, ctx.tl.n_days
    if not ctx.spec.is_home:
        s = ctx.shop
        shots_per_day = draw1(rng, (100, 250) if ctx.spec.kind == "cafe" else (20, 60))
        shots = poisson_times(tl, rng, ctx.rate_per_h(shots_per_day))
        on, off = s.prep_s, s.close_s + hours(rng, 0, 0.5, n)
    else:
        h = ctx.home
        morning = np.where(daily(rng, n, 0.8), h.wake_s + hours(rng, 0.08, 0.5, n), np.nan)
        weekend = tl.is_weekend(tl.days) & daily(rng, n, 0.4)
        afternoon = np.where(weekend, day_starts(n) + hours(rng, 15, 16, n), np.nan)
        on = np.concatenate([morning, afternoon])
        on = np.sort(on[np.isfinite(on)])
        off = on + hours(rng, 0.25, 0.5, len(on))
        cups = rng.integers(1, 3, len(on))
        shots = np.sort(np.concatenate([t + 120 + 90 * np.arange(c) for t, c in zip(on, cups, strict=True)]))
    ok = np.isfinite(on) & np.isfinite(off)
    return on[ok], off[ok], shots


def coffee_machine(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """Boiler warm-up, thermostat pulses while idle, a pump and a boiler reheat per shot."""
    p = COFFEE_SHOP if not ctx.spec.is_home else COFFEE_HOME
    boiler_w, pump_w = draw1(rng, p.boiler_w), draw1(rng, p.pump_w)
    on, off, shots = _coffee_days(ctx, rng)
    heater = Segments()
    for t0, t1 in zip(on, off, strict=True):
        warm = draw1(rng, p.warmup_s)
        heater.add(t0, warm, 1.0)
        pulses = np.arange(t0 + warm, t1, draw1(rng, p.idle_every_s))
        heater.add_many(pulses, draws(rng, p.idle_on_s, len(pulses)), 1.0)
    heater.add_many(shots + 10.0, draws(rng, p.reheat_s, len(shots)), 1.0)
    pump = Segments()
    pump.add_many(shots, np.full(len(shots), p.shot_s), pump_w)
    power = heater.render_mask(ctx.tl) * boiler_w + pump.render(ctx.tl) + p.standby_w
    return Load(power, p.pf)
