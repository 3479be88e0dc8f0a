"""Labels pulled from Label Studio across re-syncs: the only rows a sync takes from the dataset it replaces.

A sync writes exactly its source's window (readings, ground truth, sub-meter and exported labels). What the
source cannot give back is what people labelled (`airwatt label pull`: rows of source ``annotator`` or
``reviewed`` with a ``task_id``), so those rows are judged one task (device, task id) at a time:

- **kept** when the device is still in the source, the task's rows lie inside the new window, and the
  device's readings over the task's span are exactly those it was labelled on (``readings_fingerprint``);
- otherwise **archived**: moved to ``archived_labels.parquet`` beside ``labels.parquet`` in the dataset
  folder, with the reason (``device_gone``, ``outside_window``, ``readings_changed``, or ``superseded`` when a
  newer pull of the same task is in labels.parquet) and the fingerprint of the readings it was labelled on;
- archived tasks are judged again at every sync and **restored** when they apply again (a setting changed
  back).

Nothing is dropped silently: ``sync_report.json`` in the dataset folder lists every archived task with its
reason, and the log names each task moved or restored.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from airwatt.dataset import Dataset, coerce_labels
from airwatt.dataset.schema import LABELS_SCHEMA
from airwatt.timeutil import to_epoch_ms

log = logging.getLogger(__name__)

ARCHIVE_FILE = "archived_labels.parquet"
REPORT_FILE = "sync_report.json"
PULLED_SOURCES = ("annotator", "reviewed")
ARCHIVE_SCHEMA = pa.schema(
    [
        *LABELS_SCHEMA,
        pa.field("reason", pa.string(), nullable=False),
        pa.field("readings_sha256", pa.string()),
    ]
)
REASONS = {
    "device_gone": "the device is not in the source any more",
    "outside_window": "the task's span is not inside the sync window",
    "readings_changed": "the device's readings over the task's span differ from those it was labelled on",
    "superseded": "a newer pull of the same task is in labels.parquet",
}
_LABEL_COLUMNS = LABELS_SCHEMA.names


def readings_fingerprint(readings: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> str:
    """sha256 of the readings (ms, float32 watts) in [start, end): what a person saw when labelling."""
    ts = readings["timestamp"]
    inside = readings[(ts >= start) & (ts < end)].sort_values("timestamp", kind="stable")
    ms = to_epoch_ms(inside["timestamp"]) if len(inside) else np.zeros(0, np.int64)
    watts = inside["power_w"].to_numpy(dtype=np.float32, na_value=np.nan)
    watts = np.where(np.isnan(watts), np.float32(np.nan), watts).astype("<f4")  # one NaN bit pattern
    h = hashlib.sha256(np.ascontiguousarray(ms, dtype="<i8").tobytes())
    h.update(watts.tobytes())
    return h.hexdigest()


def pulled_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """Rows that came from Label Studio (annotator or reviewed, with a task id)."""
    return labels[labels["source"].isin(PULLED_SOURCES) & labels["task_id"].notna()]


def read_archive(root: Any) -> pd.DataFrame:
    """The dataset's archived labels (empty when it has none)."""
    import pyarrow.parquet as pq

    path = root / ARCHIVE_FILE
    if not path.is_file():
        return ARCHIVE_SCHEMA.empty_table().to_pandas()
    return pq.read_table(path).to_pandas()


@dataclass
class Task:
    """One (device, task id) group of pulled rows and what the sync decided about it."""

    device_id: str
    task_id: int
    rows: pd.DataFrame  # label columns
    reference: str  # fingerprint of the readings it was labelled on
    origin: str  # "labels" or "archive"
    reason: str | None = None  # None: kept

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.rows["start"].min())

    @property
    def end(self) -> pd.Timestamp:
        return pd.Timestamp(self.rows["end"].max())

    def summary(self) -> dict[str, Any]:
        return {
            "device_id": self.device_id,
            "task_id": self.task_id,
            "annotator_id": sorted({str(a) for a in self.rows["annotator_id"].dropna()}),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": len(self.rows),
            "reason": self.reason,
        }


