"""Agreement on the reading grid: per appliance, IoU of the on-slots and Cohen's kappa of the on/off states.

Two labelings of one task are compared slot by slot on the task's grid (the window's slots that hold a
reading); counts are pooled over tasks (and over annotator pairs), then IoU = on-in-both / on-in-either and
kappa = (p_o - p_e) / (1 - p_e). A pool where neither side is ever on has no IoU (null); kappa is null where
p_e = 1 (both sides constant and equal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Confusion:
    """Slot counts of two on/off labelings: both on, only a, only b, both off."""

    both: int = 0
    only_a: int = 0
    only_b: int = 0
    neither: int = 0
    tasks: int = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        a, b = a.astype(bool), b.astype(bool)
        self.both += int((a & b).sum())
        self.only_a += int((a & ~b).sum())
        self.only_b += int((~a & b).sum())
        self.neither += int((~a & ~b).sum())
        self.tasks += 1

    @property
    def slots(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    def iou(self) -> float | None:
        union = self.both + self.only_a + self.only_b
        return None if union == 0 else self.both / union

    def kappa(self) -> float | None:
        n = self.slots
        if n == 0:
            return None
        p_o = (self.both + self.neither) / n
        a_on, b_on = (self.both + self.only_a) / n, (self.both + self.only_b) / n
        p_e = a_on * b_on + (1 - a_on) * (1 - b_on)
        return None if p_e >= 1 else (p_o - p_e) / (1 - p_e)

    def summary(self) -> dict[str, float | int | None]:
        iou, kappa = self.iou(), self.kappa()
        return {
            "tasks": self.tasks,
            "slots": self.slots,
            "iou": None if iou is None else round(iou, 4),
            "kappa": None if kappa is None else round(kappa, 4),
        }


def on_slots(grid_ms: np.ndarray, starts_ms: np.ndarray, ends_ms: np.ndarray) -> np.ndarray:
    """Boolean on-state at each grid time for intervals [start, end) (they may overlap)."""
    s, e = np.sort(starts_ms), np.sort(ends_ms)
    return (np.searchsorted(s, grid_ms, side="right") - np.searchsorted(e, grid_ms, side="right")) > 0


def summarise(pools: dict[str, Confusion]) -> dict[str, dict[str, float | int | None]]:
    """Per appliance summaries, plus "all" pooled over appliances."""
    out = {name: c.summary() for name, c in sorted(pools.items())}
    total = Confusion()
    for c in pools.values():
        total.both += c.both
        total.only_a += c.only_a
        total.only_b += c.only_b
        total.neither += c.neither
        total.tasks = max(total.tasks, c.tasks)
    out["all"] = total.summary()
    return out
