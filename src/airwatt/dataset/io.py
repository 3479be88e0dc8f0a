"""Write and read datasets in the AirWatt format (see schema.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import ValidationError

from airwatt.appliances import APPLIANCES
from airwatt.atomic import atomic_dir
from airwatt.dataset.schema import (
    GROUND_TRUTH_FILE,
    LABEL_SOURCES,
    LABELS_FILE,
    LABELS_REQUIRED,
    LABELS_SCHEMA,
    MANIFEST_FILE,
    PANDAS_TIMESTAMP_DTYPE,
    READINGS_FILE,
    READINGS_REQUIRED,
    READINGS_SCHEMA,
    SCHEMA_VERSION,
    DeviceInfo,
    Manifest,
    TableInfo,
    ground_truth_schema,
)
from airwatt.errors import DataError

ROW_GROUP_ROWS = 120_960  # one week at 5 s: a row group is one device-week at most


# ---------------------------------------------------------------------------------------------- coercion
def _first_bad(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def to_utc_timestamps(values: pd.Series, *, where: str, column: str) -> pd.Series:
    """Parse a column to UTC timestamps (ms); naive or unparsable values are errors naming the row."""
    s = values
    if not isinstance(s.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(s.dtype):
            raise DataError(
                "timestamps carry no timezone; write them in UTC with an offset",
                file=where,
                row=0,
                column=column,
            )
        parsed = pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601")
        bad = parsed.isna().to_numpy() & s.notna().to_numpy()
        if s.isna().any():
            raise DataError(
                "missing timestamp", file=where, row=_first_bad(s.isna().to_numpy()), column=column
            )
        if bad.any():
            i = _first_bad(bad)
            raise DataError(f"unparsable timestamp {s.iloc[i]!r}", file=where, row=i, column=column)
        text = s.astype(str)
        naive = ~text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
        if naive.any() and not naive.all():
            i = _first_bad(naive.to_numpy())
            raise DataError(
                f"mixed timezones: {s.iloc[i]!r} has no offset while others do",
                file=where,
                row=i,
                column=column,
            )
        if naive.all():
            raise DataError(
                f"timestamp {s.iloc[0]!r} has no timezone; send UTC ('Z' or '+00:00')",
                file=where,
                row=0,
                column=column,
            )
        s = parsed
    return s.dt.tz_convert("UTC").astype(PANDAS_TIMESTAMP_DTYPE)


def to_float(values: pd.Series, *, where: str, column: str, nullable: bool = True) -> pd.Series:
    """Numeric column as float32; text or missing (when not nullable) values are errors naming the row."""
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna().to_numpy() & values.notna().to_numpy()
    if bad.any():
        i = _first_bad(bad)
        raise DataError(f"not a number: {values.iloc[i]!r}", file=where, row=i, column=column)
    if not nullable and num.isna().any():
        raise DataError("missing value", file=where, row=_first_bad(num.isna().to_numpy()), column=column)
    return num.astype("float32")


def _require_columns(df: pd.DataFrame, required: Iterable[str], where: str) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=where)


def coerce_readings(df: pd.DataFrame, *, where: str = READINGS_FILE) -> pd.DataFrame:
    """Readings with the format's columns and dtypes; raises DataError naming row and column."""
    _require_columns(df, READINGS_REQUIRED, where)
    out = pd.DataFrame(
        {
            "device_id": df["device_id"].astype(str),
            "timestamp": to_utc_timestamps(df["timestamp"], where=where, column="timestamp"),
            "power_w": to_float(df["power_w"], where=where, column="power_w"),
        }
    )
    for col in ("voltage_v", "current_a", "power_factor"):
        out[col] = (
            to_float(df[col], where=where, column=col)
            if col in df.columns
            else pd.Series(np.nan, index=df.index, dtype="float32")
        )
    out["filled"] = df["filled"].astype(bool) if "filled" in df.columns else False
    return out


