"""The service over real HTTP: `bentoml serve` started on a free loopback port (one server for the module,
and one with small limits for the guards), start-up failure on a missing model, and `bentoml build` offline
from serving/bentofile.yaml."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import REPO, square_wave_device

from airwatt.appliances import APPLIANCES
from airwatt.dataset import Dataset, DatasetWriter, DeviceInfo
from airwatt.evaluate import evaluate_bundle, grid_for_model
from airwatt.labels import derive_labels
from airwatt.metrics import metrics_table, onoff_totals, power_totals
from airwatt.models import ModelBundle
from airwatt.procs import free_port, stop_process, wait_until_ok
from airwatt.serving.loading import MODEL_URI_ENV, PARAMS_ENV, STAGED_ENV, bundle_hash

BENTOML = str(Path(sys.executable).parent / "bentoml")
pytestmark = pytest.mark.server  # `bentoml serve` (`make test-fast` leaves these out)


def bentoml_env(tmp: Path, model_uri: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != STAGED_ENV}
    return env | {
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        MODEL_URI_ENV: model_uri,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
    }


def serve_args(port: int) -> list[str]:
    return [
        BENTOML,
        "serve",
        "service:AirWatt",
        "--working-dir",
        str(REPO / "serving"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@contextmanager
def served(tmp: Path, model_uri: str, **serve: object) -> Iterator[str]:
    """`bentoml serve` on a free loopback port, params.yaml ``serve`` keys overridden by ``serve``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["serve"].update(serve)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (tmp / "tmp").mkdir(exist_ok=True)
    env = bentoml_env(tmp, model_uri) | {PARAMS_ENV: str(tmp / "params.yaml"), "TMPDIR": str(tmp / "tmp")}
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
    """One server for the module, with the default settings (two workers)."""
    with served(tmp_path_factory.mktemp("serve"), str(trained_bundle)) as url:
        yield url


