"""The serving API in-process (starlette TestClient on the BentoML ASGI app) and the engine behind it.

Real HTTP against `bentoml serve` is in test_serving_http.py. The model is the session's ``trained_bundle``
(a causal model trained for a few steps): answers are compared with ModelBundle, never hard-coded.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, square_wave_device
from starlette.testclient import TestClient

from airwatt.config import load_params
from airwatt.models import ModelBundle
from airwatt.serving.engine import Engine, _run_start
from airwatt.serving.inputs import RequestError
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


def readings(n: int = 600, seed: int = 0) -> list[float]:
    """A fridge-and-kettle household (the conftest square wave) with noise: non-trivial answers."""
    r, _ = square_wave_device("d", hours=24)
    power = r["power_w"].to_numpy()[6 * 720 + 600 : 6 * 720 + 600 + n]  # around the 07:00 kettle
    return (power + np.random.default_rng(seed).normal(0, 3, n)).round(2).tolist()


def body(power_w: list[Any], device_id: str = "d-1", **extra: Any) -> dict[str, Any]:
    return {"device_id": device_id, "start": START, "interval_s": 5, "power_w": power_w, **extra}


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
def client(trained_bundle: Path) -> Iterator[TestClient]:
    module = load_service(str(trained_bundle))
    with TestClient(module.AirWatt.to_asgi()) as c:
        os.environ.pop(STAGED_ENV, None)  # recorded by the service's start-up: not for later servers
        yield c


@pytest.fixture(scope="module")
def bundle(trained_bundle: Path) -> ModelBundle:
    return ModelBundle.load(trained_bundle)


@pytest.fixture(scope="module")
def engine(trained_bundle: Path) -> Engine:
    return Engine.load(
        resolve_model(str(trained_bundle), trained_bundle.parent), load_params(REPO / "params.yaml").serve
    )


# ---------------------------------------------------------------------------------------------- endpoints
def test_detect_answers_every_appliance_at_the_newest_reading(
    client: TestClient, bundle: ModelBundle
) -> None:
    power = readings()
    r = client.post("/detect", json=body(power))
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "ok"
    assert set(out["appliances"]) == set(bundle.appliances)
    assert pd.Timestamp(out["at"]) == pd.Timestamp(START) + pd.Timedelta(seconds=5 * (len(power) - 1))
    x = bundle.normalise(np.array(power))[-bundle.window_length :]
    _, prob = bundle.predict_windows(__import__("torch").from_numpy(x[None]))
    for j, name in enumerate(bundle.appliances):
        got = out["appliances"][name]
        assert got["prob_on"] == pytest.approx(float(prob[0, j]), abs=1e-6)
        assert got["on"] == (float(prob[0, j]) >= 0.5)


def test_predict_every_reading_matches_the_evaluation_code(client: TestClient, bundle: ModelBundle) -> None:
    """Parity: the service returns what ModelBundle.predict_series (airwatt evaluate's path) returns."""
    power = readings()
    r = client.post("/predict", json=body(power))
    assert r.status_code == 200, r.text
    out = r.json()
    expected = bundle.predict_series(np.array(power))
    got = np.array([out["power_w"][a] for a in bundle.appliances]).T  # (T, A)
    assert got.shape == expected.power_w.shape
    # 1e-5 relative: the same float32 code, but torch may split a reduction over another number of threads
    # in the server's worker thread (one ulp, ~6e-5 W at 500 W).
    np.testing.assert_allclose(got, expected.power_w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["remainder_w"], np.array(power) - got.sum(axis=1), rtol=1e-5, atol=1e-5)
    assert all(out["predicted"])


def test_predict_newest_only_matches_the_series_at_the_newest_reading(
    client: TestClient, bundle: ModelBundle
) -> None:
    power = readings()
    out = client.post("/predict", json=body(power, newest_only=True)).json()
    expected = bundle.predict_series(np.array(power)).power_w[-1]
    got = np.array([out["power_w"][a][0] for a in bundle.appliances])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)  # window path vs the sequence path
    assert out["remainder_w"][0] == pytest.approx(power[-1] - got.sum(), abs=1e-4)


def test_batch_answers_equal_single_answers(client: TestClient) -> None:
    devices = [body(readings(seed=i), device_id=f"d-{i}") for i in range(3)]
    batch = client.post("/detect_batch", json={"devices": devices}).json()["results"]
    singles = [client.post("/detect", json=d).json() for d in devices]
    for b, s in zip(batch, singles, strict=True):
        for name, state in b["appliances"].items():
            assert state["on"] == s["appliances"][name]["on"]
            assert state["prob_on"] == pytest.approx(s["appliances"][name]["prob_on"], abs=1e-6)
    pbatch = client.post("/predict_batch", json={"devices": devices, "newest_only": True}).json()["results"]
    psingle = [client.post("/predict", json={**d, "newest_only": True}).json() for d in devices]
    for b, s in zip(pbatch, psingle, strict=True):
        for name in b["power_w"]:
            assert b["power_w"][name][0] == pytest.approx(s["power_w"][name][0], abs=1e-4)


