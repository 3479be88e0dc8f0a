"""Activation augmentation (Kelly & Knottenbelt 2015): synthetic aggregates from real appliance activations.

**The bank.** ``ActivationBank.from_split`` cuts every activation (a run of "on" slots, with its sub-metered
watts and ``pad_slots`` of context either side) of each model appliance from the devices of the prepared
TRAINING split only (validation and test houses never contribute; the simulated fleet's devices, when they
train, contribute the simulator's appliance models). At most ``max_per_appliance`` activations per appliance
(an even spread over devices and time, seeded), each at most ``max_slots`` long.

**On the fly** (``AugmentedWindows``, wrapping the training WindowDataset): with probability ``add_ratio`` a
window gets one activation of a random appliance (from another training device than its own), placed at a
random offset that overlaps the window; its watts are added to the aggregate on the window's valid slots and
to that appliance's power target where the activation covers the target slot, and the status target is on
there when the activation's slot is one of its "on" slots. With probability ``remove_ratio`` one appliance
whose sub-meter is known over the whole window and draws power in it is removed: its watts subtracted from
the aggregate, its targets set to 0 W and off. Targets stay consistent with the aggregate the model sees
(tested). An appliance without truth at the target slot stays masked whatever is added. Each window's draw
is seeded by (seed, index), so a run is reproducible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from airwatt.prepare.windows import WindowDataset, WindowSample

log = logging.getLogger(__name__)


@dataclass
class Activation:
    appliance: int  # column in the split's appliances
    device: str
    power_w: np.ndarray  # (L,) float32 watts
    on: np.ndarray  # (L,) bool: the "on" slots (False in the padding)


@dataclass
class ActivationBank:
    appliances: list[str]
    activations: list[list[Activation]]  # per appliance

    @property
    def sizes(self) -> dict[str, int]:
        return {a: len(acts) for a, acts in zip(self.appliances, self.activations, strict=True)}

    @property
    def devices(self) -> set[str]:
        return {x.device for acts in self.activations for x in acts}

    @classmethod
    def from_split(
        cls,
        windows: WindowDataset,
        *,
        pad_slots: int,
        max_slots: int,
        max_per_appliance: int,
        seed: int,
    ) -> ActivationBank:
        """Every activation of the split behind ``windows`` (the training split), capped (module doc)."""
        a = windows.arrays
        rng = np.random.default_rng(seed)
        per_app: list[list[Activation]] = []
        for j in range(len(windows.appliances)):
            found: list[Activation] = []
            for dev in windows.index["devices"]:
                lo, n = int(dev["offset"]), int(dev["length"])
                known = np.asarray(a["power_valid"][lo : lo + n, j])
                status = np.asarray(a["status"][lo : lo + n, j]) & known
                if not status.any():
                    continue
                power = np.asarray(a["power_w"][lo : lo + n, j], dtype=np.float32)
                for s, e in _runs(status):
                    s0, e0 = max(0, s - pad_slots), min(n, e + pad_slots)
                    if e0 - s0 > max_slots or not known[s0:e0].all():
                        continue  # too long to fit the bank, or its padding is not sub-metered
                    on = np.zeros(e0 - s0, bool)
                    on[s - s0 : e - s0] = True
                    found.append(Activation(j, dev["device_id"], power[s0:e0].copy(), on))
            if len(found) > max_per_appliance:
                keep = np.sort(rng.choice(len(found), max_per_appliance, replace=False))
                found = [found[k] for k in keep]
            per_app.append(found)
        return cls(list(windows.appliances), per_app)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    d = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


class AugmentedWindows(Dataset[WindowSample]):
    """The training windows with activations added or removed on the fly (module docstring)."""

    def __init__(
        self,
        base: WindowDataset,
        bank: ActivationBank,
        *,
        add_ratio: float,
        remove_ratio: float,
        seed: int,
    ) -> None:
        self.base = base
        self.bank = bank
        self.add_ratio = add_ratio
        self.remove_ratio = remove_ratio
        self.seed = seed
        self._mean_w = float(base.stats["aggregate"]["mean_w"])
        self._std_w = float(base.stats["aggregate"]["std_w"])
        self._with_bank = [j for j, acts in enumerate(bank.activations) if acts]
        self._devices = [np.array([x.device for x in acts], dtype=object) for acts in bank.activations]

    def __len__(self) -> int:
        return len(self.base)

    def window_sources(self) -> np.ndarray:
        return self.base.window_sources()

    def locate(self, i: int) -> Any:
        return self.base.locate(i)

    def __getitem__(self, i: int) -> WindowSample:
        sample = self.base[i]
        rng = np.random.default_rng((self.seed, int(i)))
        add = rng.random() < self.add_ratio and bool(self._with_bank)
        remove = rng.random() < self.remove_ratio
        if not (add or remove):
            return sample
        s = int(self.base.starts[i])
        w = self.base.window_length
        a = self.base.arrays
        valid = np.asarray(a["valid"][s : s + w])
        watts = np.where(valid, sample.aggregate.numpy() * self._std_w + self._mean_w, 0.0)
        power = sample.power_w.numpy().copy()
        status = sample.status.numpy().copy()
        t = self.base.target_offset
        if remove:
            self._remove(rng, a, s, w, watts, power, status, sample)
        if add:
            self._add(rng, i, watts, valid, power, status, t)
        x = np.where(valid, (watts - self._mean_w) / self._std_w, 0.0).astype(np.float32)
        return WindowSample(
            torch.from_numpy(x),
            torch.from_numpy(power.astype(np.float32)),
            torch.from_numpy(status.astype(np.float32)),
            sample.power_valid,
            sample.status_valid,
        )

    def _remove(
        self,
        rng: np.random.Generator,
        a: dict[str, np.ndarray],
        s: int,
        w: int,
        watts: np.ndarray,
        power: np.ndarray,
        status: np.ndarray,
        sample: WindowSample,
    ) -> None:
        slab = np.asarray(a["power_w"][s : s + w], dtype=np.float64)  # (W, A)
        known = np.asarray(a["power_valid"][s : s + w]).all(axis=0) & (sample.power_valid.numpy() > 0)
        candidates = np.flatnonzero(known & (np.nan_to_num(slab).max(axis=0) > 0))  # drawing power here
        if not len(candidates):
            return
        j = int(rng.choice(candidates))
        watts -= slab[:, j]
        np.maximum(watts, 0.0, out=watts)  # the sub-meter may read above the aggregate: never below 0 W
        power[j] = 0.0
        status[j] = 0.0

    def _add(
        self,
        rng: np.random.Generator,
        i: int,
        watts: np.ndarray,
        valid: np.ndarray,
        power: np.ndarray,
        status: np.ndarray,
        t: int,
    ) -> None:
        device = self.base.locate(i)[0]
        j = int(rng.choice(self._with_bank))
        others = np.flatnonzero(self._devices[j] != device)  # another device's, unless only its own exist
        pick = others if len(others) else np.arange(len(self._devices[j]))
        act = self.bank.activations[j][int(pick[rng.integers(len(pick))])]
        n, w = len(act.power_w), len(watts)
        offset = int(rng.integers(-(n - 1), w))  # the activation's first slot, relative to the window's
        lo, hi = max(0, offset), min(w, offset + n)
        watts[lo:hi] += np.where(valid[lo:hi], act.power_w[lo - offset : hi - offset], 0.0)
        if lo <= t < hi:
            power[j] += float(act.power_w[t - offset])
            status[j] = max(status[j], float(act.on[t - offset]))
