"""Benchmark: the BentoML service under simulated devices that continue their streams, 5 s of device time
per update.

    .venv/bin/python -m tests.benchmarks.bench_serving [--duration-s 30] [--modes batch single paced miss]
        [--forms session stateless] [--batch-points 50x6] [--devices 2000] [--concurrency 16]
        [--paced-devices 5000] [--paced-s 600] [--model BUNDLE_DIR] [--baseline REV] [--no-breakdown]
        [--first-s 90] [--first-bucket-s 10] [--first-baseline REV]   # --modes first: see below

Starts `bentoml serve` (serving/service.py, params.yaml ``serve``: two workers) on a free loopback port
and drives it from this process (aiohttp, on the same two cores). Every device is a stream: each call for
it carries the next reading (5 s later in device time), in one of two forms:

- ``session``: only the new reading, with ``continues`` (the time of the one before); a 409 (the worker
  holds no state for the device) is answered by resending that device's history at once (counted apart,
  not as an error);
- ``stateless``: the device's last ``history_readings`` readings (the full decision history), so any worker
  can answer; a worker that holds the device's state computes only the new reading.

Like a gateway routing by device (docs/serving.md), each client owns a fixed group of devices and keeps
one connection, so a device's calls reach one worker. Modes:

- ``batch``: per ``--batch-points`` DEVICESxCLIENTS, closed loop, /detect_batch with DEVICES devices;
- ``single``: closed loop, ``--concurrency`` clients, /detect with one device per call;
- ``paced``: ``--paced-devices`` devices each sending /detect every 5 s (real time) for ``--paced-s``,
  after a warm-up that sends every device's history once (batch calls, not measured);
- ``miss``: in-process, the cost of a cache miss (the history resent to a worker without the state)
  next to the previous engine's call for the same request (``--baseline`` git revision, default the
  commit before the streaming engine), one device per call;
- ``first``: the first minute after /readyz (not in the default modes): per ``--batch-points`` and form, a
  fresh server driven at once (no warm-up of any kind: each device's first call carries its history), then
  the same server with as many new devices; updates/s and p99 per ``--first-bucket-s`` bucket against the
  steady state after 60 s; ``--first-baseline REV`` runs the fresh-server part for that revision too;
- ``largest``: the largest calls params.yaml ``serve`` accepts (a month's /report in both forms, a batch
  of ``max_devices`` devices with ``max_batch_readings`` readings, ``max_series_readings`` answered one by
  one), one at a time on a fresh server: answer, time, the answering worker's RSS growth (sampled every
  10 ms); then eight of the largest bodies at once (not in the default modes).

Printed per run: device-updates/s, p50/p95/p99/max latency per HTTP call, server CPU per update (the whole
`bentoml serve` process tree) and the client's, the cache's hit rate (its lookups from /metrics), the 409
resends, and server RSS. Then, unless ``--no-breakdown``, where a call's time goes in-process (parse, the
engine, the answer; and the model's streaming step alone). Prints figures and machine_info(); not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import numpy as np
import psutil
import yaml

from airwatt.procs import free_port, wait_until_ok

try:
    from tests.benchmarks.bench_inference import bundle_for
    from tests.benchmarks.machine import machine_info, parse_args
except ModuleNotFoundError:  # run as a script: its own folder is on sys.path
    from bench_inference import bundle_for  # type: ignore[no-redef]
    from machine import machine_info, parse_args  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 5, tzinfo=UTC)
JSON = {"content-type": "application/json"}
POOL = 20_000  # readings of the shared signal; device d reads it from offset d * 7919
BASELINE = "71bdc1f"  # the last commit with the per-call window engine
WORKERS = 2  # params.yaml serve.workers, set in main()


# ------------------------------------------------------------------------------------------- the signal
def signal_strings() -> list[str]:
    """A household-like aggregate (fridge cycle, kettle spikes, noise) as formatted readings, twice over
    (so any slice of POOL readings is contiguous)."""
    rng = np.random.default_rng(0)
    t = np.arange(POOL) * 5
    power = 90 + 100 * (t % 3600 < 1200) + 2000 * (rng.random(POOL) < 0.004) + rng.normal(0, 3, POOL)
    strings = [f"{v:.1f}" for v in power]
    return strings + strings


@dataclass
class Streams:
    """Every device's position in its stream, and the bodies of its next call."""

    history: int
    strings: list[str] = field(default_factory=signal_strings)
    position: dict[int, int] = field(default_factory=dict)  # device -> index of its newest reading sent

    def _offset(self, d: int, k: int) -> int:
        return (d * 7919 + k) % POOL

    def device_id(self, d: int) -> str:
        return f"d-{d:05d}"

    def time(self, k: int) -> str:
        return (T0 + timedelta(seconds=5 * k)).isoformat().replace("+00:00", "Z")

    def advance(self, d: int) -> int:
        """The next reading's index for device ``d`` (its first call starts a full history in)."""
        k = self.position.get(d, self.history - 2) + 1
        self.position[d] = k
        return k

    def stateless(self, d: int, k: int) -> str:
        lo = k - self.history + 1
        o = self._offset(d, lo)
        values = ",".join(self.strings[o : o + self.history])
        return (
            f'{{"device_id":"{self.device_id(d)}","start":"{self.time(lo)}","interval_s":5,'
            f'"power_w":[{values}]}}'
        )

    def session(self, d: int, k: int) -> str:
        value = self.strings[self._offset(d, k)]
        return f'{{"device_id":"{self.device_id(d)}","continues":"{self.time(k - 1)}","power_w":[{value}]}}'

    def body(self, form: str, d: int, k: int) -> str:
        if form == "session" and d in self.started:
            return self.session(d, k)
        return self.stateless(d, k)

    started: set[int] = field(default_factory=set)  # devices that sent their history at least once


