"""Platform exports: folders of readings, labels and ground-truth files, parsed with errors naming the place.

Layout (any depth below the folder; files are read in the order of their relative path, so date-named
sub-folders or file names are read oldest first)::

    readings*.csv | .csv.gz | .parquet | .jsonl | .jsonl.gz
        device_id, timestamp (ISO 8601 with a UTC offset, e.g. 2026-01-05T00:00:05Z), power_w,
        optional voltage_v, current_a, power_factor
    labels*.<same formats>
        device_id, appliance, start, end (ISO 8601 with offset, end exclusive),
        source (sub-meter | annotator | model), optional annotator_id, task_id
    ground_truth*.<same formats>          (optional)
        device_id, timestamp, then one column of watts per appliance (names normalised to the vocabulary)
    devices.json                          (optional, top level only)
        a JSON list of DeviceInfo objects; devices without an entry get defaults and a logged warning

Error positions: ``row N`` is what a user sees in the file: for CSV the line number with the header as
line 1 (the first data row is row 2); for JSON lines the line number (first line is 1); for Parquet the
1-based row number.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from airwatt.appliances import normalize_appliance
from airwatt.dataset import DeviceInfo, coerce_labels, coerce_readings
from airwatt.dataset.io import coerce_ground_truth
from airwatt.errors import DataError

log = logging.getLogger(__name__)

EXPORT_KINDS = ("readings", "labels", "ground_truth")
EXPORT_NAME = re.compile(r"^(readings|labels|ground_truth)[^/]*?\.(csv|csv\.gz|parquet|jsonl|jsonl\.gz)$")
DEVICES_FILE = "devices.json"
KNOWN_READING_COLUMNS = {"device_id", "timestamp", "power_w", "voltage_v", "current_a", "power_factor"}


@dataclass(frozen=True)
class ExportFile:
    path: Path
    kind: str  # readings | labels | ground_truth
    fmt: str  # csv | parquet | jsonl
    where: str  # how errors name it: the relative path, or the URL it came from


def export_kind(name: str) -> tuple[str, str] | None:
    """(kind, format) of an export file name, or None when the name is not an export."""
    m = EXPORT_NAME.match(name)
    if m is None:
        return None
    return m.group(1), m.group(2).removesuffix(".gz")


def discover(folder: Path, where_of: Callable[[Path], str] | None = None) -> list[ExportFile]:
    """Export files under ``folder`` in relative-path order; other files are ignored (debug log)."""
    if not folder.is_dir():
        raise DataError("export folder not found (sync.path)", file=folder)
    found = []
    for path in sorted(folder.rglob("*"), key=lambda p: p.relative_to(folder).as_posix()):
        if not path.is_file():
            continue
        kind = export_kind(path.name)
        if kind is None:
            if path.name != DEVICES_FILE:
                log.debug("ignoring %s: not an export file name", path)
            continue
        rel = path.relative_to(folder).as_posix()
        found.append(ExportFile(path, kind[0], kind[1], where_of(path) if where_of else rel))
    if not any(f.kind == "readings" for f in found):
        raise DataError("no readings files (readings*.csv|.parquet|.jsonl) in the export folder", file=folder)
    return found


# ---------------------------------------------------------------------------------------------- raw files
def _read_csv(f: ExportFile) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        df = pd.read_csv(f.path, dtype={"device_id": str}, skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"cannot parse CSV: {e}", file=f.where) from None
    lines = np.arange(len(df)) + 2  # header is line 1
    blank = df.isna().all(axis=1).to_numpy()
    return df[~blank].reset_index(drop=True), lines[~blank]


def _read_jsonl(f: ExportFile) -> tuple[pd.DataFrame, np.ndarray]:
    opener = gzip.open if f.path.name.endswith(".gz") else open
    try:
        with opener(f.path, "rt", encoding="utf-8") as fh:
            raw = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read: {e}", file=f.where) from None
    keep = [i for i, line in enumerate(raw) if line.strip()]
    lines = np.asarray(keep, dtype=np.int64) + 1
    if not keep:
        return pd.DataFrame(), lines
    try:
        text = "\n".join(raw[i] for i in keep)
        df = pd.read_json(io.StringIO(text), lines=True, dtype=False)
    except ValueError:
        df = None
    if df is None or len(df) != len(keep):
        for i in keep:  # locate the bad line (slow path, only on error)
            try:
                obj = json.loads(raw[i])
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON: {e.msg}", file=f.where, row=i + 1) from None
            if not isinstance(obj, dict):
                raise DataError("each line must be a JSON object", file=f.where, row=i + 1)
        raise DataError("cannot parse JSON lines", file=f.where)
    return df, lines


def _read_parquet(f: ExportFile) -> tuple[pd.DataFrame, np.ndarray]:
    try:
        df = pq.read_table(f.path).to_pandas()
    except (pa.ArrowInvalid, OSError) as e:
        raise DataError(f"cannot read Parquet: {e}", file=f.where) from None
    return df, np.arange(len(df)) + 1


def read_raw(f: ExportFile) -> tuple[pd.DataFrame, np.ndarray]:
    """The file as a DataFrame, and each row's position as a user sees it (see module docstring)."""
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[f.fmt]
    return reader(f)


