"""Simulate a fleet: per-device work in a process pool, written in device order with DatasetWriter."""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from airwatt.appliances import APPLIANCES
from airwatt.config import SimulateParams
from airwatt.dataset import DatasetWriter, Manifest, read_manifest
from airwatt.errors import ConfigError
from airwatt.simulate.device import DeviceFrames, simulate_device
from airwatt.simulate.sites import SiteSpec, draw_site

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 2
DATASET_NAME = "simulated-fleet"


def _utc(start: str | pd.Timestamp) -> pd.Timestamp:
    try:
        t = pd.Timestamp(start)
    except ValueError as e:
        raise ConfigError(f"simulate: start {start!r} is not an ISO 8601 timestamp ({e})") from None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def fleet_sites(cfg: SimulateParams) -> list[SiteSpec]:
    """Site type, zone and inventory of every device (device k does not depend on the fleet size)."""
    return [draw_site(cfg.seed, k, cfg.home_fraction) for k in range(cfg.devices)]


def _in_order(
    job: Callable[[SiteSpec], DeviceFrames], specs: Sequence[SiteSpec], workers: int
) -> Iterator[DeviceFrames]:
    """Results in device order; at most 2 * workers devices in flight so memory stays bounded."""
    if workers <= 1:
        yield from map(job, specs)
        return
    # Not "fork": the caller may hold Arrow/BLAS threads, and forking a threaded process can deadlock.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
    pending: deque[Future[DeviceFrames]] = deque()
    todo = iter(specs)
    try:
        for spec in todo:
            pending.append(pool.submit(job, spec))
            if len(pending) >= 2 * workers:
                break
        while pending:
            done = pending.popleft()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(job, nxt))
            yield done.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def simulate_fleet(
    out: Path | str,
    cfg: SimulateParams,
    *,
    start: str | pd.Timestamp,
    days: float,
    interval_s: float,
    workers: int | None = None,
) -> Manifest:
    """Generate ``cfg.devices`` sites for ``days`` from ``start`` on the ``interval_s`` grid and write them to
    ``out`` (replaced atomically). Deterministic per (seed, devices, days, start), whatever ``workers``."""
    t0 = _utc(start)
    n = round(days * 86_400 / interval_s)
    if n < 1:
        raise ConfigError(f"simulate: days={days} gives no reading at interval_s={interval_s}")
    workers = min(workers or DEFAULT_WORKERS, os.cpu_count() or 1, cfg.devices)
    specs = fleet_sites(cfg)
    vocabulary = [a for a in APPLIANCES if any(a in s.appliances for s in specs)]
    end = t0 + pd.Timedelta(seconds=n * interval_s)
    provenance = {
        "source": "simulator",
        "generator": "airwatt.simulate",
        "start": t0.isoformat(),
        "days": days,
        "interval_s": interval_s,
        "params": cfg.model_dump(),
    }
    log.info(
        "simulating %d devices x %g days at %g s with %d worker(s)", cfg.devices, days, interval_s, workers
    )
    job = partial(simulate_device, cfg=cfg, start=t0, n=n, interval_s=interval_s)
    with (
        DatasetWriter(
            out,
            name=DATASET_NAME,
            appliances=vocabulary,
            interval_s=interval_s,
            start=t0,
            end=end,
            provenance=provenance,
        ) as writer,
        tqdm(total=len(specs), desc="simulate", unit="device") as bar,
    ):
        for frames in _in_order(job, specs, workers):
            writer.add_device(
                frames.info, frames.readings, ground_truth=frames.ground_truth, labels=frames.labels
            )
            bar.update()
    return read_manifest(out)