# ------------------------------------------------------------------------------------------ the server
def start_server(
    model_dir: Path, port: int, home: Path, serve: dict[str, object], repo: Path = REPO
) -> subprocess.Popen:
    """`bentoml serve` on loopback; ``serve`` overrides keys of params.yaml ``serve`` (via AIRWATT_PARAMS);
    ``repo``: another checkout's service and package (a git worktree of a baseline revision)."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["serve"].update(serve)
    home.mkdir(parents=True, exist_ok=True)
    (home / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        "AIRWATT_MODEL_URI": str(model_dir),
        "BENTOML_HOME": str(home),
        "BENTOML_DO_NOT_TRACK": "true",
        "AIRWATT_PARAMS": str(home / "params.yaml"),
    }
    if repo != REPO:
        env["PYTHONPATH"] = str(repo / "src")
    args = [
        str(Path(sys.executable).parent / "bentoml"),
        "serve",
        "service:AirWatt",
        "--working-dir",
        str(repo / "serving"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    log = (home / "server.log").open("w")
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


def per_process_cpu_s(pid: int) -> dict[int, float]:
    out = {}
    for p in tree(pid):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return out


def tree_rss_mib(pid: int) -> float:
    return sum(p.memory_info().rss for p in tree(pid) if p.is_running()) / 2**20


async def cache_lookups(url: str) -> Counter:
    """The device-state cache's lookups by outcome, summed over workers (from /metrics)."""
    async with aiohttp.ClientSession(url) as s, s.get("/metrics") as r:
        text = await r.text()
    out: Counter = Counter()
    for outcome, value in re.findall(
        r'airwatt_state_cache_lookups_total\{outcome="(\w+)"\} ([0-9.e+]+)', text
    ):
        out[outcome] += float(value)
    return out


# ------------------------------------------------------------------------------------------ the clients
@dataclass
class Result:
    mode: str
    updates: int = 0
    errors: int = 0
    resends: int = 0
    error_kinds: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    rss_mib: tuple[float, float] = (0.0, 0.0)
    lookups: Counter = field(default_factory=Counter)
    on_start: Any = None  # called when the measured part begins (closed loops warm up first)
    busy: list[float] = field(default_factory=list)  # cores used by each busy server process

    async def start(self) -> None:
        if self.on_start is not None:
            await self.on_start()

    def line(self) -> str:
        lat = np.array(self.latencies_s) * 1000 if self.latencies_s else np.array([np.nan])
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        n = max(self.updates, 1)
        total = sum(self.lookups.values())
        hits = self.lookups["hit"] + self.lookups["session"] + self.lookups["duplicate"]
        return (
            f"{self.mode:<34} {self.updates / self.wall_s:>9,.0f} updates/s  p50 {p50:5.1f} p95 {p95:5.1f} "
            f"p99 {p99:5.1f} max {lat.max():6.1f} ms  CPU {1e3 * self.cpu_s / n:.3f} ms/update (client "
            f"{1e3 * self.client_cpu_s / n:.3f})  cache hits {hits / max(total, 1):.1%} of {total:,.0f}  "
            f"409 resends {self.resends}  RSS {self.rss_mib[0]:,.0f} -> {self.rss_mib[1]:,.0f} MiB  "
            f"server processes busy {'/'.join(f'{b:.2f}' for b in self.busy)}  "
            f"errors {self.errors}" + (f" {dict(self.error_kinds)}" if self.errors else "")
        )


