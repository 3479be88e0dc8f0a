"""The service over real HTTP: `bentoml serve` started on a free loopback port (one server for the module),
start-up failure on a missing model, and `bentoml build` offline from serving/bentofile.yaml."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from conftest import REPO

from airwatt.procs import free_port, stop_process, wait_until_ok
from airwatt.serving.loading import MODEL_URI_ENV, PARAMS_ENV, STAGED_ENV, bundle_hash

BENTOML = str(Path(sys.executable).parent / "bentoml")


def bentoml_env(tmp: Path, model_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != STAGED_ENV}
    return env | {
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        MODEL_URI_ENV: model_uri,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
    }


def serve_args(port: int) -> list[str]:
    return [BENTOML, "serve", "service:AirWatt", "--working-dir", str(REPO / "serving"),
            "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip


@contextmanager
def served(tmp: Path, model_uri: str, **serve: object) -> Iterator[str]:
    """`bentoml serve` on a free loopback port, params.yaml ``serve`` keys overridden by ``serve``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["serve"].update(serve)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = bentoml_env(tmp, model_uri) | {PARAMS_ENV: str(tmp / "params.yaml")}
    port = free_port()
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(serve_args(port), env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/readyz", proc, tmp / "server.log", what="bentoml serve", timeout_s=120)
        yield url
    finally:
        stop_process(proc, timeout_s=30)
        log.close()


@pytest.fixture(scope="module")
def server(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module, with adaptive batching on (off by default: docs/serving.md)."""
    with served(tmp_path_factory.mktemp("serve"), str(trained_bundle), adaptive_batching=True) as url:
        yield url


def device(n: int = 600, seed: int = 0, device_id: str = "d-1") -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 5
    power = 90 + 100 * ((t % 3600) < 1200) + 2000 * ((t > 2400) & (t < 2580)) + rng.normal(0, 3, n)
    return {"device_id": device_id, "start": "2026-01-05T06:00:00Z", "interval_s": 5,
            "power_w": power.tolist()}  # fmt: skip


def test_endpoints_answer_over_http(server: str, trained_bundle: Path) -> None:
    version = bundle_hash(trained_bundle)
    d = device()
    with httpx.Client(base_url=server, timeout=30) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        info = c.post("/model", json={}).json()
        assert info["model_version"] == version and info["window_length"] == 512
        det = c.post("/detect", json=d).json()
        assert det["status"] == "ok" and set(det["appliances"]) == set(info["appliances"])
        pred = c.post("/predict", json=d).json()
        assert len(pred["remainder_w"]) == len(d["power_w"])
        assert set(pred["power_w"]) == set(info["appliances"])
        batch = c.post("/detect_batch", json={"devices": [d, device(seed=1, device_id="d-2")]}).json()
        assert [r["device_id"] for r in batch["results"]] == ["d-1", "d-2"]
        pbatch = c.post("/predict_batch", json={"devices": [d], "newest_only": True}).json()
        assert len(pbatch["results"][0]["remainder_w"]) == 1
        report = c.post("/report", json={**d, "timezone": "Europe/London"}).json()
        assert report["timezone"] == "Europe/London" and report["days"][0]["measured_kwh"] > 0
        for out in (det, pred, batch, pbatch, report):
            assert out["model_version"] == version
        assert "bentoml_service_request_total" in c.get("/metrics").text


def test_bad_input_over_http_is_a_4xx_naming_the_field(server: str) -> None:
    d = device()
    with httpx.Client(base_url=server, timeout=30) as c:
        r = c.post("/detect", json={**d, "power_w": d["power_w"][:10]})
        assert r.status_code == 422 and r.json()["field"] == "power_w"
        r = c.post("/detect", json={**d, "power_w": [-1.0, *d["power_w"]]})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["power_w", 0]
        r = c.post("/detect", content=b'{"device_id": "d", "power_w": [1.0, NaN]}')
        assert r.status_code == 400
        r = c.post("/detect", content=b"not json")
        assert 400 <= r.status_code < 500
        r = c.post("/detect_batch", json={"devices": []})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["devices"]


def test_concurrent_single_calls_are_batched_and_agree_with_the_batch_endpoint(server: str) -> None:
    devices = [device(seed=i, device_id=f"d-{i}") for i in range(32)]
    with httpx.Client(base_url=server, timeout=30) as c:
        batch = c.post("/detect_batch", json={"devices": devices}).json()["results"]
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda d: c.post("/detect", json=d), devices * 3))
        assert [r.status_code for r in responses] == [200] * len(responses), {r.text for r in responses}
        singles = [r.json() for r in responses]
        metrics = c.get("/metrics").text
    for s, b in zip(singles, batch * 3, strict=True):
        assert s["device_id"] == b["device_id"]
        for name, state in b["appliances"].items():
            assert s["appliances"][name]["prob_on"] == pytest.approx(state["prob_on"], abs=1e-5)
    assert adaptive_batch_calls(metrics) > 0
    sizes = {  # adaptive batch size histogram: calls to infer_windows per batch size bucket
        float(m.group(1)): float(m.group(2))
        for m in re.finditer(r'adaptive_batch_size_bucket\{[^}]*le="([0-9.]+)"[^}]*\} ([0-9.e+]+)', metrics)
    }
    assert sizes, "no adaptive batching metrics"
    batched_calls, calls_of_one = max(sizes.values()), sizes.get(1.0, 0.0)
    assert batched_calls > calls_of_one, f"no call was batched with another: {sizes}"


def adaptive_batch_calls(metrics: str) -> float:
    """How many model calls went through adaptive batching (the +Inf bucket of its size histogram)."""
    counts = re.findall(r'adaptive_batch_size_bucket\{[^}]*le="\+Inf"[^}]*\} ([0-9.e+]+)', metrics)
    return sum(float(c) for c in counts)


def test_without_adaptive_batching_single_calls_are_answered_directly(
    trained_bundle: Path, tmp_path: Path
) -> None:
    """serve.adaptive_batching false (the default: faster on CPU, docs/serving.md): the same answers, and no
    call goes through the batchable endpoint."""
    devices = [device(seed=i, device_id=f"d-{i}") for i in range(8)]
    with (
        served(tmp_path, str(trained_bundle), adaptive_batching=False) as url,
        httpx.Client(base_url=url, timeout=30) as c,
    ):
        batch = c.post("/detect_batch", json={"devices": devices}).json()["results"]
        with ThreadPoolExecutor(8) as pool:
            singles = [r.json() for r in pool.map(lambda d: c.post("/detect", json=d), devices)]
        metrics = c.get("/metrics").text
    for one, b in zip(singles, batch, strict=True):
        assert one["device_id"] == b["device_id"]
        for name, state in b["appliances"].items():
            assert one["appliances"][name]["prob_on"] == pytest.approx(state["prob_on"], abs=1e-5)
    assert adaptive_batch_calls(metrics) == 0


def test_a_model_that_cannot_load_stops_bentoml_serve(tmp_path: Path) -> None:
    uri = "models:/airwatt-disaggregator@no-such-alias"
    proc = subprocess.run(
        serve_args(free_port()), env=bentoml_env(tmp_path, uri), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode != 0
    assert f"cannot load the model {uri}" in proc.stderr


def pins(lines: list[str]) -> dict[str, str]:
    """``name==version`` requirement lines -> {normalised name: version}."""
    parts = [ln.split("#")[0].partition("==") for ln in lines]
    return {n.strip().lower().replace("_", "-"): v.strip() for n, _, v in parts if v.strip()}


def test_the_bento_pins_the_versions_pyproject_and_constraints_pin() -> None:
    project = pins(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"])
    locked = pins((REPO / "constraints.txt").read_text().splitlines())
    bento = pins(yaml.safe_load((REPO / "serving" / "bentofile.yaml").read_text())["python"]["packages"])
    assert {"torch", "bentoml", "uvloop", "httptools"} <= project.keys()
    assert {n: v for n, v in project.items() if locked.get(n) != v} == {}, "constraints.txt differs"
    assert {n: v for n, v in bento.items() if project.get(n) != v} == {}, "bentofile.yaml differs"


@pytest.mark.slow
def test_bentoml_build_works_offline(tmp_path: Path) -> None:
    env = bentoml_env(tmp_path, "unused") | {"PIP_NO_INDEX": "1"}
    proc = subprocess.run(
        [BENTOML, "build", "-f", "serving/bentofile.yaml", "."],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bento,) = [p for p in (tmp_path / "bentoml" / "bentos" / "airwatt").iterdir() if p.name != "latest"]
    src = bento / "src"
    assert (src / "serving" / "service.py").is_file() and (src / "params.yaml").is_file()
    assert (src / "src" / "airwatt" / "serving" / "engine.py").is_file()
    openapi = (bento / "apis" / "openapi.yaml").read_text()
    assert "/detect_batch" in openapi and "/predict" in openapi
