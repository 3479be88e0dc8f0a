"""The serving API in-process (starlette TestClient on the BentoML ASGI app) and the engine behind it.

Real HTTP against `bentoml serve` is in test_serving_http.py. The model is the session's ``trained_bundle``
(a causal model trained for a few steps, its decision rule tuned on its validation devices): answers are
compared with ModelBundle's series path (what evaluation scores), never hard-coded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, square_wave_device
from starlette.testclient import TestClient

from airwatt.appliances import APPLIANCES
from airwatt.config import load_params
from airwatt.models import ModelBundle
from airwatt.models.decision import NEVER, decide_series
from airwatt.prepare.grid import answerable, fill_short_gaps
from airwatt.serving.engine import MAX_STEP_READINGS, Engine
from airwatt.serving.inputs import RequestError, SessionConflict
from airwatt.serving.loading import (
    MODEL_URI_ENV,
    STAGED_ENV,
    bundle_hash,
    resolve_model,
    service_config,
    stage_model,
)
from airwatt.serving.schemas import DeviceReadings

START = "2026-01-05T00:00:00Z"
T0 = pd.Timestamp(START)


def readings(n: int = 700, seed: int = 0, offset: int = 0) -> list[float]:
    """A fridge-and-kettle household (the conftest square wave) with noise: non-trivial answers. ``offset``
    shifts the span (readings ``offset`` to ``offset + n`` of the same series)."""
    r, _ = square_wave_device("d", hours=24)
    lo = 6 * 720 + offset
    power = r["power_w"].to_numpy()[lo : lo + n]  # around the 07:00 kettle
    return (power + np.random.default_rng(seed).normal(0, 3, len(power))).round(2).tolist()


def body(
    power_w: list[Any], device_id: str = "d-1", start: pd.Timestamp = T0, **extra: Any
) -> dict[str, Any]:
    return {"device_id": device_id, "start": start.isoformat(), "interval_s": 5, "power_w": power_w, **extra}


def req(power_w: list[Any], device_id: str = "d-1", start: pd.Timestamp = T0, **extra: Any) -> DeviceReadings:
    return DeviceReadings(**body(power_w, device_id, start, **extra))


def load_service(model_uri: str) -> Any:
    """serving/service.py imported fresh with AIRWATT_MODEL_URI set (it reads its settings on import)."""
    os.environ[MODEL_URI_ENV] = model_uri
    try:
        spec = importlib.util.spec_from_file_location(
            "airwatt_serving_service", REPO / "serving" / "service.py"
        )
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # BentoML resolves the annotations through it
        spec.loader.exec_module(module)
    finally:
        del os.environ[MODEL_URI_ENV]
    return module


@pytest.fixture(scope="module")
def service(trained_bundle: Path) -> Any:
    """serving/service.py, imported once for the module."""
    return load_service(str(trained_bundle))


@pytest.fixture(scope="module")
def client(service: Any) -> Iterator[TestClient]:
    with TestClient(service.AirWatt.to_asgi()) as c:
        os.environ.pop(STAGED_ENV, None)  # recorded by the service's start-up: not for later servers
        yield c


@pytest.fixture(scope="module")
def bundle(trained_bundle: Path) -> ModelBundle:
    return ModelBundle.load(trained_bundle)


def new_engine(trained_bundle: Path, **serve: Any) -> Engine:
    cfg = load_params(REPO / "params.yaml").serve.model_copy(update=serve)
    return Engine.load(resolve_model(str(trained_bundle), trained_bundle.parent), cfg)


@pytest.fixture
def engine(trained_bundle: Path) -> Engine:
    return new_engine(trained_bundle)


def served(bundle: ModelBundle, power: list[Any]) -> dict[str, Any]:
    """What the service must answer for these readings, by the evaluation code: ModelBundle's series
    outputs, the gap policy and the decision rule over the whole series; the state at the newest reading."""
    raw = np.array(power, dtype=np.float64)
    filled, valid = fill_short_gaps(raw, int(bundle.gap.max_fill_s // bundle.interval_s))
    pred = bundle.predict_series(filled, valid)
    out = bundle.series_outputs(filled, valid)
    known = answerable(valid, bundle.window_length, bundle.gap.max_invalid_fraction)
    since = decide_series(bundle.decision_rule, out.prob_on, known).since[-1]
    return {
        "known": bool(pred.predicted[-1]),
        "on": pred.on[-1].tolist(),
        "prob_on": out.prob_on[-1].tolist(),
        "power_w": pred.power_w[-1].tolist(),
        "since": [None if s == NEVER else T0 + pd.Timedelta(seconds=5 * int(s)) for s in since],
    }


def assert_answer(got: Any, want: dict[str, Any], apps: list[str], where: object = "") -> None:
    got = got if isinstance(got, dict) else got.model_dump()
    assert (got["status"] == "ok") == want["known"], (where, got.get("reason"))
    if not want["known"]:
        return
    for j, name in enumerate(apps):
        state = got["appliances"][name]
        assert state["on"] == want["on"][j], (where, name)
        assert state["prob_on"] == pytest.approx(want["prob_on"][j], abs=1e-5), (where, name)
        since = None if state["since"] is None else pd.Timestamp(state["since"])
        assert since == want["since"][j], (where, name)


# ---------------------------------------------------------------------------------------------- endpoints
def test_detect_answers_what_evaluation_scores(client: TestClient, bundle: ModelBundle) -> None:
    """The served state at the newest reading is the series path's (the decision rule over the last
    readings), for histories shorter and longer than the rule's full history."""
    assert bundle.spec.decision is not None  # tuned on the validation devices
    for n in (bundle.window_length, bundle.history_length, 900):
        power = readings(n)
        r = client.post("/detect", json=body(power, device_id=f"n-{n}"))
        assert r.status_code == 200, r.text
        out = r.json()
        assert set(out["appliances"]) == set(bundle.appliances)
        assert pd.Timestamp(out["at"]) == T0 + pd.Timedelta(seconds=5 * (n - 1))
        assert_answer(out, served(bundle, power), bundle.appliances, n)