async def call(http: aiohttp.ClientSession, path: str, body: str, res: Result) -> tuple[str, bytes]:
    t = time.perf_counter()
    try:
        async with http.post(path, data=body.encode(), headers=JSON) as r:
            data = await r.read()
            kind = str(r.status)
    except (aiohttp.ClientError, TimeoutError) as e:
        kind, data = type(e).__name__, b""
    res.latencies_s.append(time.perf_counter() - t)
    return kind, data


def session(url: str) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=1, keepalive_timeout=600)  # one kept-alive connection: one worker
    return aiohttp.ClientSession(url, connector=connector, timeout=aiohttp.ClientTimeout(total=30))


async def worker_of(http: aiohttp.ClientSession) -> int:
    async with http.post("/model", data=b"{}", headers=JSON) as r:
        return int((await r.json())["worker"])


async def balanced_sessions(url: str, n: int, workers: int) -> list[aiohttp.ClientSession]:
    """``n`` kept-alive connections spread evenly over the server's workers (as a gateway keeping a pool per
    worker would): `bentoml serve` workers share one listening socket and whichever wakes first accepts a
    new connection (bentoml/BentoML#5426), so connections that land on a full worker are replaced."""
    quota = -(-n // workers)
    held: dict[int, list[aiohttp.ClientSession]] = {}
    spare: list[aiohttp.ClientSession] = []
    for _ in range(50 * n):
        if sum(len(v) for v in held.values()) >= n:
            break
        http = session(url)
        w = await worker_of(http)
        if len(held.setdefault(w, [])) < quota:
            held[w].append(http)
        else:
            spare.append(http)  # kept open a moment, so the next connect goes to another worker
            if len(spare) > 4:
                await spare.pop(0).close()
    for http in spare:
        await http.close()
    out = [h for v in held.values() for h in v]
    return out[:n]


async def send(
    http: aiohttp.ClientSession, streams: Streams, form: str, devices: list[int], res: Result
) -> None:
    """One call for ``devices`` (a batch when more than one), each advanced by one reading; 409s resent."""
    ks = [streams.advance(d) for d in devices]
    bodies = [streams.body(form, d, k) for d, k in zip(devices, ks, strict=True)]
    path = "/detect" if len(devices) == 1 else "/detect_batch"
    payload = bodies[0] if len(devices) == 1 else '{"devices":[' + ",".join(bodies) + "]}"
    kind, data = await call(http, path, payload, res)
    if kind == "409":  # resend the listed devices' history (the others' readings stay as they were)
        missing = set(json.loads(data)["devices"])
        res.resends += len(missing)
        for d in devices:
            if streams.device_id(d) in missing:
                streams.started.discard(d)
        bodies = [streams.body(form, d, k) for d, k in zip(devices, ks, strict=True)]
        payload = bodies[0] if len(devices) == 1 else '{"devices":[' + ",".join(bodies) + "]}"
        kind, data = await call(http, path, payload, res)
    if kind == "200":
        res.updates += len(devices)
        streams.started.update(devices)
    else:
        res.errors += 1
        res.error_kinds[kind] += 1


async def closed_loop(
    url: str, streams: Streams, form: str, groups: list[list[int]], per_call: int, dur: float, res: Result
) -> None:
    """One client per device group, each with one connection, calling back to back; first every device
    once (its history: the worker's cache fills), not measured."""
    end = 0.0

    async def client(group: list[int], warm: Result, http: aiohttp.ClientSession) -> None:
        i = 0
        async with http:
            for lo in range(0, len(group), per_call):
                await send(http, streams, form, group[lo : lo + per_call], warm)
            await ready.wait()
            while time.perf_counter() < end:
                chosen = [group[(i + j) % len(group)] for j in range(per_call)]
                i += per_call
                await send(http, streams, form, chosen, res)

    ready = asyncio.Event()
    warm = Result("warm-up")
    https = await balanced_sessions(url, len(groups), WORKERS)
    tasks = [asyncio.create_task(client(g, warm, h)) for g, h in zip(groups, https, strict=True)]
    while warm.updates + warm.errors * per_call < sum(len(g) for g in groups):
        await asyncio.sleep(0.05)
    await res.start()
    end = time.perf_counter() + dur
    ready.set()
    await asyncio.gather(*tasks)


async def paced(
    url: str, streams: Streams, form: str, devices: int, dur: float, connections: int, base: int, res: Result
) -> None:
    """Each device calls /detect every 5 s (its phase spread over the 5 s), over ``connections`` kept-alive
    connections, a device always on the same one (routing by device)."""
    https = await balanced_sessions(url, connections, WORKERS)
    try:
        warm = Result("warm-up")  # every device's history once, 50 per call on its own connection

        async def fill(c: int, http: aiohttp.ClientSession) -> None:
            mine = [d for d in range(base, base + devices) if d % connections == c]
            for lo in range(0, len(mine), 50):
                await send(http, streams, "stateless", mine[lo : lo + 50], warm)

        await asyncio.gather(*(fill(c, h) for c, h in enumerate(https)))  # no connection idles meanwhile
        streams.started.update(range(base, base + devices))
        await res.start()
        t0 = time.perf_counter()
        tasks: set[asyncio.Task] = set()
        n = 0
        while (due := n * 5.0 / devices) < dur:
            delay = t0 + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            d = base + n % devices
            task = asyncio.create_task(send(https[d % connections], streams, form, [d], res))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)
    finally:
        for h in https:
            await h.close()


