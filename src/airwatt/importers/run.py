"""`airwatt data import`: a public NILM dataset (REDD, REFIT, UK-DALE) in the AirWatt format on the 5 s grid.

Each dataset module finds the houses in SRC (``find_houses``: cheap, reads headers only, so unknown
appliance names fail before anything is written) and loads one house onto the grid (``load_house``,
resampled by the policy of :mod:`airwatt.importers.resample`). This module turns the grids into readings,
ground truth and sub-meter on/off labels and writes them with :class:`DatasetWriter`, which swaps the output
in atomically: a bad file anywhere leaves the previous output untouched.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from airwatt.appliances import APPLIANCES
from airwatt.dataset import DatasetWriter, DeviceInfo, Manifest, read_manifest
from airwatt.errors import DataError
from airwatt.importers import redd, refit, ukdale
from airwatt.importers._common import HouseSource, grid_frames, vocabulary_order
from airwatt.importers.resample import GridSeries, clip_to_window, interval_ms
from airwatt.labels import derive_labels

__all__ = ["DEFAULT_MAX_FILL_S", "KINDS", "import_dataset"]

log = logging.getLogger("airwatt.importers")  # log lines keep the package's name

DEFAULT_MAX_FILL_S = 60.0  # library default; the CLI passes params.yaml's import.max_fill_s
KINDS: dict[str, ModuleType] = {"redd": redd, "refit": refit, "ukdale": ukdale}
CITATIONS = {
    "redd": "Kolter & Johnson, REDD: A public data set for energy disaggregation research, SustKDD 2011",
    "refit": "Murray et al., An electrical load measurements dataset of United Kingdom households from a "
    "two-year longitudinal study, Scientific Data 2017 (CC BY 4.0)",
    "ukdale": "Kelly & Knottenbelt, The UK-DALE dataset, domestic appliance-level electricity demand and "
    "whole-house demand from five UK homes, Scientific Data 2015 (CC BY 4.0)",
}


def _utc_ms(ts: str | pd.Timestamp | None) -> int | None:
    if ts is None:
        return None
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.value // 1_000_000)


def _find(
    kind: str, src: Path, houses: list[int] | None, window_ms: tuple[int | None, int | None]
) -> list[HouseSource]:
    """The houses to import; REFIT's monthly files outside the window are not even opened."""
    if kind == "refit":
        return refit.find_houses(src, houses, window_ms=window_ms)
    return KINDS[kind].find_houses(src, houses)


def import_dataset(
    kind: str,
    src: Path,
    out: Path,
    *,
    houses: list[int] | None = None,
    interval_s: float = 5.0,
    max_fill_s: float = DEFAULT_MAX_FILL_S,
    start: str | pd.Timestamp | None = None,
    end: str | pd.Timestamp | None = None,
) -> Manifest:
    """Convert a public dataset at ``src`` into an AirWatt dataset at ``out`` (replaced atomically).

    ``kind`` is "redd", "refit" or "ukdale" (the form inside is detected); ``houses`` picks houses (all when
    None); ``start``/``end`` keep only the grid slots in [start, end) (UTC; naive means UTC). Device ids are
    ``{kind}-house{N}``. Raises DataError naming file, row (line) and column for bad input.
    """
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; known: {', '.join(KINDS)}")
    src, out = Path(src), Path(out)
    window_ms = (_utc_ms(start), _utc_ms(end))
    sources = _find(kind, src, houses, window_ms)
    if not sources:
        raise DataError("no houses to import (none selected, or no file overlaps the window)", file=src)
    loaded: list[tuple[HouseSource, GridSeries]] = []
    for source in tqdm(sources, desc=f"import {kind}", unit="house", leave=False, disable=None):
        grid = KINDS[kind].load_house(source, interval_s=interval_s, max_fill_s=max_fill_s)
        grid = clip_to_window(grid, *window_ms)
        if len(grid) == 0:
            log.warning("%s: no data in the window, skipped", source.device_id)
            continue
        loaded.append((source, grid))
    if not loaded:
        raise DataError(f"no data in the window [{start}, {end})", file=src)
    return _write(kind, src, out, loaded, interval_s=interval_s, max_fill_s=max_fill_s, window=(start, end))


def _write(
    kind: str,
    src: Path,
    out: Path,
    loaded: list[tuple[HouseSource, GridSeries]],
    *,
    interval_s: float,
    max_fill_s: float,
    window: tuple[Any, Any],
) -> Manifest:
    appliances = list(vocabulary_order([a for s, _ in loaded for a in s.appliances]))
    first_ms = min(int(g.timestamps_ms[0]) for _, g in loaded)
    end_ms = max(int(g.timestamps_ms[-1]) for _, g in loaded) + interval_ms(interval_s)
    span_start = pd.Timestamp(window[0]) if window[0] is not None else pd.Timestamp(first_ms, unit="ms")
    span_end = pd.Timestamp(window[1]) if window[1] is not None else pd.Timestamp(end_ms, unit="ms")
    with DatasetWriter(
        out,
        name=f"{kind}-import",
        appliances=appliances,
        interval_s=interval_s,
        start=_as_utc(span_start),
        end=_as_utc(span_end),
        provenance=_provenance(kind, src, loaded, max_fill_s=max_fill_s),
    ) as writer:
        for source, grid in loaded:
            readings, gt = grid_frames(grid, source.appliances)
            labels = derive_labels(gt, list(source.appliances), APPLIANCES, interval_s)
            info = DeviceInfo(
                device_id=source.device_id,
                site_type="home",
                timezone=source.timezone,
                appliances=list(source.appliances),
                rated_max_w=source.rated_max_w,
                provenance=_device_provenance(source),
            )
            writer.add_device(info, readings, ground_truth=gt, labels=labels)
            log.info(
                "%s: %d slots (%d null, %d forward-filled), %d labels",
                source.device_id,
                len(readings),
                int(readings["power_w"].isna().sum()),
                int(readings["filled"].sum()),
                len(labels),
            )
    return read_manifest(out)


def _as_utc(t: pd.Timestamp) -> pd.Timestamp:
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _device_provenance(source: HouseSource) -> str:
    files = ", ".join(p.name for p in source.files)
    return (
        f"{source.kind.upper()} house {source.house}, {source.form}: {files}; "
        f"timestamps {source.timestamps}; {CITATIONS[source.kind]}"
    )


def _provenance(
    kind: str, src: Path, loaded: list[tuple[HouseSource, GridSeries]], *, max_fill_s: float
) -> dict[str, Any]:
    return {
        "source": kind,
        "importer": f"airwatt.importers.{kind}",
        "src": str(src),
        "forms": sorted({s.form for s, _ in loaded}),
        "files": {s.device_id: [p.name for p in s.files] for s, _ in loaded},
        "timestamps": {s.device_id: s.timestamps for s, _ in loaded},
        "timestamps_reconstructed": any(s.timestamps.startswith("reconstructed") for s, _ in loaded),
        "details": {s.device_id: _jsonable(s.extra) for s, _ in loaded if s.extra},
        "resampling": (
            f"mean of the samples in each [t, t + interval) slot; empty slots forward-filled from the last "
            f"value for at most {max_fill_s:g} s (filled = true); longer gaps are rows with null power_w"
        ),
        "max_fill_s": max_fill_s,
        "labels": "derived from sub-metered power (airwatt.labels.derive_labels, thresholds in seconds)",
        "citation": CITATIONS[kind],
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value