@dataclass
class LabelCarry:
    """The pulled labels of the dataset a sync replaces (and its archive), judged device by device."""

    window_start: pd.Timestamp
    window_end: pd.Timestamp
    tasks: dict[str, list[Task]] = field(default_factory=dict)  # device -> tasks

    @classmethod
    def from_previous(cls, previous: Dataset | None, start: pd.Timestamp, end: pd.Timestamp) -> LabelCarry:
        carry = cls(start, end)
        if previous is None:
            return carry
        current = pulled_labels(coerce_labels(previous.labels()))
        archive = read_archive(previous.root)
        devices = sorted(set(current["device_id"]) | set(archive["device_id"]))
        for dev in devices:
            mine = current[current["device_id"] == dev]
            readings = (
                previous.readings([dev], columns=["timestamp", "power_w"])
                if dev in previous.device_ids and len(mine)
                else pd.DataFrame({"timestamp": pd.Series([], dtype="datetime64[ms, UTC]"), "power_w": []})
            )
            out = carry.tasks.setdefault(dev, [])
            for task_id, rows in mine.groupby("task_id", sort=True):
                t = Task(dev, int(task_id), rows[_LABEL_COLUMNS], "", "labels")
                t.reference = readings_fingerprint(readings, t.start, t.end)
                out.append(t)
            stored = archive[archive["device_id"] == dev]
            for (task_id, ref), rows in stored.groupby(["task_id", "readings_sha256"], sort=True):
                labels = coerce_labels(rows[_LABEL_COLUMNS].reset_index(drop=True))
                out.append(Task(dev, int(task_id), labels, str(ref), "archive"))
        return carry

    def judge(self, device_id: str, readings: pd.DataFrame | None) -> pd.DataFrame | None:
        """The pulled rows of ``device_id`` that still apply to its new ``readings`` (None: device gone)."""
        tasks = self.tasks.get(device_id, [])
        kept_ids = set()
        for t in sorted(tasks, key=lambda t: t.origin != "labels"):  # labels.parquet first, then the archive
            if readings is None:
                t.reason = "device_gone"
            elif t.origin == "archive" and t.task_id in kept_ids:
                t.reason = "superseded"
            elif t.start < self.window_start or t.end > self.window_end:
                t.reason = "outside_window"
            elif readings_fingerprint(readings, t.start, t.end) != t.reference:
                t.reason = "readings_changed"
            else:
                t.reason = None
                kept_ids.add(t.task_id)
            self._log(t)
        kept = [t.rows for t in tasks if t.reason is None]
        return pd.concat(kept, ignore_index=True) if kept else None

    def finish(self, devices_written: set[str]) -> None:
        """Judge the devices the new sync does not have (gone)."""
        for dev in sorted(set(self.tasks) - devices_written):
            self.judge(dev, None)

    @staticmethod
    def _log(t: Task) -> None:
        if t.reason is not None and t.origin == "labels":
            log.warning(
                "labels of task %d (device %s, %d rows) moved to %s: %s",
                t.task_id,
                t.device_id,
                len(t.rows),
                ARCHIVE_FILE,
                REASONS[t.reason],
            )
        elif t.reason is None and t.origin == "archive":
            log.info("labels of task %d (device %s) restored from %s", t.task_id, t.device_id, ARCHIVE_FILE)

    def archived(self) -> list[Task]:
        return [t for dev in sorted(self.tasks) for t in self.tasks[dev] if t.reason is not None]

    def archive_frame(self) -> pd.DataFrame:
        """The new dataset's archive: every task judged not to apply, with reason and fingerprint."""
        frames = [t.rows.assign(reason=t.reason, readings_sha256=t.reference) for t in self.archived()]
        if not frames:
            return ARCHIVE_SCHEMA.empty_table().to_pandas()
        df = pd.concat(frames, ignore_index=True)
        return df.sort_values(
            ["device_id", "task_id", "readings_sha256", "appliance", "start", "end", "source"], kind="stable"
        ).reset_index(drop=True)

    def report(self) -> dict[str, Any]:
        """The labels part of sync_report.json: a function of the result only (reruns write the same)."""
        kept = [t for dev in sorted(self.tasks) for t in self.tasks[dev] if t.reason is None]
        archived = self.archived()
        return {
            "rule": "Label Studio labels are kept while their device, window and readings are unchanged; "
            f"the others are in {ARCHIVE_FILE} and come back when they apply again",
            "kept": {"tasks": len(kept), "rows": sum(len(t.rows) for t in kept)},
            "archived": {
                "file": ARCHIVE_FILE,
                "tasks": len(archived),
                "rows": sum(len(t.rows) for t in archived),
                "reasons": REASONS,
                "items": [t.summary() for t in archived],
            },
        }
