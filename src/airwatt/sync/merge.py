"""The merge: sources of device tables -> one dataset for exactly one time window.

Sources are read in order and concatenated per device; duplicates are then dropped keeping the LAST copy, so a
newer copy wins:

- readings and ground truth: key (device_id, timestamp);
- labels: key (device_id, appliance, start, end, source, annotator_id); labels overlapping the window are
  clipped to it, so re-clipping a clipped label gives the same key.

Rows outside the window are dropped. Devices are written in device-id order, rows in time order, so the same
inputs always give byte-identical Parquet tables.

The dataset already in ``out`` (``previous``) is not a source: its readings, ground truth, sub-meter labels
and devices are replaced by the sources', so a changed source, fleet or window leaves nothing stale. It gives
the new dataset its Label Studio labels that still apply and its archive (airwatt.sync.carry), metadata of
devices the sources do not describe, and the "already synced" counts of the log.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow.parquet as pq

from airwatt.atomic import write_json_atomic
from airwatt.dataset import Dataset, DatasetWriter, DeviceInfo, Manifest, read_manifest
from airwatt.dataset.io import frame_to_table
from airwatt.sync.carry import ARCHIVE_FILE, ARCHIVE_SCHEMA, REPORT_FILE, LabelCarry

log = logging.getLogger(__name__)

LABEL_KEY = ["appliance", "start", "end", "source", "annotator_id"]


@dataclass(frozen=True)
class Window:
    """A UTC time window [start, end)."""

    start: pd.Timestamp
    end: pd.Timestamp

    def readings_mask(self, timestamps: pd.Series) -> pd.Series:
        return (timestamps >= self.start) & (timestamps < self.end)

    def clip_labels(self, labels: pd.DataFrame) -> pd.DataFrame:
        """Labels that touch the window, clipped to it (reversed ones inside it are kept for validation)."""
        s, e = labels["start"], labels["end"]
        keep = (s < self.end) & ((s >= self.start) | (e > self.start))
        out = labels[keep].copy()
        out["start"] = out["start"].clip(lower=self.start)
        out["end"] = out["end"].clip(upper=self.end)
        return out

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


class TableSource(Protocol):
    """Per-device tables of one source, already in the format's dtypes and restricted to a window."""

    name: str
    appliances: list[str]

    def device_ids(self) -> list[str]: ...

    def info(self, device_id: str) -> DeviceInfo | None:
        """Explicit metadata for the device, or None when the source has none."""
        ...

    def fallback_info(self, device_id: str) -> DeviceInfo | None:
        """Defaults this source would use when no source describes the device."""
        ...

    def readings(self, device_id: str) -> pd.DataFrame: ...

    def ground_truth(self, device_id: str) -> pd.DataFrame | None: ...

    def labels(self, device_id: str) -> pd.DataFrame | None: ...


class DatasetSource:
    """A dataset directory (a previous sync, the simulator's or an importer's output), read lazily."""

    def __init__(self, root: Path, window: Window, name: str) -> None:
        self.ds = Dataset(root)
        self.window = window
        self.name = name
        self.appliances = self.ds.appliances

    def device_ids(self) -> list[str]:
        return self.ds.device_ids

    def info(self, device_id: str) -> DeviceInfo | None:
        return self.ds.manifest.device(device_id)

    def fallback_info(self, device_id: str) -> DeviceInfo | None:
        return None

    def readings(self, device_id: str) -> pd.DataFrame:
        return self.ds.readings([device_id], self.window.start, self.window.end)

    def ground_truth(self, device_id: str) -> pd.DataFrame | None:
        if not self.ds.manifest.device(device_id).has_ground_truth:
            return None
        return self.ds.ground_truth([device_id], self.window.start, self.window.end)

    def labels(self, device_id: str) -> pd.DataFrame | None:
        return self.window.clip_labels(self.ds.labels([device_id], self.window.start, self.window.end))


@dataclass
class FrameSource:
    """In-memory tables for many devices (parsed platform exports), grouped by device once."""

    name: str
    readings_all: pd.DataFrame
    window: Window
    labels_all: pd.DataFrame | None = None
    ground_truth_all: pd.DataFrame | None = None
    devices: dict[str, DeviceInfo] = field(default_factory=dict)  # explicit (devices.json)
    fallback_devices: dict[str, DeviceInfo] = field(default_factory=dict)  # defaults for the others
    appliances: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        r = self.readings_all
        inside = self.window.readings_mask(r["timestamp"])
        self.outside_window = (~inside).groupby(r["device_id"]).sum().astype(int).to_dict()
        self._readings = {str(k): g for k, g in r[inside].groupby("device_id", sort=True)}
        self._gt = self._group(self.ground_truth_all, timestamps=True)
        self._labels = self._group(
            None if self.labels_all is None else self.window.clip_labels(self.labels_all), timestamps=False
        )

    def _group(self, df: pd.DataFrame | None, *, timestamps: bool) -> dict[str, pd.DataFrame]:
        if df is None or df.empty:
            return {}
        if timestamps:
            df = df[self.window.readings_mask(df["timestamp"])]
        return {str(k): g for k, g in df.groupby("device_id", sort=True)}

    def device_ids(self) -> list[str]:
        return sorted(self._readings)

    def info(self, device_id: str) -> DeviceInfo | None:
        return self.devices.get(device_id)

    def fallback_info(self, device_id: str) -> DeviceInfo | None:
        return self.fallback_devices.get(device_id)

    def readings(self, device_id: str) -> pd.DataFrame:
        return self._readings[device_id]

    def ground_truth(self, device_id: str) -> pd.DataFrame | None:
        return self._gt.get(device_id)

    def labels(self, device_id: str) -> pd.DataFrame | None:
        return self._labels.get(device_id)


