"""`airwatt data sync`: pull the window [sync.start, sync.start + sync.days) from the source in params.yaml.

Sources (``sync.source``):

- ``simulator``: the embedded simulated fleet (params ``simulate``), generated for exactly the window;
- ``folder``: a directory of platform exports (layout in airwatt.sync.exports);
- ``url``: the same exports over HTTP(S) (airwatt.sync.remote);
- ``redd`` | ``refit`` | ``ukdale``: a public dataset through airwatt.importers. These recordings are from
  2011-2015: when the requested window does not overlap the source's span, the window becomes the first
  ``sync.days`` days of the source (logged, and recorded in the manifest's provenance).

The output is a dataset in the workbench format, written atomically: exactly the source's window (within the
source, the newest copy of a duplicate wins; airwatt.sync.merge), so re-running a sync rewrites the same bytes
and a changed source, fleet or window leaves nothing of the old one. If ``out`` already holds a dataset, its
Label Studio labels that still apply are kept and the others archived beside them (airwatt.sync.carry);
``sync_report.json`` lists both.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from airwatt.config import Params
from airwatt.dataset import Manifest, read_manifest
from airwatt.dataset.schema import MANIFEST_FILE, READINGS_FILE
from airwatt.errors import ConfigError, DataError
from airwatt.sync.exports import default_devices, read_exports
from airwatt.sync.merge import DatasetSource, DeviceCounts, FrameSource, TableSource, Window, merge_sources
from airwatt.sync.remote import fetch_exports

__all__ = ["Window", "importer_window", "requested_window", "source_span", "sync"]

log = logging.getLogger("airwatt.sync")  # the stage's log lines keep the package's name

IMPORTER_KINDS = ("redd", "refit", "ukdale")


def requested_window(params: Params) -> Window:
    """The window params.yaml asks for; a start without an offset is read as UTC."""
    try:
        start = pd.Timestamp(params.sync.start)
    except ValueError as e:
        raise ConfigError(f"sync.start {params.sync.start!r}: not an ISO 8601 time ({e})") from None
    start = start.tz_localize("UTC") if start.tzinfo is None else start.tz_convert("UTC")
    return Window(start, start + pd.Timedelta(days=params.sync.days))


def _previous(out: Path, window: Window, interval_s: float) -> DatasetSource | None:
    """The dataset already in ``out`` (merged with the new rows), or None."""
    if not out.exists():
        return None
    if not (out / MANIFEST_FILE).is_file():
        if out.is_dir() and not any(out.iterdir()):
            return None
        raise DataError("exists and is not an AirWatt dataset; refusing to replace it", file=out)
    manifest = read_manifest(out)
    if manifest.interval_s != interval_s:
        raise DataError(
            f"holds a dataset at {manifest.interval_s:g} s, but data.interval_s is {interval_s:g} s; "
            "sync into a new directory",
            file=out / MANIFEST_FILE,
            column="interval_s",
        )
    return DatasetSource(out, window, name="previous")


def _source_path(params: Params) -> str:
    if not params.sync.path:
        raise ConfigError(f"sync.path is required for sync.source={params.sync.source!r}")
    return params.sync.path


def _from_simulator(params: Params, window: Window, tmp: Path) -> tuple[TableSource, dict[str, Any]]:
    from airwatt.simulate import simulate_fleet

    days = (window.end - window.start) / pd.Timedelta(days=1)
    simulate_fleet(
        tmp / "sim",
        params.simulate,
        start=window.start.isoformat(),
        days=days,
        interval_s=params.data.interval_s,
    )
    upstream = read_manifest(tmp / "sim").provenance
    return DatasetSource(tmp / "sim", window, "simulator"), {"upstream": upstream}


def _from_exports(folder: Path, window: Window, name: str, where: dict[Path, str] | None) -> FrameSource:
    exports = read_exports(folder, where_of=where.__getitem__ if where else None)
    src = FrameSource(
        name=name,
        readings_all=exports.readings,
        window=window,
        labels_all=exports.labels,
        ground_truth_all=exports.ground_truth,
        devices=exports.devices,
        fallback_devices=default_devices(exports),
        appliances=exports.appliances,
        files=exports.files,
    )
    outside = sum(src.outside_window.values())
    if outside:
        log.info("%s: %d readings outside the window %s dropped", name, outside, window.as_dict())
    return src


def source_span(root: Path) -> Window:
    """First and last reading (+1 ms) of a dataset, from the timestamp column only."""
    ts = pq.read_table(root / READINGS_FILE, columns=["timestamp"])["timestamp"]
    if len(ts) == 0:
        raise DataError("the imported dataset has no readings", file=root / READINGS_FILE)
    lo, hi = pc.min_max(ts).values()
    return Window(pd.Timestamp(lo.as_py()), pd.Timestamp(hi.as_py()) + pd.Timedelta(milliseconds=1))


def importer_window(requested: Window, span: Window) -> Window:
    """The requested window where it overlaps the source; otherwise the source's first days (logged)."""
    if requested.start < span.end and requested.end > span.start:
        return requested
    window = Window(span.start, span.start + (requested.end - requested.start))
    log.warning(
        "requested window %s is outside the source's span %s; using its first %g days: %s",
        requested.as_dict(),
        span.as_dict(),
        (requested.end - requested.start) / pd.Timedelta(days=1),
        window.as_dict(),
    )
    return window


