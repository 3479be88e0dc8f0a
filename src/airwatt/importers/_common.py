"""Shared pieces of the importers: located CSV reading, column checks, grid -> dataset frames.

Errors name the file, the row and the column. Rows are the line numbers a user sees in the file
(1-based, the header is line 1), so ``sed -n 17p FILE`` shows the offending line.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from airwatt.appliances import APPLIANCES
from airwatt.dataset.io import to_utc_timestamps
from airwatt.errors import DataError
from airwatt.importers.resample import GridSeries
from airwatt.timeutil import from_epoch_ms, to_epoch_ms

AGGREGATE = "aggregate"  # the key of whole-house power in a loader's GridSeries
LINE_NOTE = "row = line number in the file"
US_RATED_MAX_W = 48_000.0  # 200 A split-phase service at 240 V: the common US household supply
UK_RATED_MAX_W = 23_000.0  # 100 A single-phase at 230 V: the common UK household supply


@dataclass(frozen=True)
class HouseSource:
    """One house of a public dataset, as found on disk, before its rows are read."""

    kind: str  # "redd" | "refit" | "ukdale"
    form: str  # which file layout, e.g. "synchronised CSV"
    house: int
    files: tuple[Path, ...]
    appliances: tuple[str, ...]  # canonical names, vocabulary order
    timezone: str
    rated_max_w: float
    timestamps: str  # how timestamps were obtained (provenance)
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def device_id(self) -> str:
        return f"{self.kind}-house{self.house}"


def vocabulary_order(names: Sequence[str]) -> tuple[str, ...]:
    """Canonical appliance names, unique, in the vocabulary's order (stable across imports)."""
    order = {name: i for i, name in enumerate(APPLIANCES)}
    return tuple(sorted(set(names), key=order.__getitem__))


def located(err: DataError, *, file: Path, first_line: int, note: str = LINE_NOTE) -> DataError:
    """Re-locate a DataError raised on a 0-based frame row to the file's line numbers."""
    row = None if err.row is None else err.row + first_line
    return DataError(f"{err.message} ({note})", file=file, row=row, column=err.column)


# ---------------------------------------------------------------------------------------------- reading
def header_of(path: Path, *, compression: str | None = None) -> list[str]:
    """The column names of a CSV file's first line (cheap: reads one line)."""
    require_file(path)
    opener = gzip.open if compression == "gzip" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as f:
            line = f.readline()
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        raise DataError(f"cannot read: {e}", file=path) from None
    if not line.strip():
        raise DataError("empty file (no header line)", file=path, row=1)
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]


def require_file(path: Path) -> None:
    if not path.is_file():
        raise DataError("file not found", file=path)


def read_csv(
    path: Path,
    *,
    compression: str | None = None,
    sep: str = ",",
    names: list[str] | None = None,
) -> pd.DataFrame:
    """Read a CSV with the fast pyarrow parser; on a malformed file, re-parse to report the bad line."""
    require_file(path)
    # Only an empty cell is missing: text such as "n/a" or "NULL" is reported, not silently read as NaN.
    kw: dict[str, object] = {
        "compression": compression,
        "sep": sep,
        "keep_default_na": False,
        "na_values": [""],
    }
    if names is not None:
        kw.update(header=None, names=names)
    try:
        return pd.read_csv(path, engine="pyarrow", **kw)
    except pd.errors.EmptyDataError:
        raise DataError("empty file", file=path) from None
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read: {e}", file=path) from None
    except (pa.ArrowInvalid, ValueError):
        pass  # pyarrow's messages give no line number: the C parser's do
    try:
        return pd.read_csv(path, engine="c", **kw)
    except pd.errors.EmptyDataError:
        raise DataError("empty file", file=path) from None
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as e:
        raise DataError(f"not a valid CSV: {str(e).strip()}", file=path) from None


def require_rows(df: pd.DataFrame, path: Path) -> None:
    if len(df) == 0:
        raise DataError("no data rows (only a header)", file=path)


def require_columns(df: pd.DataFrame, required: Sequence[str], path: Path) -> None:
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; found {list(df.columns)}", file=path, column=missing[0]
        )


def power_values(df: pd.DataFrame, column: str, path: Path, *, first_line: int) -> np.ndarray:
    """A power column as float64 (NaN where blank); text is an error naming the line and column."""
    s = df[column]
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    text = s.astype("string").str.strip()
    blank = (text.isna() | (text == "")).to_numpy()
    num = pd.to_numeric(text.mask(blank), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.isnan(num) & ~blank
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"not a number: {s.iloc[i]!r} ({LINE_NOTE})", file=path, row=first_line + i, column=column
        )
    return num


def utc_ms_aware(df: pd.DataFrame, column: str, path: Path, *, first_line: int) -> np.ndarray:
    """Timestamps that must carry a UTC offset ("+00:00", "Z") as epoch ms; naive/mixed/unparsable: errors."""
    s = df[column]
    if pd.api.types.is_datetime64_dtype(s.dtype) and not isinstance(s.dtype, pd.DatetimeTZDtype):
        raise DataError(
            f"timestamps carry no timezone; this form has UTC offsets ('+00:00') ({LINE_NOTE})",
            file=path,
            row=first_line,
            column=column,
        )
    try:
        parsed = to_utc_timestamps(s, where=str(path), column=column)
    except DataError as e:
        raise located(e, file=path, first_line=first_line) from None
    return to_epoch_ms(parsed)