def _at_user_row(e: DataError, lines: np.ndarray, where: str) -> DataError:
    """Re-locate an error raised with a positional row at the row number the user sees."""
    row = int(lines[e.row]) if e.row is not None and 0 <= e.row < len(lines) else e.row
    return DataError(e.message, file=where, row=row, column=e.column, device=e.device)


def _require_device_ids(df: pd.DataFrame, lines: np.ndarray, where: str) -> None:
    if "device_id" not in df.columns:
        raise DataError(f"missing column(s) ['device_id']; found {list(df.columns)}", file=where)
    ids = df["device_id"]
    bad = (ids.isna() | (ids.astype(str).str.strip() == "")).to_numpy()
    if bad.any():
        raise DataError(
            "missing device_id", file=where, row=int(lines[np.flatnonzero(bad)[0]]), column="device_id"
        )


# ---------------------------------------------------------------------------------------------- per kind
def parse_readings(f: ExportFile) -> pd.DataFrame:
    """One readings file in the format's dtypes."""
    df, lines = read_raw(f)
    if df.empty:
        log.warning("%s: no rows", f.where)
    _require_device_ids(df, lines, f.where)
    extra = sorted(set(df.columns) - KNOWN_READING_COLUMNS - {"filled"})
    if extra:
        log.warning("%s: ignoring unknown column(s) %s", f.where, extra)
    try:
        return coerce_readings(df, where=f.where)
    except DataError as e:
        raise _at_user_row(e, lines, f.where) from None


def parse_labels(f: ExportFile) -> pd.DataFrame:
    """One labels file in the format's dtypes, appliance names normalised to the vocabulary."""
    df, lines = read_raw(f)
    _require_device_ids(df, lines, f.where)
    try:
        out = coerce_labels(df, where=f.where)
    except DataError as e:
        raise _at_user_row(e, lines, f.where) from None
    names = {}
    for name in out["appliance"].unique():
        try:
            names[name] = normalize_appliance(name)
        except DataError as e:
            row = int(lines[int(np.flatnonzero((out["appliance"] == name).to_numpy())[0])])
            raise DataError(e.message, file=f.where, row=row, column="appliance") from None
    out["appliance"] = out["appliance"].map(names)
    return out


def parse_ground_truth(f: ExportFile) -> pd.DataFrame:
    """One ground-truth file: device_id, timestamp and watts per (normalised) appliance column."""
    df, lines = read_raw(f)
    _require_device_ids(df, lines, f.where)
    rename = {}
    for col in df.columns:
        if col in ("device_id", "timestamp"):
            continue
        try:
            rename[col] = normalize_appliance(str(col))
        except DataError as e:
            raise DataError(e.message, file=f.where, column=str(col)) from None
    df = df.rename(columns=rename)
    try:
        return coerce_ground_truth(df, sorted(set(rename.values())), where=f.where)
    except DataError as e:
        raise _at_user_row(e, lines, f.where) from None