def test_histories_between_the_window_and_the_full_history_answer_what_evaluation_scores(
    engine: Engine, bundle: ModelBundle
) -> None:
    """Shorter than the rule's full history: the readings before those sent are not answered (as at the
    start of a series in evaluation), and the rule works on what is left."""
    series = readings(engine.history)
    for n in range(bundle.window_length, engine.history + 1):
        got = engine.detect(
            [req(series[-n:], device_id=f"s-{n}", start=T0 + pd.Timedelta(seconds=5 * (len(series) - n)))]
        )
        want = served(bundle, series[-n:])
        want["since"] = [
            None if s is None else s + pd.Timedelta(seconds=5 * (len(series) - n)) for s in want["since"]
        ]
        assert_answer(got[0], want, bundle.appliances, n)


def test_predict_every_reading_matches_the_evaluation_code(client: TestClient, bundle: ModelBundle) -> None:
    """Parity: the service returns what ModelBundle.predict_series (airwatt evaluate's path) returns."""
    power = readings()
    r = client.post("/predict", json=body(power))
    assert r.status_code == 200, r.text
    out = r.json()
    expected = bundle.predict_series(np.array(power))
    ok = expected.predicted
    got = np.array([[np.nan if v is None else v for v in out["power_w"][a]] for a in bundle.appliances]).T
    assert out["predicted"] == ok.tolist() and not ok[: bundle.window_length // 2].any() and ok[-100:].all()
    np.testing.assert_allclose(got[ok], expected.power_w[ok], rtol=1e-5, atol=1e-5)
    remainder = np.array([np.nan if v is None else v for v in out["remainder_w"]])
    np.testing.assert_allclose(remainder[ok], np.array(power)[ok] - got[ok].sum(axis=1), rtol=1e-5, atol=1e-5)


def test_predict_newest_only_is_the_served_states_watts(client: TestClient, bundle: ModelBundle) -> None:
    power = readings()
    out = client.post("/predict", json=body(power, device_id="newest", newest_only=True)).json()
    want = served(bundle, power)
    got = np.array([out["power_w"][a][0] for a in bundle.appliances])
    np.testing.assert_allclose(got, want["power_w"], rtol=1e-5, atol=1e-4)  # 0 W where the state is off
    assert (got[~np.array(want["on"])] == 0).all()
    assert out["remainder_w"][0] == pytest.approx(power[-1] - got.sum(), abs=1e-4)


def test_batch_answers_equal_single_answers(client: TestClient) -> None:
    devices = [body(readings(seed=i), device_id=f"b-{i}") for i in range(3)]
    batch = client.post("/detect_batch", json={"devices": devices}).json()["results"]
    singles = [client.post("/detect", json={**d, "device_id": d["device_id"] + "s"}).json() for d in devices]
    for b, s in zip(batch, singles, strict=True):
        assert b["appliances"].keys() == s["appliances"].keys()
        for name, state in b["appliances"].items():
            assert (state["on"], state["since"]) == (
                s["appliances"][name]["on"],
                s["appliances"][name]["since"],
            )
            assert state["prob_on"] == pytest.approx(s["appliances"][name]["prob_on"], abs=1e-6)
    pbatch = client.post("/predict_batch", json={"devices": devices, "newest_only": True}).json()["results"]
    psingle = [client.post("/predict", json={**d, "newest_only": True}).json() for d in devices]
    for b, s in zip(pbatch, psingle, strict=True):
        for name in b["power_w"]:
            assert b["power_w"][name][0] == pytest.approx(s["power_w"][name][0], abs=1e-4)


def test_a_batch_answers_each_device_as_if_it_came_alone(engine: Engine, bundle: ModelBundle) -> None:
    """The one-pass batch path (compact form, one length) and the device-by-device path give each device the
    answer the evaluation code gives its readings, whatever else is in the batch: gaps, unknowns, forms."""
    power = readings(600)
    gappy = list(power)
    gappy[-5:-2] = [None] * 3  # filled
    long_gap = power[:-20] + [None] * 20  # the newest reading is missing: unknown
    holey = power[:60] + [None] * 56 + power[116:]  # too many missing in the earliest windows only
    stamped = {
        "device_id": "ts",
        "timestamps": [(T0 + pd.Timedelta(seconds=5 * i)).isoformat() for i in range(600)],
        "power_w": readings(600, seed=9),
    }
    one_pass = [body(readings(600, seed=i), f"d-{i}") for i in range(4)]
    batches = {
        "one pass": one_pass,
        "with gaps": [*one_pass[:2], body(gappy, "gappy"), body(long_gap, "long"), body(holey, "holey")],
        "mixed forms and lengths": [*one_pass[:2], stamped, body(readings(530, seed=5), "short")],
    }
    for name, devices in batches.items():
        reqs = [DeviceReadings(**d) for d in devices]
        for r, got in zip(reqs, engine.detect(reqs), strict=True):
            assert_answer(got, served(bundle, list(r.power_w)), bundle.appliances, (name, r.device_id))
    statuses = [r.status for r in engine.detect([DeviceReadings(**d) for d in batches["with gaps"]])]
    assert statuses == ["ok", "ok", "ok", "unknown", "ok"]
    implausible = [*one_pass[:2], body([*power[:-1], 2e6], "absurd")]
    with pytest.raises(RequestError) as e:
        engine.detect([DeviceReadings(**d) for d in implausible])
    assert e.value.field == "devices[2].power_w[599]"
    with pytest.raises(RequestError, match="also at devices"):
        engine.detect([DeviceReadings(**one_pass[0]), DeviceReadings(**one_pass[0])])


# -------------------------------------------------------------------------------- the device-state cache
def test_a_call_continuing_the_cached_state_computes_only_its_new_readings(
    engine: Engine, bundle: ModelBundle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A platform-style stream (each call the last history readings, 5 s later): the first call runs the
    history, every later one steps one reading; each answer is the evaluation code's."""
    h = engine.history
    series = readings(h + 60)
    seeded: list[int] = []
    seed = engine.cache.streams.seed
    monkeypatch.setattr(engine.cache.streams, "seed", lambda x, keep: seeded.append(len(x)) or seed(x, keep))
    for k in range(60):
        power = series[k : k + h]
        got = engine.detect([req(power, start=T0 + pd.Timedelta(seconds=5 * k))])[0]
        assert_answer(got, served(bundle, series[: k + h]), bundle.appliances, k)
    assert seeded == [1]  # one history pass, for the first call
    assert engine.cache.stats.outcomes["miss_absent"] == 1 and engine.cache.stats.outcomes["hit"] == 59
    again = engine.detect([req(series[59 : 59 + h], start=T0 + pd.Timedelta(seconds=5 * 59))])[0]
    assert engine.cache.stats.outcomes["duplicate"] == 1
    assert_answer(again, served(bundle, series[: 59 + h]), bundle.appliances)


def test_a_call_that_does_not_continue_the_cache_is_recomputed_from_its_own_history(
    engine: Engine, bundle: ModelBundle
) -> None:
    """Other history, out of order, too far ahead, too short: a miss, and the answer from the readings sent;
    an older call does not replace the newer cached state."""
    h = engine.history
    series = readings(h + 40)

    def call(lo: int, hi: int, power: list[Any] | None = None) -> Any:
        got = engine.detect([req(power or series[lo:hi], start=T0 + pd.Timedelta(seconds=5 * lo))])[0]
        assert_answer(got, served(bundle, power or series[lo:hi]), bundle.appliances, (lo, hi))
        return got

    stats = engine.cache.stats.outcomes
    call(10, 10 + h)
    other = list(series[11 : 11 + h])
    other[100] += 500.0  # another history for a reading the cache holds
    call(11, 11 + h, other)
    assert stats["miss_history"] == 1
    call(5, 5 + h)  # older than the cached state: answered, not cached
    assert stats["miss_behind"] == 1
    call(12, 12 + h)  # the cache still holds the newer (other) history: 12.. agrees with it except 100
    assert stats["miss_history"] == 2
    call(13 + MAX_STEP_READINGS, 13 + MAX_STEP_READINGS + h)
    assert stats["miss_ahead"] == 1
    call(h + 40 - bundle.window_length, h + 40)  # fewer readings than the full history: recomputed
    assert stats["miss_short"] == 1


def test_the_session_form_continues_the_state_and_answers_409_without_it(
    engine: Engine, bundle: ModelBundle
) -> None:
    h = engine.history
    series = readings(h + 60)
    series[h + 5 : h + 8] = [None] * 3  # a short gap inside the session: filled from the cached readings
    series[h + 20 : h + 35] = [None] * 15  # a long one: its first 30 s filled, then unknown answers
    engine.detect([req(series[:h])])
    for k in range(h, h + 60, 3):  # three new readings per call
        cont = T0 + pd.Timedelta(seconds=5 * (k - 1))
        got = engine.detect([DeviceReadings(device_id="d-1", continues=cont, power_w=series[k : k + 3])])[0]
        assert got.at == T0 + pd.Timedelta(seconds=5 * (k + 2))
        assert_answer(got, served(bundle, series[: k + 3]), bundle.appliances, k)
    assert engine.cache.stats.outcomes["session"] == 20
    before = dict(engine.cache.stats.outcomes)
    stale = DeviceReadings(device_id="d-1", continues=T0, power_w=[100.0])
    unknown = DeviceReadings(device_id="nobody", continues=T0, power_w=[100.0])
    fresh = req(series[:h], device_id="other")
    with pytest.raises(SessionConflict) as e:
        engine.detect([fresh, stale, unknown])
    assert e.value.devices == ["d-1", "nobody"] and e.value.fields == [
        "devices[1].continues",
        "devices[2].continues",
    ]
    assert f"at least {h} readings" in str(e.value)
    assert "other" not in engine.cache.entries  # a call answered 409 changes nothing
    assert engine.cache.stats.outcomes == before | {"conflict": before["conflict"] + 1}


def test_the_cache_holds_at_most_its_capacity_and_evicts_the_least_recently_used(
    trained_bundle: Path, bundle: ModelBundle
) -> None:
    small = new_engine(trained_bundle, state_cache_devices=3, max_devices=3)
    assert small.cache.bytes_per_device > 127 * 1024  # the layer queues, and the readings and rule state
    h = small.history
    for i in range(5):
        small.detect([req(readings(h, seed=i), device_id=f"e-{i}")])
    assert list(small.cache.entries) == ["e-2", "e-3", "e-4"] and small.cache.stats.evictions == 2
    cont = T0 + pd.Timedelta(seconds=5 * (h - 1))
    with pytest.raises(SessionConflict):  # evicted: the client must resend the history
        small.detect([DeviceReadings(device_id="e-0", continues=cont, power_w=[120.0])])
    got = small.detect([DeviceReadings(device_id="e-4", continues=cont, power_w=[120.0])])[0]
    assert_answer(got, served(bundle, [*readings(h, seed=4), 120.0]), bundle.appliances)
    with pytest.raises(Exception, match="must hold a whole batch"):
        new_engine(trained_bundle, state_cache_devices=2, max_devices=3)


def test_concurrent_calls_for_one_device_each_get_their_own_answer(
    engine: Engine, bundle: ModelBundle
) -> None:
    """Threads sending one device's stream out of order, some with another history: every answer is the
    evaluation code's for its own readings, and the cache ends on a consistent state."""
    h = engine.history
    series = readings(h + 40)
    other = [v + 300.0 for v in series]
    calls = [(k, series if k % 3 else other) for k in range(40)]
    results: dict[int, Any] = {}
    errors: list[BaseException] = []

    def run(chunk: list[tuple[int, list[float]]]) -> None:
        try:
            for k, src in chunk:
                results[k] = engine.detect([req(src[k : k + h], start=T0 + pd.Timedelta(seconds=5 * k))])[0]
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(calls[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for k, src in calls:
        assert_answer(results[k], served(bundle, src[: k + h]), bundle.appliances, k)
    k = max(e.last_ms for e in engine.cache.entries.values())  # whatever came last: continuing it is exact
    nxt = int((pd.Timestamp(k, unit="ms", tz="UTC") - T0).total_seconds() // 5) + 1
    for src in (series, other):
        got = engine.detect(
            [req(src[nxt - h + 1 : nxt + 1], start=T0 + pd.Timedelta(seconds=5 * (nxt - h + 1)))]
        )
        assert_answer(got[0], served(bundle, src[: nxt + 1]), bundle.appliances)


def test_small_calls_run_in_the_event_loop_and_history_passes_in_a_thread(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve.inline_max_misses: a call expected to step cached states is answered without a thread hop, one
    needing more history passes in a thread (so it does not hold up /healthz); the same answers either way."""
    threaded: list[str] = []
    to_thread = asyncio.to_thread

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threaded.append(fn.__name__)
        return await to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    h = engine.history
    many = engine.cfg.inline_max_misses + 1
    devices = [body(readings(h, seed=i), f"t-{i}") for i in range(many)]
    first = client.post("/detect_batch", json={"devices": devices})  # all new: history passes
    assert first.status_code == 200 and threaded == ["detect_rows"]
    later = [
        body(readings(h, seed=i, offset=1), f"t-{i}", start=T0 + pd.Timedelta(seconds=5)) for i in range(many)
    ]
    second = client.post("/detect_batch", json={"devices": later})  # all continue the cache: one step
    assert second.status_code == 200 and threaded == ["detect_rows"]
    series = client.post("/predict_batch", json={"devices": devices[:1]})  # whole series: in a thread
    assert series.status_code == 200 and threaded == ["detect_rows", "predict"]


def test_a_session_call_without_state_is_a_409_naming_the_device(client: TestClient) -> None:
    r = client.post("/detect", json={"device_id": "ghost", "continues": START, "power_w": [120.0]})
    assert r.status_code == 409 and r.json()["devices"] == ["ghost"] and r.json()["field"] == "continues"
    assert "resend" in r.json()["error"]
    r = client.post(
        "/detect", json={"device_id": "g", "continues": START, "timestamps": [START], "power_w": [1]}
    )
    assert r.status_code == 400  # the session form takes readings at the model's cadence


# ------------------------------------------------------------------------------------------- the service
def test_tracing_off_takes_every_route_past_the_tracing_middleware(client: TestClient) -> None:
    """serve.tracing false (default): no route pays for OpenTelemetry spans that record nothing; true:
    BentoML's own tracing settings (BENTOML_CONFIG: exporter, sample rate) apply to every route."""
    from opentelemetry.util.http import ExcludeList

    service = sys.modules["airwatt_serving_service"]
    cfg = load_params(REPO / "params.yaml").serve
    assert cfg.tracing is False and service.AirWatt.config == service_config(cfg)
    routes = [r.path for r in client.app.routes] + ["/detect?x=1", "http://127.0.0.1:3000/detect_batch"]
    assert {"/detect", "/detect_batch", "/predict", "/metrics", "/healthz"} <= set(routes)
    off = ExcludeList(service_config(cfg)["tracing"]["excluded_urls"])
    assert all(off.url_disabled(route) for route in routes)
    assert "tracing" not in service_config(cfg.model_copy(update={"tracing": True}))


def test_every_response_names_the_model_version(client: TestClient, trained_bundle: Path) -> None:
    version = bundle_hash(trained_bundle)
    d = body(readings(), device_id="v")
    assert client.post("/detect", json=d).json()["model_version"] == version
    assert client.post("/predict", json=d).json()["model_version"] == version
    batch = client.post("/detect_batch", json={"devices": [d]}).json()
    assert batch["model_version"] == version and batch["results"][0]["model_version"] == version
    info = client.post("/model", json={}).json()
    assert info["model_version"] == version
    assert info["window_length"] == 512 and info["interval_s"] == 5 and info["min_history_s"] == 512 * 5
    assert set(info["thresholds"]) == set(info["appliances"])
    memory = load_params(REPO / "params.yaml").train.decision.memory_s
    assert info["decision_memory_s"] == memory and info["history_readings"] == 512 + memory // 5 - 1
    assert {"on_prob", "off_prob", "confirm_on_s", "confirm_off_s"} <= set(info["thresholds"]["fridge"])


def test_openapi_page_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/docs.json").json()["paths"]
    assert {"/detect", "/predict", "/detect_batch", "/predict_batch", "/model", "/report"} <= set(paths)
    assert "/infer_windows" not in paths  # no internal endpoint on the public API


# -------------------------------------------------------------------------------------- gaps and cadence
def test_short_gaps_are_forward_filled(client: TestClient, engine: Engine) -> None:
    power = readings()
    assert engine.limits.max_fill_s >= 15
    gappy = list(power)
    gappy[-5:-2] = [None, None, None]  # 15 s missing: within the tolerance
    filled = list(power)
    filled[-5:-2] = [power[-6]] * 3
    a = client.post("/detect", json=body(gappy, device_id="g1")).json()
    b = client.post("/detect", json=body(filled, device_id="g2")).json()
    assert a["status"] == "ok"
    assert a["appliances"] == b["appliances"]


def test_a_long_gap_at_the_newest_reading_answers_unknown(client: TestClient, engine: Engine) -> None:
    power = readings()
    n_missing = engine.limits.fill_slots + 2
    r = client.post("/detect", json=body(power[:-n_missing] + [None] * n_missing, device_id="lg"))
    assert r.status_code == 200
    assert r.json()["status"] == "unknown" and "missing" in r.json()["reason"]
    assert r.json()["appliances"] == {}
    p = client.post(
        "/predict", json=body(power[:-n_missing] + [None] * n_missing, device_id="lg2", newest_only=True)
    ).json()
    assert p["predicted"] == [False] and p["remainder_w"] == [None]


def test_a_window_with_too_many_missing_readings_answers_unknown(client: TestClient) -> None:
    power = readings()
    holey = [None if i % 5 == 0 and i > 60 else v for i, v in enumerate(power)]  # 20 %, single slots
    holey[-1] = power[-1]
    out = client.post("/detect", json=body(holey, device_id="h1")).json()
    assert out["status"] == "ok"  # single missing slots are filled (5 s <= max_fill_s)
    power[-400:-300] = [None] * 100  # 500 s: longer than the tolerance, 94 readings missing
    out = client.post("/detect", json=body(power, device_id="h2")).json()
    assert out["status"] == "unknown" and "of the 512 readings" in out["reason"]


def test_timestamps_form_is_placed_on_the_grid(client: TestClient) -> None:
    power = readings()
    stamps = [(T0 + pd.Timedelta(seconds=5 * i + 1.5)).isoformat() for i in range(len(power))]  # jittered
    a = client.post("/detect", json={"device_id": "ts1", "timestamps": stamps, "power_w": power}).json()
    b = client.post("/detect", json=body(power, device_id="ts2")).json()
    assert a["status"] == "ok" and a["at"] == b["at"]
    for name, state in a["appliances"].items():  # the grid holds float32 watts, as prepared training data
        assert state["prob_on"] == pytest.approx(b["appliances"][name]["prob_on"], abs=1e-5)


# ------------------------------------------------------------------------------------------- bad input
def post_raw(client: TestClient, path: str, text: str) -> Any:
    return client.post(path, content=text, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("mutate", "status", "field", "words"),
    [
        (lambda b: b["power_w"].__setitem__(3, "NaN"), 400, "power_w", "finite"),
        (lambda b: b["power_w"].__setitem__(3, "Infinity"), 400, "power_w", "finite"),
        (lambda b: b["power_w"].__setitem__(3, -20.0), 400, "power_w", "greater than or equal to 0"),
        (lambda b: b["power_w"].__setitem__(3, 5e6), 422, "power_w[3]", "plausible maximum"),
        (lambda b: b.__setitem__("power_w", b["power_w"][:100]), 422, "power_w", "at least 512"),
        (lambda b: b.__setitem__("interval_s", 7), 422, "interval_s", "every 5 s"),
        (lambda b: b["power_w"].__setitem__(3, "312"), 400, "power_w", "valid number"),
        (lambda b: b.__setitem__("power_w", "lots"), 400, "power_w", "valid array"),
        (lambda b: b.__setitem__("start", "yesterday"), 400, "start", "datetime"),
        (lambda b: b.__setitem__("start", "2026-01-05T00:00:00"), 400, "start", "timezone"),
        (lambda b: b.pop("device_id"), 400, "device_id", "Field required"),
        (lambda b: b.pop("start"), 400, "", "missing start"),
        (lambda b: b.__setitem__("colour", "red"), 400, "colour", "Extra inputs"),
        (lambda b: b.__setitem__("power_w", [None] * 17281), 422, "power_w", "at most 17280"),
        (lambda b: b.__setitem__("continues", "2026-01-05T00:00:00Z"), 422, "start", "after 'continues'"),
    ],
    ids=[
        "nan",
        "inf",
        "negative",
        "absurd",
        "too-short",
        "cadence",
        "string-number",
        "wrong-type",
        "bad-date",
        "naive-date",
        "missing-field",
        "missing-time",
        "unknown-field",
        "oversized",
        "session-start",
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(
    client: TestClient, mutate: Any, status: int, field: str, words: str
) -> None:
    b = body(readings())
    mutate(b)
    text = json.dumps(b).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    for path in ("/detect", "/predict"):
        if path == "/predict" and "continues" in b:
            continue  # /predict of every reading refuses the session form (below)
        r = post_raw(client, path, text)
        assert r.status_code == status, r.text
        out = r.json()
        if status == 422:
            assert out["field"] == field and words in out["error"]
        else:
            detail = out["detail"]
            assert any(field in ".".join(map(str, d["loc"])) and words in d["msg"] for d in detail), detail
    r = client.post("/predict", json={"device_id": "s", "continues": START, "power_w": [1.0]})
    assert r.status_code == 422 and r.json()["field"] == "continues"


@pytest.mark.parametrize(
    ("stamps", "words"),
    [
        (["2026-01-05T00:00:05Z", "2026-01-05T00:00:00Z"], "is before"),
        (["2026-01-05T00:00:00Z", "2026-01-05T00:00:00Z"], "duplicates"),
    ],
    ids=["unsorted", "duplicate"],
)
def test_unsorted_or_duplicate_timestamps_are_rejected(
    client: TestClient, stamps: list[str], words: str
) -> None:
    r = client.post("/detect", json={"device_id": "d", "timestamps": stamps, "power_w": [1.0, 2.0]})
    assert r.status_code == 400
    assert any("timestamps[1]" in d["msg"] and words in d["msg"] for d in r.json()["detail"])


def test_batch_errors_name_the_device(client: TestClient) -> None:
    good = body(readings(), device_id="be")
    r = client.post("/detect_batch", json={"devices": [good, body(readings()[:10], device_id="be2")]})
    assert r.status_code == 422 and r.json()["field"] == "devices[1].power_w"
    r = client.post("/detect_batch", json={"devices": []})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["devices"]
    r = client.post("/predict_batch", json={"devices": [good, {**good, "power_w": [1.0, -1.0]}]})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"][:2] == ["devices", 1]


def test_too_many_devices_is_a_422(trained_bundle: Path) -> None:
    small = new_engine(trained_bundle, max_devices=2)
    reqs = [req(readings(), device_id=f"x-{i}") for i in range(3)]
    with pytest.raises(RequestError, match="3 devices; at most 2"):
        small.detect(reqs)


# ------------------------------------------------------------------------- reading times and request sizes
FAR = "9999-12-31T23:00:00Z"  # 1,000 readings from here end in the year 10000


def _now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("5s")


def _far_batch() -> dict[str, Any]:
    return {"devices": [body(readings(), device_id="ok"), body([1.0] * 1000, "far", pd.Timestamp(FAR))]}


def _far_last_timestamp() -> dict[str, Any]:
    recent = [(_now() - pd.Timedelta(seconds=5 * (600 - i))).isoformat() for i in range(599)]
    return {"device_id": "t", "power_w": [1.0] * 600, "timestamps": [*recent, "9999-12-31T23:59:59Z"]}


@pytest.mark.parametrize(
    ("path", "make", "field"),
    [
        ("/detect", lambda: body([100.0] * 1000, start=pd.Timestamp(FAR)), "start"),
        ("/predict", lambda: body([100.0] * 1000, start=pd.Timestamp(FAR)), "start"),
        ("/predict", lambda: body([100.0] * 1000, start=pd.Timestamp(FAR), newest_only=True), "start"),
        ("/report", lambda: body([100.0] * 1000, start=pd.Timestamp(FAR)), "start"),
        ("/report", lambda: body([100.0] * 1000, start=pd.Timestamp("2300-01-01T00:00:00Z")), "start"),
        ("/detect", lambda: body([100.0] * 1000, start=pd.Timestamp("0001-01-01T00:00:00Z")), "start"),
        ("/detect_batch", _far_batch, r"devices\[1\].start"),
        ("/predict_batch", _far_batch, r"devices\[1\].start"),
        ("/detect", _far_last_timestamp, r"timestamps\[599\]"),
        ("/detect", lambda: {"device_id": "s", "continues": FAR, "power_w": [1.0]}, "continues"),
        # starting 23 h ahead: reading 721 (1 h in) is the first past the limit (722 across a 5 s edge)
        ("/detect", lambda: body([1.0] * 1000, start=_now() + pd.Timedelta(hours=23)), r"power_w\[72[12]\]"),
    ],
    ids=[
        "detect",
        "predict",
        "predict-newest",
        "report",
        "report-2300",
        "year-1",
        "detect-batch",
        "predict-batch",
        "timestamps",
        "session",
        "last-readings",
    ],
)
def test_implausible_reading_times_are_a_422_naming_the_field(
    client: TestClient, path: str, make: Any, field: str
) -> None:
    """Times outside serve.earliest_reading .. the server's clock + serve.max_ahead_s (24 h) are refused
    before anything is computed (1,000 readings from 9999-12-31T23:00 were an HTTP 500: year 10000)."""
    r = client.post(path, json=make())
    assert r.status_code == 422, r.text
    assert re.fullmatch(field, r.json()["field"]) and "not a plausible reading time" in r.json()["error"]


def test_readings_up_to_now_and_the_allowed_clock_skew_are_answered(client: TestClient) -> None:
    ahead = _now() + pd.Timedelta(hours=23)  # a monitor whose clock runs ahead (within serve.max_ahead_s)
    for end in (_now(), ahead):
        start = end - pd.Timedelta(seconds=5 * 599)
        r = client.post("/detect", json=body(readings(600), device_id="now", start=start))
        assert r.status_code == 200 and pd.Timestamp(r.json()["at"]) == end


def test_a_report_that_does_not_reconcile_is_a_422(
    client: TestClient, service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The report's totals must add up within report.reconcile_tolerance_*; when they do not (here: no
    tolerance at all, so float rounding breaks it), the answer is a 422 saying so, not a 500."""
    strict = service.REPORT_SETTINGS.model_copy(
        update={"reconcile_tolerance_kwh": 0.0, "reconcile_tolerance_fraction": 0.0}
    )
    monkeypatch.setattr(service, "REPORT_SETTINGS", strict)
    r = client.post("/report", json=body(readings(2000), device_id="rec"))
    assert r.status_code == 422 and r.json()["field"] == "power_w"
    assert "do not reconcile" in r.json()["error"] and "'rec'" in r.json()["error"]


def test_predict_of_every_reading_is_capped_across_a_batch(client: TestClient, engine: Engine) -> None:
    """/predict_batch answered every reading of up to serve.max_devices x serve.max_readings (17 million
    values back); now at most serve.max_series_readings readings in the whole call."""
    cap = engine.limits.max_series_readings
    n = cap // 3 + 1
    devices = [body([100.0] * n, device_id=f"s-{i}") for i in range(3)]  # each under max_readings
    r = client.post("/predict_batch", json={"devices": devices})
    assert r.status_code == 422 and r.json()["field"] == "devices"
    assert f"{3 * n:,} readings" in r.json()["error"] and "max_series_readings" in r.json()["error"]
    r = client.post("/predict_batch", json={"devices": devices, "newest_only": True})
    assert r.status_code == 200 and [len(x["remainder_w"]) for x in r.json()["results"]] == [1, 1, 1]


def test_readings_are_capped_across_a_batch(trained_bundle: Path) -> None:
    small = new_engine(trained_bundle, max_batch_readings=1500)
    reqs = [req(readings(600), device_id=f"b-{i}") for i in range(3)]
    with pytest.raises(RequestError, match="1,800 readings in 3 devices; at most 1,500") as e:
        small.detect(reqs)
    assert e.value.field == "devices"
    stretched = DeviceReadings(device_id="t", timestamps=[T0, T0 + pd.Timedelta(hours=2)], power_w=[1.0, 2.0])
    with pytest.raises(RequestError, match="at most 1,500"):  # a timestamp span counts as its grid's readings
        small.detect([req(readings(600), device_id="b"), stretched])
    assert len(small.detect(reqs[:2])) == 2


def test_form_bodies_are_a_415_not_a_500(client: TestClient) -> None:
    """BentoML decodes multipart and url-encoded bodies as forms (a garbled one was a 500): refused."""
    form = b'--x\r\nContent-Disposition: form-data; name="device_id"\r\n\r\nd\r\n--x--\r\n'
    for content_type in (
        "multipart/form-data; boundary=x",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
    ):
        r = client.post("/detect", content=form, headers={"content-type": content_type})
        assert r.status_code == 415 and r.json()["field"] == "content-type", (content_type, r.text)
    r = client.post("/detect", content=json.dumps(body(readings())), headers={"content-type": "text/plain"})
    assert r.status_code == 200  # any other type is read as JSON, as before


# ------------------------------------------------------------------------------------------- warm-up
def test_the_warm_up_runs_every_path_and_leaves_no_trace(trained_bundle: Path) -> None:
    from airwatt.serving.loading import report_settings
    from airwatt.serving.warmup import warm_up

    cold, fresh = new_engine(trained_bundle), new_engine(trained_bundle)
    done = warm_up(cold, report_settings())
    assert done.calls >= 10 and done.devices == 51
    assert len(cold.cache) == 0 and len(cold.cache.free) == cold.cache.capacity
    assert sum(cold.cache.stats.outcomes.values()) == 0 and cold.cache.stats.evictions == 0
    call = [req(readings(), device_id="after")]
    assert cold.detect_rows(call) == fresh.detect_rows(call)  # the same answers as an engine never warmed


def test_readyz_waits_for_every_worker_to_be_warm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airwatt.serving.loading import WARM_DIR_ENV, WarmMarks

    monkeypatch.setenv(WARM_DIR_ENV, str(tmp_path))
    one, two = WarmMarks(2, 1), WarmMarks(2, 2)
    one.mark_warm()
    assert not one.all_warm() and not two.all_warm()
    two.mark_warm()
    assert one.all_warm() and two.all_warm()
    WarmMarks(2, 2)  # worker 2 restarts: cold again until its warm-up ends
    assert not one.all_warm()


# ------------------------------------------------------------------------------------------- loading
def test_a_missing_model_stops_start_up_naming_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STAGED_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SystemExit, match="models:/airwatt-disaggregator@champion"):
        stage_model("models:/airwatt-disaggregator@champion")
    with pytest.raises(SystemExit, match=str(tmp_path / "nowhere")):
        stage_model(str(tmp_path / "nowhere"))


def test_an_offline_model_is_refused_with_the_reason(tmp_path: Path) -> None:
    from airwatt.errors import ConfigError
    from airwatt.models import GapPolicy, ModelSpec, NormStats, OnOffSpec, build_model
    from airwatt.serving.engine import streaming_net

    spec = ModelSpec(
        arch="multitask",
        arch_kwargs={"widths": [8, 8]},
        appliances=["fridge"],
        window_length=64,
        target="midpoint",
        interval_s=5,
        norm=NormStats(
            aggregate_mean_w=0, aggregate_std_w=1, power_mean_w={"fridge": 0}, power_std_w={"fridge": 1}
        ),
        on_off={"fridge": OnOffSpec(on_threshold_w=50, min_on_s=60, min_off_s=12, max_w=300)},
        gap=GapPolicy(max_fill_s=30, max_invalid_fraction=0.1),
    )
    with pytest.raises(ConfigError, match="offline model"):
        streaming_net(ModelBundle(spec, build_model(spec)))


@pytest.mark.slow
def test_a_registered_model_reports_its_registry_version(
    trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airwatt import tracking
    from airwatt.models.frame import predict_frame

    monkeypatch.delenv(STAGED_ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_params(REPO / "params.yaml").register_
    run_id = tracking.client(uri).create_run(tracking.ensure_experiment("serving-test", uri)).info.run_id
    b = ModelBundle.load(trained_bundle)
    example = pd.DataFrame(
        {"timestamp": pd.date_range("2026-01-05", periods=520, freq="5s"), "power_w": readings(520)}
    )
    model_uri = tracking.log_bundle_model(run_id, trained_bundle, example, predict_frame(b, example), uri)
    version = tracking.register(model_uri, run_id, cfg, uri)
    tracking.client(uri).set_registered_model_alias(cfg.model_name, "champion", version)
    staged = stage_model(f"models:/{cfg.model_name}@champion")
    assert staged.version == f"{cfg.model_name}/{version}"
    eng = Engine.load(staged, load_params(REPO / "params.yaml").serve)
    assert eng.detect([req(readings())])[0].model_version == staged.version


# ------------------------------------------------------------------------------------------- POST /report
def test_report_endpoint_equals_the_batch_report_of_the_same_readings(
    client: TestClient, bundle: ModelBundle
) -> None:
    """POST /report returns what `airwatt report` computes for the same readings (grid, prediction, report
    core), with the model version, and its energies reconcile with the measured energy."""
    from airwatt.report import report_for_readings

    r, _ = square_wave_device("d", hours=48)
    power = (r["power_w"].to_numpy() + np.random.default_rng(3).normal(0, 3, len(r))).round(2)
    power[1000:1003] = np.nan  # a short gap (filled) ...
    power[20000:20200] = np.nan  # ... and a long one (reported)
    values = [None if np.isnan(v) else float(v) for v in power]
    resp = client.post("/report", json=body(values, timezone="Europe/London"))
    assert resp.status_code == 200, resp.text
    served_report = resp.json()
    assert served_report["model_version"].startswith("sha256:")
    params = load_params(REPO / "params.yaml")
    frame = pd.DataFrame({"timestamp": r["timestamp"], "power_w": power})
    expected = report_for_readings(
        bundle, frame, params=params.report, timezone="Europe/London", device_id="d-1"
    )
    assert [d["day"] for d in served_report["days"]] == [d["day"] for d in expected["days"]]
    for got, want in zip(served_report["appliance_days"], expected["appliance_days"], strict=True):
        assert got["appliance"] == want["appliance"]
        assert got["energy_kwh"] == pytest.approx(want["energy_kwh"], rel=1e-4, abs=1e-6)
    measured = sum(d["measured_kwh"] for d in served_report["days"])
    explained = sum(a["energy_kwh"] for a in served_report["appliance_days"])
    assert explained == pytest.approx(measured, abs=1e-3)  # appliances + unexplained = measured
    assert sum(g["duration_s"] for g in served_report["gaps"]) >= 200 * 5 - 30


def test_report_endpoint_rejects_a_bad_zone_and_too_many_readings(client: TestClient, engine: Engine) -> None:
    resp = client.post("/report", json=body(readings(), timezone="Mars/Olympus"))
    assert resp.status_code == 400 and "timezone" in resp.text and "Mars/Olympus" in resp.text
    too_many = engine.cfg.max_report_readings + 1
    resp = client.post("/report", json=body([100.0] * too_many))
    assert resp.status_code == 422 and resp.json()["field"] == "power_w"


def test_the_rows_the_service_sends_are_the_typed_answers(engine: Engine) -> None:
    """The service writes Engine.detect_rows straight to JSON; they follow the DetectResponse schema and
    say what the typed answers say (prob_on rounded to 6 decimals)."""
    from airwatt.serving.schemas import DetectResponse

    h = engine.history
    power = readings(h)
    long_gap = power[:-20] + [None] * 20
    reqs = [req(power, "rows-1"), req(long_gap, "rows-2")]
    rows = engine.detect_rows(reqs)
    cont = T0 + pd.Timedelta(seconds=5 * (h - 1))
    rows += engine.detect_rows([DeviceReadings(device_id="rows-1", continues=cont, power_w=[power[-1]])])
    for row in rows:
        typed = DetectResponse.model_validate(row)
        assert json.loads(typed.model_dump_json()) == json.loads(json.dumps(row)), row["device_id"]
    assert [r["status"] for r in rows] == ["ok", "unknown", "ok"]
    assert rows[0]["at"].endswith("Z") and "missing" in rows[1]["reason"]


# ------------------------------------------------------------------------------------ appliance inventory
def test_a_device_inventory_restricts_detect_predict_and_report(
    client: TestClient, bundle: ModelBundle
) -> None:
    apps = list(bundle.appliances)
    assert len(apps) >= 2, apps
    mine = [apps[1]]
    power = readings()
    full = client.post("/detect", json=body(power)).json()
    det = client.post("/detect", json=body(power, appliances=mine)).json()
    assert list(det["appliances"]) == mine and det["appliances"][mine[0]] == full["appliances"][mine[0]]
    whole = client.post("/predict", json=body(power)).json()
    pred = client.post("/predict", json=body(power, appliances=mine)).json()
    assert list(pred["power_w"]) == mine
    k = len(power) - 1
    expected = power[k] - pred["power_w"][mine[0]][k]  # the remainder only subtracts the site's appliances
    assert pred["remainder_w"][k] == pytest.approx(expected, abs=1e-3)
    assert whole["remainder_w"][k] <= pred["remainder_w"][k] + 1e-6
    newest = client.post("/predict", json=body(power, appliances=mine, newest_only=True)).json()
    assert list(newest["power_w"]) == mine
    batch = client.post(
        "/detect_batch", json={"devices": [body(power, appliances=mine), body(power, device_id="d-2")]}
    ).json()
    assert [list(r["appliances"]) for r in batch["results"]] == [mine, apps]
    report = client.post("/report", json=body(power, appliances=mine)).json()
    reported = {row["appliance"] for row in report["appliance_days"]}
    assert mine[0] in reported and reported <= {*mine, "unexplained"}
    # A registered appliance the model does not predict is not answered for; an unknown name is a 400.
    other = next(a for a in APPLIANCES if a not in apps)
    assert (
        list(client.post("/detect", json=body(power, appliances=[*mine, other])).json()["appliances"]) == mine
    )
    bad = client.post("/detect", json=body(power, appliances=["fridge", "spaceship"]))
    assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["appliances"]
    assert "appliances[1] 'spaceship'" in bad.text
