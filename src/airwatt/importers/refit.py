"""REFIT (Murray et al. 2017, CC BY 4.0) in three forms, detected from the files in SRC.

**8 s CSV** (``*.csv``: timestamp with a UTC offset, aggregate, one column per appliance), as published by
REFIT-NILM. The file names carry no house number: files not named ``..house{N}..`` are REFIT house 2, the
house these files hold (see ../shared/data/README.md).

**Monthly 30 s gzip CSV** (``REFIT_House{N}_YYYY-MM.gzip``: Time, Aggregate, Kettle, Dishwasher,
WashingMachine, Microwave). ``Time`` is naive and is read as **UTC**: the grid runs through both daylight-
saving changes without a missing or repeated hour, and it holds clock times (e.g. 01:00-02:00 on
2015-03-29) that do not exist in Europe/London, so UK local time cannot be what it means. Rows where every
column is 0 W are meter outages; they are kept as they are (the validation suite flags them), as are the
45-minute all-zero blocks near 01:00 UTC on the spring-forward nights, which look like a DST artefact of
the source. A 30 s value is taken as the mean over [Time, Time + 30 s), so its five following 5 s slots are
forward-filled (``filled`` = true).

**Day CSV** (``refit_house{N}_YYYY-MM-DD.csv[.gz]``: timestamp with a UTC offset, aggregate, one column per
sub-meter), one day of the raw release per house, polled every ~7 s (irregular): mean per 5 s slot, short
gaps forward-filled. Its columns use REFIT's appliance names; a second unit of one kind (``freezer_1``,
``freezer_2``) is summed into one appliance, and loads outside the vocabulary (``kenwood_kmix``, ``vivarium``,
...; airwatt.appliances.NOT_IN_VOCABULARY) are left out and listed in the provenance: their power stays in
the aggregate.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from airwatt.errors import DataError
from airwatt.importers._common import (
    UK_RATED_MAX_W,
    HouseSource,
    appliance_columns,
    compression_of,
    find_column,
    header_of,
    load_timestamped_csvs,
    skipped_columns,
    vocabulary_order,
)
from airwatt.importers.resample import GridSeries

TIMEZONE = "Europe/London"
MONTHLY_FILE = re.compile(r"^REFIT_House(\d+)_(\d{4})-(\d{2})\.(?:gzip|gz|csv)$", re.IGNORECASE)
DAY_FILE = re.compile(r"^refit_house(\d+)_(\d{4}-\d{2}-\d{2})\.csv(?:\.gz)?$", re.IGNORECASE)
HOUSE_IN_NAME = re.compile(r"house_?(\d+)", re.IGNORECASE)
DEFAULT_8S_HOUSE = 2  # the REFIT-NILM 8 s files (REFIT_HF_*.csv) hold house 2
FORMS = {
    "monthly 30 s gzip CSV": ("Time", "Aggregate", True),  # time column, aggregate column, naive (UTC)
    "8 s CSV": ("timestamp", "aggregate", False),
    "day CSV": ("timestamp", "aggregate", False),
}


def find_houses(
    src: Path, houses: list[int] | None, *, window_ms: tuple[int | None, int | None] = (None, None)
) -> list[HouseSource]:
    """The houses under ``src``; monthly files wholly outside ``window_ms`` are left unread."""
    files = [src] if src.is_file() else sorted(src.iterdir()) if src.is_dir() else None
    if files is None:
        raise DataError("REFIT source not found", file=src)
    days = [p for p in files if DAY_FILE.match(p.name)]
    monthly = [p for p in files if MONTHLY_FILE.match(p.name)]
    csvs = [p for p in files if p.suffix.lower() == ".csv" and p not in days and p not in monthly]
    if sum(bool(x) for x in (days, monthly, csvs)) > 1:
        raise DataError(
            "holds more than one REFIT form (monthly 30 s, 8 s CSV, day CSV): point at one folder", file=src
        )
    if days:
        by_house = _group(days, _house_of_day_file)
        form = "day CSV"
    elif monthly:
        by_house = _group(monthly, _house_of_monthly_file)
        form = "monthly 30 s gzip CSV"
    elif csvs:
        by_house = _group(csvs, _house_of_8s_file)
        form = "8 s CSV"
    else:
        raise DataError(
            "no REFIT files found: expected REFIT_House{N}_YYYY-MM.gzip (30 s), *.csv (8 s) or "
            "refit_house{N}_YYYY-MM-DD.csv.gz (day)",
            file=src,
        )
    if houses is not None:
        missing = sorted(set(houses) - set(by_house))
        if missing:
            raise DataError(f"house(s) {missing} not found; available: {sorted(by_house)}", file=src)
    out = []
    for house in sorted(set(houses) if houses is not None else by_house):
        chosen = [p for p in by_house[house] if form != "monthly 30 s gzip CSV" or _month_in(p, window_ms)]
        if chosen:
            out.append(_source(house, chosen, form))
    return out


def _group(files: list[Path], house_of: Callable[[Path], int]) -> dict[int, list[Path]]:
    out: dict[int, list[Path]] = {}
    for p in files:
        out.setdefault(house_of(p), []).append(p)
    return out


def _house_of_monthly_file(path: Path) -> int:
    m = MONTHLY_FILE.match(path.name)
    assert m is not None
    return int(m[1])


def _house_of_day_file(path: Path) -> int:
    m = DAY_FILE.match(path.name)
    assert m is not None
    return int(m[1])


def _house_of_8s_file(path: Path) -> int:
    m = HOUSE_IN_NAME.search(path.stem)
    return int(m[1]) if m else DEFAULT_8S_HOUSE


def _month_in(path: Path, window_ms: tuple[int | None, int | None]) -> bool:
    """Whether the file's month overlaps the window (with a day's margin for the forward fill)."""
    m = MONTHLY_FILE.match(path.name)
    assert m is not None
    month = pd.Timestamp(year=int(m[2]), month=int(m[3]), day=1, tz="UTC")
    lo = (month - pd.Timedelta(days=1)).value // 1_000_000
    hi = (month + pd.offsets.MonthBegin(1) + pd.Timedelta(days=1)).value // 1_000_000
    start, end = window_ms
    return (end is None or lo < end) and (start is None or hi > start)


def _source(house: int, files: list[Path], form: str) -> HouseSource:
    time_col, agg_col, naive = FORMS[form]
    names: list[str] = []
    skipped: set[str] = set()
    for path in files:
        header = header_of(path, compression=compression_of(path))
        skip = [find_column(header, time_col, path), find_column(header, agg_col, path)]
        kept = appliance_columns(header, skip, path)
        names += kept.values()
        skipped.update(skipped_columns(header, skip, kept))
    return HouseSource(
        kind="refit",
        form=form,
        house=house,
        files=tuple(files),
        appliances=vocabulary_order(names),
        timezone=TIMEZONE,
        rated_max_w=UK_RATED_MAX_W,
        timestamps="from the source, naive times read as UTC" if naive else "from the source (UTC offsets)",
        extra={"skipped_columns": sorted(skipped)} if skipped else {},
    )


def load_house(source: HouseSource, *, interval_s: float, max_fill_s: float) -> GridSeries:
    """One house on the grid: AGGREGATE plus one column per appliance."""
    time_col, agg_col, naive = FORMS[source.form]
    return load_timestamped_csvs(
        source.files,
        source.appliances,
        time_column=time_col,
        aggregate_column=agg_col,
        naive_utc=naive,
        interval_s=interval_s,
        max_fill_s=max_fill_s,
    )