@dataclass
class Timeline:
    """Every call's end (seconds since the server answered /readyz), latency and device updates."""

    ready_t: float
    calls: list[tuple[float, float, int]] = field(default_factory=list)
    workers: list[int] = field(default_factory=list)  # the worker each client's connection reached

    def record(self, latency_s: float, updates: int) -> None:
        self.calls.append((time.perf_counter() - self.ready_t, latency_s, updates))

    def buckets(self, width_s: float, dur_s: float) -> list[tuple[float, float, float, int]]:
        """Per whole ``width_s`` bucket up to ``dur_s``: (its start, updates/s, p99 ms, calls)."""
        out = []
        for lo in np.arange(0, dur_s - width_s + 1e-9, width_s):
            sel = [c for c in self.calls if lo <= c[0] < lo + width_s]
            if sel:
                p99 = float(np.percentile([c[1] for c in sel], 99)) * 1000
                out.append((float(lo), sum(c[2] for c in sel) / width_s, p99, len(sel)))
        return out


async def first_minute_loop(
    url: str, streams: Streams, form: str, groups: list[list[int]], per_call: int, dur: float, tl: Timeline
) -> None:
    """Closed loop from the moment the server is ready: no warm-up of any kind, so each device's first call
    carries its history (a miss) as after a deploy; every call is recorded on ``tl``."""
    end = tl.ready_t + dur

    async def client(group: list[int], http: aiohttp.ClientSession) -> None:
        i = 0
        res = Result("first minute")
        async with http:
            tl.workers.append(await worker_of(http))
            while time.perf_counter() < end:
                chosen = [group[(i + j) % len(group)] for j in range(per_call)]
                i += per_call
                calls, updates = len(res.latencies_s), res.updates
                await send(http, streams, form, chosen, res)  # one call, or two with a 409's resend
                latencies = res.latencies_s[calls:]
                for j, latency in enumerate(latencies):
                    tl.record(latency, res.updates - updates if j == len(latencies) - 1 else 0)

    https = [session(url) for _ in groups]  # no balancing: that would be a warm-up of its own
    await asyncio.gather(*(client(g, h) for g, h in zip(groups, https, strict=True)))


def first_minute_table(title: str, tl: Timeline, args: argparse.Namespace) -> None:
    buckets = tl.buckets(args.first_bucket_s, args.first_s)
    steady = [b for b in buckets if b[0] >= 60.0] or buckets[-1:]
    steady_rate = float(np.mean([b[1] for b in steady]))
    steady_p99 = float(np.median([b[2] for b in steady]))
    print(f"{title} (connections per worker {dict(sorted(Counter(tl.workers).items()))}):")
    for lo, rate, p99, n in buckets:
        span, share = f"{lo:.0f}-{lo + args.first_bucket_s:.0f} s", rate / steady_rate
        print(f"  {span:>10}  {rate:>9,.0f} updates/s ({share:4.0%} of steady)  p99 {p99:6.1f} ms  {n} calls")
    print(f"  steady (from 60 s): {steady_rate:,.0f} updates/s, p99 {steady_p99:.1f} ms", flush=True)


