"""The AirWatt beta-user dataset format, version 1.

A dataset is a directory::

    manifest.json          metadata: schema version, devices (site type, timezone, appliance inventory),
                           nominal interval, time window, provenance, table row counts
    readings.parquet       aggregate measurements as the monitor sent them
    ground_truth.parquet   sub-metered watts per appliance (optional: only devices with sub-meters)
    labels.parquet         on/off intervals per appliance (optional)

readings.parquet: one row per received reading, sorted by (device_id, timestamp); row groups never span
two devices, so a device or time-range filter reads only the row groups it needs.

    device_id     string            the monitor's id
    timestamp     timestamp[ms,UTC] when the reading was taken
    power_w       float32, null     active power; null = the slot is known but the value is missing
                                    (importers mark long gaps this way); a reading that never
                                    arrived has no row
    voltage_v     float32, null     optional channels: null where the monitor does not measure them
    current_a     float32, null
    power_factor  float32, null
    filled        bool              value forward-filled by resampling, not measured

ground_truth.parquet: device_id, timestamp, then one float32 column per appliance of the dataset's vocabulary,
in watts; null where that appliance is not sub-metered at that device.

labels.parquet: device_id, appliance, start, end (timestamp[ms,UTC], end exclusive), source
("sub-meter" | "annotator" | "model" | "reviewed"), annotator_id (string, null), task_id (int64, null: Label
Studio task). A "reviewed" row is not an on-interval: it is a span in which a person labelled the appliance
(a Label Studio task's window), so annotator intervals are the whole truth inside it (off elsewhere in it) and
say nothing outside it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"
MANIFEST_FILE = "manifest.json"
READINGS_FILE = "readings.parquet"
GROUND_TRUTH_FILE = "ground_truth.parquet"
LABELS_FILE = "labels.parquet"

TIMESTAMP_TYPE = pa.timestamp("ms", tz="UTC")
PANDAS_TIMESTAMP_DTYPE = "datetime64[ms, UTC]"

READINGS_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),
        pa.field("power_w", pa.float32()),
        pa.field("voltage_v", pa.float32()),
        pa.field("current_a", pa.float32()),
        pa.field("power_factor", pa.float32()),
        pa.field("filled", pa.bool_(), nullable=False),
    ]
)
READINGS_REQUIRED = ("device_id", "timestamp", "power_w")
READINGS_OPTIONAL = ("voltage_v", "current_a", "power_factor", "filled")

LABEL_SOURCES = ("sub-meter", "annotator", "model", "reviewed")
LABELS_SCHEMA = pa.schema(
    [
        pa.field("device_id", pa.string(), nullable=False),
        pa.field("appliance", pa.string(), nullable=False),
        pa.field("start", TIMESTAMP_TYPE, nullable=False),
        pa.field("end", TIMESTAMP_TYPE, nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("annotator_id", pa.string()),
        pa.field("task_id", pa.int64()),
    ]
)
LABELS_REQUIRED = ("device_id", "appliance", "start", "end", "source")


def ground_truth_schema(appliances: list[str]) -> pa.Schema:
    """Schema of ground_truth.parquet for a dataset whose vocabulary is ``appliances``."""
    return pa.schema(
        [
            pa.field("device_id", pa.string(), nullable=False),
            pa.field("timestamp", TIMESTAMP_TYPE, nullable=False),
            *[pa.field(a, pa.float32()) for a in appliances],
        ]
    )


SiteType = Literal["home", "cafe", "restaurant", "shop", "office", "other"]


class DeviceInfo(BaseModel):
    """One monitor (one site) in the dataset."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device_id: str
    site_type: SiteType = "home"
    timezone: str = "UTC"
    appliances: list[str] = Field(default_factory=list, description="appliance inventory (canonical names)")
    rated_max_w: float = Field(default=23000.0, description="the supply's rated maximum: 100 A at 230 V")
    has_ground_truth: bool = False
    provenance: str = ""


class TableInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str
    rows: int


class Manifest(BaseModel):
    """manifest.json: everything about a dataset except the rows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: str = SCHEMA_VERSION
    name: str
    interval_s: float = 5.0
    start: datetime | None = Field(default=None, description="window start (UTC, inclusive)")
    end: datetime | None = Field(default=None, description="window end (UTC, exclusive)")
    appliances: list[str] = Field(default_factory=list, description="vocabulary: ground-truth columns")
    devices: list[DeviceInfo] = Field(default_factory=list)
    provenance: dict[str, Any] = Field(default_factory=dict)
    tables: dict[str, TableInfo] = Field(default_factory=dict)

    def device(self, device_id: str) -> DeviceInfo:
        for d in self.devices:
            if d.device_id == device_id:
                return d
        raise KeyError(device_id)

    @property
    def device_ids(self) -> list[str]:
        return [d.device_id for d in self.devices]
