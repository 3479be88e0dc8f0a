"""The beta-user dataset format: schema, writer and lazy reader."""

from airwatt.dataset.io import (
    Dataset,
    DatasetWriter,
    coerce_labels,
    coerce_readings,
    open_dataset,
    read_manifest,
)
from airwatt.dataset.schema import SCHEMA_VERSION, DeviceInfo, Manifest

__all__ = [
    "SCHEMA_VERSION",
    "Dataset",
    "DatasetWriter",
    "DeviceInfo",
    "Manifest",
    "coerce_labels",
    "coerce_readings",
    "open_dataset",
    "read_manifest",
]
