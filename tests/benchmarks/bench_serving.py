"""Benchmark: the BentoML service under simulated devices, against the same model in-process.

    .venv/bin/python -m tests.benchmarks.bench_serving [--duration-s 600] [--modes paced single batch]
        [--devices 2000] [--batch-points 25x6 50x3] [--rounds 1] [--concurrency 16] [--readings 512]
        [--adaptive-batching on|off] [--calls-per-connection 10] [--in-process-s 30] [--model BUNDLE_DIR]

Starts `bentoml serve` (serving/service.py, params.yaml ``serve`` settings: workers, batching) on a free
loopback port and drives it from this process with pre-encoded requests (each device's newest 512 readings):

- paced: ``--devices`` devices, each sending /detect every 5 s (the platform's real pattern);
- single: closed loop, ``--concurrency`` clients calling /detect as fast as the service answers;
- batch: closed loop, one run per ``--batch-points`` DEVICESxCLIENTS: CLIENTS clients calling /detect_batch
  with DEVICES devices each. Latency is set by the devices in flight (DEVICES x CLIENTS) over the throughput;
  at one number in flight, fewer and larger calls cost less CPU per update (per-call work, and fewer calls
  queued behind the one each worker is running).

Each mode runs ``--duration-s`` seconds (the issue asks for memory after 10 minutes: the default). Prints
device-updates/s (devices answered per second), p50/p95/p99/max latency per HTTP call, server CPU seconds
per update (the whole `bentoml serve` process tree; in brackets this client's), server RSS at the end of
each mode, and, right after each batch run, the same model in-process on the server's layout for
``--in-process-s`` seconds (``serve.workers`` warm processes at once, each Engine.detect from the same JSON
bodies to the JSON answer; its CPU per update) and the ratio of served to in-process throughput; with
``--rounds`` above 1, the median ratio per batch point. Once per batch size: the model call alone, and the
engine in one process on every core. The model: ``--model`` or an untrained causal bundle with params.yaml's
``train.arch.causal`` arguments (speed does not depend on the weights). Prints figures and machine_info();
not a test. The client (aiohttp) shares the machine's cores with the server; each closed-loop client
replaces its connection every ``--calls-per-connection`` calls (see closed_loop).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import psutil
import yaml

from airwatt.procs import free_port, wait_until_ok

try:
    from tests.benchmarks.bench_inference import bundle_for
    from tests.benchmarks.machine import machine_info
except ModuleNotFoundError:  # run as a script: its own folder is on sys.path
    from bench_inference import bundle_for  # type: ignore[no-redef]
    from machine import machine_info  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
START = "2026-01-05T00:00:00Z"
JSON = {"content-type": "application/json"}


def device_body(i: int, n: int) -> dict:
    rng = np.random.default_rng(i)
    t = np.arange(n) * 5
    power = 90 + 100 * ((t + 97 * i) % 3600 < 1200) + rng.normal(0, 3, n)
    return {"device_id": f"d-{i:05d}", "start": START, "interval_s": 5, "power_w": power.round(1).tolist()}


def start_server(
    model_dir: Path, port: int, home: Path, serve: dict[str, object] | None = None
) -> subprocess.Popen:
    """`bentoml serve` on loopback; ``serve`` overrides keys of params.yaml ``serve`` (via AIRWATT_PARAMS)."""
    env = {
        **os.environ,
        "AIRWATT_MODEL_URI": str(model_dir),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
    }
    if serve:
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        params["serve"].update(serve)
        home.mkdir(parents=True, exist_ok=True)
        (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env["AIRWATT_PARAMS"] = str(home / "params.yaml")
    args = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        "service:AirWatt",
        "--working-dir",
        str(REPO / "serving"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "server.log").open("w")  # its error lines are printed when a mode had errors
    proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ok(
            f"http://127.0.0.1:{port}/readyz", proc, home / "server.log", what="bentoml serve", timeout_s=180
        )
    except RuntimeError:
        proc.kill()
        raise
    return proc


def tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_cpu_s(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def tree_rss_mib(pid: int) -> float:
    return sum(p.memory_info().rss for p in tree(pid) if p.is_running()) / 2**20


@dataclass
class Result:
    mode: str
    per_call: int = 1  # devices per call
    updates: int = 0
    errors: int = 0
    error_kinds: Counter = field(default_factory=Counter)  # HTTP status or exception name -> count
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    rss_mib: float = 0.0

    def line(self) -> str:
        lat = np.array(self.latencies_s) * 1000 if self.latencies_s else np.array([np.nan])
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        rate = self.updates / self.wall_s
        return (
            f"{self.mode:<26} {rate:>9,.0f} updates/s  "
            f"p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  p99 {p99:6.1f} ms  max {lat.max():7.1f} ms  "
            f"CPU {1e3 * self.cpu_s / max(self.updates, 1):.3f} ms/update "
            f"(client {1e3 * self.client_cpu_s / max(self.updates, 1):.3f})  RSS {self.rss_mib:,.0f} MiB  "
            f"errors {self.errors}" + (f" {dict(self.error_kinds)}" if self.errors else "")
        )


async def post(session: aiohttp.ClientSession, path: str, content: bytes, res: Result, devices: int) -> None:
    t = time.perf_counter()
    try:
        async with session.post(path, data=content, headers=JSON) as r:
            await r.read()
            kind = str(r.status)
    except (aiohttp.ClientError, TimeoutError) as e:
        kind = type(e).__name__
    res.latencies_s.append(time.perf_counter() - t)
    if kind == "200":
        res.updates += devices
    else:
        res.errors += 1
        res.error_kinds[kind] += 1


def session(url: str, connections: int, keepalive: bool = True) -> aiohttp.ClientSession:
    """An aiohttp client (it costs the shared cores about half of what httpx does per call)."""
    connector = aiohttp.TCPConnector(limit=connections, force_close=not keepalive)
    return aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def closed_loop(
    url: str,
    path: str,
    bodies: list[bytes],
    per_call: int,
    conc: int,
    dur: float,
    res: Result,
    calls_per_connection: int = 1,
) -> None:
    """``conc`` clients, each with its own connection, replaced after ``calls_per_connection`` calls (0:
    never), as nginx's keepalive_requests does. `bentoml serve` workers share one listening socket and the
    worker that wakes first accepts every pending connection, so a few long-lived connections can all land on
    one worker while the other idles (bentoml/BentoML#5426); replacing them spreads the calls again."""
    end = time.perf_counter() + dur

    async def client(k: int) -> None:
        i = k
        while time.perf_counter() < end:
            async with session(url, 1, keepalive=calls_per_connection != 1) as http:
                calls = 0
                while time.perf_counter() < end and (
                    calls_per_connection <= 0 or calls < calls_per_connection
                ):
                    await post(http, path, bodies[i % len(bodies)], res, per_call)
                    i, calls = i + conc, calls + 1

    await asyncio.gather(*(client(k) for k in range(conc)))


async def paced(url: str, bodies: list[bytes], devices: int, dur: float, res: Result) -> None:
    """Each device calls /detect every 5 s, the devices' phases spread evenly over the 5 s."""
    async with session(url, 256, keepalive=True) as client:
        t0 = time.perf_counter()
        tasks: set[asyncio.Task] = set()
        k = 0
        while (due := k * 5.0 / devices) < dur:
            delay = t0 + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(post(client, "/detect", bodies[k % len(bodies)], res, 1))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            k += 1
        await asyncio.gather(*tasks)


def run_mode(
    mode: str,
    url: str,
    pid: int,
    args: argparse.Namespace,
    singles: list[bytes],
    batches: list[bytes],
    point: tuple[int, int] = (1, 1),
) -> Result:
    res = Result(mode, per_call=point[0] if mode == "batch" else 1)
    cpu0, client0, t0 = tree_cpu_s(pid), time.process_time(), time.perf_counter()
    if mode == "paced":
        res.mode = f"paced ({args.devices} dev / 5 s)"
        asyncio.run(paced(url, singles, args.devices, args.duration_s, res))
    else:
        single = mode == "single"
        path, bodies = ("/detect", singles) if single else ("/detect_batch", batches)
        per_call, clients = (1, args.concurrency) if single else point
        res.mode = f"{'single' if single else f'batch {per_call}'} closed-loop (c={clients})"
        loop = closed_loop(
            url, path, bodies, per_call, clients, args.duration_s, res, args.calls_per_connection
        )
        asyncio.run(loop)
    res.wall_s = time.perf_counter() - t0
    res.cpu_s = tree_cpu_s(pid) - cpu0
    res.client_cpu_s = time.process_time() - client0
    res.rss_mib = tree_rss_mib(pid)
    return res


class InProcess:
    """The same model and JSON bodies without HTTP: ``workers`` spawned processes of ``threads`` torch
    threads, each loading the engine once (Engine.detect from the JSON body to the JSON answer), measured
    all at once in slices. Kept alive between slices so that each served run is followed within a second by
    its in-process slice: this VM's speed drifts by ±20 % over minutes, which a ratio of runs taken minutes
    apart would carry."""

    def __init__(self, model_dir: Path, workers: int, threads: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.workers, self.threads, self.loaded = workers, threads, False
        init = (model_dir, threads)
        self.pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_load_engine, initargs=init)

    def detect(self, batches: list[bytes], batch: int, seconds: float) -> tuple[float, float]:
        """(device-updates/s over every process, CPU ms per update) for ``seconds`` from a common start."""
        runs = self._all(_detect_slice, batches, batch, seconds)
        updates = batch * sum(r.calls for r in runs)
        return batch * sum(r.calls / r.wall_s for r in runs), 1e3 * sum(r.cpu_s for r in runs) / updates

    def model_alone(self, batch: int, seconds: float) -> float:
        """Windows/s of the model call alone (a batch of ``batch`` windows), every process at once."""
        return batch * sum(r.calls / r.wall_s for r in self._all(_model_slice, batch, seconds))

    def _all(self, fn: Callable[..., Slice], *args: Any) -> list[Slice]:
        start_at = time.time() + (1.0 if self.loaded else 20.0)  # after every process has loaded the model
        runs = [job.result() for job in [self.pool.submit(fn, *args, start_at) for _ in range(self.workers)]]
        assert len({r.pid for r in runs}) == self.workers, "two slices ran in one process"
        self.loaded = True
        return runs

    def close(self) -> None:
        self.pool.shutdown()


_ENGINE: Any = None  # the engine of an InProcess process


def _load_engine(model_dir: Path, threads: int) -> None:
    import torch

    from airwatt.config import load_params
    from airwatt.serving.engine import Engine
    from airwatt.serving.loading import resolve_model

    global _ENGINE
    torch.set_num_threads(threads)
    serve = load_params(REPO / "params.yaml").serve
    _ENGINE = Engine.load(resolve_model(str(model_dir), model_dir.parent), serve)


@dataclass
class Slice:
    """Calls of one in-process step from a common start: their count, wall and CPU seconds, the process."""

    calls: int
    wall_s: float
    cpu_s: float
    pid: int


def _timed(step: Callable[[int], object], seconds: float, start_at: float) -> Slice:
    """``step(k)`` once to warm up, then from ``start_at`` as often as ``seconds`` allow."""
    step(0)
    time.sleep(max(0.0, start_at - time.time()))
    n, t0, cpu0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
    return Slice(n, time.perf_counter() - t0, time.process_time() - cpu0, os.getpid())


def _detect_slice(batches: list[bytes], batch: int, seconds: float, start_at: float) -> Slice:
    from airwatt.serving.schemas import DetectBatchRequest, DetectBatchResponse

    def detect(k: int) -> None:
        results = _ENGINE.detect(DetectBatchRequest.model_validate_json(batches[k % len(batches)]).devices)
        DetectBatchResponse(model_version=_ENGINE.model_version, results=results).model_dump_json()

    return _timed(detect, seconds, start_at)


def _model_slice(batch: int, seconds: float, start_at: float) -> Slice:
    x = np.random.default_rng(0).normal(size=(batch, _ENGINE.limits.window_length)).astype(np.float32)
    return _timed(lambda _: _ENGINE.infer(x), seconds, start_at)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=600.0, help="seconds per mode")
    ap.add_argument("--devices", type=int, default=2000, help="paced mode: devices, each every 5 s")
    ap.add_argument("--concurrency", type=int, default=16, help="single mode: closed-loop clients")
    ap.add_argument(
        "--batch-points",
        nargs="+",
        type=batch_point,
        default=[(25, 6), (50, 3)],
        metavar="DEVICESxCLIENTS",
        help="batch mode: one run per point, DEVICES per /detect_batch call from CLIENTS closed-loop clients",
    )
    ap.add_argument(
        "--calls-per-connection",
        type=int,
        default=10,
        help="closed-loop modes: calls before a client replaces its connection (0: never; see closed_loop)",
    )
    ap.add_argument("--rounds", type=int, default=1, help="batch mode: repeat every point this many times")
    ap.add_argument(
        "--in-process-s",
        type=float,
        default=None,
        help="batch mode: seconds of each in-process slice (default: --duration-s, at most 30)",
    )
    ap.add_argument("--readings", type=int, default=512, help="readings per device per call")
    ap.add_argument("--model", type=Path, default=None, help="bundle dir (default: untrained causal)")
    ap.add_argument("--modes", nargs="+", default=["paced", "single", "batch"])
    ap.add_argument(
        "--adaptive-batching", choices=["on", "off"], default=None, help="override serve.adaptive_batching"
    )
    args = ap.parse_args()
    args.in_process_s = args.in_process_s or min(args.duration_s, 30.0)

    from airwatt.config import load_params

    overrides = (
        {} if args.adaptive_batching is None else {"adaptive_batching": args.adaptive_batching == "on"}
    )
    params = load_params(REPO / "params.yaml")
    cfg = params.serve.model_copy(update=overrides)
    with tempfile.TemporaryDirectory(prefix="airwatt-bench-serving-") as tmp:
        model_dir = args.model or bundle_for("causal", 512, 12, params.train.arch.get("causal")).save(
            Path(tmp) / "model"
        )
        pool = [device_body(i, args.readings) for i in range(500)]
        singles = [json.dumps(b).encode() for b in pool]
        sizes = sorted({devices for devices, _ in args.batch_points})
        batches = {n: [batch_body(pool, k, n) for k in range(10)] for n in sizes}
        print(machine_info())
        print(
            f"serve: workers={cfg.workers} torch_threads={cfg.torch_threads} "
            f"adaptive_batching={cfg.adaptive_batching} "
            f"max_batch_size={cfg.max_batch_size} max_latency_ms={cfg.max_latency_ms}; "
            f"{args.readings} readings per device; {args.duration_s:g} s per mode"
        )
        port = free_port()
        proc = start_server(model_dir, port, Path(tmp) / "bentoml", overrides)
        url = f"http://127.0.0.1:{port}"
        results: list[Result] = []
        by_point: dict[tuple[int, int], list[tuple[Result, float]]] = {}  # (served run, in-process rate)
        same = InProcess(model_dir, cfg.workers, cfg.torch_threads) if "batch" in args.modes else None
        try:
            print(f"server RSS after start: {tree_rss_mib(proc.pid):,.0f} MiB")
            for mode in args.modes:
                if mode != "batch":
                    results.append(run_mode(mode, url, proc.pid, args, singles, [], (1, args.concurrency)))
                    print(results[-1].line(), flush=True)
                    continue
                assert same is not None
                for _ in range(args.rounds):
                    for point in args.batch_points:
                        results.append(run_mode(mode, url, proc.pid, args, singles, batches[point[0]], point))
                        print(results[-1].line(), flush=True)
                        ups = compare_in_process(results[-1], same, batches[point[0]], args.in_process_s)
                        by_point.setdefault(point, []).append((results[-1], ups))
            if same is not None:
                print_other_layouts(same, model_dir, batches, args.in_process_s)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
            if same is not None:
                same.close()
        if any(r.errors for r in results):
            lines = (Path(tmp) / "bentoml" / "server.log").read_text(errors="replace").splitlines()
            errors = [ln for ln in lines if "[ERROR]" in ln or "Error" in ln or "File " in ln]
            first = next((i for i, ln in enumerate(errors) if "[ERROR]" in ln), max(0, len(errors) - 30))
            print("server log, error lines (from the first [ERROR]):\n  " + "\n  ".join(errors[first:][:40]))
        if args.rounds > 1:
            print("summary per batch point (each served run over the in-process slice right after it):")
            for (devices, clients), pairs in by_point.items():
                runs = [r for r, _ in pairs]
                ratios = [r.updates / r.wall_s / ups for r, ups in pairs]
                rates = ", ".join(f"{r.updates / r.wall_s:,.0f}" for r in runs)
                print(
                    f"  {devices}x{clients}: served {rates} updates/s; served / in-process median "
                    f"{np.median(ratios):.2f} (runs {', '.join(f'{x:.2f}' for x in ratios)})"
                )


