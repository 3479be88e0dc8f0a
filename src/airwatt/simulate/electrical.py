"""What the monitor measures: voltage, current and power factor consistent with the true loads, measurement
noise, and the faults of a real fleet (lost readings, connectivity gaps, site power outages)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from airwatt.config import SimulateParams
from airwatt.simulate.loads import Range
from airwatt.simulate.timeline import DAY_S, Timeline, random_walk

GAP_S: Range = (120.0, 4 * 3600.0)  # connectivity gaps: log-uniform, minutes to hours
OUTAGE_S: Range = (60.0, 3 * 3600.0)  # site power outages: log-uniform
SOURCE_OHM: Range = (0.05, 0.25)  # supply impedance: voltage sags with current
VOLTAGE_NOISE_V = 0.15
CURRENT_NOISE = 0.002  # relative
PF_NOISE = 0.003
SUPPLY_A = {"home": (40, 63, 80, 100, 125), "shop": (63, 80, 100, 125, 160, 200)}  # main breaker sizes


@dataclass(frozen=True)
class Faults:
    absent: np.ndarray  # (n,) bool: the reading never arrived (no row)
    outage: np.ndarray  # (n,) bool: the site had no power (a row of zeros)


def _spans_mask(n: int, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    delta = np.zeros(n + 1, dtype=np.int64)
    np.add.at(delta, np.clip(starts, 0, n), 1)
    np.add.at(delta, np.clip(starts + lengths, 0, n), -1)
    return np.cumsum(delta[:n]) > 0


def _log_uniform(rng: np.random.Generator, r: Range, size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(r[0]), np.log(r[1]), size))


def draw_faults(n: int, interval_s: float, rng: np.random.Generator, cfg: SimulateParams) -> Faults:
    """Random lost readings, Poisson numbers of connectivity gaps and outages with log-uniform lengths."""
    days = n * interval_s / DAY_S
    lost = rng.random(n) < cfg.missing_reading_fraction
    n_gaps = rng.poisson(cfg.connectivity_gaps_per_day * days)
    gaps = _spans_mask(
        n,
        rng.integers(0, n, n_gaps),
        np.round(_log_uniform(rng, GAP_S, n_gaps) / interval_s).astype(np.int64),
    )
    n_out = rng.poisson(cfg.power_outages_per_week * days / 7.0)
    outage = _spans_mask(
        n,
        rng.integers(0, n, n_out),
        np.round(_log_uniform(rng, OUTAGE_S, n_out) / interval_s).astype(np.int64),
    )
    return Faults(absent=(lost | gaps) & ~outage, outage=outage)


@dataclass(frozen=True)
class Measured:
    power_w: np.ndarray
    voltage_v: np.ndarray
    current_a: np.ndarray
    power_factor: np.ndarray


def measure(
    tl: Timeline,
    rng: np.random.Generator,
    power_w: np.ndarray,
    reactive_var: np.ndarray,
    nominal_v: float,
    noise_w: float,
    outage: np.ndarray,
) -> Measured:
    """Channels as the monitor reports them. Voltage: the site's level, a daily evening sag, a slow random
    walk and the drop over the supply impedance; current = apparent power / voltage; power factor =
    P / S of the load mix; power gets Gaussian noise and is clipped at 0. Outage rows read 0 everywhere."""
    n = tl.n
    site_v = nominal_v * (1.0 + rng.normal(0.0, 0.01))
    evening_sag = -0.012 * nominal_v * np.exp(-0.5 * ((tl.hour_of_day() - 19.5) / 2.0) ** 2)
    drift = random_walk(tl, rng, 900.0, 0.4, 0.05)
    apparent_va = np.hypot(power_w, reactive_var)
    voltage = (
        site_v
        + evening_sag
        + drift
        - rng.uniform(*SOURCE_OHM) * apparent_va / nominal_v
        + rng.normal(0.0, VOLTAGE_NOISE_V, n)
    )
    current = apparent_va / voltage * (1.0 + rng.normal(0.0, CURRENT_NOISE, n))
    pf = np.divide(power_w, apparent_va, out=np.ones(n), where=apparent_va > 0)
    pf = np.clip(pf + rng.normal(0.0, PF_NOISE, n), 0.0, 1.0)
    measured = np.maximum(power_w + rng.normal(0.0, noise_w, n), 0.0)
    channels = [measured, voltage, current, pf]
    for ch in channels:
        ch[outage] = 0.0
    return Measured(*(c.astype(np.float32) for c in channels))


def supply_rating_w(kind: str, nominal_v: float, peak_w: float) -> float:
    """The smallest standard main breaker (times the nominal voltage) with 20 % headroom over the peak."""
    sizes = SUPPLY_A["home" if kind == "home" else "shop"]
    for amps in sizes:
        if amps * nominal_v >= 1.2 * peak_w:
            return float(amps * nominal_v)
    return float(np.ceil(1.2 * peak_w / 1000.0) * 1000.0)
