"""A worker's warm-up, run before it reports ready: every kind of call once, on made-up devices.

What is built on first use then is built here instead: torch's first sequence passes (one device and a
batch), the NumPy streaming step and the decision rule's per-batch arrays, the device-state cache's rows
(first touch of its slabs), the gap policy, the answers' JSON, the whole-series path and the report
(pandas, time zones). The made-up devices are forgotten afterwards and the cache's counters start from
zero, so no answer and no metric depends on the warm-up.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pydantic_core

from airwatt.config import ReportParams
from airwatt.serving.engine import MAX_STEP_READINGS, Engine
from airwatt.serving.schemas import (
    DetectBatchRequest,
    DeviceReadings,
    PredictBatchResponse,
    ReportRequest,
)
from airwatt.serving.state import CacheStats

BATCH = 50  # devices per warm-up batch call: the batch size docs/serving.md recommends
DEVICE_PREFIX = "airwatt-warm-up-"  # forgotten after the warm-up


@dataclass(frozen=True)
class WarmUp:
    calls: int  # engine calls made
    devices: int  # made-up devices, forgotten afterwards
    seconds: float


def _signal(n: int) -> list[float | None]:
    """A household-like aggregate: a fridge cycle, a kettle, noise, and one short gap (the gap policy)."""
    t = np.arange(n) * 5
    rng = np.random.default_rng(0)
    power = 90 + 100 * (t % 1800 < 600) + 2000 * ((t % 3600 > 3000) & (t % 3600 < 3180)) + rng.normal(0, 3, n)
    values: list[float | None] = [round(float(v), 1) for v in power]
    values[n // 2 : n // 2 + 2] = [None, None]
    return values


def warm_up(engine: Engine, report_params: ReportParams) -> WarmUp:
    """Run detect, predict and report through ``engine`` (stateless, cache hits, sessions, short calls,
    batches), then forget the made-up devices."""
    t0 = time.perf_counter()
    iv, h = engine.limits.interval_s, engine.history
    steps = MAX_STEP_READINGS // 2
    power = _signal(h + steps + 1)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(seconds=iv * (len(power) + 10))  # a plausible past span
    ids = [f"{DEVICE_PREFIX}{i}" for i in range(1 + BATCH)]
    calls = 0

    def stateless(devices: list[str], k: int) -> list[DeviceReadings]:
        """Each device's ``h`` readings ending at reading ``k``."""
        first = start + timedelta(seconds=iv * (k - h + 1))
        return [
            DeviceReadings(device_id=d, start=first, interval_s=iv, power_w=power[k - h + 1 : k + 1])
            for d in devices
        ]

    for devices in (ids[:1], ids[1:]):  # one device, then a batch
        k = h - 1
        for r in (stateless(devices, k), stateless(devices, k + steps)):  # a miss (torch), then a hit
            pydantic_core.to_json({"model_version": engine.model_version, "results": engine.detect_rows(r)})
            calls += 1
        k += steps
        last = start + timedelta(seconds=iv * k)
        session = [DeviceReadings(device_id=d, continues=last, power_w=[power[k + 1]]) for d in devices]
        engine.detect_rows(session)
        newest = engine.predict(stateless(devices, k + 1), True)  # the cached answer
        PredictBatchResponse(model_version=engine.model_version, results=newest).model_dump_json()
        calls += 2
    body = pydantic_core.to_json({"devices": [r.model_dump(mode="json") for r in stateless(ids, h - 1)]})
    DetectBatchRequest.model_validate_json(body)  # the request parser
    short = engine.limits.window_length
    engine.detect_rows([DeviceReadings(device_id=ids[0], start=start, interval_s=iv, power_w=power[:short])])
    series = DeviceReadings(device_id=ids[0], start=start, interval_s=iv, power_w=power)
    engine.predict_series(series).model_dump_json()
    report = ReportRequest(
        device_id=ids[0], start=start, interval_s=iv, power_w=power, timezone="Europe/London"
    )
    pydantic_core.to_json(engine.report(report, report_params))
    calls += 3
    engine.cache.forget(ids)
    engine.cache.stats = CacheStats()
    return WarmUp(calls=calls, devices=len(ids), seconds=time.perf_counter() - t0)