def test_a_batch_answers_each_device_as_if_it_came_alone(engine: Engine) -> None:
    """The one-pass batch path (compact form, one length) and the device-by-device path give each device the
    answer /detect gives it alone, whatever else is in the batch: gaps filled, unknowns, other forms."""
    power = readings(600)
    gappy = list(power)
    gappy[-5:-2] = [None] * 3  # filled
    long_gap = power[:-20] + [None] * 20  # the newest reading is missing: unknown
    holey = power[:60] + [None] * 56 + power[116:]  # too many missing in the earliest windows only
    t0 = pd.Timestamp(START)
    stamped = {"device_id": "ts", "timestamps": [(t0 + pd.Timedelta(seconds=5 * i)).isoformat() for i in
               range(600)], "power_w": readings(600, seed=9)}  # fmt: skip
    one_pass = [body(readings(600, seed=i), f"d-{i}") for i in range(4)]
    batches = {
        "one pass": one_pass,
        "with gaps": [*one_pass[:2], body(gappy, "gappy"), body(long_gap, "long"), body(holey, "holey")],
        "mixed forms and lengths": [*one_pass[:2], stamped, body(readings(530, seed=5), "short")],
    }
    for name, devices in batches.items():
        reqs = [DeviceReadings(**d) for d in devices]
        together = engine.detect(reqs)
        for req, got in zip(reqs, together, strict=True):
            prep = engine.prepare_detect(req)
            alone = engine.answer_detect(prep, engine.infer(prep.windows)).model_dump()
            got_d, where, keys = got.model_dump(), (name, req.device_id), ("status", "reason", "at")
            assert [got_d[k] for k in keys] == [alone[k] for k in keys], where
            for a, state in alone["appliances"].items():
                assert got_d["appliances"][a]["on"] == state["on"], where
                assert got_d["appliances"][a]["since"] == state["since"], where
                assert got_d["appliances"][a]["prob_on"] == pytest.approx(state["prob_on"], abs=1e-6)
    gaps = [DeviceReadings(**d) for d in batches["with gaps"]]
    assert [r.status for r in engine.detect(gaps)] == ["ok", "ok", "ok", "unknown", "ok"]
    holey_prep = engine.prepare_detect(gaps[-1])
    assert holey_prep.problems[0] is not None and holey_prep.problems[-1] is None  # the case is exercised
    implausible = [*one_pass[:2], body([*power[:-1], 2e6])]
    with pytest.raises(RequestError) as e:
        engine.detect([DeviceReadings(**d) for d in implausible])
    assert e.value.field == "devices[2].power_w[599]"


