"""UK-DALE (Kelly & Knottenbelt 2015, CC BY 4.0), the 6 s CSV form (timestamp with a UTC offset, aggregate,
one column per appliance), as published by REFIT-NILM for single days.

The house of a file comes from its name: ``..house{N}..``, or the REFIT-NILM split names of
../shared/data/README.md (``UKDALE_HF_train`` and ``_validation`` are house 2, ``_test`` is house 1).
Files of one house are concatenated in time; days between them come out as null ``power_w`` rows.
"""

from __future__ import annotations

import re
from pathlib import Path

from airwatt.errors import DataError
from airwatt.importers._common import (
    UK_RATED_MAX_W,
    HouseSource,
    appliance_columns,
    find_column,
    header_of,
    load_timestamped_csvs,
    vocabulary_order,
)
from airwatt.importers.resample import GridSeries

TIMEZONE = "Europe/London"
TIME_COLUMN = "timestamp"
AGGREGATE_COLUMN = "aggregate"
HOUSE_IN_NAME = re.compile(r"house_?(\d+)", re.IGNORECASE)
SPLIT_HOUSE = {"train": 2, "validation": 2, "test": 1}  # REFIT-NILM's UKDALE_HF_{split}.csv
SPLIT_NAME = re.compile(r"_(train|validation|test)$", re.IGNORECASE)


def house_of(path: Path) -> int:
    """The UK-DALE house a file holds, from its name."""
    m = HOUSE_IN_NAME.search(path.stem)
    if m:
        return int(m[1])
    s = SPLIT_NAME.search(path.stem)
    if s:
        return SPLIT_HOUSE[s[1].lower()]
    raise DataError(
        "cannot tell the UK-DALE house from the file name: name it ..house{N}..csv "
        "(or UKDALE_HF_{train,validation,test}.csv)",
        file=path,
    )


def find_houses(src: Path, houses: list[int] | None) -> list[HouseSource]:
    """The houses under ``src`` (a folder of CSVs or one CSV)."""
    if src.is_file():
        files = [src]
    elif src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() == ".csv")
    else:
        raise DataError("UK-DALE source not found", file=src)
    if not files:
        raise DataError("no UK-DALE files found: expected *.csv with timestamp, aggregate, ...", file=src)
    by_house: dict[int, list[Path]] = {}
    for p in files:
        by_house.setdefault(house_of(p), []).append(p)
    if houses is not None:
        missing = sorted(set(houses) - set(by_house))
        if missing:
            raise DataError(f"house(s) {missing} not found; available: {sorted(by_house)}", file=src)
    return [_source(h, by_house[h]) for h in sorted(set(houses) if houses is not None else by_house)]


def _source(house: int, files: list[Path]) -> HouseSource:
    names: list[str] = []
    for path in files:
        header = header_of(path)
        skip = [find_column(header, TIME_COLUMN, path), find_column(header, AGGREGATE_COLUMN, path)]
        names += appliance_columns(header, skip, path).values()
    return HouseSource(
        kind="ukdale",
        form="6 s CSV",
        house=house,
        files=tuple(files),
        appliances=vocabulary_order(names),
        timezone=TIMEZONE,
        rated_max_w=UK_RATED_MAX_W,
        timestamps="from the source (UTC offsets)",
    )


def load_house(source: HouseSource, *, interval_s: float, max_fill_s: float) -> GridSeries:
    """One house on the grid: AGGREGATE plus one column per appliance."""
    return load_timestamped_csvs(
        source.files,
        source.appliances,
        time_column=TIME_COLUMN,
        aggregate_column=AGGREGATE_COLUMN,
        naive_utc=False,
        interval_s=interval_s,
        max_fill_s=max_fill_s,
    )
