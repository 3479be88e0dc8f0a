"""Household appliances: washing machines (multi-phase programmes), water heaters, TVs, lighting."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.simulate.loads import Load, Range, daily, day_starts, draw1, draws, hours, merge_spans
from airwatt.simulate.sites import SiteContext
from airwatt.simulate.timeline import HOUR_S, Segments, poisson_times, smooth_noise, trim_overlaps


# ------------------------------------------------------------------------------------- washing machine
@dataclass(frozen=True)
class WashParams:
    heat_w: Range = (1800, 2200)  # water heating element
    heat_s: Range = (600, 1500)  # 40-60 degC programmes
    motor_w: Range = (120, 250)  # drum motor while washing: 11 s turning, 5 s pause
    spin_w: Range = (300, 550)  # final spin
    fill_s: Range = (120, 240)
    wash_s: Range = (900, 1800)
    rinse_s: Range = (300, 480)
    spin_s: Range = (300, 600)
    fill_w: float = 15.0  # inlet valve and electronics
    pump_w: float = 35.0  # drain pump
    idle_w: float = 8.0  # electronics between drum turns
    pf_motor: float = 0.65


WASH = WashParams()


@dataclass(frozen=True)
class WashingMachine:
    """One machine's powers, drawn once per site."""

    heat_w: float
    motor_w: float
    spin_w: float

    @classmethod
    def draw(cls, rng: np.random.Generator, p: WashParams = WASH) -> WashingMachine:
        return cls(draw1(rng, p.heat_w), draw1(rng, p.motor_w), draw1(rng, p.spin_w))


def add_wash_cycle(
    segs: Segments,
    start_s: float,
    rng: np.random.Generator,
    m: WashingMachine,
    *,
    heat: bool,
    p: WashParams = WASH,
) -> float:
    """Fill, heat (optional, drum turning now and then), wash, drain, two rinses with short spins, final
    spin. Returns the end time."""
    t = start_s
    fill = draw1(rng, p.fill_s)
    segs.add(t, fill, p.fill_w)
    t += fill
    if heat:
        d = draw1(rng, p.heat_s)
        segs.add(t, d, m.heat_w)
        segs.add(t, d, 0.6 * m.motor_w, period_s=60.0, on_s=12.0)
        t += d
    d = draw1(rng, p.wash_s)
    segs.add(t, d, m.motor_w, alt_w=p.idle_w, period_s=16.0, on_s=11.0)
    t += d
    for _ in range(2):  # rinses
        segs.add(t, 75.0, p.pump_w)
        t += 75.0
        d = 0.6 * draw1(rng, p.fill_s)
        segs.add(t, d, p.fill_w)
        t += d
        d = draw1(rng, p.rinse_s)
        segs.add(t, d, m.motor_w, alt_w=p.idle_w, period_s=16.0, on_s=11.0)
        t += d
        d = draw1(rng, (90, 150))
        segs.add(t, d, 150.0, end_w=0.6 * m.spin_w)
        t += d
    segs.add(t, 180.0, 150.0, end_w=m.spin_w)  # spin ramps up
    t += 180.0
    d = draw1(rng, p.spin_s)
    segs.add(t, d, m.spin_w)
    return t + d


