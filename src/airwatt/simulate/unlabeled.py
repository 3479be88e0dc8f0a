"""Loads in the aggregate but in no ground-truth column: the standby base load, and appliances nobody
sub-meters (hair dryers, irons, pumps, chargers, display chillers, kitchen extraction...)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.simulate.cooling import CyclerParams, render_cycler
from airwatt.simulate.loads import Load, Range, draw1, draws, merge_spans
from airwatt.simulate.sites import SiteContext
from airwatt.simulate.timeline import HOUR_S, Segments, poisson_times, smooth_noise, trim_overlaps


@dataclass(frozen=True)
class BurstParams:
    """An appliance used now and then, following the site's activity profile."""

    name: str
    presence: float  # share of sites that have one
    power_w: Range
    run_s: Range
    per_day: float
    pf: float
    period_s: float = 0.0  # > 0: thermostat pulsing (irons, heaters)
    on_share: float = 1.0
    cold_months_only: bool = False


HOME_SEA: tuple[BurstParams, ...] = (
    BurstParams("hair_dryer", 0.5, (1000, 1600), (180, 480), 0.4, 1.0),
    BurstParams("iron", 0.6, (1000, 1300), (900, 1800), 0.2, 1.0, period_s=60.0, on_share=0.45),
    BurstParams("vacuum", 0.5, (1200, 1600), (600, 1200), 0.3, 0.95),
    BurstParams("water_pump", 0.4, (400, 750), (60, 180), 8.0, 0.8),
    BurstParams("desktop_pc", 0.4, (80, 200), (3600, 4 * HOUR_S), 0.6, 0.95),
    BurstParams("chargers_laptop", 0.9, (20, 80), (1800, 3 * HOUR_S), 1.5, 0.6),
)
HOME_EUROPE: tuple[BurstParams, ...] = (
    *(b for b in HOME_SEA if b.name != "water_pump"),
    BurstParams(
        "space_heater",
        0.3,
        (1000, 2000),
        (1800, 3 * HOUR_S),
        1.0,
        1.0,
        period_s=600.0,
        on_share=0.5,
        cold_months_only=True,
    ),
)
CAFE: tuple[BurstParams, ...] = (
    BurstParams("blender_grinder", 0.9, (800, 1200), (20, 60), 30.0, 0.9),
    BurstParams("water_pump", 0.3, (400, 750), (60, 180), 10.0, 0.8),
    BurstParams("laptop_pos", 0.8, (30, 90), (2 * HOUR_S, 6 * HOUR_S), 2.0, 0.6),
)
RESTAURANT: tuple[BurstParams, ...] = (
    BurstParams("blender", 0.4, (800, 1200), (20, 60), 10.0, 0.9),
    BurstParams("water_pump", 0.4, (400, 750), (60, 180), 15.0, 0.8),
    BurstParams("dish_booster", 0.3, (1500, 2500), (300, 900), 6.0, 1.0, period_s=120.0, on_share=0.6),
)
DISPLAY_CHILLER = CyclerParams(  # cake / drinks display: no defrost heater (render_cycler(defrost=False))
    run_w=(200, 350),
    on_s=(600, 1200),
    off_s=(600, 1200),
    defrost_every_s=(1.0, 2.0),
    defrost_w=(0.0, 0.0),
    defrost_s=(0.0, 0.0),
    busy_gain=0.5,
)
HOOD_W: Range = (300, 800)  # restaurant kitchen extraction, while staffed
BASE_W: dict[str, Range] = {"home_sea": (25, 90), "home_europe": (50, 150), "shop": (150, 350)}


def _burst(ctx: SiteContext, rng: np.random.Generator, b: BurstParams) -> Load:
    power_w = draw1(rng, b.power_w)
    starts = poisson_times(ctx.tl, rng, ctx.rate_per_h(b.per_day))
    if b.cold_months_only:
        months = ctx.tl.months[np.minimum((starts // 86_400).astype(np.int64), ctx.tl.n_days - 1)]
        starts = starts[(months <= 4) | (months >= 10)]
    starts, dur = trim_overlaps(starts, draws(rng, b.run_s, len(starts)))
    segs = Segments()
    if b.period_s > 0:
        for t, d in zip(starts, dur, strict=True):
            segs.add(t, d, power_w, period_s=b.period_s, on_s=b.on_share * b.period_s)
    else:
        segs.add_many(starts, dur, power_w)
    return Load(segs.render(ctx.tl), b.pf)


def unlabeled_loads(ctx: SiteContext) -> list[Load]:
    """The site's unmetered appliances (each present with its ``presence`` probability)."""
    rng = ctx.spec.rng("unlabeled")
    if ctx.spec.is_home:
        catalogue = HOME_SEA if ctx.region == "sea" else HOME_EUROPE
    else:
        catalogue = CAFE if ctx.spec.kind == "cafe" else RESTAURANT
    present = rng.random(len(catalogue))
    loads = [
        _burst(ctx, ctx.spec.rng(f"unlabeled/{b.name}"), b)
        for b, u in zip(catalogue, present, strict=True)
        if u < b.presence
    ]
    if not ctx.spec.is_home:
        if rng.random() < (0.8 if ctx.spec.kind == "cafe" else 0.4):
            loads.append(
                render_cycler(ctx, ctx.spec.rng("unlabeled/display_chiller"), DISPLAY_CHILLER, False)
            )
        if ctx.spec.kind == "restaurant" and rng.random() < 0.9:
            s = ctx.shop
            starts, ends = merge_spans(s.prep_s, s.leave_s)
            hood = Segments()
            hood.add_many(starts, ends - starts, draw1(rng, HOOD_W))
            loads.append(Load(hood.render(ctx.tl), 0.8))
    return loads


def base_load(ctx: SiteContext) -> Load:
    """Always-on standby (router, chargers, clocks, POS, signage controllers), drifting a few percent."""
    rng = ctx.spec.rng("base")
    key = "shop" if not ctx.spec.is_home else f"home_{ctx.region}"
    base_w = draw1(rng, BASE_W[key])
    drift = 1.0 + np.clip(smooth_noise(ctx.tl, rng, 1800.0, 0.05), -0.2, 0.2)
    return Load(base_w * drift, 0.65)