def test_small_batches_run_in_the_event_loop_and_large_ones_in_a_thread(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve.inline_max_windows: a batch within it is answered without a thread hop, a larger one in a thread
    (so it does not hold up /healthz); the answers are the same either way."""
    threaded: list[str] = []
    to_thread = asyncio.to_thread

    async def spy(fn: Any, *args: Any, **kwargs: Any) -> Any:
        threaded.append(fn.__name__)
        return await to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", spy)
    per_device = engine.since_readings + 1  # windows of a device sending 512 + since readings
    many = engine.cfg.inline_max_windows // per_device + 1
    devices = [body(readings(512 + engine.since_readings, seed=i), f"d-{i}") for i in range(many)]
    assert (
        engine.windows_needed([DeviceReadings(**d) for d in devices], engine.since_readings)
        == many * per_device
    )
    small = client.post("/detect_batch", json={"devices": devices[:2]})
    assert small.status_code == 200 and threaded == []
    large = client.post("/detect_batch", json={"devices": devices})
    assert large.status_code == 200 and threaded == ["detect"]
    for a, b in zip(small.json()["results"], large.json()["results"][:2], strict=True):
        assert a["appliances"].keys() == b["appliances"].keys()
        for name, state in a["appliances"].items():
            assert (state["on"], state["since"]) == (
                b["appliances"][name]["on"],
                b["appliances"][name]["since"],
            )
            assert state["prob_on"] == pytest.approx(b["appliances"][name]["prob_on"], abs=1e-6)
    series = client.post("/predict_batch", json={"devices": devices[:1]})  # whole series: in a thread
    assert series.status_code == 200 and threaded == ["detect", "predict"]


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
    d = body(readings())
    assert client.post("/detect", json=d).json()["model_version"] == version
    assert client.post("/predict", json=d).json()["model_version"] == version
    batch = client.post("/detect_batch", json={"devices": [d]}).json()
    assert batch["model_version"] == version and batch["results"][0]["model_version"] == version
    info = client.post("/model", json={}).json()
    assert info["model_version"] == version
    assert info["window_length"] == 512 and info["interval_s"] == 5
    assert set(info["thresholds"]) == set(info["appliances"])
    assert info["min_history_s"] == 512 * 5


def test_openapi_page_lists_the_endpoints(client: TestClient) -> None:
    paths = client.get("/docs.json").json()["paths"]
    assert {"/detect", "/predict", "/detect_batch", "/predict_batch", "/model"} <= set(paths)


# -------------------------------------------------------------------------------------- gaps and cadence
def test_short_gaps_are_forward_filled(client: TestClient, engine: Engine) -> None:
    power = readings()
    assert engine.limits.max_fill_s >= 15
    gappy = list(power)
    gappy[-5:-2] = [None, None, None]  # 15 s missing: within the tolerance
    filled = list(power)
    filled[-5:-2] = [power[-6]] * 3
    a = client.post("/detect", json=body(gappy)).json()
    b = client.post("/detect", json=body(filled)).json()
    assert a["status"] == "ok"
    assert a["appliances"] == b["appliances"]


def test_a_long_gap_at_the_newest_reading_answers_unknown(client: TestClient, engine: Engine) -> None:
    power = readings()
    n_missing = int(engine.limits.max_fill_s // 5) + 2
    r = client.post("/detect", json=body(power[:-n_missing] + [None] * n_missing))
    assert r.status_code == 200
    assert r.json()["status"] == "unknown" and "missing" in r.json()["reason"]
    assert r.json()["appliances"] == {}
    p = client.post("/predict", json=body(power[:-n_missing] + [None] * n_missing, newest_only=True)).json()
    assert p["predicted"] == [False] and p["remainder_w"] == [None]


def test_a_window_with_too_many_missing_readings_answers_unknown(client: TestClient) -> None:
    power = readings()
    holey = [None if i % 5 == 0 and i > 60 else v for i, v in enumerate(power)]  # 20 %, single slots
    holey[-1] = power[-1]
    out = client.post("/detect", json=body(holey)).json()
    assert out["status"] == "ok"  # single missing slots are filled (5 s <= max_fill_s)
    power[-400:-300] = [None] * 100  # 500 s: longer than the tolerance, 20 % of the window
    out = client.post("/detect", json=body(power)).json()
    assert out["status"] == "unknown" and "of the 512 readings" in out["reason"]


def test_timestamps_form_is_placed_on_the_grid(client: TestClient) -> None:
    power = readings()
    t0 = pd.Timestamp(START)
    stamps = [(t0 + pd.Timedelta(seconds=5 * i + 1.5)).isoformat() for i in range(len(power))]  # jittered
    a = client.post("/detect", json={"device_id": "d", "timestamps": stamps, "power_w": power}).json()
    b = client.post("/detect", json=body(power)).json()
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
    ],
    ids=["nan", "inf", "negative", "absurd", "too-short", "cadence", "string-number", "wrong-type",
         "bad-date", "naive-date", "missing-field", "missing-time", "unknown-field", "oversized"],
)  # fmt: skip
def test_bad_input_is_a_4xx_naming_the_field(
    client: TestClient, mutate: Any, status: int, field: str, words: str
) -> None:
    b = body(readings())
    mutate(b)
    text = json.dumps(b).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    for path in ("/detect", "/predict"):
        r = post_raw(client, path, text)
        assert r.status_code == status, r.text
        out = r.json()
        if status == 422:
            assert out["field"] == field and words in out["error"]
        else:
            detail = out["detail"]
            assert any(field in ".".join(map(str, d["loc"])) and words in d["msg"] for d in detail), detail


@pytest.mark.parametrize(
    ("stamps", "words"),
    [(["2026-01-05T00:00:05Z", "2026-01-05T00:00:00Z"], "is before"),
     (["2026-01-05T00:00:00Z", "2026-01-05T00:00:00Z"], "duplicates")],
    ids=["unsorted", "duplicate"],
)  # fmt: skip
def test_unsorted_or_duplicate_timestamps_are_rejected(
    client: TestClient, stamps: list[str], words: str
) -> None:
    r = client.post("/detect", json={"device_id": "d", "timestamps": stamps, "power_w": [1.0, 2.0]})
    assert r.status_code == 400
    assert any("timestamps[1]" in d["msg"] and words in d["msg"] for d in r.json()["detail"])


def test_batch_errors_name_the_device(client: TestClient) -> None:
    good = body(readings())
    r = client.post("/detect_batch", json={"devices": [good, body(readings()[:10])]})
    assert r.status_code == 422 and r.json()["field"] == "devices[1].power_w"
    r = client.post("/detect_batch", json={"devices": []})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["devices"]
    r = client.post("/predict_batch", json={"devices": [good, {**good, "power_w": [1.0, -1.0]}]})
    assert r.status_code == 400 and r.json()["detail"][0]["loc"][:2] == ["devices", 1]


def test_too_many_devices_is_a_422(engine: Engine) -> None:
    small = Engine(engine.bundle, engine.staged, engine.cfg.model_copy(update={"max_devices": 2}))
    reqs = [DeviceReadings(**body(readings())) for _ in range(3)]
    with pytest.raises(RequestError, match="3 devices; at most 2"):
        small.detect(reqs)


# ----------------------------------------------------------------------------------- since, loading
def test_since_is_the_start_of_the_newest_run_when_it_began_inside_the_span() -> None:
    on, unknown = np.array([0, 0, 1, 1, 1], bool), np.zeros(5, bool)
    assert _run_start(on, unknown) == 2
    assert _run_start(np.ones(5, bool), unknown) is None  # the state held throughout: began earlier
    assert _run_start(on, np.array([1, 0, 0, 0, 0], bool)) == 2
    assert _run_start(on, np.array([0, 1, 0, 0, 0], bool)) is None  # no known reading before the run
    assert _run_start(on, np.array([0, 0, 1, 0, 0], bool)) is None  # an unknown reading breaks the run


def test_detect_since_spans_the_configured_readings(engine: Engine) -> None:
    req = DeviceReadings(**body(readings(700)))
    prep = engine.prepare_detect(req)
    assert len(prep.ends) == engine.since_readings + 1 == 120 // 5 + 1
    assert len(engine.prepare_newest(req).windows) == 1


def test_a_missing_model_stops_start_up_naming_the_uri(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(STAGED_ENV, raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SystemExit, match="models:/airwatt-disaggregator@champion"):
        stage_model("models:/airwatt-disaggregator@champion")
    with pytest.raises(SystemExit, match=str(tmp_path / "nowhere")):
        stage_model(str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_a_registered_model_reports_its_registry_version(
    trained_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airwatt import tracking

    monkeypatch.delenv(STAGED_ENV, raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    cfg = load_params(REPO / "params.yaml").register_
    run_id = tracking.client(uri).create_run(tracking.ensure_experiment("serving-test", uri)).info.run_id
    b = ModelBundle.load(trained_bundle)
    example = pd.DataFrame(
        {"timestamp": pd.date_range("2026-01-05", periods=520, freq="5s"), "power_w": readings(520)}
    )
    model_uri = tracking.log_bundle_model(
        run_id, trained_bundle, example, tracking.predict_frame(b, example), uri
    )
    version = tracking.register(model_uri, run_id, cfg, uri)
    tracking.client(uri).set_registered_model_alias(cfg.model_name, "champion", version)
    staged = stage_model(f"models:/{cfg.model_name}@champion")
    assert staged.version == f"{cfg.model_name}/{version}"
    eng = Engine.load(staged, load_params(REPO / "params.yaml").serve)
    assert eng.detect([DeviceReadings(**body(readings()))])[0].model_version == staged.version


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
    served = resp.json()
    assert served["model_version"].startswith("sha256:")
    params = load_params(REPO / "params.yaml")
    frame = pd.DataFrame({"timestamp": r["timestamp"], "power_w": power})
    expected = report_for_readings(
        bundle, frame, params=params.report, max_fill_s=params.prepare.max_fill_s, timezone="Europe/London",
        device_id="d-1",
    )  # fmt: skip
    assert [d["day"] for d in served["days"]] == [d["day"] for d in expected["days"]]
    for got, want in zip(served["appliance_days"], expected["appliance_days"], strict=True):
        assert got["appliance"] == want["appliance"]
        assert got["energy_kwh"] == pytest.approx(want["energy_kwh"], rel=1e-4, abs=1e-6)
    measured = sum(d["measured_kwh"] for d in served["days"])
    explained = sum(a["energy_kwh"] for a in served["appliance_days"])
    assert explained == pytest.approx(measured, abs=1e-3)  # appliances + unexplained = measured
    assert sum(g["duration_s"] for g in served["gaps"]) >= 200 * 5 - 30


def test_report_endpoint_rejects_a_bad_zone_and_too_many_readings(client: TestClient, engine: Engine) -> None:
    resp = client.post("/report", json=body(readings(), timezone="Mars/Olympus"))
    assert resp.status_code == 400 and "timezone" in resp.text and "Mars/Olympus" in resp.text
    too_many = engine.cfg.max_report_readings + 1
    resp = client.post("/report", json=body([100.0] * too_many))
    assert resp.status_code == 422 and resp.json()["field"] == "power_w"


def test_the_internal_batching_endpoint_refuses_a_wrong_shape_with_a_4xx(client: TestClient) -> None:
    resp = client.post("/infer_windows", json={"windows": [[0.0, 1.0, 2.0]]})
    assert resp.status_code == 400 and "(B, 512)" in resp.text
