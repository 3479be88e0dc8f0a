"""Cooling appliances: fridges and freezers (compressor cycles with defrost), inverter and fixed-speed air
conditioners, fans."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.simulate.loads import SURGE_S, Load, Range, daily, day_starts, draw1, hours, merge_spans
from airwatt.simulate.sites import SiteContext
from airwatt.simulate.timeline import DAY_S, HOUR_S, Segments, smooth_noise

DRIP_S = 300.0  # after a defrost the compressor waits for the coil to drain
RECOVERY = 1.6  # the cycle after a defrost runs longer


@dataclass(frozen=True)
class CyclerParams:
    """A thermostat-driven compressor with a periodic defrost heater (fridge, freezer, display chiller)."""

    run_w: Range
    on_s: Range
    off_s: Range
    defrost_every_s: Range
    defrost_w: Range
    defrost_s: Range
    busy_gain: float  # on-time stretch at peak activity (door openings, warm kitchen)
    surge: float = 1.25  # first reading of a cycle, relative to running power
    pf: float = 0.8


H = HOUR_S
FRIDGE_HOME = CyclerParams(
    run_w=(70, 120),
    on_s=(600, 1200),
    off_s=(1200, 2100),
    defrost_every_s=(8 * H, 16 * H),
    defrost_w=(150, 250),
    defrost_s=(900, 1800),
    busy_gain=0.3,
)
FRIDGE_SHOP = CyclerParams(
    run_w=(150, 220),
    on_s=(900, 1500),
    off_s=(600, 1200),
    defrost_every_s=(6 * H, 12 * H),
    defrost_w=(200, 260),
    defrost_s=(900, 1500),
    busy_gain=0.5,
)
FREEZER_HOME = CyclerParams(
    run_w=(90, 150),
    on_s=(900, 1800),
    off_s=(1200, 2100),
    defrost_every_s=(10 * H, 20 * H),
    defrost_w=(250, 350),
    defrost_s=(1200, 2100),
    busy_gain=0.2,
)
FREEZER_SHOP = CyclerParams(
    run_w=(180, 280),
    on_s=(1200, 2100),
    off_s=(900, 1500),
    defrost_every_s=(8 * H, 16 * H),
    defrost_w=(280, 380),
    defrost_s=(1200, 1800),
    busy_gain=0.4,
)


def render_cycler(ctx: SiteContext, rng: np.random.Generator, p: CyclerParams, defrost: bool = True) -> Load:
    """Compressor cycles whose on-time stretches with activity; a defrost heater every ``defrost_every_s``
    (compressor off), then a long recovery cycle."""
    tl = ctx.tl
    run_w, defrost_w, every_s = draw1(rng, p.run_w), draw1(rng, p.defrost_w), draw1(rng, p.defrost_every_s)
    t = tl.first_s - draw1(rng, p.off_s)
    next_defrost = tl.first_s + rng.uniform(0, every_s) if defrost else np.inf
    n_max = int((tl.end_s - t) / (p.on_s[0] + p.off_s[0] * (1 - 0.5 * p.busy_gain))) + 8
    on_s, off_s = rng.uniform(*p.on_s, n_max), rng.uniform(*p.off_s, n_max)
    defrost_s, jitter = rng.uniform(*p.defrost_s, n_max), rng.uniform(0.9, 1.1, n_max)
    compressor, heater = Segments(), Segments()
    for i in range(n_max):  # a few dozen cycles per day
        if t >= tl.end_s:
            break
        on, off = on_s[i], off_s[i]
        if t >= next_defrost:
            heater.add(t, defrost_s[i], defrost_w)
            t += defrost_s[i] + DRIP_S
            next_defrost += every_s * jitter[i]
            on *= RECOVERY
        else:
            a = ctx.activity_at(t)
            on, off = on * (1 + p.busy_gain * a), off * (1 - 0.5 * p.busy_gain * a)
        compressor.add(t, SURGE_S, run_w * p.surge)
        compressor.add(t + SURGE_S, on - SURGE_S, run_w, end_w=run_w * 1.06)
        t += on + off
    heat_w = heater.render(tl)
    return Load(compressor.render(tl) + heat_w, np.where(heat_w > 0, 1.0, p.pf))


def fridge(ctx: SiteContext, rng: np.random.Generator) -> Load:
    return render_cycler(ctx, rng, FRIDGE_HOME if ctx.spec.is_home else FRIDGE_SHOP)


def freezer(ctx: SiteContext, rng: np.random.Generator) -> Load:
    return render_cycler(ctx, rng, FREEZER_HOME if ctx.spec.is_home else FREEZER_SHOP)


# ------------------------------------------------------------------------------------- air conditioner
@dataclass(frozen=True)
class AirConParams:
    nominal_w: Range  # rated compressor power
    inverter_share: float  # share of units with an inverter compressor
    pulldown_factor: Range = (1.1, 1.25)  # inverter: boost after switching on
    pulldown_s: Range = (600, 1500)
    modulation: Range = (0.35, 0.6)  # inverter: mean load after pull-down, share of nominal
    fixed_on_s: Range = (480, 1200)  # fixed speed: compressor cycle
    fixed_off_s: Range = (180, 600)
    fan_w: Range = (25, 60)  # indoor + outdoor fan with the compressor off
    fixed_surge: float = 1.3
    pf_inverter: float = 0.97
    pf_fixed: float = 0.88


AC_HOME = AirConParams((700, 1300), 0.6)
AC_SHOP = AirConParams((1800, 3000), 0.7)


def ac_sessions(ctx: SiteContext, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) when the unit is switched on: nights, evenings and hot afternoons at home; opening
    hours at shops. Only on warm days (always in South-East Asia, June-August in Europe)."""
    n = ctx.tl.n_days
    base = day_starts(n)
    warm = ctx.summer(ctx.tl.days)
    if not ctx.spec.is_home:
        s = ctx.shop
        on = warm & np.isfinite(s.open_s)
        return merge_spans(
            np.where(on, s.prep_s + hours(rng, 0, 0.3, n), np.nan), s.close_s + hours(rng, 0, 0.3, n)
        )
    h = ctx.home
    sea = ctx.region == "sea"
    wake_next = np.append(h.wake_s[1:], h.wake_s[-1] + DAY_S)
    night = warm & daily(rng, n, 0.8 if sea else 0.35)
    night_start = h.sleep_s - hours(rng, 0, 1.5, n)
    evening = warm & daily(rng, n, 0.35 if sea else 0.2)
    evening_start = np.fmax(h.back_s, base + 18 * HOUR_S) + hours(rng, 0.2, 1.0, n)
    noon = warm & h.home_midday() & daily(rng, n, 0.4 if sea else 0.3)
    noon_start = base + 13 * HOUR_S + hours(rng, 0, 1, n)
    starts = np.concatenate(
        [
            np.where(night, night_start, np.nan),
            np.where(evening, evening_start, np.nan),
            np.where(noon, noon_start, np.nan),
        ]
    )
    ends = np.concatenate(
        [
            wake_next - hours(rng, 0, 0.5, n),
            np.where(night, night_start, h.sleep_s),
            noon_start + hours(rng, 1.5, 4, n),
        ]
    )
    return merge_spans(starts, ends)


