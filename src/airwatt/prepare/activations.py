"""Appliance activations cut from sub-metered channels (Kelly & Knottenbelt 2015), for augmentation.

An activation is a run of "on" slots of one appliance on one device, with its sub-metered watts and
``PAD_S`` of context either side; it is kept only when the sub-meter is known over all of it.

The training split of a prepared directory also holds the activations of the sub-metered loads that are
NOT the model's appliances (``train/distractors.npz``: an electric stove, a kettle, a tumble dryer, an air
conditioner of the simulated fleet...): training adds them to aggregates as *distractors* (the model must
learn what a dishwasher is not), with the model's targets unchanged. Only training devices are cut, so a
validation or test house never contributes. No torch here: prepare writes them, the training data module
reads them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PAD_S = 60.0  # context kept either side of an activation
MAX_CUT_S = 6 * 3600.0  # longest distractor activation prepare keeps (training applies augment.max_s)
DISTRACTORS = "distractors.npz"


@dataclass
class Activation:
    appliance: int  # column in the bank's appliance names
    device: str
    power_w: np.ndarray  # (L,) float32 watts
    on: np.ndarray  # (L,) bool: the "on" slots (False in the padding)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of True."""
    d = np.diff(np.concatenate([[0], np.asarray(mask, bool).astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist(), strict=True))


def cut_activations(
    power_w: np.ndarray, status: np.ndarray, known: np.ndarray, *, pad_slots: int, max_slots: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(watts, on) of every activation of one appliance on one device: (n,) arrays in, a run of ``status``
    (where ``known``) with ``pad_slots`` either side; runs longer than ``max_slots`` with their padding, or
    whose padding is not sub-metered, are skipped."""
    n = len(status)
    on_known = np.asarray(status, bool) & np.asarray(known, bool)
    for s, e in runs(on_known):
        s0, e0 = max(0, s - pad_slots), min(n, e + pad_slots)
        if e0 - s0 > max_slots or not known[s0:e0].all():
            continue
        on = np.zeros(e0 - s0, bool)
        on[s - s0 : e - s0] = True
        yield np.asarray(power_w[s0:e0], dtype=np.float32).copy(), on


def write_activations(path: Path, names: Sequence[str], activations: Sequence[Activation]) -> None:
    """Activations as one compressed file (concatenated watts and flags, per-activation offsets); written
    in place: prepare writes it inside the directory it swaps in atomically."""
    lengths = np.array([len(a.power_w) for a in activations], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    devices = sorted({a.device for a in activations})
    empty = not activations
    with open(path, "wb") as f:
        np.savez_compressed(
            f,
            names=np.array(list(names), dtype=str),
            devices=np.array(devices, dtype=str),
            offsets=offsets,
            appliance=np.array([a.appliance for a in activations], np.int64),
            device=np.array([devices.index(a.device) for a in activations], np.int64),
            power_w=np.zeros(0, np.float32) if empty else np.concatenate([a.power_w for a in activations]),
            on=np.zeros(0, bool) if empty else np.concatenate([a.on for a in activations]),
        )


def read_activations(path: Path) -> tuple[list[str], list[Activation]]:
    """(appliance names, activations) of a file written by ``write_activations``."""
    with np.load(path) as z:
        names = [str(x) for x in z["names"]]
        devices = [str(x) for x in z["devices"]]
        offsets, power, on = z["offsets"], z["power_w"], z["on"]
        acts = [
            Activation(int(j), devices[int(d)], power[a:b].copy(), on[a:b].copy())
            for j, d, a, b in zip(z["appliance"], z["device"], offsets[:-1], offsets[1:], strict=True)
        ]
    return names, acts
