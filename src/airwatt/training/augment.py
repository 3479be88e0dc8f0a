"""Activation augmentation (Kelly & Knottenbelt 2015): synthetic aggregates from real appliance activations.

**The bank.** ``ActivationBank.from_split`` cuts every activation (a run of "on" slots, with its sub-metered
watts and ``pad_slots`` of context either side; airwatt.prepare.activations) of each model appliance from the
devices of the prepared TRAINING split only (validation and test houses never contribute; the simulated
fleet's devices, when they train, contribute the simulator's appliance models). At most
``max_per_appliance`` activations per appliance (an even spread over devices and time, seeded), each at most
``max_slots`` long. Its *distractors* are the activations of the training devices' other sub-metered loads
(prepare's ``train/distractors.npz``: stoves, kettles, dryers, heaters, air conditioners...), capped alike.

**On the fly** (``AugmentedWindows``, wrapping the training WindowDataset): with probability ``add_ratio`` a
window gets one activation of a random appliance (from another training device than its own), placed at a
random offset that overlaps the window; its watts are added to the aggregate on the window's valid slots and
to that appliance's power target where the activation covers the target slot, and the status target is on
there when the activation's slot is one of its "on" slots. With probability ``distract_ratio`` it gets one
distractor activation the same way, added to the aggregate only: the model's targets do not change, so it
learns what its appliances are not. With probability ``remove_ratio`` one appliance whose sub-meter is known
over the whole window and draws power in it is removed: its watts subtracted from the aggregate, its targets
set to 0 W and off. Targets stay consistent with the aggregate the model sees (tested). An appliance without
truth at the target slot stays masked whatever is added. Each window's draw is seeded by (seed, index), so
a run is reproducible.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from airwatt.prepare.activations import DISTRACTORS, Activation, cut_activations, read_activations
from airwatt.prepare.windows import WindowDataset, WindowSample

log = logging.getLogger(__name__)


def _capped(found: list[Activation], cap: int, rng: np.random.Generator) -> list[Activation]:
    """At most ``cap`` of ``found``, an even seeded spread kept in order."""
    if len(found) <= cap:
        return found
    keep = np.sort(rng.choice(len(found), cap, replace=False))
    return [found[k] for k in keep]


@dataclass
class ActivationBank:
    appliances: list[str]
    activations: list[list[Activation]]  # per appliance
    distractor_names: list[str] = field(default_factory=list)
    distractors: list[list[Activation]] = field(default_factory=list)  # per distractor appliance

    @property
    def sizes(self) -> dict[str, int]:
        return {a: len(acts) for a, acts in zip(self.appliances, self.activations, strict=True)}

    @property
    def distractor_sizes(self) -> dict[str, int]:
        return {a: len(acts) for a, acts in zip(self.distractor_names, self.distractors, strict=True) if acts}

    @property
    def devices(self) -> set[str]:
        return {x.device for acts in self.activations + self.distractors for x in acts}

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
        """Every activation of the split behind ``windows`` (the training split), capped (module doc); the
        split's distractors when prepare wrote them."""
        a = windows.arrays
        rng = np.random.default_rng(seed)
        per_app: list[list[Activation]] = []
        for j in range(len(windows.appliances)):
            found: list[Activation] = []
            for dev in windows.index["devices"]:
                lo, n = int(dev["offset"]), int(dev["length"])
                cuts = cut_activations(
                    a["power_w"][lo : lo + n, j],
                    a["status"][lo : lo + n, j],
                    np.asarray(a["power_valid"][lo : lo + n, j]),
                    pad_slots=pad_slots,
                    max_slots=max_slots,
                )
                found += [Activation(j, dev["device_id"], power, on) for power, on in cuts]
            per_app.append(_capped(found, max_per_appliance, rng))
        path = windows.split_dir / DISTRACTORS
        names, distractors = distractors_of(path, max_slots, max_per_appliance, rng)
        return cls(list(windows.appliances), per_app, names, distractors)