@pytest.fixture(scope="module")
def guarded(trained_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server (two workers) with small guards: one call in progress per worker, 1 MiB bodies."""
    with served(
        tmp_path_factory.mktemp("guarded"), str(trained_bundle), max_concurrency=1, max_body_mib=1
    ) as url:
        yield url


def device(n: int = 600, seed: int = 0, device_id: str = "d-1") -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 5
    power = 90 + 100 * ((t % 3600) < 1200) + 2000 * ((t > 2400) & (t < 2580)) + rng.normal(0, 3, n)
    return {
        "device_id": device_id,
        "start": "2026-01-05T06:00:00Z",
        "interval_s": 5,
        "power_w": power.tolist(),
    }


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
        metrics = c.get("/metrics").text
        assert "bentoml_service_request_total" in metrics
        assert re.search(r'airwatt_state_cache_lookups_total\{outcome="miss_absent"\} [1-9]', metrics), (
            metrics
        )
        assert "airwatt_state_cache_devices" in metrics and "airwatt_state_cache_evictions_total" in metrics


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
        r = c.post("/detect", json={"device_id": "ghost", "continues": d["start"], "power_w": [1.0]})
        assert r.status_code == 409 and r.json()["devices"] == ["ghost"] and "resend" in r.json()["error"]


def test_concurrent_single_calls_agree_with_the_batch_endpoint(server: str) -> None:
    """Concurrent calls over many connections (both workers, each with its own device states) give every
    device the answer the batch endpoint gives it."""
    devices = [device(seed=i, device_id=f"c-{i}") for i in range(32)]
    with httpx.Client(base_url=server, timeout=30) as c:
        batch = c.post("/detect_batch", json={"devices": devices}).json()["results"]
        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(lambda d: c.post("/detect", json=d), devices * 3))
    assert [r.status_code for r in responses] == [200] * len(responses), {r.text for r in responses}
    for s, b in zip([r.json() for r in responses], batch * 3, strict=True):
        assert s["device_id"] == b["device_id"]
        for name, state in b["appliances"].items():
            assert s["appliances"][name]["on"] == state["on"]
            assert s["appliances"][name]["prob_on"] == pytest.approx(state["prob_on"], abs=1e-5)


def test_served_metrics_equal_what_the_service_answers_reading_by_reading(
    server: str, trained_bundle: Path, tmp_path: Path
) -> None:
    """Replay 8 hours of one device through the real service, one reading per call, as the platform
    would (stateless calls while the history grows, then the session form on one connection, resending
    the history on a 409): the F1 and MAE computed from the answers are what `airwatt evaluate` reports."""
    bundle = ModelBundle.load(trained_bundle)
    readings_df, gt = square_wave_device("r-1", hours=8)
    noise = np.random.default_rng(5).normal(0, 3, len(readings_df))
    readings_df["power_w"] = (readings_df["power_w"] + noise).round(2)
    readings_df.loc[2000:2003, "power_w"] = np.nan  # a short gap, filled
    readings_df = readings_df.drop(readings_df.index[3000:3090])  # 7.5 min offline: unknown answers
    apps = ["fridge", "kettle"]
    with DatasetWriter(tmp_path / "replay", name="replay", appliances=apps, interval_s=5) as w:
        w.add_device(
            DeviceInfo(device_id="r-1", appliances=apps, rated_max_w=10000),
            readings_df,
            ground_truth=gt,
            labels=derive_labels(gt, apps, APPLIANCES, 5),
        )
    report = evaluate_bundle(bundle, tmp_path / "replay")
    g, has_power = grid_for_model(
        Dataset(tmp_path / "replay"), "r-1", bundle.appliances, interval_s=5, max_fill_s=bundle.gap.max_fill_s
    )
    t0 = pd.Timestamp(g.start_ms, unit="ms", tz="UTC")
    values = [None if np.isnan(v) else float(v) for v in g.aggregate_w]  # the grid's slots, nulls for gaps
    n, a = len(values), len(bundle.appliances)
    on, power = np.zeros((n, a), bool), np.zeros((n, a))
    resent = 0
    h = bundle.history_length
    with httpx.Client(base_url=server, timeout=30) as c:
        for t in range(n):
            lo = max(0, t + 1 - h)
            stateless = {
                "device_id": "r-1",
                "start": (t0 + pd.Timedelta(seconds=5 * lo)).isoformat(),
                "interval_s": 5,
                "power_w": values[lo : t + 1],
            }
            if t < h:
                r = c.post("/detect", json=stateless)
            else:  # the session form: the new reading only
                cont = (t0 + pd.Timedelta(seconds=5 * (t - 1))).isoformat()
                r = c.post("/detect", json={"device_id": "r-1", "continues": cont, "power_w": [values[t]]})
                if r.status_code == 409:  # this worker lacks the state: resend the history
                    resent += 1
                    r = c.post("/detect", json=stateless)
            if r.status_code == 422:  # shorter than the model's window: no answer (off, 0 W)
                assert t < bundle.window_length - 1, r.text
                continue
            assert r.status_code == 200, r.text
            det = r.json()
            if det["status"] == "ok":
                on[t] = [det["appliances"][name]["on"] for name in bundle.appliances]
                # the watts of the same state: the same newest reading again (the cached answer)
                pred = c.post("/predict", json={**stateless, "newest_only": True}).json()
                assert pred["predicted"] == [True]
                power[t] = [pred["power_w"][name][0] for name in bundle.appliances]
    assert resent <= 1  # one connection stays on one worker
    mask = g.status_valid & g.valid[:, None]
    pm = g.power_valid & has_power[None, :]
    totals_p = power_totals(
        torch.from_numpy(power), torch.from_numpy(g.power_w.astype(np.float64)), torch.from_numpy(pm)
    )
    totals_o = onoff_totals(torch.from_numpy(on), torch.from_numpy(g.status), torch.from_numpy(mask))
    present = [j for j, name in enumerate(bundle.appliances) if name in report.appliances]
    names = [bundle.appliances[j] for j in present]
    replayed = metrics_table(
        totals_p.numpy()[present], totals_o.numpy()[present], names, has_power=list(has_power[present])
    )
    for name in names:
        for key in ("f1", "precision", "recall", "mae_w"):
            want, got = getattr(report.appliances[name], key), replayed[name][key]
            assert (want is None and got is None) or got == pytest.approx(want, rel=1e-6, abs=1e-6), (
                name,
                key,
            )


def test_a_model_that_cannot_load_stops_bentoml_serve(tmp_path: Path) -> None:
    uri = "models:/airwatt-disaggregator@no-such-alias"
    proc = subprocess.run(
        serve_args(free_port()), env=bentoml_env(tmp_path, uri), capture_output=True, text=True, timeout=180
    )
    assert proc.returncode != 0
    assert f"cannot load the model {uri}" in proc.stderr


def test_a_stopped_server_leaves_no_staged_copy_behind(trained_bundle: Path, tmp_path: Path) -> None:
    """Each start stages the bundle and the warm marks in temporary folders: stopping the server (SIGTERM)
    removes them, so restarts do not pile up copies of the model in the temp folder."""
    with served(tmp_path, str(trained_bundle), workers=1) as url:
        assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
        staged = sorted(p.name for p in (tmp_path / "tmp").glob("airwatt-serving-*"))
        assert len(staged) == 2, staged  # the bundle copy and the warm marks, while it runs
    assert not list((tmp_path / "tmp").glob("airwatt-serving-*"))


def pins(lines: list[str]) -> dict[str, str]:
    """``name[extras]==version`` requirement lines -> {normalised name: version} (extras dropped)."""
    parts = [ln.split("#")[0].partition("==") for ln in lines]
    return {n.split("[")[0].strip().lower().replace("_", "-"): v.strip() for n, _, v in parts if v.strip()}


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
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (bento,) = [p for p in (tmp_path / "bentoml" / "bentos" / "airwatt").iterdir() if p.name != "latest"]
    src = bento / "src"
    assert (src / "serving" / "service.py").is_file() and (src / "params.yaml").is_file()
    assert (src / "src" / "airwatt" / "serving" / "engine.py").is_file()
    openapi = (bento / "apis" / "openapi.yaml").read_text()
    assert "/detect_batch" in openapi and "/predict" in openapi


# ----------------------------------------------------------------------------------- ready, warm, guarded
def metric(text: str, name: str) -> float:
    return float(re.search(rf"^{name} ([0-9.e+]+)$", text, re.M).group(1))  # type: ignore[union-attr]


def test_ready_means_every_worker_is_warm(guarded: str) -> None:
    """Right after /readyz answers 200 (first use of this server): both workers ran their warm-up, and the
    first batch of 50 new devices (a history pass each) is not much slower than the next one."""
    with httpx.Client(base_url=guarded, timeout=30) as c:
        text = c.get("/metrics").text
        assert metric(text, "airwatt_workers_warm") == 2
        assert metric(text, "airwatt_warmup_calls_total") >= 2 * 10  # every worker's warm-up calls
        assert re.search(r'airwatt_state_cache_lookups_total\{outcome="miss_absent"\} 0', text)  # forgotten
        took = []
        for batch in range(2):
            devices = [device(seed=i, device_id=f"w-{batch}-{i}") for i in range(50)]
            t = time.perf_counter()
            assert c.post("/detect_batch", json={"devices": devices}).status_code == 200
            took.append(time.perf_counter() - t)
    assert took[0] < 5 * took[1] + 0.25, took  # cold first calls (torch's first passes) took seconds


def raw_post(url: str, head: str, chunks: list[bytes], wait_s: float = 0.2) -> tuple[bytes, int]:
    """POST over a plain socket: ``head`` (request line and headers), then ``chunks`` one by one, waiting
    ``wait_s`` after each for an answer; (the answer, body bytes sent before it came)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode())
        sent = 0
        for chunk in [b"", *chunks]:
            s.sendall(chunk)
            sent += len(chunk)
            if select.select([s], [], [], wait_s)[0]:
                break
        answer = b""
        while data := s.recv(65536):
            answer += data
            if b"\r\n\r\n" in answer and b'"}' in answer:
                break
    return answer, sent


