"""Which data a model has seen, as devices and UTC time ranges, and where other data overlaps it.

A model's provenance (its bundle's ``model.json``; also its MLflow run's artifact
``provenance/data_ranges.json``) records under ``data_ranges``, for ``train`` and ``val``, each device id
with the merged half-open ``[start, end)`` UTC ranges (ISO 8601) of the grid slots of that split in the
prepared data it was trained from::

    "data_ranges": {"train": {"d-0001": [["2026-01-05T00:00:00+00:00", "2026-01-05T18:00:00+00:00"]]},
                    "val":   {"d-0002": [[...]]}}

Validation counts as seen: it picks the checkpoint and tunes the decision rule. A fine-tuned model has also
seen everything its initial model had (``init_provenance``, recursively). Devices are matched by id and time
by UTC milliseconds, so "disjoint" means "not the same readings": a trained device's later days are disjoint
from its training days (how a deployed model meets its own houses), while the same readings under another
device id are not recognised.

A bundle written before this record (or fine-tuned from one) has UNKNOWN provenance: ``seen_by`` returns
None, never an empty set, so nothing calls data disjoint from a model it knows nothing about.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airwatt.errors import DataError
from airwatt.timeutil import epoch_ms, iso

SPLITS_SEEN = ("train", "val")  # the splits of the prepared data a trained model has seen
RECORD_KEY = "data_ranges"  # the provenance key

Span = tuple[int, int]  # [start_ms, end_ms), UTC


class NoDisjointData(DataError):
    """An evaluation told to leave ranges out (airwatt.evaluate ``exclude``) has nothing left to score."""


def _merged(spans: Iterable[Span]) -> tuple[Span, ...]:
    """Sorted, non-empty, non-touching spans covering the same instants."""
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


def _intersect(x: tuple[Span, ...], y: tuple[Span, ...]) -> list[Span]:
    out, i, j = [], 0, 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract(x: tuple[Span, ...], y: tuple[Span, ...]) -> list[Span]:
    out = []
    for a, b in x:
        for c, d in y:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


@dataclass(frozen=True)
class DataRanges:
    """Per device id, merged half-open [start_ms, end_ms) UTC spans; devices without any are left out."""

    spans: Mapping[str, tuple[Span, ...]]

    @classmethod
    def of(cls, spans: Mapping[str, Iterable[Span]]) -> DataRanges:
        merged = {dev: _merged(s) for dev, s in spans.items()}
        return cls({dev: s for dev, s in sorted(merged.items()) if s})

    @classmethod
    def empty(cls) -> DataRanges:
        return cls({})

    def __bool__(self) -> bool:
        return bool(self.spans)

    @property
    def devices(self) -> list[str]:
        return sorted(self.spans)

    def hours(self) -> float:
        return sum(b - a for s in self.spans.values() for a, b in s) / 3_600_000

    def __or__(self, other: DataRanges) -> DataRanges:
        devs = set(self.spans) | set(other.spans)
        return DataRanges.of({d: (*self.spans.get(d, ()), *other.spans.get(d, ())) for d in devs})

    def __and__(self, other: DataRanges) -> DataRanges:
        devs = set(self.spans) & set(other.spans)
        return DataRanges.of({d: _intersect(self.spans[d], other.spans[d]) for d in devs})

    def __sub__(self, other: DataRanges) -> DataRanges:
        return DataRanges.of({d: _subtract(s, other.spans.get(d, ())) for d, s in self.spans.items()})

    def of_device(self, device_id: str) -> tuple[Span, ...]:
        return self.spans.get(device_id, ())

    def to_json(self) -> dict[str, list[list[str]]]:
        return {d: [[iso(a), iso(b)] for a, b in s] for d, s in self.spans.items()}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], where: str = "data ranges") -> DataRanges:
        try:
            return cls.of({str(d): [(epoch_ms(a), epoch_ms(b)) for a, b in s] for d, s in doc.items()})
        except (TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{where}: not {{device: [[start, end], ...]}} in ISO 8601 ({e})") from None

    def describe(self, limit: int = 5) -> str:
        """``d-0001 2026-01-05T00:00:00+00:00..2026-01-05T18:00:00+00:00, ...``: the first ``limit`` spans."""
        parts = [f"{d} {iso(a)}..{iso(b)}" for d, s in self.spans.items() for a, b in s]
        more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
        return ", ".join(parts[:limit]) + more


# ----------------------------------------------------------------------------- what training records
def split_ranges(prepared_dir: Path, split: str) -> DataRanges:
    """The grid spans of one split of a prepared directory (index.json: start_ms and length per device)."""
    index = json.loads((Path(prepared_dir) / split / "index.json").read_text())
    step_ms = round(float(index["interval_s"]) * 1000)
    spans: dict[str, list[Span]] = {}
    for d in index["devices"]:
        start = int(d["start_ms"])
        spans.setdefault(str(d["device_id"]), []).append((start, start + int(d["length"]) * step_ms))
    return DataRanges.of(spans)


def training_record(prepared_dir: Path) -> dict[str, dict[str, list[list[str]]]]:
    """``{"train": ..., "val": ...}`` of a prepared directory: what a model trained on it records."""
    return {split: split_ranges(prepared_dir, split).to_json() for split in SPLITS_SEEN}


def seen_by(provenance: Mapping[str, Any]) -> DataRanges | None:
    """Everything a model trained or validated on (with its initial model's, when fine-tuned); None when its
    provenance does not say (a bundle from before the record, or fine-tuned from one)."""
    record = provenance.get(RECORD_KEY)
    if not isinstance(record, Mapping) or any(s not in record for s in SPLITS_SEEN):
        return None
    seen = DataRanges.empty()
    for split in SPLITS_SEEN:
        seen |= DataRanges.from_json(record[split], f"provenance {RECORD_KEY}.{split}")
    if "init_from" in provenance:
        initial = seen_by(provenance.get("init_provenance") or {})
        return None if initial is None else seen | initial
    return seen


# ------------------------------------------------------------------------- overlap with evaluation data
@dataclass(frozen=True)
class Overlap:
    """The evaluated data against the model's seen data: ``with_training`` None when that is unknown."""

    evaluated: DataRanges
    seen: DataRanges | None
    excluded: DataRanges | None = None  # left out of the evaluation on request (promotion)

    @property
    def overlapping(self) -> DataRanges:
        return DataRanges.empty() if self.seen is None else self.evaluated & self.seen

    @property
    def with_training(self) -> bool | None:
        return None if self.seen is None else bool(self.overlapping)

    def to_json(self) -> dict[str, Any]:
        return {
            "with_training": self.with_training,
            "provenance": "unknown" if self.seen is None else "recorded",
            "devices": self.overlapping.to_json(),
            "hours": round(self.overlapping.hours(), 6),
            "evaluated": self.evaluated.to_json(),
            "excluded": None if self.excluded is None else self.excluded.to_json(),
        }