def coerce_labels(df: pd.DataFrame, *, where: str = LABELS_FILE) -> pd.DataFrame:
    """Labels with the format's columns and dtypes; raises DataError naming row and column."""
    _require_columns(df, LABELS_REQUIRED, where)
    out = pd.DataFrame(
        {
            "device_id": df["device_id"].astype(str),
            "appliance": df["appliance"].astype(str),
            "start": to_utc_timestamps(df["start"], where=where, column="start"),
            "end": to_utc_timestamps(df["end"], where=where, column="end"),
            "source": df["source"].astype(str),
        }
    )
    bad_source = ~out["source"].isin(LABEL_SOURCES)
    if bad_source.any():
        i = _first_bad(bad_source.to_numpy())
        raise DataError(
            f"source {out['source'].iloc[i]!r} is not one of {LABEL_SOURCES}",
            file=where,
            row=i,
            column="source",
        )
    out["annotator_id"] = (
        df["annotator_id"].astype("string")
        if "annotator_id" in df.columns
        else pd.Series(pd.NA, index=df.index, dtype="string")
    )
    out["task_id"] = (
        pd.to_numeric(df["task_id"]).astype("Int64")
        if "task_id" in df.columns
        else pd.Series(pd.NA, index=df.index, dtype="Int64")
    )
    return out


def coerce_ground_truth(
    df: pd.DataFrame, appliances: Sequence[str], *, where: str = GROUND_TRUTH_FILE
) -> pd.DataFrame:
    _require_columns(df, ("device_id", "timestamp"), where)
    out = pd.DataFrame(
        {
            "device_id": df["device_id"].astype(str),
            "timestamp": to_utc_timestamps(df["timestamp"], where=where, column="timestamp"),
        }
    )
    for a in appliances:
        out[a] = (
            to_float(df[a], where=where, column=a)
            if a in df.columns
            else pd.Series(np.nan, index=df.index, dtype="float32")
        )
    return out


# ---------------------------------------------------------------------------------------------- writing
def _column_to_arrow(s: pd.Series, type_: pa.DataType) -> pa.Array:
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        naive = s.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[ms]")
        return pa.array(naive, type=pa.timestamp("ms")).cast(type_)
    return pa.Array.from_pandas(s, type=type_)


def frame_to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """A DataFrame in the format's dtypes as an Arrow table of ``schema`` (column order from the schema)."""
    return pa.Table.from_arrays([_column_to_arrow(df[f.name], f.type) for f in schema], schema=schema)


