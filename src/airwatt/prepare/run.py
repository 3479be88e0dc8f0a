"""The prepare stage: device split, the grid arrays training memory-maps, and normalisation statistics.

Output directory (replaced atomically)::

    split.json        {"seed", "rule", "split_by", "train": [...], "val": [...], "test": [...]}, and with
                      split_by "time": "time_ranges": {split: {device: [start, end)}} (ISO 8601 UTC)
    norm_stats.json   fitted on the train devices only (normalize.py)
    summary.json      devices, readings, grid slots and valid fraction per split (DVC metrics)
    train/ val/ test/
        index.json        appliances, interval_s, and per device: offset, length, start (UTC), source dataset
                          (airwatt.dataset.combine), label sources
        aggregate_w.npy   (N,) float32 watts, NaN where invalid
        valid.npy         (N,) bool
        power_w.npy       (N, A) float32 ground truth in watts, NaN where invalid
        power_valid.npy   (N, A) bool
        status.npy        (N, A) bool on/off
        status_valid.npy  (N, A) bool
    train/distractors.npz the activations of the training devices' sub-metered loads that are not the
                      model's appliances (airwatt.prepare.activations), when there are any

N is the sum of the split's devices' grid lengths (devices concatenated in device-id order), A the number of
appliances of the dataset's manifest. Load with ``np.load(path, mmap_mode="r")`` or use
airwatt.prepare.windows.WindowDataset.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from airwatt.atomic import atomic_dir
from airwatt.config import Params
from airwatt.dataset import Dataset, DeviceInfo
from airwatt.dataset.combine import device_sources
from airwatt.errors import ConfigError
from airwatt.prepare.activations import (
    DISTRACTORS,
    MAX_CUT_S,
    PAD_S,
    Activation,
    cut_activations,
    write_activations,
)
from airwatt.prepare.grid import DeviceGrid, grid_device, grid_span
from airwatt.prepare.normalize import fit_norm_stats
from airwatt.prepare.split import SPLITS, TimeRanges, explicit_split, split_devices, time_split
from airwatt.timeutil import iso, to_epoch_ms

log = logging.getLogger("airwatt.prepare")  # the stage's logger keeps the package's name

# file -> (dtype, per-appliance?)
ARRAYS: dict[str, tuple[str, bool]] = {
    "aggregate_w": ("float32", False),
    "valid": ("bool", False),
    "power_w": ("float32", True),
    "power_valid": ("bool", True),
    "status": ("bool", True),
    "status_valid": ("bool", True),
}
SPLIT_RULE = (
    "by device, stratified by site_type; sizes round(fraction * n), at least 1 in val and test with >= 3 "
    "devices; within a site type devices ordered by sha256('<seed>:<device_id>')"
)

TIME_SPLIT_RULE = (
    "by time: every device in every split; each device's grid span cut oldest -> train, then val, then test, "
    "round(fraction * slots) slots for val and test"
)


def load_array(path: Path) -> np.ndarray:
    """A prepared array, memory-mapped (empty arrays cannot be mapped and are loaded)."""
    arr = np.load(path, mmap_mode="r")
    return arr if arr.size else np.load(path)


Ranges = dict[str, tuple[int, int]]  # device -> [start_ms, end_ms)


def _ts(ms: int | None) -> pd.Timestamp | None:
    return None if ms is None else pd.Timestamp(ms, unit="ms", tz="UTC")


def _device_spans(
    ds: Dataset, device_ids: list[str], interval_ms: int, ranges: Ranges | None = None
) -> dict[str, tuple[int, int]]:
    """(t0_ms, slots) per device with readings (inside its range, when given); timestamp column only."""
    spans = {}
    for dev in device_ids:
        start, end = ranges[dev] if ranges is not None else (None, None)
        ts = ds.readings([dev], _ts(start), _ts(end), columns=["timestamp"])["timestamp"]
        if len(ts) == 0:
            log.warning("device %s: no readings; left out of the prepared data", dev)
            continue
        spans[dev] = grid_span(to_epoch_ms(ts), interval_ms)
    return spans


def _open_arrays(split_dir: Path, n: int, a: int) -> dict[str, np.ndarray]:
    arrays = {}
    for name, (dtype, per_app) in ARRAYS.items():
        shape = (n, a) if per_app else (n,)
        path = split_dir / f"{name}.npy"
        if 0 in shape:  # an empty split, or no appliances: nothing to map
            arrays[name] = np.zeros(shape, dtype=dtype)
            np.save(path, arrays[name])
        else:
            arrays[name] = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    return arrays


def write_split(
    ds: Dataset,
    split: str,
    device_ids: list[str],
    split_dir: Path,
    params: Params,
    ranges: Ranges | None = None,
) -> dict:
    """Grid every device of one split (only its time range, when given) into the split's arrays; returns the
    split's index (also index.json)."""
    split_dir.mkdir(parents=True)
    interval_s = params.data.interval_s
    appliances = model_appliances(ds, params.prepare.appliances)
    spans = _device_spans(ds, device_ids, round(interval_s * 1000), ranges)
    total = sum(n for _, n in spans.values())
    arrays = _open_arrays(split_dir, total, len(appliances))
    devices, offset, readings = [], 0, 0
    source_of = device_sources(ds.manifest)
    others = [a for a in ds.appliances if a not in appliances] if split == "train" else []
    distractors: list[Activation] = []
    for dev in tqdm(list(spans), desc=f"prepare {split}", unit="device", disable=None):
        start, end = (_ts(t) for t in ranges[dev]) if ranges is not None else (None, None)
        r = ds.readings([dev], start, end, columns=["timestamp", "power_w"])
        info = ds.manifest.device(dev)
        gt = ds.ground_truth([dev], start, end) if info.has_ground_truth else None
        g = grid_device(
            r,
            gt,
            ds.labels([dev], start, end),
            appliances,
            interval_s=interval_s,
            max_fill_s=params.prepare.max_fill_s,
        )
        assert (g.start_ms, len(g)) == spans[dev], f"grid of {dev} changed between passes"
        if others and gt is not None:
            kept = [a for a in others if a in gt.columns and gt[a].notna().any()]
            fill_s = params.prepare.max_fill_s
            other = grid_device(r, gt, None, kept, interval_s=interval_s, max_fill_s=fill_s)
            distractors += _activations(other, kept, others, dev, interval_s)
        for name in ARRAYS:
            arrays[name][offset : offset + len(g)] = getattr(g, name)
        devices.append(
            {
                "device_id": dev,
                "source": source_of[dev],
                "site_type": info.site_type,
                "offset": offset,
                "length": len(g),
                "start": pd.Timestamp(g.start_ms, unit="ms", tz="UTC").isoformat(),
                "start_ms": g.start_ms,
                "readings": len(r),
                "present_slots": g.present,
                "valid_slots": int(g.valid.sum()),
                "status_sources": g.status_sources,
            }
        )
        offset += len(g)
        readings += len(r)
    for arr in arrays.values():
        if isinstance(arr, np.memmap):
            arr.flush()
    del arrays
    if distractors:
        write_activations(split_dir / DISTRACTORS, others, distractors)
    index = {
        "split": split,
        "interval_s": interval_s,
        "max_fill_s": params.prepare.max_fill_s,
        "appliances": appliances,
        "slots": total,
        "readings": readings,
        "devices": devices,
    }
    (split_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return index


def _activations(
    g: DeviceGrid, columns: list[str], names: list[str], device: str, interval_s: float
) -> list[Activation]:
    """Every activation of the gridded ``columns`` of one device (``Activation.appliance``: in ``names``)."""
    out = []
    for j, name in enumerate(columns):
        cuts = cut_activations(
            g.power_w[:, j],
            g.status[:, j],
            g.power_valid[:, j],
            pad_slots=round(PAD_S / interval_s),
            max_slots=round(MAX_CUT_S / interval_s),
        )
        for power_w, on in cuts:
            out.append(Activation(names.index(name), device, power_w, on))
    return out


def _summary(indexes: dict[str, dict]) -> dict[str, Any]:
    def valid_fraction(ix: dict) -> float:
        return round(sum(d["valid_slots"] for d in ix["devices"]) / ix["slots"], 6) if ix["slots"] else 0.0

    return {
        "devices": {s: len(ix["devices"]) for s, ix in indexes.items()},
        "readings": {s: ix["readings"] for s, ix in indexes.items()},
        "slots": {s: ix["slots"] for s, ix in indexes.items()},
        "valid_fraction": {s: valid_fraction(ix) for s, ix in indexes.items()},
    }


def model_appliances(ds: Dataset, chosen: list[str]) -> list[str]:
    """prepare.appliances (in that order: a model's heads when fine-tuning it), or every appliance of the
    dataset when empty; ConfigError for one the dataset does not hold."""
    if not chosen:
        return list(ds.appliances)
    unknown = sorted(set(chosen) - set(ds.appliances))
    if unknown:
        raise ConfigError(f"prepare: appliances {unknown} are not in the dataset (it has {ds.appliances})")
    return list(dict.fromkeys(chosen))


def included_devices(ds: Dataset, exclude: list[str]) -> list[DeviceInfo]:
    """The dataset's devices less ``exclude`` (prepare.exclude_devices); ConfigError for an unknown one."""
    excluded = set(exclude)
    unknown = sorted(excluded - set(ds.device_ids))
    if unknown:
        raise ConfigError(
            f"prepare: exclude_devices {unknown} are not in the dataset (it has {ds.device_ids})"
        )
    return [d for d in ds.manifest.devices if d.device_id not in excluded]


def prepare(data_dir: Path, params: Params, out: Path) -> dict[str, Any]:
    """Split, grid and normalise the dataset ``data_dir`` into ``out`` (atomically); returns the summary."""
    ds = Dataset(data_dir)
    p = params.prepare
    if ds.manifest.interval_s != params.data.interval_s:
        log.warning(
            "dataset interval %g s differs from data.interval_s %g s; gridding at %g s",
            ds.manifest.interval_s,
            params.data.interval_s,
            params.data.interval_s,
        )
    rule = SPLIT_RULE
    devices = included_devices(ds, p.exclude_devices)
    ranges: TimeRanges | None = None
    if p.split_by == "time":
        if p.val_devices or p.test_devices:
            raise ConfigError(
                "prepare: split_by time puts every device in every split; clear val_devices/test_devices"
            )
        interval_ms = round(params.data.interval_s * 1000)
        ranges = time_split(
            _device_spans(ds, [d.device_id for d in devices], interval_ms),
            interval_ms=interval_ms,
            val_fraction=p.val_fraction,
            test_fraction=p.test_fraction,
        )
        split = {s: sorted(ranges[s]) for s in SPLITS}
        rule = TIME_SPLIT_RULE
    elif p.val_devices or p.test_devices:
        split = explicit_split(devices, val_devices=p.val_devices, test_devices=p.test_devices)
        rule = "explicit: prepare.val_devices and prepare.test_devices; every other device trains"
    else:
        split = split_devices(
            devices, seed=p.seed, val_fraction=p.val_fraction, test_fraction=p.test_fraction
        )
    doc: dict[str, Any] = {"seed": p.seed, "rule": rule, "split_by": p.split_by, **split}
    if p.exclude_devices:
        doc["excluded"] = sorted(p.exclude_devices)
    if ranges is not None:
        doc["time_ranges"] = {
            s: {d: [iso(a), iso(b)] for d, (a, b) in sorted(r.items())} for s, r in ranges.items()
        }
    with atomic_dir(out) as tmp:
        (tmp / "split.json").write_text(json.dumps(doc, indent=2))
        indexes = {
            s: write_split(ds, s, split[s], tmp / s, params, None if ranges is None else ranges[s])
            for s in SPLITS
        }
        train = {name: load_array(tmp / "train" / f"{name}.npy") for name in ARRAYS}
        stats = fit_norm_stats(
            train["aggregate_w"],
            train["valid"],
            train["power_w"],
            train["power_valid"],
            model_appliances(ds, p.appliances),
        )
        del train
        stats = {
            "fitted_on": "train",
            "devices": split["train"],
            "interval_s": params.data.interval_s,
            **stats,
        }
        (tmp / "norm_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        summary = _summary(indexes)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    log.info("prepared %s: %s", out, summary["devices"])
    return summary
