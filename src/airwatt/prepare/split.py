"""Split devices into train / validation / test: never one device in two splits.

The rule (deterministic per seed, independent of numpy's RNG version):

1. Sizes: ``n_test = round(test_fraction * n)``, ``n_val = round(val_fraction * n)``; with 3 or more devices
   each is at least 1, and train keeps at least one device (val, then test, shrink if needed).
2. Stratified by site_type: each split's count is shared among site types in proportion to their sizes
   (largest remainder, ties by site-type name), test first, then validation from what is left.
3. Within a site type, devices are ordered by sha256(f"{seed}:{device_id}") and taken from the front, so a
   device's rank does not depend on which other devices exist.

Explicit lists (``prepare.val_devices`` / ``prepare.test_devices``, e.g. "train on REDD houses 3-6, test on
house 2") replace the rule: the listed devices go where they are listed and every other device trains.

``prepare.split_by: time`` splits each device's own time span instead, for datasets of one or a few sites
(e.g. REFIT house 2): every device is in every split, with train the oldest
``1 - val_fraction - test_fraction`` of its span, then validation, then test, on whole grid slots.
Training never sees the future it is tested on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from airwatt.dataset import DeviceInfo
from airwatt.errors import ConfigError

SPLITS = ("train", "val", "test")


def split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for n devices (rule 1)."""
    n_val, n_test = round(val_fraction * n), round(test_fraction * n)
    if n >= 3:
        n_val, n_test = max(n_val, 1), max(n_test, 1)
    while n_val + n_test > max(n - 1, 0):
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def _quotas(total: int, sizes: dict[str, int]) -> dict[str, int]:
    """Share ``total`` among strata in proportion to ``sizes`` (largest remainder, ties by name)."""
    n = sum(sizes.values())
    if n == 0 or total == 0:
        return dict.fromkeys(sizes, 0)
    ideal = {k: total * v / n for k, v in sizes.items()}
    out = {k: math.floor(x) for k, x in ideal.items()}
    order = sorted(sizes, key=lambda k: (-(ideal[k] - out[k]), k))
    for k in order[: total - sum(out.values())]:
        out[k] += 1
    return out


def _rank(seed: int, device_id: str) -> str:
    return hashlib.sha256(f"{seed}:{device_id}".encode()).hexdigest()


def split_devices(
    devices: Sequence[DeviceInfo], *, seed: int, val_fraction: float, test_fraction: float
) -> dict[str, list[str]]:
    """{"train": [...], "val": [...], "test": [...]}, each sorted by device id (see module docstring)."""
    n_val, n_test = split_sizes(len(devices), val_fraction, test_fraction)
    strata: dict[str, list[str]] = {}
    for d in devices:
        strata.setdefault(d.site_type, []).append(d.device_id)
    for ids in strata.values():
        ids.sort(key=lambda dev: _rank(seed, dev))
    test_q = _quotas(n_test, {k: len(v) for k, v in strata.items()})
    left = {k: len(v) - test_q[k] for k, v in strata.items()}
    val_q = _quotas(n_val, left)
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for k, ids in strata.items():
        out["test"] += ids[: test_q[k]]
        out["val"] += ids[test_q[k] : test_q[k] + val_q[k]]
        out["train"] += ids[test_q[k] + val_q[k] :]
    return {s: sorted(v) for s, v in out.items()}


def explicit_split(
    devices: Sequence[DeviceInfo], *, val_devices: Sequence[str], test_devices: Sequence[str]
) -> dict[str, list[str]]:
    """The split given by explicit val/test lists; every other device trains."""
    known = {d.device_id for d in devices}
    unknown = sorted((set(val_devices) | set(test_devices)) - known)
    if unknown:
        raise ConfigError(f"prepare: devices {unknown} are not in the dataset (it has {sorted(known)})")
    both = sorted(set(val_devices) & set(test_devices))
    if both:
        raise ConfigError(f"prepare: devices {both} are listed in both val_devices and test_devices")
    held = set(val_devices) | set(test_devices)
    train = sorted(known - held)
    if not train:
        raise ConfigError("prepare: val_devices and test_devices leave no device to train on")
    return {"train": train, "val": sorted(val_devices), "test": sorted(test_devices)}


TimeRanges = dict[str, dict[str, tuple[int, int]]]  # split -> device -> [start_ms, end_ms)


def time_split(
    spans: dict[str, tuple[int, int]], *, interval_ms: int, val_fraction: float, test_fraction: float
) -> TimeRanges:
    """Per split and device, the half-open [start_ms, end_ms) of its chronological share of the device's grid
    span ``(t0_ms, slots)``: train oldest, then val, then test; shares rounded to whole slots."""
    out: TimeRanges = {s: {} for s in SPLITS}
    for dev, (t0, n) in sorted(spans.items()):
        n_test, n_val = round(test_fraction * n), round(val_fraction * n)
        n_train = n - n_val - n_test
        if n_train <= 0:
            raise ConfigError(
                f"prepare: device {dev} has {n} slots; val_fraction {val_fraction} and test_fraction "
                f"{test_fraction} leave none to train on"
            )
        edges = [t0, t0 + n_train * interval_ms, t0 + (n_train + n_val) * interval_ms, t0 + n * interval_ms]
        for j, split in enumerate(SPLITS):
            if edges[j + 1] > edges[j]:
                out[split][dev] = (edges[j], edges[j + 1])
    return out