def read_devices_json(path: Path, where: str) -> dict[str, DeviceInfo]:
    """devices.json: a list of DeviceInfo objects, keyed by device id."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", file=where, row=e.lineno) from None
    if not isinstance(raw, list):
        raise DataError("expected a JSON list of device objects", file=where)
    out: dict[str, DeviceInfo] = {}
    for i, entry in enumerate(raw):
        try:
            info = DeviceInfo.model_validate(entry)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(map(str, err["loc"]))
            raise DataError(f"entry {i + 1}: {err['msg']}", file=where, column=loc) from None
        apps = [normalize_appliance(a, where=f"{where} entry {i + 1}") for a in info.appliances]
        out[info.device_id] = info.model_copy(update={"appliances": apps})
    return out


# ---------------------------------------------------------------------------------------------- folder
@dataclass
class Exports:
    """Everything parsed from one export folder, rows in file order (later files last)."""

    readings: pd.DataFrame
    labels: pd.DataFrame | None
    ground_truth: pd.DataFrame | None
    devices: dict[str, DeviceInfo]
    files: list[str] = field(default_factory=list)

    @property
    def appliances(self) -> list[str]:
        """Sorted vocabulary: ground-truth columns, labelled appliances and device inventories."""
        names: set[str] = set()
        if self.ground_truth is not None:
            names |= set(self.ground_truth.columns) - {"device_id", "timestamp"}
        if self.labels is not None:
            names |= set(self.labels["appliance"])
        for info in self.devices.values():
            names |= set(info.appliances)
        return sorted(names)


def _concat_or_none(frames: list[pd.DataFrame]) -> pd.DataFrame | None:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else None


def default_devices(exports: Exports) -> dict[str, DeviceInfo]:
    """Metadata for devices that devices.json does not describe: defaults plus the appliances seen."""
    missing = sorted(set(exports.readings["device_id"]) - set(exports.devices))
    if not missing:
        return {}
    log.warning(
        "%d device(s) not in devices.json (defaults site_type=home, timezone=UTC apply unless an earlier "
        "sync described them): %s",
        len(missing),
        ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else ""),
    )
    out = {}
    for dev in missing:
        seen: set[str] = set()
        if exports.labels is not None:
            seen |= set(exports.labels.loc[exports.labels["device_id"] == dev, "appliance"])
        if exports.ground_truth is not None:
            g = exports.ground_truth[exports.ground_truth["device_id"] == dev]
            seen |= {c for c in g.columns[2:] if g[c].notna().any()}
        out[dev] = DeviceInfo(device_id=dev, appliances=sorted(seen))
    return out


def read_exports(folder: Path, where_of: Callable[[Path], str] | None = None) -> Exports:
    """Parse every export file under ``folder``; the first bad row stops with a DataError naming it."""
    files = discover(folder, where_of)
    parsers = {"readings": parse_readings, "labels": parse_labels, "ground_truth": parse_ground_truth}
    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in EXPORT_KINDS}
    for f in files:
        frames[f.kind].append(parsers[f.kind](f))
        log.info("read %s: %d rows", f.where, len(frames[f.kind][-1]))
    devices_path = folder / DEVICES_FILE
    devices = (
        read_devices_json(devices_path, where_of(devices_path) if where_of else DEVICES_FILE)
        if devices_path.is_file()
        else {}
    )
    readings = _concat_or_none(frames["readings"])
    if readings is None:
        raise DataError("the readings files hold no rows", file=folder)
    return Exports(
        readings=readings,
        labels=_concat_or_none(frames["labels"]),
        ground_truth=_concat_or_none(frames["ground_truth"]),
        devices=devices,
        files=[f.where for f in files],
    )