class DatasetWriter:
    """Stream devices into a new dataset directory; it replaces ``out_dir`` only when the block succeeds.

    >>> with DatasetWriter(out, name="sim", appliances=["fridge"], interval_s=5) as w:
    ...     w.add_device(info, readings, ground_truth=gt, labels=labels)
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        name: str,
        appliances: Sequence[str] = (),
        interval_s: float = 5.0,
        start: pd.Timestamp | None = None,
        end: pd.Timestamp | None = None,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        unknown = [a for a in appliances if a not in APPLIANCES]
        if unknown:
            raise DataError(f"appliances {unknown} are not in the vocabulary")
        self.out_dir = Path(out_dir)
        self.appliances = list(appliances)
        self._manifest_args: dict[str, Any] = dict(
            name=name,
            interval_s=interval_s,
            start=start,
            end=end,
            appliances=self.appliances,
            provenance=provenance or {},
        )
        self._devices: list[DeviceInfo] = []
        self._rows = {"readings": 0, "ground_truth": 0, "labels": 0}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._ctx: Any = None
        self._tmp: Path | None = None

    def __enter__(self) -> DatasetWriter:
        self._ctx = atomic_dir(self.out_dir)
        self._tmp = self._ctx.__enter__()
        return self

    def path(self, name: str) -> Path:
        """Where to write another file of the dataset (in the staging folder, swapped in with the rest)."""
        assert self._tmp is not None, "use DatasetWriter as a context manager"
        return self._tmp / name

    def _writer(self, table: str, file: str, schema: pa.Schema) -> pq.ParquetWriter:
        if table not in self._writers:
            assert self._tmp is not None, "use DatasetWriter as a context manager"
            self._writers[table] = pq.ParquetWriter(self._tmp / file, schema, compression="zstd")
        return self._writers[table]

    def add_device(
        self,
        info: DeviceInfo,
        readings: pd.DataFrame,
        *,
        ground_truth: pd.DataFrame | None = None,
        labels: pd.DataFrame | None = None,
    ) -> None:
        """Append one device's tables (already in the format's dtypes, or coercible to them)."""
        if any(d.device_id == info.device_id for d in self._devices):
            raise DataError(f"device {info.device_id!r} added twice")
        readings = readings.assign(device_id=info.device_id).sort_values("timestamp", kind="stable")
        readings = coerce_readings(readings)
        self._write("readings", READINGS_FILE, readings, READINGS_SCHEMA)
        has_gt = ground_truth is not None and len(ground_truth) > 0
        if has_gt:
            assert ground_truth is not None
            gt = coerce_ground_truth(ground_truth.assign(device_id=info.device_id), self.appliances)
            gt = gt.sort_values("timestamp", kind="stable")
            self._write("ground_truth", GROUND_TRUTH_FILE, gt, ground_truth_schema(self.appliances))
        if labels is not None and len(labels) > 0:
            lab = coerce_labels(labels.assign(device_id=info.device_id))
            lab = lab.sort_values(["appliance", "start"], kind="stable")
            self._write("labels", LABELS_FILE, lab, LABELS_SCHEMA)
        self._devices.append(info.model_copy(update={"has_ground_truth": has_gt}))

    def _write(self, table: str, file: str, df: pd.DataFrame, schema: pa.Schema) -> None:
        t = frame_to_table(df, schema)
        self._writer(table, file, schema).write_table(t, row_group_size=ROW_GROUP_ROWS)
        self._rows[table] += len(df)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for w in self._writers.values():
            w.close()
        if exc is None:
            assert self._tmp is not None
            # Empty optional tables still get a file, so readers need not special-case them.
            empty = {
                "readings": (READINGS_FILE, READINGS_SCHEMA),
                "ground_truth": (GROUND_TRUTH_FILE, ground_truth_schema(self.appliances)),
                "labels": (LABELS_FILE, LABELS_SCHEMA),
            }
            for table, (file, schema) in empty.items():
                if table not in self._writers:
                    pq.write_table(schema.empty_table(), self._tmp / file)
            manifest = Manifest(
                **self._manifest_args,
                devices=sorted(self._devices, key=lambda d: d.device_id),
                tables={t: TableInfo(file=empty[t][0], rows=n) for t, n in self._rows.items()},
            )
            (self._tmp / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2) + "\n")
        self._ctx.__exit__(exc_type, exc, tb)


# ---------------------------------------------------------------------------------------------- reading
def read_manifest(root: str | Path) -> Manifest:
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        raise DataError("dataset manifest not found (is this an AirWatt dataset directory?)", file=path)
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", file=path, row=e.lineno) from None
    version = str(raw.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise DataError(
            f"schema_version {version!r} is not readable by this version (reads {SCHEMA_VERSION})",
            file=path,
            column="schema_version",
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        raise DataError(err["msg"], file=path, column=".".join(map(str, err["loc"]))) from None


def _as_utc(ts: str | pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


class Dataset:
    """A dataset on disk; tables are read lazily and filtered at the Parquet row-group level."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)

    @property
    def device_ids(self) -> list[str]:
        return self.manifest.device_ids

    @property
    def appliances(self) -> list[str]:
        return list(self.manifest.appliances)

    def _read(
        self,
        file: str,
        *,
        devices: Sequence[str] | None,
        start: str | pd.Timestamp | None,
        end: str | pd.Timestamp | None,
        columns: Sequence[str] | None,
        start_col: str = "timestamp",
        end_col: str = "timestamp",
    ) -> pd.DataFrame:
        path = self.root / file
        if not path.is_file():
            raise DataError("table missing from the dataset", file=path)
        expr = None

        def _and(e: pc.Expression) -> None:
            nonlocal expr
            expr = e if expr is None else expr & e

        if devices is not None:
            _and(pc.field("device_id").isin(list(devices)))
        if start is not None:
            _and(pc.field(end_col) >= pa.scalar(_as_utc(start), type=READINGS_SCHEMA.field("timestamp").type))
        if end is not None:
            op = pc.field(start_col) < pa.scalar(_as_utc(end), type=READINGS_SCHEMA.field("timestamp").type)
            _and(op)
        try:
            table = pq.read_table(path, columns=list(columns) if columns else None, filters=expr)
        except (pa.ArrowInvalid, OSError) as e:
            raise DataError(f"cannot read Parquet: {e}", file=path) from None
        return table.to_pandas()

    def readings(
        self,
        devices: Sequence[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Readings in [start, end) for ``devices`` (all when None), sorted by device then time."""
        return self._read(READINGS_FILE, devices=devices, start=start, end=end, columns=columns)

    def ground_truth(
        self,
        devices: Sequence[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Sub-metered watts per appliance in [start, end); empty for devices without sub-meters."""
        return self._read(GROUND_TRUTH_FILE, devices=devices, start=start, end=end, columns=columns)

    def labels(
        self,
        devices: Sequence[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
    ) -> pd.DataFrame:
        """On/off intervals that overlap [start, end)."""
        return self._read(
            LABELS_FILE, devices=devices, start=start, end=end, columns=None, start_col="start", end_col="end"
        )


def open_dataset(root: str | Path) -> Dataset:
    return Dataset(root)
