"""Sites of the simulated fleet: type (home, cafe, restaurant), place, appliance inventory, routine.

Every random choice about device k comes from a generator keyed by (seed, k, component name), so device k
is the same whatever the fleet size, the worker count, or which other appliances a site has.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import numpy as np

from airwatt.appliances import APPLIANCES
from airwatt.simulate.routines import HomeRoutine, ShopRoutine, draw_home_routine, draw_shop_routine
from airwatt.simulate.timeline import Timeline
from airwatt.simulate.zones import ZONES, Zone

SiteKind = Literal["home", "cafe", "restaurant"]

# Probability that a site of (kind, region) has each appliance (a ground-truth column when present).
INVENTORY_PROB: dict[tuple[str, str], dict[str, float]] = {
    ("home", "sea"): {
        "fridge": 1.0,
        "freezer": 0.15,
        "air_conditioner": 0.8,
        "water_heater": 0.75,
        "rice_cooker": 0.85,
        "kettle": 0.7,
        "microwave": 0.55,
        "washing_machine": 0.85,
        "induction_cooker": 0.5,
        "tv": 0.9,
        "lighting": 1.0,
        "fan": 0.85,
        "coffee_machine": 0.1,
    },
    ("home", "europe"): {
        "fridge": 1.0,
        "freezer": 0.45,
        "air_conditioner": 0.15,
        "water_heater": 0.5,
        "rice_cooker": 0.15,
        "kettle": 0.85,
        "microwave": 0.8,
        "washing_machine": 0.95,
        "induction_cooker": 0.45,
        "tv": 0.95,
        "lighting": 1.0,
        "fan": 0.1,
        "coffee_machine": 0.35,
    },
    ("cafe", "sea"): {
        "fridge": 1.0,
        "freezer": 0.4,
        "air_conditioner": 0.9,
        "water_heater": 0.2,
        "rice_cooker": 0.2,
        "kettle": 0.6,
        "microwave": 0.7,
        "induction_cooker": 0.3,
        "tv": 0.3,
        "lighting": 1.0,
        "fan": 0.5,
        "coffee_machine": 1.0,
    },
    ("cafe", "europe"): {
        "fridge": 1.0,
        "freezer": 0.4,
        "air_conditioner": 0.3,
        "water_heater": 0.4,
        "kettle": 0.6,
        "microwave": 0.7,
        "induction_cooker": 0.3,
        "tv": 0.2,
        "lighting": 1.0,
        "coffee_machine": 1.0,
    },
    ("restaurant", "sea"): {
        "fridge": 1.0,
        "freezer": 0.9,
        "air_conditioner": 0.85,
        "water_heater": 0.6,
        "rice_cooker": 0.9,
        "kettle": 0.3,
        "microwave": 0.8,
        "washing_machine": 0.1,
        "induction_cooker": 0.85,
        "tv": 0.5,
        "lighting": 1.0,
        "fan": 0.6,
        "coffee_machine": 0.4,
    },
    ("restaurant", "europe"): {
        "fridge": 1.0,
        "freezer": 0.9,
        "air_conditioner": 0.4,
        "water_heater": 0.8,
        "rice_cooker": 0.2,
        "kettle": 0.3,
        "microwave": 0.8,
        "washing_machine": 0.1,
        "induction_cooker": 0.85,
        "tv": 0.3,
        "lighting": 1.0,
        "coffee_machine": 0.6,
    },
}


def component_rng(seed: int, device_index: int, component: str) -> np.random.Generator:
    """An independent generator for one component of one device (stable across fleet sizes and workers)."""
    key = (device_index, zlib.crc32(component.encode()))
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64, spawn_key=key))


def fleet_rng(seed: int) -> np.random.Generator:
    """The generator for fleet-wide choices that do not depend on the number of devices."""
    return np.random.default_rng(np.random.SeedSequence(seed % 2**64, spawn_key=(2**32,)))


def is_home(seed: int, device_index: int, home_fraction: float) -> bool:
    """Spread homes evenly over device indices (any prefix of the fleet has the configured share)."""
    phase = float(fleet_rng(seed).random())
    k = device_index
    return math.floor((k + 1) * home_fraction + phase) - math.floor(k * home_fraction + phase) == 1


@dataclass(frozen=True)
class SiteSpec:
    """Everything decided about a site before its days are simulated."""

    seed: int
    index: int
    device_id: str
    kind: SiteKind
    zone: Zone
    appliances: tuple[str, ...]  # canonical names, in vocabulary order

    @property
    def is_home(self) -> bool:
        return self.kind == "home"

    def rng(self, component: str) -> np.random.Generator:
        return component_rng(self.seed, self.index, component)


def device_id_of(index: int) -> str:
    return f"sim-{index:04d}"


def draw_site(seed: int, index: int, home_fraction: float) -> SiteSpec:
    """Site type, zone and appliance inventory of device ``index``."""
    rng = component_rng(seed, index, "site")
    kind: SiteKind = "home"
    if not is_home(seed, index, home_fraction):
        kind = "cafe" if rng.random() < 0.5 else "restaurant"
    weights = np.array([z.weight for z in ZONES])
    zone = ZONES[int(rng.choice(len(ZONES), p=weights / weights.sum()))]
    probs = INVENTORY_PROB[(kind, zone.region)]
    draws = rng.random(len(APPLIANCES))  # one draw per vocabulary entry, so inventories stay aligned
    present = tuple(a for a, u in zip(APPLIANCES, draws, strict=True) if u < probs.get(a, 0.0))
    return SiteSpec(
        seed=seed, index=index, device_id=device_id_of(index), kind=kind, zone=zone, appliances=present
    )


@dataclass(frozen=True)
class SiteContext:
    """A site over a concrete window: what appliance models need to place their events."""

    spec: SiteSpec
    tl: Timeline

    @cached_property
    def routine(self) -> HomeRoutine | ShopRoutine:
        rng = self.spec.rng("routine")
        if self.spec.is_home:
            return draw_home_routine(self.tl, rng, self.spec.zone)
        return draw_shop_routine(self.tl, rng, self.spec.kind, self.spec.zone)

    @property
    def home(self) -> HomeRoutine:
        r = self.routine
        assert isinstance(r, HomeRoutine), "home routine asked of a shop"
        return r

    @property
    def shop(self) -> ShopRoutine:
        r = self.routine
        assert isinstance(r, ShopRoutine), "shop routine asked of a home"
        return r

    @property
    def region(self) -> str:
        return self.spec.zone.region

    @cached_property
    def activity_per_minute(self) -> np.ndarray:
        """(n_days * 1440,) activity scaled to peak 1: kitchen use at homes, customers at shops."""
        if self.spec.is_home:
            a = self.home.activity_per_minute(self.tl)
        else:
            weekend_factor = 1.2 if self.spec.kind == "cafe" else 1.3
            a = self.shop.busy_per_minute(self.tl, weekend_factor)
        peak = float(a.max())
        return a / peak if peak > 0 else a

    def activity_at(self, t_s: float) -> float:
        """Activity at a local time (0..1)."""
        a = self.activity_per_minute
        return float(a[min(max(int(t_s // 60), 0), len(a) - 1)])

    def rate_per_h(self, events_per_day: float) -> np.ndarray:
        """(n_days * 1440,) a Poisson rate following the activity profile, ``events_per_day`` on average."""
        a = self.activity_per_minute
        per_day_h = a.sum() / 60.0 / self.tl.n_days
        return a * (events_per_day / per_day_h) if per_day_h > 0 else a

    def summer(self, day: np.ndarray) -> np.ndarray:
        """Bool per local day: warm enough for air conditioning (always in South-East Asia)."""
        if self.region == "sea":
            return np.ones(np.shape(day), dtype=bool)
        m = self.tl.months[np.asarray(day)]
        return (m >= 6) & (m <= 8)
