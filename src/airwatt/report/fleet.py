"""The fleet report job: every device and local month (or ISO week) of a dataset, partition by partition,
on one process (``engine="local"``) or on a Ray cluster (``engine="ray"``: a local one by default, an
existing one by ``address``). Each partition runs the single-device path of ``airwatt report``
(``series_from_readings`` + ``device_report``) on the device's readings of that period plus the model's
history before it, so its answers are what the service answered then.

Output (``out``), one file per partition and table, Hive-partitioned by period::

    <table>/month=2026-01/<folder>.parquet   days, appliance_days, periods, appliance_periods, events, gaps
                                              (the schemas of ``airwatt report``; ``week=2026-W02`` by week)
    devices/<folder>/month=2026-01/           report.html and the PNG charts (``pages=True``)
    _partitions/month=2026-01/<folder>.json   the done marker: written last, names the job key
    errors.parquet                            device_id, period, error_type, error: this run's failures
    fleet.json                                the summary (partitions planned, done, skipped, failed; speed)

A partition is skipped when its marker holds the same job key (model content, report params, period,
pages) and the same data version (a hash of the readings it reads and the device's manifest entry): a
rerun after a kill redoes only the unfinished partitions, and a new sync redoes only the periods whose
readings changed. A partition that fails is recorded (device, period, error) and does not stop the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import resource
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from airwatt.atomic import atomic_path, write_json_atomic
from airwatt.config import ReportParams
from airwatt.dataset import Dataset, DeviceInfo
from airwatt.dataset.io import frame_to_table
from airwatt.errors import ConfigError, DataError
from airwatt.report.core import DeviceReport, Period, device_report
from airwatt.report.run import (
    SCHEMAS,
    _empty_series,
    _tariff_text,
    dataset_window,
    page_folder,
    select_devices,
    series_from_readings,
    write_device_page,
)
from airwatt.results import FleetData, FleetModel, FleetSummary, PartitionCounts, RegistryRef, TableFile
from airwatt.timeutil import from_epoch_ms, to_epoch_ms

log = logging.getLogger(__name__)

Engine = Literal["local", "ray"]
SUMMARY_FILE = "fleet.json"
ERRORS_FILE = "errors.parquet"
MARKERS_DIR = "_partitions"
DAYS_PER_MONTH = 365.25 / 12
ERRORS_SCHEMA = pa.schema(
    [("device_id", pa.string()), ("period", pa.string()), ("error_type", pa.string()), ("error", pa.string())]
)


# ---------------------------------------------------------------------------------------------- plan
@dataclasses.dataclass(frozen=True)
class Partition:
    """One device over one local period: [start_ms, end_ms) is the period cut to the data window."""

    device_id: str
    period: str  # "2026-01" (month) or "2026-W02" (ISO week)
    start_ms: int
    end_ms: int

    @property
    def days(self) -> float:
        return (self.end_ms - self.start_ms) / 86_400_000


def partition_key(period: Period) -> Period:
    """The Hive partition column: ``month`` or ``week``."""
    return "month" if period == "month" else "week"


def _local_midnight_ms(day: pd.Timestamp, timezone: str) -> int:
    local = pd.Timestamp(day.year, day.month, day.day).tz_localize(
        timezone, nonexistent="shift_forward", ambiguous=False
    )
    return int(to_epoch_ms(pd.DatetimeIndex([local]).tz_convert("UTC"))[0])


def local_periods(start_ms: int, end_ms: int, timezone: str, period: Period) -> list[tuple[str, int, int]]:
    """(label, start_ms, end_ms) of the local months or ISO weeks that [start_ms, end_ms) touches, each cut
    to it; a period starts at local midnight of its first day (DST-aware)."""
    first = from_epoch_ms(np.array([start_ms])).tz_convert(timezone)[0]
    day = pd.Timestamp(first.year, first.month, 1 if period == "month" else first.day)
    if period == "week":
        day -= pd.Timedelta(days=day.weekday())
    out: list[tuple[str, int, int]] = []
    while True:
        nxt = day + (pd.DateOffset(months=1) if period == "month" else pd.Timedelta(days=7))
        lo, hi = _local_midnight_ms(day, timezone), _local_midnight_ms(nxt, timezone)
        if lo >= end_ms:
            return out
        if hi > start_ms:
            iso = day.isocalendar()
            label = f"{day.year}-{day.month:02d}" if period == "month" else f"{iso[0]}-W{iso[1]:02d}"
            out.append((label, max(lo, start_ms), min(hi, end_ms)))
        day = nxt


def _device_span(ds: Dataset, device_id: str, interval_s: float) -> tuple[int, int] | None:
    ts = ds.readings([device_id], columns=["timestamp"])["timestamp"]
    if ts.empty:
        return None
    ms = to_epoch_ms(pd.DatetimeIndex(ts))
    return int(ms.min()), int(ms.max() + interval_s * 1000)


def plan_partitions(
    ds: Dataset, devices: Sequence[str], period: Period, interval_s: float
) -> tuple[list[Partition], list[dict[str, str]]]:
    """Every (device, period) of the dataset window (each device's readings span without one), and the
    devices that cannot be planned (an unknown timezone) as error rows."""
    window = dataset_window(ds.manifest)
    parts: list[Partition] = []
    errors: list[dict[str, str]] = []
    for dev in devices:
        span = window or _device_span(ds, dev, interval_s)
        if span is None:
            log.warning("device %s: no readings and no dataset window; nothing to report", dev)
            continue
        try:
            periods = local_periods(*span, ds.manifest.device(dev).timezone, period)
        except Exception as e:  # an unknown timezone: pandas/zoneinfo raise several types
            errors.append(_error_row(dev, "", e))
            continue
        parts.extend(Partition(dev, label, lo, hi) for label, lo, hi in periods)
    return parts, errors


def _error_row(device_id: str, period: str, e: BaseException) -> dict[str, str]:
    return {"device_id": device_id, "period": period, "error_type": type(e).__name__, "error": str(e)}


# ---------------------------------------------------------------------------------------- the model
def bundle_files(bundle_dir: Path) -> dict[str, bytes]:
    """A bundle directory as {file name: bytes}: shipped to every worker (Ray's object store), so workers
    need neither the driver's disk nor the tracking server."""
    return {p.name: p.read_bytes() for p in sorted(bundle_dir.iterdir()) if p.is_file()}


def model_version(files: dict[str, bytes]) -> str:
    """The bundle's content hash (spec and weights): what a partition's marker records."""
    h = hashlib.sha256()
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()[:16]


def job_key(model_hash: str, params: ReportParams, period: Period, pages: bool) -> str:
    text = json.dumps([model_hash, params.model_dump(mode="json"), period, pages], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- one partition
@dataclasses.dataclass(frozen=True)
class FleetTask:
    """What every worker needs: the same for all partitions of a job."""

    data: str
    out: str
    period: Period
    params: dict[str, Any]  # ReportParams as JSON (plain data crosses process boundaries)
    pages: bool
    job_key: str
    model_text: str
    threads: int = 1


class FleetWorker:
    """Holds the model (loaded once) and the dataset handle; reports one partition per call. The same class
    runs in-process (engine "local") and as a Ray actor."""

    def __init__(self, files: dict[str, bytes], task: FleetTask) -> None:
        import torch

        from airwatt.models import ModelBundle

        torch.set_num_threads(task.threads)
        with tempfile.TemporaryDirectory(prefix="airwatt-fleet-model-") as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            self.bundle = ModelBundle.load(Path(tmp))
        self.task = task
        self.params = ReportParams.model_validate(task.params)
        self.ds = Dataset(task.data)
        self.out = Path(task.out)
        self.history_ms = int(self.bundle.history_length * self.bundle.spec.interval_s * 1000)
        self.bundle.predict_series(np.zeros(2 * self.bundle.history_length, np.float32))  # warm-up

    def peak_rss_mib(self) -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def run(self, part: Partition) -> dict[str, Any]:
        """{"status": "done" | "skipped" | "failed", ...} for ``part``; never raises for the partition's
        own failure (it is returned, with the error)."""
        t0 = time.perf_counter()
        try:
            return self._run(part, t0)
        except Exception as e:
            log.warning("device %s, %s: failed: %s: %s", part.device_id, part.period, type(e).__name__, e)
            log.debug("%s", traceback.format_exc())
            return {"status": "failed", "partition": part, **_error_row(part.device_id, part.period, e)}

    def _run(self, part: Partition, t0: float) -> dict[str, Any]:
        info = self.ds.manifest.device(part.device_id)
        readings = self.ds.readings(
            [part.device_id],
            start=from_epoch_ms(np.array([part.start_ms - self.history_ms]))[0],
            end=from_epoch_ms(np.array([part.end_ms]))[0],
            columns=["timestamp", "power_w"],
        )
        data_version = _data_version(readings, info, part)
        marker = self.marker_path(part)
        if _marker_matches(marker, self.task.job_key, data_version):
            return {"status": "skipped", "partition": part, "seconds": time.perf_counter() - t0}
        report = self.report(part, info, readings)
        rows = self.write(part, report)
        done = {
            "device_id": part.device_id,
            "period": part.period,
            "start_ms": part.start_ms,
            "end_ms": part.end_ms,
            "job_key": self.task.job_key,
            "data_version": data_version,
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json_atomic(marker, done)  # last: the partition counts as done only now
        return {"status": "done", "partition": part, "seconds": done["seconds"]}

    def report(self, part: Partition, info: DeviceInfo, readings: pd.DataFrame) -> DeviceReport:
        """The single-device path of ``airwatt report`` on the partition's readings."""
        kw = {"device_id": part.device_id, "timezone": info.timezone}
        series = series_from_readings(self.bundle, readings, **kw, inventory=info.appliances)
        if series is None:  # no reading in the period: all of it is missing
            series = _empty_series(self.bundle, part.device_id, info.timezone, part.start_ms)
            series = series.only(info.appliances)
        window = (part.start_ms, part.end_ms)
        return device_report(series, self.params, period=self.task.period, window_ms=window)

    def partition_dir(self, part: Partition) -> str:
        return f"{partition_key(self.task.period)}={part.period}"

    def marker_path(self, part: Partition) -> Path:
        return self.out / MARKERS_DIR / self.partition_dir(part) / f"{page_folder(part.device_id)}.json"

    def write(self, part: Partition, report: DeviceReport) -> dict[str, int]:
        """Every table of the partition (zero-row files too), each replaced atomically; the page if asked."""
        folder, sub = page_folder(part.device_id), self.partition_dir(part)
        meta = {b"currency": self.params.tariff.currency.encode()}
        rows = {}
        for name, schema in SCHEMAS.items():
            frame: pd.DataFrame = getattr(report, name)
            table = frame_to_table(frame, schema).replace_schema_metadata(meta)
            with atomic_path(self.out / name / sub / f"{folder}.parquet") as tmp:
                pq.write_table(table, tmp, compression="zstd")
            rows[name] = len(frame)
        if self.task.pages:
            info = self.ds.manifest.device(part.device_id)
            page_meta = {
                "site_type": info.site_type,
                "model": self.task.model_text,
                "tariff": _tariff_text(self.params),
            }
            write_device_page(self.out / "devices" / folder / sub, report, page_meta)
        return rows


def _data_version(readings: pd.DataFrame, info: DeviceInfo, part: Partition) -> str:
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps([info.model_dump(mode="json"), part.start_ms, part.end_ms]).encode())
    h.update(np.ascontiguousarray(to_epoch_ms(pd.DatetimeIndex(readings["timestamp"]))).tobytes())
    h.update(np.ascontiguousarray(readings["power_w"].to_numpy(np.float32, na_value=np.nan)).tobytes())
    return h.hexdigest()


def _marker_matches(marker: Path, key: str, data_version: str) -> bool:
    try:
        got = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return got.get("job_key") == key and got.get("data_version") == data_version


# ------------------------------------------------------------------------------------------- engines
def _run_local(files: dict[str, bytes], task: FleetTask, parts: Sequence[Partition]) -> Iterator[Any]:
    """One worker in this process, on one core like each Ray worker (torch's threads restored after)."""
    import torch

    threads = torch.get_num_threads()
    try:
        worker = FleetWorker(files, task)
        yield {"status": "ready"}
        for part in parts:
            yield worker.run(part)
        yield {"status": "stats", "peak_rss_mib": [worker.peak_rss_mib()]}
    finally:
        torch.set_num_threads(threads)


def _run_ray(
    files: dict[str, bytes],
    task: FleetTask,
    parts: Sequence[Partition],
    *,
    address: str | None,
    workers: int | None,
) -> Iterator[Any]:
    import ray
    from ray.util import ActorPool

    started = not ray.is_initialized()
    if started and address:
        ray.init(address=address, logging_level=logging.WARNING)
    elif started:  # a local cluster, its services on loopback only, no dashboard
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, logging_level=logging.WARNING)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n = max(1, min(workers or cpus, cpus, len(parts) or 1))
        log.info("ray: %d worker(s) on a cluster of %d CPU(s)", n, cpus)
        actor: Any = ray.remote(num_cpus=1)(FleetWorker)
        ref = ray.put(files)
        pool_actors: list[Any] = [actor.remote(ref, task) for _ in range(n)]
        ray.get([a.peak_rss_mib.remote() for a in pool_actors])  # every worker has loaded the model
        yield {"status": "ready"}
        pool = ActorPool(pool_actors)
        yield from pool.map_unordered(lambda a, p: a.run.remote(p), list(parts))
        yield {"status": "stats", "peak_rss_mib": ray.get([a.peak_rss_mib.remote() for a in pool_actors])}
    finally:
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------------------------- the job
def _check_out(out: Path) -> None:
    """Refuse a non-empty directory that is not an earlier fleet output (``--out .`` would be littered)."""
    if out.exists() and (
        not out.is_dir()
        or (any(out.iterdir()) and not (out / SUMMARY_FILE).is_file() and not (out / MARKERS_DIR).is_dir())
    ):
        raise ConfigError(
            f"{out}: exists and is not an earlier fleet report directory; refusing to write there"
        )


def _resolved_files(model: str | Path) -> tuple[dict[str, bytes], RegistryRef | None, float]:
    """The bundle's files, the registered version an alias was pinned to, and the model's interval (s)."""
    from airwatt.model_uri import resolve
    from airwatt.models.bundle import read_spec

    with tempfile.TemporaryDirectory(prefix="airwatt-fleet-") as tmp:
        resolved = resolve(model, Path(tmp) / "bundle")
        files = bundle_files(resolved.bundle_dir)
        interval_s = read_spec(resolved.bundle_dir).interval_s
    registry = RegistryRef(**resolved.registry.as_json()) if resolved.registry else None
    return files, registry, interval_s


def fleet_report(
    model: str | Path,
    data: Path,
    out: Path,
    *,
    period: Period,
    params: ReportParams,
    engine: Engine = "ray",
    address: str | None = None,
    workers: int | None = None,
    devices: Sequence[str] | None = None,
    pages: bool = False,
) -> FleetSummary:
    """Run the fleet job (module docstring); returns the summary also written to ``out/fleet.json``."""
    if engine not in ("local", "ray"):
        raise ConfigError(f"engine must be 'local' or 'ray', not {engine!r}")
    data, out = Path(data), Path(out)
    ds = Dataset(data)
    chosen = select_devices(ds, devices)
    _check_out(out)
    files, registry, interval_s = _resolved_files(model)
    mhash = model_version(files)
    parts, errors = plan_partitions(ds, chosen, period, interval_s)
    if not parts and not errors:
        raise DataError(f"no partition to report: none of {len(chosen)} devices has readings", file=data)
    task = FleetTask(
        data=str(data.absolute()),
        out=str(out.absolute()),
        period=period,
        params=params.model_dump(mode="json"),
        pages=pages,
        job_key=job_key(mhash, params, period, pages),
        model_text=str(model),
    )
    out.mkdir(parents=True, exist_ok=True)
    log.info(
        "fleet report: %d devices, %d partitions (%s) with model %s on engine %s",
        len(chosen),
        len(parts),
        partition_key(period),
        mhash,
        engine,
    )
    t0 = time.perf_counter()
    results = (
        _run_local(files, task, parts)
        if engine == "local"
        else _run_ray(files, task, parts, address=address, workers=workers)
    )
    run = _collect(results, len(parts), errors)
    run.wall_s = time.perf_counter() - t0
    run.startup_s = run.ready_at - t0
    summary = _summary(model, registry, mhash, ds, data, chosen, parts, task, engine, address, run)
    with atomic_path(out / ERRORS_FILE) as tmp:
        pq.write_table(pa.Table.from_pylist(run.errors, schema=ERRORS_SCHEMA), tmp)
    write_json_atomic(out / SUMMARY_FILE, summary.model_dump(mode="json"))
    return summary


@dataclasses.dataclass
class _Run:
    counts: dict[str, int]
    errors: list[dict[str, str]]
    done_days: float = 0.0
    peak_rss_mib: list[float] = dataclasses.field(default_factory=list)
    ready_at: float = 0.0
    wall_s: float = 0.0
    startup_s: float = 0.0


def _collect(results: Iterator[Any], total: int, errors: list[dict[str, str]]) -> _Run:
    """Drain the engine's results with a progress bar: counts, failures, days computed, worker stats."""
    run = _Run({"done": 0, "skipped": 0, "failed": len(errors)}, list(errors))
    with tqdm(total=total, desc="fleet report", unit="partition", disable=None) as bar:
        for r in results:
            if r["status"] == "ready":
                run.ready_at = time.perf_counter()
                continue
            if r["status"] == "stats":
                run.peak_rss_mib = [round(float(x), 1) for x in r["peak_rss_mib"]]
                continue
            run.counts[r["status"]] += 1
            if r["status"] == "done":
                run.done_days += r["partition"].days
            if r["status"] == "failed":
                run.errors.append({k: r[k] for k in ERRORS_SCHEMA.names})
            bar.set_postfix(failed=run.counts["failed"], skipped=run.counts["skipped"], refresh=False)
            bar.update()
    return run


def _summary(
    model: str | Path,
    registry: RegistryRef | None,
    mhash: str,
    ds: Dataset,
    data: Path,
    chosen: list[str],
    parts: list[Partition],
    task: FleetTask,
    engine: Engine,
    address: str | None,
    run: _Run,
) -> FleetSummary:
    """fleet.json. Speed: device-months computed (skipped partitions excluded) per core-hour of the workers
    once they are up (each worker one core), and the same with the start-up (cluster, model load)."""
    cores = len(run.peak_rss_mib) or 1
    device_months = run.done_days / DAYS_PER_MONTH
    work_h = max(run.wall_s - run.startup_s, 1e-9) * cores / 3600
    total_h = run.wall_s * cores / 3600
    return FleetSummary(
        model=FleetModel(uri=str(model), registry=registry, content_sha256_16=mhash),
        data=FleetData(path=str(data), name=ds.manifest.name, devices=len(chosen)),
        period=task.period,
        partition_key=partition_key(task.period),
        job_key=task.job_key,
        pages=task.pages,
        engine=engine,
        address=address,
        workers=cores,
        partitions=PartitionCounts(planned=len(parts), **run.counts),
        device_months_computed=round(device_months, 3),
        wall_s=round(run.wall_s, 2),
        startup_s=round(run.startup_s, 2),
        core_hours=round(total_h, 5),
        device_months_per_core_hour=round(device_months / work_h, 1) if device_months else None,
        device_months_per_core_hour_with_startup=(
            round(device_months / total_h, 1) if device_months else None
        ),
        peak_rss_mib_per_worker=run.peak_rss_mib,
        tables=sorted(SCHEMAS),
        errors=TableFile(file=ERRORS_FILE, rows=len(run.errors)),
    )


def read_fleet_table(out: Path, table: str) -> pd.DataFrame:
    """One table of a fleet output, all partitions, with the partition column (``month`` or ``week``)."""
    if table not in SCHEMAS:
        raise ConfigError(f"unknown table {table!r}; one of {sorted(SCHEMAS)}")
    path = Path(out) / table
    if not path.is_dir():
        raise DataError("no such table in the fleet output", file=path)
    return pq.read_table(path, partitioning="hive").to_pandas()
