"""REDD (Kolter & Johnson 2011) in two forms, detected from the files in SRC.

**Synchronised CSV** (``redd_house{N}_{K}.csv``, as in ../shared/data/redd): the first, unnamed column is a
row index, then one column per sub-metered appliance, and the last column ``main`` is the aggregate. The files
carry NO timestamps, so they are *reconstructed*, and the manifest says so:

* rows are placed evenly at the nominal period of 3.46 s (the median REDD low-frequency step), using the row
  index column: row i of a segment sits at ``segment start + (index_i - index_0) * 3.46 s``;
* a house's first segment (lowest K) starts at 2011-04-18 00:00 America/New_York (04:00 UTC), the start of
  the REDD low-frequency campaign at local midnight: dates and times of day are NOT the real ones;
* segments (files) follow each other in K order, separated by a marked gap of one hour: the real gaps are
  unknown (at least 20 s per the source), so the hour is a marker, long enough to come out as null
  ``power_w`` rows (never forward-filled). Missing K numbers (e.g. house 2 has no file 5) are listed in the
  provenance.

**Raw low_freq** (``house_N/channel_M.dat`` lines "unix_ts power", ``house_N/labels.dat`` lines "M name"):
real UTC timestamps. The aggregate is the sum of the ``mains`` channels (two legs of the split-phase supply),
each resampled to the grid first. Several channels with the same appliance (240 V loads on two legs, several
lighting circuits) are summed. Circuits that are not one appliance (outlets, GFI, sub-panel, smoke alarms,
"miscellaeneous", "unknown") are skipped and listed in the provenance; any other unknown name is an error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from airwatt.appliances import normalize_appliance
from airwatt.errors import DataError
from airwatt.importers._common import (
    AGGREGATE,
    LINE_NOTE,
    US_RATED_MAX_W,
    HouseSource,
    check_increasing,
    header_of,
    power_values,
    read_csv,
    require_columns,
    require_rows,
    vocabulary_order,
)
from airwatt.importers.resample import GridSeries, resample_channels, resample_to_grid

log = logging.getLogger(__name__)

TIMEZONE = "America/New_York"
ROW_PERIOD_S = 3.46  # nominal step of a synchronised row (median REDD low-frequency step)
SEGMENT_GAP_S = 3600.0  # marked gap placed between consecutive synchronised files
EPOCH = pd.Timestamp("2011-04-18T00:00:00", tz=TIMEZONE).tz_convert("UTC")  # reconstructed start
MAINS_COLUMN = "main"

SYNC_FILE = re.compile(r"^redd_house(\d+)_(\d+)\.csv$")
HOUSE_DIR = re.compile(r"^house_(\d+)$")
CHANNEL_FILE = "channel_{}.dat"
LABELS_FILE = "labels.dat"

# REDD's own spellings that the shared vocabulary does not carry (typos in labels.dat included).
REDD_NAMES = {
    "dishwaser": "dishwasher",
    "furance": "electric_furnace",
    "disposal": "waste_disposal",
    "electric_heat": "space_heater",
    "electronics": "consumer_electronics",
}
# labels.dat entries that are circuits feeding unknown loads, not one appliance: skipped.
REDD_CIRCUITS = frozenset(
    {
        "kitchen_outlets",
        "bathroom_gfi",
        "outlets_unknown",
        "outdoor_outlets",
        "subpanel",
        "smoke_alarms",
        "miscellaeneous",
        "miscellaneous",
        "unknown",
    }
)
MAINS_LABEL = "mains"


def appliance_name(name: str, where: Path) -> str:
    """A REDD appliance name in the AirWatt vocabulary; DataError naming ``where`` when unknown."""
    key = name.strip().lower().replace(" ", "_")
    return normalize_appliance(REDD_NAMES.get(key, name), where=str(where))


# ---------------------------------------------------------------------------------------------- discovery
def find_houses(src: Path, houses: list[int] | None) -> list[HouseSource]:
    """The houses under ``src`` in whichever REDD form it holds."""
    if src.is_file():
        if SYNC_FILE.match(src.name):
            return _sync_houses([src], houses)
        raise DataError("not a REDD file: expected redd_house{N}_{K}.csv or a folder", file=src)
    if not src.is_dir():
        raise DataError("REDD source not found", file=src)
    sync_files = sorted(p for p in src.iterdir() if SYNC_FILE.match(p.name))
    if sync_files:
        return _sync_houses(sync_files, houses)
    house_dirs = _raw_house_dirs(src)
    if house_dirs:
        return _raw_houses(house_dirs, houses)
    raise DataError(
        "no REDD files found: expected redd_house{N}_{K}.csv (synchronised form) "
        "or house_N/labels.dat with house_N/channel_M.dat (raw low_freq form)",
        file=src,
    )


def _raw_house_dirs(src: Path) -> list[Path]:
    if HOUSE_DIR.match(src.name) and (src / LABELS_FILE).exists():
        return [src]
    for root in (src, src / "low_freq"):
        if root.is_dir():
            dirs = [p for p in root.iterdir() if p.is_dir() and HOUSE_DIR.match(p.name)]
            if dirs:
                return sorted(dirs, key=lambda p: int(HOUSE_DIR.match(p.name)[1]))  # type: ignore[index]
    return []


def _selected(found: list[int], houses: list[int] | None, src: Path | str) -> list[int]:
    if houses is None:
        return sorted(found)
    missing = sorted(set(houses) - set(found))
    if missing:
        raise DataError(f"house(s) {missing} not found; available: {sorted(found)}", file=src)
    return sorted(set(houses))


def _sync_houses(files: list[Path], houses: list[int] | None) -> list[HouseSource]:
    by_house: dict[int, list[tuple[int, Path]]] = {}
    for p in files:
        m = SYNC_FILE.match(p.name)
        assert m is not None
        by_house.setdefault(int(m[1]), []).append((int(m[2]), p))
    out = []
    for house in _selected(list(by_house), houses, files[0].parent):
        segments = sorted(by_house[house])
        names: list[str] = []
        for _, path in segments:
            header = header_of(path)
            if header[-1] != MAINS_COLUMN:
                raise DataError(
                    f"the last column must be the aggregate {MAINS_COLUMN!r}; found {header}",
                    file=path,
                    row=1,
                    column=MAINS_COLUMN,
                )
            names += [appliance_name(c, path) for c in header[1:-1]]
        ks = [k for k, _ in segments]
        out.append(
            HouseSource(
                kind="redd",
                form="synchronised CSV",
                house=house,
                files=tuple(p for _, p in segments),
                appliances=vocabulary_order(names),
                timezone=TIMEZONE,
                rated_max_w=US_RATED_MAX_W,
                timestamps=(
                    f"reconstructed: rows placed every {ROW_PERIOD_S} s from {EPOCH.isoformat()}, "
                    f"files in segment order with a marked {SEGMENT_GAP_S:g} s gap between them; "
                    "dates and times of day are not the real ones"
                ),
                extra={"missing_segments": sorted(set(range(max(ks) + 1)) - set(ks))},
            )
        )
    return out


def _raw_houses(dirs: list[Path], houses: list[int] | None) -> list[HouseSource]:
    by_house = {int(HOUSE_DIR.match(d.name)[1]): d for d in dirs}  # type: ignore[index]
    out = []
    for house in _selected(list(by_house), houses, dirs[0].parent):
        d = by_house[house]
        channels = read_labels_dat(d / LABELS_FILE)
        mains = [m for m, name in channels.items() if name == MAINS_LABEL]
        if not mains:
            raise DataError(f"no {MAINS_LABEL!r} channel listed", file=d / LABELS_FILE)
        apps = {m: name for m, name in channels.items() if name not in (MAINS_LABEL, *REDD_CIRCUITS)}
        skipped = {m: name for m, name in channels.items() if name in REDD_CIRCUITS}
        canonical = {m: appliance_name(name, d / LABELS_FILE) for m, name in apps.items()}
        out.append(
            HouseSource(
                kind="redd",
                form="raw low_freq",
                house=house,
                files=(d / LABELS_FILE, *(d / CHANNEL_FILE.format(m) for m in channels)),
                appliances=vocabulary_order(list(canonical.values())),
                timezone=TIMEZONE,
                rated_max_w=US_RATED_MAX_W,
                timestamps="from the source (unix seconds, UTC)",
                extra={"mains": mains, "channels": canonical, "skipped_circuits": skipped},
            )
        )
    return out


def read_labels_dat(path: Path) -> dict[int, str]:
    """labels.dat as {channel number: REDD name}, lower-cased."""
    if not path.is_file():
        raise DataError("file not found (the raw form needs labels.dat)", file=path)
    out: dict[int, str] = {}
    for line_no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataError(f"expected 'CHANNEL NAME', got {line!r} ({LINE_NOTE})", file=path, row=line_no)
        out[int(parts[0])] = parts[1].lower()
    if not out:
        raise DataError("no channels listed", file=path)
    return out


# ---------------------------------------------------------------------------------------------- loading
def load_house(source: HouseSource, *, interval_s: float, max_fill_s: float) -> GridSeries:
    """One house on the grid: AGGREGATE plus one column per appliance."""
    if source.form == "synchronised CSV":
        return _load_sync(source, interval_s=interval_s, max_fill_s=max_fill_s)
    return _load_raw(source, interval_s=interval_s, max_fill_s=max_fill_s)


def _load_sync(source: HouseSource, *, interval_s: float, max_fill_s: float) -> GridSeries:
    period_ms = round(ROW_PERIOD_S * 1000)
    gap_ms = round(SEGMENT_GAP_S * 1000)
    seg_start_ms = int(EPOCH.value // 1_000_000)
    times: list[np.ndarray] = []
    cols: dict[str, list[np.ndarray]] = {a: [] for a in (AGGREGATE, *source.appliances)}
    for path in source.files:
        df = read_csv(path)
        require_rows(df, path)
        index_col = df.columns[0]
        require_columns(df, [MAINS_COLUMN], path)
        index = power_values(df, index_col, path, first_line=2)
        if np.isnan(index).any() or (index != np.round(index)).any():
            i = int(np.flatnonzero(np.isnan(index) | (index != np.round(index)))[0])
            raise DataError(
                f"row index must be a whole number ({LINE_NOTE})", file=path, row=i + 2, column=index_col
            )
        check_increasing(index.astype(np.int64), path, index_col, first_line=2)
        t = seg_start_ms + (index.astype(np.int64) - int(index[0])) * period_ms
        times.append(t)
        renamed = [(appliance_name(c, path), c) for c in df.columns[1:-1]]
        cols[AGGREGATE].append(power_values(df, MAINS_COLUMN, path, first_line=2))
        for a in source.appliances:
            present = [power_values(df, c, path, first_line=2) for name, c in renamed if name == a]
            cols[a].append(np.sum(present, axis=0) if present else np.full(len(df), np.nan))
        seg_start_ms = int(t[-1]) + gap_ms if len(t) else seg_start_ms
    t_all = np.concatenate(times)
    columns = {k: np.concatenate(v) for k, v in cols.items()}
    return resample_to_grid(t_all, columns, interval_s=interval_s, max_fill_s=max_fill_s)


def read_channel(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A raw channel_M.dat as (epoch ms, power W)."""
    df = read_csv(path, sep=" ", names=["unix_s", "power_w"])
    require_rows(df, path)
    seconds = power_values(df, "unix_s", path, first_line=1)
    if np.isnan(seconds).any():
        i = int(np.flatnonzero(np.isnan(seconds))[0])
        raise DataError(f"missing timestamp ({LINE_NOTE})", file=path, row=i + 1, column="unix_s")
    t_ms = np.round(seconds * 1000).astype(np.int64)
    check_increasing(t_ms, path, "unix_s", first_line=1, strict=False)
    return t_ms, power_values(df, "power_w", path, first_line=1)


def _load_raw(source: HouseSource, *, interval_s: float, max_fill_s: float) -> GridSeries:
    house_dir = source.files[0].parent
    mains: list[int] = source.extra["mains"]  # type: ignore[assignment]
    channels: dict[int, str] = source.extra["channels"]  # type: ignore[assignment]
    raw = {f"ch{m}": read_channel(house_dir / CHANNEL_FILE.format(m)) for m in [*mains, *channels]}
    grid = resample_channels(raw, interval_s, max_fill_s)
    values = {AGGREGATE: np.sum([grid.values[f"ch{m}"] for m in mains], axis=0)}
    filled = {AGGREGATE: np.any([grid.filled[f"ch{m}"] for m in mains], axis=0)}
    for a in source.appliances:
        values[a] = np.sum([grid.values[f"ch{m}"] for m, name in channels.items() if name == a], axis=0)
    return GridSeries(grid.timestamps_ms, values, filled)
