"""One simulated device: appliances, unlabeled loads, faults and measurement -> the dataset's tables."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from airwatt.appliances import APPLIANCES
from airwatt.config import SimulateParams
from airwatt.dataset import DeviceInfo
from airwatt.labels import derive_labels
from airwatt.simulate.appliances import MODELS
from airwatt.simulate.electrical import draw_faults, measure, supply_rating_w
from airwatt.simulate.sites import SiteContext, SiteSpec
from airwatt.simulate.timeline import Timeline
from airwatt.simulate.unlabeled import base_load, unlabeled_loads
from airwatt.timeutil import from_epoch_ms, to_epoch_ms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceFrames:
    """One device's tables, ready for DatasetWriter.add_device."""

    info: DeviceInfo
    readings: pd.DataFrame
    ground_truth: pd.DataFrame
    labels: pd.DataFrame


def appliance_truth(ctx: SiteContext) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """True watts per inventory appliance (capped at their max_w) and their total reactive power."""
    truth: dict[str, np.ndarray] = {}
    reactive = np.zeros(ctx.tl.n)
    for name in ctx.spec.appliances:
        load = MODELS[name](ctx, ctx.spec.rng(name))
        max_w = APPLIANCES[name].max_w
        if load.power_w.max() > max_w:
            log.warning("%s %s: model exceeded max_w %.0f W; capped", ctx.spec.device_id, name, max_w)
        power = np.clip(load.power_w, 0.0, max_w)
        truth[name] = power
        reactive += load.reactive_var() * np.divide(
            power, load.power_w, out=np.zeros_like(power), where=load.power_w > 0
        )
    return truth, reactive


def simulate_device(
    spec: SiteSpec, cfg: SimulateParams, start: pd.Timestamp, n: int, interval_s: float
) -> DeviceFrames:
    """Simulate ``n`` readings at ``interval_s`` from ``start`` (UTC) for one site."""
    tl = Timeline.build(start, n, interval_s, spec.zone.timezone)
    ctx = SiteContext(spec, tl)
    truth, reactive = appliance_truth(ctx)
    others = [base_load(ctx), *unlabeled_loads(ctx)]
    faults = draw_faults(n, interval_s, spec.rng("faults"), cfg)
    for power in truth.values():
        power[faults.outage] = 0.0
    true_w = sum(truth.values(), np.zeros(n)) + sum(o.power_w for o in others)
    reactive = reactive + sum(o.reactive_var() for o in others)
    m = measure(tl, spec.rng("electrical"), true_w, reactive, spec.zone.nominal_v, cfg.noise_w, faults.outage)

    keep = ~faults.absent
    ts = from_epoch_ms(
        (to_epoch_ms(pd.DatetimeIndex([tl.start])) + np.arange(n) * round(interval_s * 1000))[keep]
    )
    readings = pd.DataFrame(
        {
            "timestamp": ts,
            "power_w": m.power_w[keep],
            "voltage_v": m.voltage_v[keep],
            "current_a": m.current_a[keep],
            "power_factor": m.power_factor[keep],
            "filled": np.zeros(int(keep.sum()), dtype=bool),
        }
    )
    ground_truth = pd.DataFrame(
        {"timestamp": ts, **{a: p[keep].astype(np.float32) for a, p in truth.items()}}
    )
    labels = derive_labels(ground_truth, list(spec.appliances), APPLIANCES, interval_s)
    info = DeviceInfo(
        device_id=spec.device_id,
        site_type=spec.kind,
        timezone=spec.zone.timezone,
        appliances=list(spec.appliances),
        rated_max_w=supply_rating_w(spec.kind, spec.zone.nominal_v, float(m.power_w.max(initial=0.0))),
        has_ground_truth=True,
        provenance=f"simulator seed={spec.seed} device={spec.index}",
    )
    return DeviceFrames(info, readings, ground_truth, labels)