def test_a_body_over_the_limit_is_a_413_before_it_is_read(guarded: str) -> None:
    """By its Content-Length (nothing of the body sent) and, chunked, once the bytes passed 1 MiB."""
    head = "POST /report HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    answer, sent = raw_post(guarded, head + f"Content-Length: {8 * 2**20}\r\n\r\n", [])
    assert answer.startswith(b"HTTP/1.1 413") and b"serve.max_body_mib" in answer and sent == 0
    piece = 128 * 1024
    chunk = f"{piece:x}\r\n".encode() + b" " * piece + b"\r\n"
    answer, sent = raw_post(
        guarded, head + "Transfer-Encoding: chunked\r\n\r\n", [chunk] * 64
    )  # 8 MiB offered
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent <= 2**20 + 2 * len(chunk)  # refused as soon as it passed the limit


def test_overload_is_a_503_with_retry_after_and_probes_still_answer(guarded: str) -> None:
    """Six slow calls at once on a server taking one per worker: the others are refused at once (503,
    Retry-After), /readyz and /metrics answer meanwhile, and once the slow calls end a call is served."""
    slow = device(90_000, device_id="slow")  # a report of 5 days: seconds of work
    slow["power_w"] = [round(v, 1) for v in slow["power_w"]]
    body = json.dumps(slow).encode()
    assert len(body) < 2**20

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=guarded, timeout=60) as c:
            return c.post("/report", content=body, headers={"content-type": "application/json"})

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, i) for i in range(6)]
        time.sleep(0.3)
        with httpx.Client(base_url=guarded, timeout=10) as c:
            probes = [c.get("/readyz").status_code, c.get("/metrics").status_code]
        answers = [f.result() for f in futures]
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) == {200, 503} and statuses.count(200) <= 2, statuses
    refused = [r for r in answers if r.status_code == 503]
    assert all(r.headers["retry-after"] == "1" and "max_concurrency" in r.json()["error"] for r in refused)
    assert probes == [200, 200]
    with httpx.Client(base_url=guarded, timeout=30) as c:
        assert c.post("/detect", json=device()).status_code == 200


def test_no_internal_endpoint_is_served(guarded: str) -> None:
    with httpx.Client(base_url=guarded, timeout=30) as c:
        assert c.post("/infer_windows", json={"windows": [[0.0] * 512]}).status_code == 404
        paths = c.get("/docs.json").json()["paths"]
    assert not {p for p in paths if p not in {"/healthz", "/livez", "/readyz", "/metrics"}} - {
        "/detect",
        "/detect_batch",
        "/predict",
        "/predict_batch",
        "/report",
        "/model",
    }