def washing_machine(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """Homes: ~0.3-0.8 washes a day (more at weekends and in bigger households), in the morning when someone
    is home, else in the evening; back-to-back loads on busy days. Shops: one load after opening."""
    n = ctx.tl.n_days
    machine = WashingMachine.draw(rng)
    heat_share = 0.85 if ctx.region == "europe" else 0.45
    if ctx.spec.is_home:
        h = ctx.home
        weekend = ctx.tl.is_weekend(ctx.tl.days)
        count = rng.poisson(np.where(weekend, 0.9, 0.45) * (0.5 + 0.25 * h.occupants))
        morning = h.home_midday() | weekend
        first = np.where(
            morning,
            h.wake_s + hours(rng, 0.5, 2.5, n),
            np.fmax(h.back_s, day_starts(n) + 18 * HOUR_S) + hours(rng, 0.3, 1.5, n),
        )
    else:
        count = daily(rng, n, 0.7).astype(np.int64)
        first = ctx.shop.prep_s + hours(rng, 0.2, 1.0, n)
    segs = Segments()
    for day in np.flatnonzero((count > 0) & np.isfinite(first)):
        t = first[day]
        for _ in range(int(count[day])):
            t = add_wash_cycle(segs, t, rng, machine, heat=bool(rng.random() < heat_share))
            t += draw1(rng, (300, 1800))
    power = segs.render(ctx.tl)
    return Load(power, np.where(power > 1000, 0.99, WASH.pf_motor))


# ---------------------------------------------------------------------------------------- water heater
@dataclass(frozen=True)
class WaterHeaterParams:
    instant_w: Range = (3300, 4500)  # tankless shower heater (South-East Asia)
    storage_home_w: Range = (2000, 3000)  # tank heater (Europe)
    storage_shop_w: Range = (3000, 4500)
    shower_s: Range = (240, 720)
    standby_every_s: Range = (4 * HOUR_S, 8 * HOUR_S)  # tank heat loss: a short reheat every few hours
    standby_reheat_s: Range = (180, 480)
    reheat_per_shower_s: Range = (1.5, 2.5)  # tank reheat time per second of shower


WATER = WaterHeaterParams()


def showers(ctx: SiteContext, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(starts, durations): each occupant showers some mornings (55 %) and most evenings (75 %), one after
    the other."""
    h, n = ctx.home, ctx.tl.n_days
    evening0 = np.fmax(h.back_s, day_starts(n) + 18 * HOUR_S) + hours(rng, 0.3, 2.0, n)
    starts = []
    for person in range(h.occupants):
        gap = person * hours(rng, 0.2, 0.35, n)
        starts.append(np.where(daily(rng, n, 0.55), h.wake_s + hours(rng, 0, 0.3, n) + gap, np.nan))
        starts.append(np.where(daily(rng, n, 0.75), evening0 + gap, np.nan))
    t = np.concatenate(starts)
    t = t[np.isfinite(t)]
    return trim_overlaps(t, draws(rng, WATER.shower_s, len(t)))


def _storage_reheats(ctx: SiteContext, rng: np.random.Generator, draws_s: tuple) -> Segments:
    """Thermostat on-spans of a tank heater: standby losses plus a reheat after each draw of hot water."""
    tl = ctx.tl
    every = draw1(rng, WATER.standby_every_s)
    standby = np.arange(tl.first_s - rng.uniform(0, every), tl.end_s, every)
    heater = Segments()
    heater.add_many(standby, draws(rng, WATER.standby_reheat_s, len(standby)), 1.0)
    starts, durations = draws_s
    heater.add_many(starts + 120.0, durations * draws(rng, WATER.reheat_per_shower_s, len(starts)), 1.0)
    return heater


def water_heater(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """Tankless heaters at South-East Asian homes (on only while the shower runs); tank heaters in Europe
    and at shops (thermostat: standby reheats and reheats after use)."""
    if ctx.spec.is_home:
        starts, durations = showers(ctx, rng)
        if ctx.region == "sea":
            flow = rng.uniform(0.9, 1.0, len(starts))  # power follows the flow setting a little
            segs = Segments()
            segs.add_many(starts, durations, draw1(rng, WATER.instant_w) * flow)
            return Load(segs.render(ctx.tl), 1.0)
        power_w = draw1(rng, WATER.storage_home_w)
    else:
        per_day = 15.0 if ctx.spec.kind == "restaurant" else 6.0
        starts = poisson_times(ctx.tl, rng, ctx.rate_per_h(per_day))
        durations = draws(rng, (150, 450), len(starts))
        power_w = draw1(rng, WATER.storage_shop_w)
    heater = _storage_reheats(ctx, rng, (starts, durations))
    return Load(heater.render_mask(ctx.tl) * power_w, 1.0)


# -------------------------------------------------------------------------------------------------- tv
@dataclass(frozen=True)
class TvParams:
    on_w: Range
    standby_w: Range = (0.3, 1.0)
    content_sigma: float = 0.07  # brightness of the picture moves power by a few percent
    pf: float = 0.93


TV_HOME = TvParams((50, 150))
TV_SHOP = TvParams((80, 200))


def tv_sessions(ctx: SiteContext, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = ctx.tl.n_days
    base = day_starts(n)
    if not ctx.spec.is_home:
        s = ctx.shop
        return merge_spans(np.where(daily(rng, n, 0.9), s.open_s, np.nan), s.close_s)
    h = ctx.home
    evening = np.where(
        daily(rng, n, 0.85), np.fmax(h.back_s, base + 18 * HOUR_S) + hours(rng, 0, 1, n), np.nan
    )
    morning = np.where(daily(rng, n, 0.3), h.wake_s + hours(rng, 0, 0.3, n), np.nan)
    noon = np.where(h.home_midday() & daily(rng, n, 0.5), base + hours(rng, 12.5, 14.5, n), np.nan)
    starts = np.concatenate([evening, morning, noon])
    ends = np.concatenate(
        [h.sleep_s - hours(rng, 0, 0.5, n), morning + hours(rng, 0.3, 1, n), noon + hours(rng, 1, 3, n)]
    )
    return merge_spans(starts, ends)


def tv(ctx: SiteContext, rng: np.random.Generator) -> Load:
    p = TV_HOME if ctx.spec.is_home else TV_SHOP
    on_w, standby_w = draw1(rng, p.on_w), draw1(rng, p.standby_w)
    starts, ends = tv_sessions(ctx, rng)
    sessions = Segments()
    sessions.add_many(starts, ends - starts, 1.0)
    on = sessions.render_mask(ctx.tl)
    content = 1.0 + np.clip(smooth_noise(ctx.tl, rng, 20.0, p.content_sigma), -0.25, 0.25)
    return Load(np.where(on, on_w * content, standby_w), p.pf)


# -------------------------------------------------------------------------------------------- lighting
@dataclass(frozen=True)
class LightingParams:
    groups: tuple[int, int]  # number of separately switched groups (rooms)
    group_w: Range
    signage_w: Range = (0.0, 0.0)  # shops: sign lit from dusk to closing
    pf: float = 0.9


LIGHTING_HOME = LightingParams((2, 6), (8, 40))
LIGHTING_SHOP = LightingParams((3, 7), (40, 150), signage_w=(30, 120))


def lighting(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """Homes: rooms lit from dusk (or coming home) to bedtime, and before sunrise in the morning. Shops:
    lit while staffed, the sign from dusk to closing."""
    n = ctx.tl.n_days
    p = LIGHTING_HOME if ctx.spec.is_home else LIGHTING_SHOP
    segs = Segments()
    for _ in range(int(rng.integers(*p.groups))):
        w = draw1(rng, p.group_w)
        if ctx.spec.is_home:
            h = ctx.home
            dusk = h.sunset_s - hours(rng, 0, 0.5, n)
            on = np.where(np.isfinite(h.back_s), np.fmax(dusk, h.back_s), dusk) + hours(rng, 0, 1, n)
            off = h.sleep_s - hours(rng, 0, 1, n)
            dark_morning = (h.wake_s < h.sunrise_s) & daily(rng, n, 0.8)
            m_on = np.where(dark_morning, h.wake_s + hours(rng, 0, 0.15, n), np.nan)
            m_off = np.fmin(
                h.sunrise_s + hours(rng, 0, 0.5, n), np.where(np.isfinite(h.leave_s), h.leave_s, np.inf)
            )
            starts, ends = merge_spans(
                np.concatenate([np.where(daily(rng, n, 0.9), on, np.nan), m_on]), np.concatenate([off, m_off])
            )
        else:
            s = ctx.shop
            starts, ends = merge_spans(s.prep_s + hours(rng, 0, 0.15, n), s.leave_s - hours(rng, 0, 0.15, n))
        segs.add_many(starts, ends - starts, w)
    if p.signage_w[1] > 0:
        s = ctx.shop
        starts, ends = merge_spans(np.fmax(s.sunset_s, s.open_s), s.close_s)
        segs.add_many(starts, ends - starts, draw1(rng, p.signage_w))
    return Load(segs.render(ctx.tl), p.pf)