def utc_ms_naive(df: pd.DataFrame, column: str, path: Path, *, first_line: int) -> np.ndarray:
    """Naive 'YYYY-MM-DD HH:MM:SS' timestamps read as UTC, as epoch ms; offsets or text are errors."""
    s = df[column]
    if isinstance(s.dtype, pd.DatetimeTZDtype):
        return to_epoch_ms(s)
    if pd.api.types.is_datetime64_dtype(s.dtype):
        if s.isna().any():
            i = int(np.flatnonzero(s.isna().to_numpy())[0])
            raise DataError(f"missing timestamp ({LINE_NOTE})", file=path, row=first_line + i, column=column)
        return to_epoch_ms(s.dt.tz_localize("UTC"))
    text = s.astype("string").str.strip()
    parsed = pd.to_datetime(text, format="%Y-%m-%d %H:%M:%S", errors="coerce")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        value = s.iloc[i]
        has_offset = isinstance(value, str) and re.search(r"(?:Z|[+-]\d\d:?\d\d)$", value.strip()) is not None
        why = (
            "mixed timezones: this value has a UTC offset while the file's times are naive (read as UTC)"
            if has_offset
            else "unparsable timestamp (expected 'YYYY-MM-DD HH:MM:SS')"
        )
        raise DataError(f"{why}: {value!r} ({LINE_NOTE})", file=path, row=first_line + i, column=column)
    return to_epoch_ms(parsed.dt.tz_localize("UTC"))


def check_increasing(
    t_ms: np.ndarray, path: Path, column: str, *, first_line: int, strict: bool = True
) -> None:
    """Source timestamps must increase within a file: a step back (or, when strict, a repeat) is an error."""
    step = np.diff(t_ms)
    bad = np.flatnonzero(step <= 0 if strict else step < 0)
    if len(bad):
        i = int(bad[0]) + 1
        prev = from_epoch_ms(t_ms[i - 1 : i])[0]
        raise DataError(
            f"timestamp does not increase (previous row {prev.isoformat()}) ({LINE_NOTE})",
            file=path,
            row=first_line + i,
            column=column,
        )


# ---------------------------------------------------------------------------------------------- frames
def grid_frames(grid: GridSeries, appliances: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(readings, ground truth) frames of one device from a loader's grid."""
    ts = from_epoch_ms(grid.timestamps_ms)
    readings = pd.DataFrame(
        {
            "timestamp": ts,
            "power_w": grid.values[AGGREGATE].astype(np.float32),
            "filled": grid.filled[AGGREGATE],
        }
    )
    gt = pd.DataFrame({"timestamp": ts, **{a: grid.values[a].astype(np.float32) for a in appliances}})
    return readings, gt


# ------------------------------------------------------------------------------------ timestamped CSV
def compression_of(path: Path) -> str | None:
    return "gzip" if path.suffix in (".gz", ".gzip") else None


def appliance_columns(header: Sequence[str], skip: Sequence[str], path: Path) -> dict[str, str]:
    """{source column: canonical appliance} for every column not in ``skip``, loads outside the vocabulary
    (airwatt.appliances.NOT_IN_VOCABULARY) left out; unknown names are errors. Several columns may map to one
    appliance (freezer_1, freezer_2): loaders sum them."""
    from airwatt.appliances import vocabulary_name

    skip_lower = {s.lower() for s in skip}
    names = {c: vocabulary_name(c, where=str(path)) for c in header if c.lower() not in skip_lower}
    return {c: name for c, name in names.items() if name is not None}


def skipped_columns(header: Sequence[str], skip: Sequence[str], kept: Mapping[str, str]) -> list[str]:
    """The columns appliance_columns left out (``kept``: its result): loads outside the vocabulary, for the
    provenance."""
    skip_lower = {s.lower() for s in skip}
    return [c for c in header if c.lower() not in skip_lower and c not in kept]


def find_column(header: Sequence[str], name: str, path: Path) -> str:
    """The header's spelling of ``name`` (case-insensitive); DataError when absent."""
    for c in header:
        if c.lower() == name.lower():
            return c
    raise DataError(f"missing column {name!r}; found {list(header)}", file=path, row=1, column=name)


def load_timestamped_csvs(
    files: Sequence[Path],
    appliances: Sequence[str],
    *,
    time_column: str,
    aggregate_column: str,
    naive_utc: bool,
    interval_s: float,
    max_fill_s: float,
) -> GridSeries:
    """CSV files with a timestamp, an aggregate and appliance columns, concatenated onto one grid."""
    from airwatt.importers.resample import resample_to_grid

    times: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {a: [] for a in (AGGREGATE, *appliances)}
    for path in files:
        compression = compression_of(path)
        header = header_of(path, compression=compression)
        t_col = find_column(header, time_column, path)
        agg_col = find_column(header, aggregate_column, path)
        mapping = appliance_columns(header, [t_col, agg_col], path)
        df = read_csv(path, compression=compression)
        require_rows(df, path)
        to_ms = utc_ms_naive if naive_utc else utc_ms_aware
        t = to_ms(df, t_col, path, first_line=2)
        check_increasing(t, path, t_col, first_line=2)
        times.append(t)
        cols[AGGREGATE].append(power_values(df, agg_col, path, first_line=2))
        for a in appliances:
            present = [power_values(df, c, path, first_line=2) for c, name in mapping.items() if name == a]
            cols[a].append(np.sum(present, axis=0) if present else np.full(len(df), np.nan))
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    return resample_to_grid(np.concatenate(times), columns, interval_s=interval_s, max_fill_s=max_fill_s)
