"""Combine AirWatt datasets (imported public data, the simulated fleet, platform syncs) into one.

The training mix of the cross-house protocol is one dataset: every device keeps its own tables and its own
appliance inventory; the vocabulary (ground-truth columns) is the union of the sources', in the vocabulary's
order, and an appliance a device has no truth for stays null there (masked, never off: airwatt.prepare.grid).
Each device's source name is recorded in the manifest's provenance (``sources``: device -> name), which
prepare copies into the split index and ``train.source_weights`` reads.

Two sources may hold the same house under one device id (REFIT house 2 at 8 s and at 30 s): a source's
``device_suffix`` renames its devices (``refit-house2`` -> ``refit-house2-30s``); a device id still taken
twice is an error naming both sources. The output is replaced atomically (DatasetWriter).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from airwatt.appliances import APPLIANCES
from airwatt.dataset.io import Dataset, DatasetWriter, read_manifest
from airwatt.dataset.schema import Manifest
from airwatt.errors import DataError

log = logging.getLogger(__name__)

SOURCES_KEY = "sources"  # manifest.provenance[SOURCES_KEY]: {device_id: source name}


@dataclass(frozen=True)
class Source:
    """One dataset of a mix: its name (the key of ``train.source_weights``) and folder."""

    name: str
    path: Path
    device_suffix: str = ""


def device_sources(manifest: Manifest) -> dict[str, str]:
    """Each device's source name: from a combined dataset's provenance, else the dataset's own name."""
    recorded = manifest.provenance.get(SOURCES_KEY) or {}
    return {d: str(recorded.get(d, manifest.name)) for d in manifest.device_ids}


def combine_datasets(out: Path, sources: Sequence[Source], *, name: str = "mix") -> Manifest:
    """Write the devices of every source into one dataset at ``out`` (see module docstring)."""
    if not sources:
        raise DataError("nothing to combine: no sources given", file=out)
    datasets = [(s, Dataset(s.path)) for s in sources]
    intervals = {ds.manifest.interval_s for _, ds in datasets}
    if len(intervals) > 1:
        detail = ", ".join(f"{s.name}: {ds.manifest.interval_s:g} s" for s, ds in datasets)
        raise DataError(f"sources have different grid intervals ({detail}); import them at one interval")
    owner: dict[str, str] = {}
    for s, ds in datasets:
        for dev in ds.device_ids:
            new = dev + s.device_suffix
            if new in owner:
                raise DataError(
                    f"device {new!r} is in sources {owner[new]!r} and {s.name!r}: give one a device_suffix",
                    file=s.path,
                )
            owner[new] = s.name
    order = {a: i for i, a in enumerate(APPLIANCES)}
    appliances = sorted({a for _, ds in datasets for a in ds.appliances}, key=order.__getitem__)
    starts = [ds.manifest.start for _, ds in datasets if ds.manifest.start is not None]
    ends = [ds.manifest.end for _, ds in datasets if ds.manifest.end is not None]
    provenance = {
        "combined_from": {s.name: {"path": str(s.path), **read_manifest(s.path).provenance} for s in sources},
        SOURCES_KEY: owner,
    }
    with DatasetWriter(
        out,
        name=name,
        appliances=appliances,
        interval_s=intervals.pop(),
        start=pd.Timestamp(min(starts)) if starts else None,
        end=pd.Timestamp(max(ends)) if ends else None,
        provenance=provenance,
    ) as writer:
        for s, ds in datasets:
            for dev in tqdm(
                ds.device_ids, desc=f"combine {s.name}", unit="device", leave=False, disable=None
            ):
                _copy_device(writer, ds, dev, s)
    manifest = read_manifest(out)
    log.info("combined %d sources into %s: %d devices", len(sources), out, len(manifest.devices))
    return manifest


def _copy_device(writer: DatasetWriter, ds: Dataset, dev: str, source: Source) -> None:
    info = ds.manifest.device(dev)
    new_id = dev + source.device_suffix
    readings = ds.readings([dev]).drop(columns="device_id")
    gt = ds.ground_truth([dev]).drop(columns="device_id") if info.has_ground_truth else None
    labels = ds.labels([dev]).drop(columns="device_id")
    provenance = f"{source.name}: {info.provenance}" if info.provenance else source.name
    writer.add_device(
        info.model_copy(update={"device_id": new_id, "provenance": provenance}),
        readings,
        ground_truth=gt,
        labels=labels,
    )