@dataclass
class DeviceCounts:
    """What the merge did for one device (logged; not stored, so reruns write identical manifests)."""

    read: int = 0  # rows of the new source inside the window
    previous: int = 0  # rows already in ``out`` inside the window
    duplicates: int = 0  # rows dropped as duplicates of (device_id, timestamp)
    written: int = 0


def merged_appliances(sources: Sequence[TableSource]) -> list[str]:
    """Union of the sources' vocabularies, in first-seen order."""
    out: list[str] = []
    for src in sources:
        out += [a for a in src.appliances if a not in out]
    return out


def _concat(frames: list[pd.DataFrame | None]) -> pd.DataFrame | None:
    present = [f for f in frames if f is not None and not f.empty]
    if not present:
        return None
    return pd.concat(present, ignore_index=True) if len(present) > 1 else present[0]


def _dedupe_rows(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop_duplicates(subset=["timestamp"], keep="last").sort_values("timestamp", kind="stable")


def _dedupe_labels(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop_duplicates(subset=LABEL_KEY, keep="last")
    return df.sort_values(["appliance", "start", "end", "source"], kind="stable")


def _device_info(device_id: str, sources: Sequence[TableSource]) -> DeviceInfo:
    """The newest source's explicit metadata wins; devices nobody describes get defaults (and a warning)."""
    for src in reversed(sources):
        info = src.info(device_id)
        if info is not None:
            return info
    for src in reversed(sources):
        info = src.fallback_info(device_id)
        if info is not None:
            return info
    log.warning("device %s: no metadata in any source; using defaults (site_type=home, UTC)", device_id)
    return DeviceInfo(device_id=device_id)


def merge_sources(
    out: Path,
    sources: Sequence[TableSource],
    window: Window,
    *,
    name: str,
    interval_s: float,
    provenance: dict[str, Any],
    previous: DatasetSource | None = None,
) -> tuple[Manifest, dict[str, DeviceCounts]]:
    """Write the window of ``sources`` (later wins) to ``out`` atomically, with the Label Studio labels of
    ``previous`` that still apply (the others in its archive) and ``sync_report.json``."""
    appliances = merged_appliances(list(sources))
    ids_of = {id(src): set(src.device_ids()) for src in sources}
    device_ids = sorted(set().union(*ids_of.values()))
    previous_ids = set(previous.device_ids()) if previous is not None else set()
    carry = LabelCarry.from_previous(previous.ds if previous else None, window.start, window.end)
    counts: dict[str, DeviceCounts] = {}
    with DatasetWriter(
        out,
        name=name,
        appliances=appliances,
        interval_s=interval_s,
        start=window.start,
        end=window.end,
        provenance=provenance,
    ) as writer:
        for dev in device_ids:
            have = [src for src in sources if dev in ids_of[id(src)]]
            c = counts[dev] = DeviceCounts()
            if previous is not None and dev in previous_ids:
                c.previous = len(previous.readings(dev))
            frames = [src.readings(dev) for src in have]
            c.read = sum(len(f) for f in frames)
            readings = _concat(frames)
            if readings is None:
                log.warning("device %s: no readings inside the window; left out", dev)
                continue
            deduped = _dedupe_rows(readings)
            c.duplicates = len(readings) - len(deduped)
            c.written = len(deduped)
            gt = _concat([src.ground_truth(dev) for src in have])
            labels = _concat([carry.judge(dev, deduped), *(src.labels(dev) for src in have)])
            described_by = ([previous] if previous is not None and dev in previous_ids else []) + have
            writer.add_device(
                _device_info(dev, described_by),
                deduped,
                ground_truth=None if gt is None else _dedupe_rows(gt),
                labels=None if labels is None else _dedupe_labels(labels),
            )
        written = {dev for dev, c in counts.items() if c.written}
        for dev in sorted(previous_ids - written):
            log.warning("device %s: not in the source's window any more; its data is not carried over", dev)
        carry.finish(written)
        archive = carry.archive_frame()
        if len(archive):
            table = frame_to_table(archive, ARCHIVE_SCHEMA)
            pq.write_table(table, writer.path(ARCHIVE_FILE), compression="zstd")
        report = {
            "source": name,
            "window": window.as_dict(),
            "devices": {"written": sorted(written), "gone": sorted(previous_ids - written)},
            "labels": carry.report(),
        }
        write_json_atomic(writer.path(REPORT_FILE), report)
    return read_manifest(out), counts