def compare_in_process(served: Result, same: InProcess, bodies: list[bytes], seconds: float) -> float:
    """The in-process slice on the server's layout right after ``served``, printed beside it; returns its
    device-updates/s."""
    rate = served.updates / served.wall_s
    ups, cpu_ms = same.detect(bodies, served.per_call, seconds)
    print(
        f"  in-process, JSON to JSON, {same.workers} processes x {same.threads} torch thread, the "
        f"{seconds:g} s right after: {ups:,.0f} updates/s, CPU {cpu_ms:.3f} ms/update "
        f"(served / in-process {rate / ups:.2f})",
        flush=True,
    )
    return ups


def print_other_layouts(
    same: InProcess, model_dir: Path, batches: dict[int, list[bytes]], seconds: float
) -> None:
    """Once per batch size, for 10 s at most: the model call alone on the server's layout, and the engine in
    one process using every core's thread (how the model runs in a notebook or `airwatt evaluate`, and how
    the issue's Seq2Point figure is measured)."""
    one, seconds = InProcess(model_dir, 1, same.workers * same.threads), min(seconds, 10.0)
    try:
        for n, bodies in batches.items():
            wps = same.model_alone(n, seconds)
            ups, _ = one.detect(bodies, n, seconds)
            print(
                f"  {n} devices per call: model alone {wps:,.0f} windows/s ({same.workers} processes); "
                f"engine in 1 process x {one.threads} threads {ups:,.0f} updates/s"
            )
    finally:
        one.close()


def batch_point(text: str) -> tuple[int, int]:
    """ "50x3" -> (50 devices per call, 3 clients)."""
    devices, _, clients = text.partition("x")
    try:
        return int(devices), int(clients)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DEVICESxCLIENTS, e.g. 50x3") from None


def batch_body(pool: list[dict], k: int, n: int) -> bytes:
    """The k-th /detect_batch body of ``n`` devices from ``pool``."""
    return json.dumps({"devices": [pool[(k * n + j) % len(pool)] for j in range(n)]}).encode()


if __name__ == "__main__":
    main()