def first_minute(args: argparse.Namespace, model_dir: Path, home: Path, history: int) -> None:
    """Per batch point and form: a fresh server, driven from the moment /readyz answers 200 (each device's
    first call carries its history); then, on the same server, as many new devices again (what the
    devices' histories cost on a server that has been serving). Throughput and p99 per bucket against the
    steady state (the buckets after the first minute). With ``--first-baseline REV``, the fresh-server run
    also for that revision's service (a git worktree), on the same machine."""
    checkouts = [("this tree", REPO)]
    with tempfile.TemporaryDirectory(prefix="airwatt-first-") as tmp:
        if args.first_baseline:
            old = Path(tmp) / "tree"
            subprocess.run(
                ["git", "worktree", "add", "--detach", str(old), args.first_baseline],
                cwd=REPO,
                check=True,
                capture_output=True,
            )
            checkouts.append((args.first_baseline, old))
        try:
            for per_call, clients in args.batch_points:
                for form in args.forms:
                    for name, repo in checkouts:
                        _first_runs(args, model_dir, home, history, per_call, clients, form, name, repo)
        finally:
            if args.first_baseline:
                subprocess.run(
                    ["git", "worktree", "remove", "--force", str(Path(tmp) / "tree")],
                    cwd=REPO,
                    capture_output=True,
                )


def _first_runs(
    args: argparse.Namespace,
    model_dir: Path,
    home: Path,
    history: int,
    per_call: int,
    clients: int,
    form: str,
    name: str,
    repo: Path,
) -> None:
    port = free_port()
    proc = start_server(model_dir, port, home / f"first-{per_call}x{clients}-{form}-{len(name)}", {}, repo)
    url = f"http://127.0.0.1:{port}"
    try:
        runs = [("fresh server", 0)] + ([("same server, new devices", args.devices)] if repo == REPO else [])
        for what, base in runs:
            tl = Timeline(time.perf_counter())
            ids = list(range(base, base + args.devices))
            groups = [ids[c::clients] for c in range(clients)]
            asyncio.run(first_minute_loop(url, Streams(history), form, groups, per_call, args.first_s, tl))
            first_minute_table(f"{name}: {what}, batch {per_call}x{clients} {form}", tl, args)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def run(mode: str, url: str, pid: int, coro_fn: Any) -> Result:
    """``coro_fn(res)`` measured from ``res.start()`` (or from its beginning) to its end."""
    res = Result(mode)
    marks: dict[str, Any] = {}

    async def start() -> None:
        if not marks:
            marks["lookups"] = await cache_lookups(url)
            marks.update(
                cpu=tree_cpu_s(pid),
                client=time.process_time(),
                t=time.perf_counter(),
                rss=tree_rss_mib(pid),
                procs=per_process_cpu_s(pid),
            )
            res.latencies_s.clear()
            res.updates = res.errors = res.resends = 0

    async def measured() -> None:
        res.on_start = start
        await coro_fn(res)
        await start()  # a coroutine that never called it: measured from its beginning
        res.wall_s = time.perf_counter() - marks["t"]
        res.cpu_s = tree_cpu_s(pid) - marks["cpu"]
        res.client_cpu_s = time.process_time() - marks["client"]
        res.rss_mib = (marks["rss"], tree_rss_mib(pid))
        res.lookups = await cache_lookups(url) - marks["lookups"]
        after = per_process_cpu_s(pid)
        busy = sorted((after[p] - marks["procs"].get(p, 0.0)) / res.wall_s for p in after)
        res.busy = [b for b in busy if b > 0.02]

    asyncio.run(measured())
    return res