def _fixed_speed(ctx: SiteContext, rng: np.random.Generator, p: AirConParams, sessions: tuple) -> Load:
    nominal_w, fan_w = draw1(rng, p.nominal_w), draw1(rng, p.fan_w)
    segs = Segments()
    for start, end in zip(*sessions, strict=True):
        t, on = start, draw1(rng, (1200, 2400))  # the first cycle pulls the room down
        while t < end:
            on = min(on, end - t)
            segs.add(t, SURGE_S, nominal_w * p.fixed_surge)
            segs.add(t + SURGE_S, on - SURGE_S, nominal_w, end_w=nominal_w * 1.04)
            t += on
            off = min(draw1(rng, p.fixed_off_s), end - t)
            if off > 0:
                segs.add(t, off, fan_w)
            t += off
            on = draw1(rng, p.fixed_on_s)
    return Load(segs.render(ctx.tl), p.pf_fixed)


def _inverter(ctx: SiteContext, rng: np.random.Generator, p: AirConParams, sessions: tuple) -> Load:
    tl = ctx.tl
    nominal_w, fan_w = draw1(rng, p.nominal_w), draw1(rng, p.fan_w)
    boost, mean_load = draw1(rng, p.pulldown_factor), draw1(rng, p.modulation)
    on, pull = Segments(), Segments()
    for start, end in zip(*sessions, strict=True):
        on.add(start, end - start, 1.0)
        pull.add(start, min(draw1(rng, p.pulldown_s), end - start), 1.0)
    in_session, in_pulldown = on.render_mask(tl), pull.render_mask(tl)
    afternoon = 0.1 * np.cos(2 * np.pi * (tl.hour_of_day() - 15.0) / 24.0)
    load = np.clip(mean_load + afternoon + smooth_noise(tl, rng, 300.0, 0.08), 0.15, 0.9)
    running = np.where(load < 0.25, fan_w, nominal_w * load + fan_w)  # light load: compressor rests
    power = np.where(in_session, np.where(in_pulldown, nominal_w * boost, running), 0.0)
    return Load(power, p.pf_inverter)


def air_conditioner(ctx: SiteContext, rng: np.random.Generator) -> Load:
    p = AC_HOME if ctx.spec.is_home else AC_SHOP
    sessions = ac_sessions(ctx, rng)
    if rng.random() < p.inverter_share:
        return _inverter(ctx, rng, p, sessions)
    return _fixed_speed(ctx, rng, p, sessions)


# ------------------------------------------------------------------------------------------------- fan
FAN_SPEEDS_W: tuple[Range, Range, Range] = ((30, 40), (42, 52), (55, 64))  # low, medium, high per fan


def fan(ctx: SiteContext, rng: np.random.Generator) -> Load:
    """1-3 fans at one of three speeds: nights, afternoons and evenings at home; opening hours at shops."""
    n = ctx.tl.n_days
    base = day_starts(n)
    warm = ctx.summer(ctx.tl.days)
    n_fans = int(rng.integers(1, 4))
    segs = Segments()
    for _ in range(n_fans):
        speeds = np.array([draw1(rng, r) for r in FAN_SPEEDS_W])
        if ctx.spec.is_home:
            h = ctx.home
            wake_next = np.append(h.wake_s[1:], h.wake_s[-1] + DAY_S)
            night = warm & daily(rng, n, 0.75)
            noon = warm & h.home_midday() & daily(rng, n, 0.6)
            evening = warm & daily(rng, n, 0.5)
            noon_start = base + 13 * HOUR_S + hours(rng, 0, 1, n)
            starts = np.concatenate(
                [
                    np.where(night, h.sleep_s - hours(rng, 0, 0.5, n), np.nan),
                    np.where(noon, noon_start, np.nan),
                    np.where(evening, np.fmax(h.back_s, base + 18 * HOUR_S), np.nan),
                ]
            )
            ends = np.concatenate([wake_next, noon_start + hours(rng, 1, 4, n), h.sleep_s])
        else:
            s = ctx.shop
            starts, ends = np.where(warm, s.open_s, np.nan), s.close_s
        starts, ends = merge_spans(starts, ends)
        segs.add_many(starts, ends - starts, speeds[rng.integers(0, 3, len(starts))])
    return Load(segs.render(ctx.tl), 0.85)