def _from_importer(
    params: Params, requested: Window, tmp: Path
) -> tuple[TableSource, Window, dict[str, Any]]:
    from airwatt.importers import import_dataset

    kind, src = params.sync.source, Path(_source_path(params))
    import_dataset(
        kind,
        src=src,
        out=tmp / "imported",
        interval_s=params.data.interval_s,
        max_fill_s=params.import_.max_fill_s,
    )
    window = importer_window(requested, source_span(tmp / "imported"))
    extra = {"requested_window": requested.as_dict(), "upstream": read_manifest(tmp / "imported").provenance}
    return DatasetSource(tmp / "imported", window, kind), window, extra


def _log_counts(counts: dict[str, DeviceCounts]) -> None:
    for dev, c in counts.items():
        log.debug(
            "%s: %d rows read, %d already synced, %d duplicates dropped, %d written",
            dev,
            c.read,
            c.previous,
            c.duplicates,
            c.written,
        )
    log.info(
        "total: %d rows read, %d already synced, %d duplicates dropped, %d written (%d devices)",
        sum(c.read for c in counts.values()),
        sum(c.previous for c in counts.values()),
        sum(c.duplicates for c in counts.values()),
        sum(c.written for c in counts.values()),
        sum(1 for c in counts.values() if c.written),
    )


def sync(params: Params, out: Path) -> Manifest:
    """Synchronise the dataset window from ``params.sync.source`` into ``out`` (idempotent, atomic)."""
    out = Path(out)
    kind = params.sync.source
    window = requested_window(params)
    provenance: dict[str, Any] = {"source": kind, "path": params.sync.path}
    with tempfile.TemporaryDirectory(prefix="airwatt-sync-") as tmp_name:
        tmp = Path(tmp_name)
        if kind == "simulator":
            source, extra = _from_simulator(params, window, tmp)
        elif kind == "folder":
            source = _from_exports(Path(_source_path(params)), window, "folder", None)
            extra = {"files": source.files}
        elif kind == "url":
            where = fetch_exports(_source_path(params), tmp)
            source = _from_exports(tmp, window, "url", where)
            extra = {"files": source.files}
        elif kind in IMPORTER_KINDS:
            source, window, extra = _from_importer(params, window, tmp)
        else:  # guarded by SyncParams, kept for type checkers
            raise ConfigError(f"unknown sync.source {kind!r}")
        provenance.update(window=window.as_dict(), **extra)
        previous = _previous(out, window, params.data.interval_s)
        if previous is not None:
            log.info("merging with the dataset already in %s", out)
        manifest, counts = merge_sources(
            out,
            [source],
            window,
            name=f"sync-{kind}",
            interval_s=params.data.interval_s,
            provenance=provenance,
            previous=previous,
        )
    _log_counts(counts)
    return manifest