# ------------------------------------------------------------------------------------------- in-process
def breakdown(model_dir: Path, history: int) -> None:
    """Where a call's time goes without HTTP: pydantic parse, Engine.detect, answer to JSON; and the model's
    streaming step (with the decision rule) alone, for 1 and 50 devices."""
    import pydantic_core
    import torch

    from airwatt.config import load_params
    from airwatt.serving.engine import Engine
    from airwatt.serving.loading import resolve_model
    from airwatt.serving.schemas import DetectBatchRequest, DeviceReadings

    torch.set_num_threads(1)
    engine = Engine.load(
        resolve_model(str(model_dir), model_dir.parent), load_params(REPO / "params.yaml").serve
    )
    streams = Streams(history)
    print("in-process, one thread (ms per call; per update in brackets):")
    for form, per_call in (("session", 1), ("session", 50), ("stateless", 1), ("stateless", 50)):
        devices = list(range(10_000 + 1000 * per_call, 10_000 + 1000 * per_call + 500))
        groups = [devices[i : i + per_call] for i in range(0, len(devices), per_call)]
        parse = detect = answer = 0.0
        calls = 0
        for rnd in range(40):
            for g in groups:
                ks = [streams.advance(d) for d in g]
                body = [streams.body(form, d, k) for d, k in zip(g, ks, strict=True)]
                streams.started.update(g)
                text = '{"devices":[' + ",".join(body) + "]}"
                t = time.perf_counter()
                reqs = (
                    DetectBatchRequest.model_validate_json(text).devices
                    if per_call > 1
                    else [DeviceReadings.model_validate_json(body[0])]
                )
                t1 = time.perf_counter()
                out = engine.detect_rows(reqs)
                t2 = time.perf_counter()
                pydantic_core.to_json({"model_version": "v", "results": out} if per_call > 1 else out[0])
                t3 = time.perf_counter()
                if rnd >= 2:  # the first rounds fill the cache
                    parse, detect, answer, calls = (
                        parse + t1 - t,
                        detect + t2 - t1,
                        answer + t3 - t2,
                        calls + 1,
                    )
        per = 1e3 / calls
        total = (parse + detect + answer) * per
        print(
            f"  {form:>9}, {per_call:>2} devices: parse {parse * per:.3f}  engine {detect * per:.3f}  "
            f"answer {answer * per:.3f}  = {total:.3f} ms ({total / per_call:.3f} per update)"
        )
    cache = engine.cache
    for b in (1, 50):
        rows, slots, x = np.arange(b), np.full(b, 10**9, np.int64), np.zeros(b, np.float32)
        with torch.inference_mode():
            _, tails = cache.streams.seed(torch.zeros(b, engine.history), keep=1)
        cache.streams.store(rows, slots - 1, tails)
        n, t = 1000, time.perf_counter()
        for i in range(n):
            engine.bundle.decoder.raw_numpy(*cache.streams.step(rows, slots + i, x))
        step = (time.perf_counter() - t) / n * 1e3
        print(f"  model streaming step + decoding, {b:>2} devices: {step:.3f} ms ({step / b:.4f} per update)")
    size = cache.bytes_per_device
    print(f"  bytes per device in the cache: {size:,} ({size / 1024:.1f} KiB)")


MISS_SCRIPT = """
import json, sys, time, numpy as np, torch
torch.set_num_threads(1)
from pathlib import Path
from airwatt.config import load_params
from airwatt.serving.engine import Engine
from airwatt.serving.loading import resolve_model
from airwatt.serving.schemas import DeviceReadings
model_dir, params, n_readings = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
engine = Engine.load(resolve_model(str(model_dir), model_dir.parent), load_params(params).serve)
rng = np.random.default_rng(0)
bodies = [DeviceReadings(device_id=f"m-{i}", start="2026-01-05T00:00:00Z", interval_s=5,
          power_w=(150 + rng.normal(0, 3, n_readings)).round(1).tolist()) for i in range(300)]
for b in bodies[:20]:
    engine.detect([b])
t = time.perf_counter()
for b in bodies[20:]:
    engine.detect([b])
print(json.dumps({"ms": (time.perf_counter() - t) / 280 * 1e3}))
"""


def miss_cost(model_dir: Path, history: int, window: int, baseline: str) -> None:
    """A miss (a device the worker holds no state for, its history resent) next to the previous engine's
    call for the same request, in-process, one thread, one device per call."""
    with tempfile.TemporaryDirectory(prefix="airwatt-baseline-") as tmp:
        old = Path(tmp) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(old), baseline],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        try:
            v1 = Path(tmp) / "model-v1"  # the old engine reads bundle schema 1
            v1.mkdir()
            spec = json.loads((model_dir / "model.json").read_text())
            fill = spec.pop("gap")["max_fill_s"]
            spec.pop("decision", None)
            spec.update(schema_version="1", provenance={**spec.get("provenance", {}), "max_fill_s": fill})
            (v1 / "model.json").write_text(json.dumps(spec))
            (v1 / "weights.safetensors").write_bytes((model_dir / "weights.safetensors").read_bytes())
            for n in (window, history):
                new = _miss_run(os.environ.get("PYTHONPATH", ""), model_dir, REPO / "params.yaml", n)
                was = _miss_run(str(old / "src"), v1, old / "params.yaml", n)
                print(f"  a miss, {n} readings sent: {new:.2f} ms (the previous engine's call: {was:.2f} ms)")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)