def distractors_of(
    path: Path, max_slots: int, max_per_appliance: int, rng: np.random.Generator
) -> tuple[list[str], list[list[Activation]]]:
    """The distractor activations of a prepared training split, per appliance, at most ``max_slots`` long
    and ``max_per_appliance`` each; ([], []) when prepare wrote none."""
    if not path.is_file():
        return [], []
    names, acts = read_activations(path)
    per_app: list[list[Activation]] = [[] for _ in names]
    for act in acts:
        if len(act.power_w) <= max_slots:
            per_app[act.appliance].append(act)
    return names, [_capped(found, max_per_appliance, rng) for found in per_app]


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
        distract_ratio: float = 0.0,
        scale_jitter: float = 0.0,
    ) -> None:
        self.base = base
        self.bank = bank
        self.add_ratio = add_ratio
        self.remove_ratio = remove_ratio
        self.distract_ratio = distract_ratio
        self.scale_jitter = scale_jitter
        self.seed = seed
        self._mean_w = float(base.stats["aggregate"]["mean_w"])
        self._std_w = float(base.stats["aggregate"]["std_w"])
        self._with_bank = [j for j, acts in enumerate(bank.activations) if acts]
        self._devices = [np.array([x.device for x in acts], dtype=object) for acts in bank.activations]
        self._with_distractors = [j for j, acts in enumerate(bank.distractors) if acts]
        self._distractor_devices = [
            np.array([x.device for x in acts], dtype=object) for acts in bank.distractors
        ]

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
        distract = self.distract_ratio > 0 and rng.random() < self.distract_ratio
        distract = distract and bool(self._with_distractors)
        if not (add or remove or distract):
            return sample
        s = int(self.base.starts[i])
        span = self.base.span
        a = self.base.arrays
        valid = np.asarray(a["valid"][s : s + span])
        watts = np.where(valid, sample.aggregate.numpy() * self._std_w + self._mean_w, 0.0)
        shape = sample.power_w.shape  # (A,) for a window, (S, A) for a chunk
        power = sample.power_w.numpy().reshape(-1, shape[-1]).copy()  # (S, A): one row per target slot
        status = sample.status.numpy().reshape(-1, shape[-1]).copy()
        first = self.base.target_offset  # the targets are the item's slots first .. first + S - 1
        if remove:
            self._remove(rng, a, s, watts, power, status, sample.power_valid.numpy().reshape(power.shape))
        if add:
            self._add(rng, i, watts, valid, power, status, first)
        if distract:
            device = self.base.locate(i)[0]
            k = int(rng.choice(self._with_distractors))
            act = self._pick(rng, self.bank.distractors[k], self._distractor_devices[k], device)
            self._place(rng, act, watts, valid)
        x = np.where(valid, (watts - self._mean_w) / self._std_w, 0.0).astype(np.float32)
        return WindowSample(
            torch.from_numpy(x),
            torch.from_numpy(power.astype(np.float32).reshape(shape)),
            torch.from_numpy(status.astype(np.float32).reshape(shape)),
            sample.power_valid,
            sample.status_valid,
        )

    def _remove(
        self,
        rng: np.random.Generator,
        a: dict[str, np.ndarray],
        s: int,
        watts: np.ndarray,
        power: np.ndarray,
        status: np.ndarray,
        power_valid: np.ndarray,
    ) -> None:
        """Subtract one appliance sub-metered over the whole item and drawing power in it; its targets
        become 0 W and off. ``power``, ``status``, ``power_valid``: (S, A)."""
        span = len(watts)
        slab = np.asarray(a["power_w"][s : s + span], dtype=np.float64)  # (span, A)
        known = np.asarray(a["power_valid"][s : s + span]).all(axis=0) & (power_valid > 0).all(axis=0)
        candidates = np.flatnonzero(known & (np.nan_to_num(slab).max(axis=0) > 0))  # drawing power here
        if not len(candidates):
            return
        j = int(rng.choice(candidates))
        watts -= slab[:, j]
        np.maximum(watts, 0.0, out=watts)  # the sub-meter may read above the aggregate: never below 0 W
        power[:, j] = 0.0
        status[:, j] = 0.0

    def _add(
        self,
        rng: np.random.Generator,
        i: int,
        watts: np.ndarray,
        valid: np.ndarray,
        power: np.ndarray,
        status: np.ndarray,
        first: int,
    ) -> None:
        """Add one activation of a model appliance; the target slots it covers (rows of ``power`` and
        ``status``, slots ``first`` ..) get its watts and, where it is "on", on."""
        device = self.base.locate(i)[0]
        j = int(rng.choice(self._with_bank))
        act = self._pick(rng, self.bank.activations[j], self._devices[j], device)
        offset, scale = self._place(rng, act, watts, valid)
        lo, hi = max(first, offset), min(first + len(power), offset + len(act.power_w))
        if lo < hi:  # target slots lo .. hi - 1 lie inside the activation
            rows, cut = slice(lo - first, hi - first), slice(lo - offset, hi - offset)
            power[rows, j] += scale * act.power_w[cut]
            status[rows, j] = np.maximum(status[rows, j], act.on[cut])

    @staticmethod
    def _pick(
        rng: np.random.Generator, acts: list[Activation], devices: np.ndarray, device: str
    ) -> Activation:
        """A random activation of another device than ``device`` (of any, when only its own exist)."""
        others = np.flatnonzero(devices != device)
        pick = others if len(others) else np.arange(len(devices))
        return acts[int(pick[rng.integers(len(pick))])]

    def _place(
        self, rng: np.random.Generator, act: Activation, watts: np.ndarray, valid: np.ndarray
    ) -> tuple[int, float]:
        """Add ``act`` to ``watts`` at a random offset overlapping the window (valid slots only), its watts
        scaled by exp(U(-scale_jitter, scale_jitter)) (the same appliance kind draws other watts in other
        homes and on other mains voltages); returns the offset of its first slot relative to the window's,
        and the scale."""
        n, w = len(act.power_w), len(watts)
        offset = int(rng.integers(-(n - 1), w))
        j = self.scale_jitter
        scale = float(np.exp(rng.uniform(-j, j))) if j else 1.0
        lo, hi = max(0, offset), min(w, offset + n)
        watts[lo:hi] += np.where(valid[lo:hi], scale * act.power_w[lo - offset : hi - offset], 0.0)
        return offset, scale