def _miss_run(pythonpath: str, model_dir: Path, params: Path, n: int) -> float:
    env = {**os.environ, "PYTHONPATH": pythonpath}
    out = subprocess.run(
        [sys.executable, "-c", MISS_SCRIPT, str(model_dir), str(params), str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=params.parent,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["ms"])


# ------------------------------------------------------------------------------------------------ main
def batch_point(text: str) -> tuple[int, int]:
    """ "50x6" -> (50 devices per call, 6 clients)."""
    devices, _, clients = text.partition("x")
    try:
        return int(devices), int(clients)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected DEVICESxCLIENTS, e.g. 50x6") from None


def worker_rss_mib(pid: int) -> dict[int, float]:
    out = {}
    for p in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            out[p.pid] = p.memory_info().rss / 2**20
    return out


def measure_call(url: str, pid: int, name: str, path: str, body: bytes) -> None:
    """One call; its answer, time and the growth of the busiest worker's RSS (sampled every 10 ms)."""
    before = worker_rss_mib(pid)
    peak = dict(before)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for p, rss in worker_rss_mib(pid).items():
                peak[p] = max(peak.get(p, 0.0), rss)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    t = time.perf_counter()
    with httpx.Client(base_url=url, timeout=600) as c:
        r = c.post(path, content=body, headers=JSON)
    took = time.perf_counter() - t
    done.set()
    sampler.join()
    growth = max(peak[p] - before.get(p, peak[p]) for p in peak)
    sizes = f"body {len(body) / 2**20:5.1f} MiB  answer {len(r.content) / 2**20:5.2f} MiB"
    print(
        f"  {name:<44} {r.status_code}  {sizes}  {took:5.1f} s  worker RSS +{growth:,.0f} MiB (server "
        f"{sum(peak.values()):,.0f} MiB at the peak)",
        flush=True,
    )


def largest_calls(model_dir: Path, home: Path) -> None:
    """The largest calls params.yaml ``serve`` accepts, one at a time, on a fresh server; then eight of the
    largest bodies at once."""
    from airwatt.config import load_params

    cfg = load_params(REPO / "params.yaml").serve
    port = free_port()
    proc = start_server(model_dir, port, home, {})
    url = f"http://127.0.0.1:{port}"
    rng = np.random.default_rng(0)
    now = datetime.now(UTC).replace(microsecond=0)

    def power(n: int) -> list[float]:
        return [round(float(v), 1) for v in 90 + 100 * (np.arange(n) % 720 < 240) + rng.normal(0, 3, n)]

    def device(name: str, n: int) -> dict[str, Any]:
        start = (now - timedelta(seconds=5 * (n + 1))).isoformat()
        return {"device_id": name, "start": start, "interval_s": 5, "power_w": power(n)}

    try:
        print(f"largest calls (server RSS after start {tree_rss_mib(proc.pid):,.0f} MiB):")
        n = cfg.max_report_readings
        month = device("r", n)
        measure_call(
            url,
            proc.pid,
            f"/report compact, {n:,} readings",
            "/report",
            json.dumps({**month, "period": "month"}).encode(),
        )
        first = now - timedelta(seconds=5 * (n + 1))
        stamps = [(first + timedelta(seconds=5 * i)).isoformat() for i in range(n)]
        verbose = json.dumps(
            {"device_id": "r2", "timestamps": stamps, "power_w": month["power_w"], "period": "month"}
        ).encode()
        measure_call(url, proc.pid, f"/report timestamps, {n:,} readings", "/report", verbose)
        d = cfg.max_devices
        h = cfg.max_batch_readings // d
        batch = {"devices": [device(f"b-{i}", h) for i in range(d)]}
        measure_call(url, proc.pid, f"/detect_batch {d:,} x {h}", "/detect_batch", json.dumps(batch).encode())
        measure_call(
            url,
            proc.pid,
            f"/predict_batch newest_only {d:,} x {h} (again)",
            "/predict_batch",
            json.dumps({**batch, "newest_only": True}).encode(),
        )
        s = cfg.max_series_readings
        measure_call(
            url,
            proc.pid,
            f"/predict_batch every reading, 1 x {s:,}",
            "/predict_batch",
            json.dumps({"devices": [device("s", s)]}).encode(),
        )
        before = tree_rss_mib(proc.pid)
        peak = [before]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], tree_rss_mib(proc.pid))
                time.sleep(0.01)

        def post(_: int) -> int:
            with httpx.Client(base_url=url, timeout=600) as c:
                return c.post("/report", content=verbose, headers=JSON).status_code

        sampler = threading.Thread(target=sample)
        sampler.start()
        t = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            codes = sorted(pool.map(post, range(8)))
        done.set()
        sampler.join()
        print(
            f"  8 x the {len(verbose) / 2**20:.0f} MiB report at once: answers {codes} in "
            f"{time.perf_counter() - t:.1f} s; server RSS {before:,.0f} -> {peak[0]:,.0f} MiB at the peak"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def served_runs(args: argparse.Namespace, modes: list[str], url: str, pid: int, history: int) -> None:
    """Every served mode in every form, each on devices of its own (fresh streams)."""
    base = 0

    def devices(n: int) -> list[int]:
        nonlocal base
        base += n
        return list(range(base - n, base))

    for mode in modes:
        for form in args.forms:
            streams = Streams(history)
            if mode == "batch":
                for per_call, clients in args.batch_points:
                    ids = devices(args.devices)
                    groups = [ids[c::clients] for c in range(clients)]
                    loop = partial(closed_loop, url, streams, form, groups, per_call, args.duration_s)
                    print(run(f"batch {per_call}x{clients} {form}", url, pid, loop).line(), flush=True)
            elif mode == "single":
                ids = devices(args.devices)
                groups = [ids[c :: args.concurrency] for c in range(args.concurrency)]
                loop = partial(closed_loop, url, streams, form, groups, 1, args.duration_s)
                print(run(f"single c={args.concurrency} {form}", url, pid, loop).line(), flush=True)
            elif mode == "paced":
                first = devices(args.paced_devices)[0]
                n, dur, conns = args.paced_devices, args.paced_s, args.paced_connections
                pace = partial(paced, url, streams, form, n, dur, conns, first)
                print(run(f"paced {n} dev/5 s {dur:g} s {form}", url, pid, pace).line(), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=30.0, help="seconds per closed-loop run")
    ap.add_argument("--first-s", type=float, default=90.0, help="first mode: seconds from /readyz")
    ap.add_argument("--first-bucket-s", type=float, default=10.0, help="first mode: bucket width")
    ap.add_argument("--first-baseline", default=None, help="first mode: also this git revision's service")
    ap.add_argument("--modes", nargs="+", default=["batch", "single", "paced", "miss"])
    ap.add_argument("--forms", nargs="+", default=["session", "stateless"], choices=["session", "stateless"])
    ap.add_argument(
        "--batch-points", nargs="+", type=batch_point, default=[(50, 6)], metavar="DEVICESxCLIENTS"
    )
    ap.add_argument("--devices", type=int, default=2000, help="closed-loop modes: devices (streams)")
    ap.add_argument("--concurrency", type=int, default=16, help="single mode: clients")
    ap.add_argument("--paced-devices", type=int, default=5000, help="paced mode: devices, each every 5 s")
    ap.add_argument("--paced-s", type=float, default=600.0, help="paced mode: seconds")
    ap.add_argument("--paced-connections", type=int, default=32, help="paced mode: kept-alive connections")
    ap.add_argument("--model", type=Path, default=None, help="bundle dir (default: untrained causal)")
    ap.add_argument("--baseline", default=BASELINE, help="miss mode: the git revision to compare with")
    ap.add_argument("--no-breakdown", action="store_true", help="skip the in-process breakdown")
    quick = {
        "duration_s": 3.0,
        "modes": ["batch", "single"],
        "forms": ["session"],
        "devices": 50,
        "concurrency": 4,
        "no_breakdown": True,
    }
    args = parse_args(ap, quick)

    from airwatt.config import load_params
    from airwatt.models import ModelBundle

    global WORKERS
    cfg = load_params(REPO / "params.yaml").serve
    WORKERS = cfg.workers
    print(machine_info())
    with tempfile.TemporaryDirectory(prefix="airwatt-bench-serving-") as tmp:
        model_dir = args.model or bundle_for("causal", 512, 13).save(Path(tmp) / "model")
        bundle = ModelBundle.load(model_dir)
        history = bundle.history_length
        print(
            f"serve: workers={cfg.workers} torch_threads={cfg.torch_threads} state_cache_devices="
            f"{cfg.state_cache_devices}; model: causal, {len(bundle.appliances)} appliances, window "
            f"{bundle.window_length}, history {history} readings"
        )
        if "miss" in args.modes:
            miss_cost(model_dir, history, bundle.window_length, args.baseline)
        if "largest" in args.modes:
            largest_calls(model_dir, Path(tmp) / "largest")
        if "first" in args.modes:
            first_minute(args, model_dir, Path(tmp) / "first", history)
        served_modes = [m for m in args.modes if m not in ("miss", "first", "largest")]
        if served_modes:
            port = free_port()
            proc = start_server(model_dir, port, Path(tmp) / "bentoml", {})
            print(f"server RSS after start: {tree_rss_mib(proc.pid):,.0f} MiB")
            try:
                served_runs(args, served_modes, f"http://127.0.0.1:{port}", proc.pid, history)
            finally:
                proc.terminate()
                proc.wait(timeout=60)
        if not args.no_breakdown:
            breakdown(model_dir, history)


if __name__ == "__main__":
    main()
