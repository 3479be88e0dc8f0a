"""The batch report of a dataset: device by device, grid the readings (prepare's grid and gap policy), predict
with the model bundle (``ModelBundle.predict_series``, the one prediction code path), run the pure per-device
report (airwatt.report.core) and write, atomically, one output directory::

    report.json                 what was reported: model, data, tariff, params, per-device totals, view, files
    days.parquet                device x local day: hours expected/measured/missing, measured, explained,
                                unexplained and clipped kWh, cost, peak W
    appliance_days.parquet      device x day x appliance (+ "unexplained"): energy_kwh, on_hours, cycles,
                                peak_w, share, cost
    periods.parquet             device x ISO week or calendar month (--period): the day columns summed
    appliance_periods.parquet   device x period x appliance
    events.parquet              device, kind, appliance, day, start, end, value, threshold, unit, message
    gaps.parquet                device, start, end, duration_s: runs of slots without a reading
    devices/<folder>/           daily_energy.png, share.png, on_hours.png, report.html (self-contained);
                                <folder> is the device id, or a slug + hash for ids unsafe as a name
                                (page_folder); report.json names each device's page

Memory is bounded by one device at a time: a device-month at 5 s is 518,400 slots.

report.json is an ``airwatt.results.ReportSummary`` (typed; ``report_dataset`` returns it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from airwatt.atomic import atomic_dir
from airwatt.config import ReportParams
from airwatt.dataset import Dataset, Manifest
from airwatt.dataset.io import frame_to_table
from airwatt.errors import ConfigError, DataError
from airwatt.prepare.grid import grid_device
from airwatt.report.core import DeviceReport, DeviceSeries, Period, device_report
from airwatt.results import (
    DeviceSummary,
    ModelInfo,
    PageView,
    Reconciliation,
    ReportData,
    ReportSummary,
    ReportTotals,
    ReportWindow,
    TableFile,
)
from airwatt.timeutil import to_epoch_ms

if TYPE_CHECKING:
    from airwatt.evaluate import Disaggregator

log = logging.getLogger(__name__)

_DATE = pa.date32()
_TS = pa.timestamp("ms", tz="UTC")
_F = pa.float64()
_S = pa.string()
_PER_DAY = [
    ("hours_expected", _F),
    ("hours_measured", _F),
    ("missing_hours", _F),
    ("measured_kwh", _F),
    ("explained_kwh", _F),
    ("unexplained_kwh", _F),
    ("clipped_kwh", _F),
    ("cost", _F),
    ("peak_w", _F),
]
_PER_APP = [
    ("appliance", _S),
    ("energy_kwh", _F),
    ("on_hours", _F),
    ("cycles", pa.int64()),
    ("peak_w", _F),
    ("share", _F),
    ("cost", _F),
]
SCHEMAS: dict[str, pa.Schema] = {
    "days": pa.schema([("device_id", _S), ("day", _DATE), *_PER_DAY]),
    "appliance_days": pa.schema([("device_id", _S), ("day", _DATE), *_PER_APP]),
    "periods": pa.schema(
        [("device_id", _S), ("period", _S), ("period_start", _DATE), *_PER_DAY, ("days", pa.int64())]
    ),
    "appliance_periods": pa.schema([("device_id", _S), ("period", _S), ("period_start", _DATE), *_PER_APP]),
    "events": pa.schema(
        [
            ("device_id", _S),
            ("kind", _S),
            ("appliance", _S),
            ("day", _DATE),
            ("start", _TS),
            ("end", _TS),
            ("value", _F),
            ("threshold", _F),
            ("unit", _S),
            ("message", _S),
        ]
    ),
    "gaps": pa.schema([("device_id", _S), ("start", _TS), ("end", _TS), ("duration_s", _F)]),
}
PAGE_FILES = ("daily_energy.png", "share.png", "on_hours.png", "report.html")


# ------------------------------------------------------------------------------------- one device
def series_from_readings(
    bundle: Disaggregator,
    readings: pd.DataFrame,
    *,
    device_id: str,
    timezone: str,
    inventory: Sequence[str] | None = None,
) -> DeviceSeries | None:
    """One device's readings (timestamp UTC, power_w) on the model's grid (its gap policy) with the model's
    predictions (its rule: for a real-time model, what the service answers), only the appliances of its
    ``inventory`` when given; None without readings."""
    if readings.empty:
        return None
    appliances = list(bundle.appliances)
    interval_s = bundle.spec.interval_s
    max_fill_s = bundle.spec.gap.max_fill_s
    g = grid_device(readings, None, None, appliances, interval_s=interval_s, max_fill_s=max_fill_s)
    pred = bundle.predict_series(g.aggregate_w, g.valid)
    return DeviceSeries(
        device_id,
        timezone,
        g.start_ms,
        interval_s,
        tuple(appliances),
        g.aggregate_w,
        g.valid,
        np.asarray(pred.power_w),
        np.asarray(pred.on, bool),
    ).only(inventory)


def report_for_readings(
    bundle: Disaggregator,
    readings: pd.DataFrame,
    *,
    params: ReportParams,
    timezone: str,
    period: Period = "week",
    device_id: str = "device",
    window_ms: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The JSON-able report of one device's readings (the service's ``POST /report``): gridded and predicted
    exactly as the batch job does."""
    series = series_from_readings(bundle, readings, device_id=device_id, timezone=timezone)
    if series is None:
        raise DataError("no readings to report on", device=device_id)
    return device_report(series, params, period=period, window_ms=window_ms).to_dict()


def _empty_series(bundle: Disaggregator, device_id: str, timezone: str, start_ms: int) -> DeviceSeries:
    a = len(bundle.appliances)
    return DeviceSeries(
        device_id,
        timezone,
        start_ms,
        bundle.spec.interval_s,
        tuple(bundle.appliances),
        np.zeros(0),
        np.zeros(0, bool),
        np.zeros((0, a), np.float32),
        np.zeros((0, a), bool),
    )


# ------------------------------------------------------------------------------------------ output
class TableWriter:
    """Streams each device's tables into one Parquet file per table (schemas above)."""

    def __init__(self, out_dir: Path, currency: str) -> None:
        self.out_dir = out_dir
        self.metadata = {b"currency": currency.encode()}
        self.rows = dict.fromkeys(SCHEMAS, 0)
        self._writers: dict[str, pq.ParquetWriter] = {}

    def write(self, report: DeviceReport) -> None:
        for name, schema in SCHEMAS.items():
            frame: pd.DataFrame = getattr(report, name)
            if frame.empty:
                continue
            schema = schema.with_metadata(self.metadata)
            if name not in self._writers:
                self._writers[name] = pq.ParquetWriter(
                    self.out_dir / f"{name}.parquet", schema, compression="zstd"
                )
            table = frame_to_table(frame, schema).replace_schema_metadata(self.metadata)
            self._writers[name].write_table(table)
            self.rows[name] += len(frame)

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for w in self._writers.values():
            w.close()
        if exc is None:
            for name, schema in SCHEMAS.items():
                if name not in self._writers:
                    pq.write_table(
                        schema.with_metadata(self.metadata).empty_table(), self.out_dir / f"{name}.parquet"
                    )


_PLAIN_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}")


def page_folder(device_id: str) -> str:
    """A device's page folder under ``devices/``: one folder per device id, always inside ``devices/``.

    An id that is already a safe, lower-case name (``sim-0003``) is used as it is. Any other id (``..``,
    ``a/b``, upper case, spaces, over 100 characters) becomes a readable slug plus ``~`` and 12 hex digits of
    its sha256: ``a_b~3f2a...``. Plain names never hold ``~``, so the two kinds never collide, and neither
    does ``a/b`` with ``a_b`` nor ``A`` with ``a`` on a case-insensitive filesystem.
    """
    if _PLAIN_ID.fullmatch(device_id):
        return device_id
    slug = re.sub(r"[^a-z0-9._-]", "_", device_id.lower())[:64].lstrip(".") or "_"
    return f"{slug}~{hashlib.sha256(device_id.encode()).hexdigest()[:12]}"


def write_device_page(out_dir: Path, report: DeviceReport, meta: dict[str, Any]) -> dict[str, Any]:
    """Charts and page of one device under ``out_dir``; returns the view it shows."""
    from airwatt.report.charts import choose_view, device_charts
    from airwatt.report.page import device_page

    view = choose_view(report.days, report.period)
    charts = device_charts(report, view)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, png in charts.items():
        (out_dir / name).write_bytes(png)
    (out_dir / "report.html").write_text(device_page(report, view, charts, meta), encoding="utf-8")
    return {"label": view.label, "first_day": str(view.days[0]), "last_day": str(view.days[-1])}


# ------------------------------------------------------------------------------------------ dataset
def dataset_window(manifest: Manifest) -> tuple[int, int] | None:
    """The dataset's [start, end) in epoch ms, when its manifest states one."""
    if manifest.start is None or manifest.end is None:
        return None
    ms = to_epoch_ms(
        pd.DatetimeIndex([pd.Timestamp(manifest.start), pd.Timestamp(manifest.end)]).tz_convert("UTC")
    )
    return int(ms[0]), int(ms[1])


def select_devices(ds: Dataset, devices: Sequence[str] | None) -> list[str]:
    if not devices:
        return sorted(ds.device_ids)
    unknown = sorted(set(devices) - set(ds.device_ids))
    if unknown:
        raise DataError(
            f"devices {unknown} are not in the dataset ({len(ds.device_ids)} devices)", file=ds.root
        )
    return sorted(set(devices))


def _check_out(out: Path) -> None:
    """Refuse to replace a non-empty directory that is not an earlier report (``--out .`` would wipe it)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.json").is_file())):
        raise ConfigError(f"{out}: exists and is not an earlier report directory; refusing to replace it")


def _tariff_text(params: ReportParams) -> str:
    t = params.tariff
    if t.kind == "flat":
        return f"flat {t.price_per_kwh:g} {t.currency}/kWh"
    if t.kind == "time_of_use":
        parts = ", ".join(f"{p.start}-{p.end} {p.price_per_kwh:g}" for p in t.periods)
        return f"time of use ({parts}; otherwise {t.price_per_kwh:g}) {t.currency}/kWh, local time"
    blocks = ", ".join(
        f"{'to ' + format(b.up_to_kwh, 'g') if b.up_to_kwh else 'above'} kWh {b.price_per_kwh:g}"
        for b in t.blocks
    )
    return f"tiered per local month ({blocks}) {t.currency}/kWh"


def report_bundle(
    bundle: Disaggregator,
    data: Path,
    out: Path,
    *,
    period: Period,
    params: ReportParams,
    devices: Sequence[str] | None = None,
    pages: bool = True,
    model_uri: str | Path | None = None,
) -> ReportSummary:
    """Report every selected device of ``data`` with ``bundle`` into ``out`` (module docstring)."""
    from airwatt.evaluate import model_info

    data, out = Path(data), Path(out)
    ds = Dataset(data)
    chosen = select_devices(ds, devices)
    _check_out(out)
    window = dataset_window(ds.manifest)
    model_text = str(model_uri) if model_uri is not None else bundle.spec.arch
    per_device: dict[str, DeviceSummary] = {}
    skipped: dict[str, str] = {}
    with atomic_dir(out) as tmp, TableWriter(tmp, params.tariff.currency) as tables:
        for dev in tqdm(chosen, desc="report", unit="device", disable=None):
            info = ds.manifest.device(dev)
            readings = ds.readings([dev], columns=["timestamp", "power_w"])
            kw = {"device_id": dev, "timezone": info.timezone}
            series = series_from_readings(bundle, readings, **kw, inventory=info.appliances)
            if series is None and window is None:
                skipped[dev] = "no readings and no dataset window"
                log.warning("device %s: no readings; skipped", dev)
                continue
            if series is None:
                log.warning("device %s: no readings; reported as missing for the whole window", dev)
                series = _empty_series(bundle, dev, info.timezone, window[0]).only(info.appliances)  # type: ignore[index]
            report = device_report(series, params, period=period, window_ms=window)
            tables.write(report)
            entry = DeviceSummary(
                timezone=info.timezone,
                site_type=info.site_type,
                totals=Reconciliation.model_validate(report.reconciliation),
                events=len(report.events),
                gaps=len(report.gaps),
            )
            if pages:
                meta = {"site_type": info.site_type, "model": model_text, "tariff": _tariff_text(params)}
                view = write_device_page(tmp / "devices" / page_folder(dev), report, meta)
                entry.view = PageView.model_validate(view)
                entry.page = f"devices/{page_folder(dev)}/report.html"
            per_device[dev] = entry
        if not per_device:
            raise DataError(f"no device to report on among {chosen}", file=ds.root)
        stated = ReportWindow(start=str(ds.manifest.start), end=str(ds.manifest.end)) if window else None
        summary = _summary(
            model_info(bundle, model_uri),
            ReportData(
                path=str(data), name=ds.manifest.name, devices=chosen, skipped_devices=skipped, window=stated
            ),
            period=period,
            params=params,
            max_fill_s=bundle.spec.gap.max_fill_s,
            tables={name: TableFile(file=f"{name}.parquet", rows=n) for name, n in tables.rows.items()},
            devices=per_device,
        )
        (tmp / "report.json").write_text(
            json.dumps(summary.model_dump(mode="json"), indent=2, default=str) + "\n"
        )  # in the atomic dir
    return summary


def _summary(
    model: ModelInfo,
    data: ReportData,
    *,
    period: Period,
    params: ReportParams,
    max_fill_s: float,
    tables: dict[str, TableFile],
    devices: dict[str, DeviceSummary],
) -> ReportSummary:
    """report.json: what was reported with and on, the params, per-table rows, per device, and totals."""
    return ReportSummary(
        model=model,
        data=data,
        period=period,
        currency=params.tariff.currency,
        tariff=_tariff_text(params),
        params=params,
        max_fill_s=max_fill_s,
        tables=tables,
        devices=devices,
        totals=ReportTotals(
            measured_kwh=float(sum(d.totals.measured_kwh for d in devices.values())),
            appliances_kwh=float(sum(d.totals.appliances_kwh for d in devices.values())),
            unexplained_kwh=float(sum(d.totals.unexplained_kwh for d in devices.values())),
            clipped_kwh=float(sum(d.totals.clipped_kwh for d in devices.values())),
            cost=float(sum(d.totals.cost for d in devices.values())),
            missing_hours=float(sum(d.totals.missing_hours for d in devices.values())),
            events=sum(d.events for d in devices.values()),
        ),
    )


def report_dataset(
    model: str | Path,
    data: Path,
    out: Path,
    *,
    period: Period,
    params: ReportParams,
    devices: Sequence[str] | None = None,
    pages: bool = True,
) -> ReportSummary:
    """Load ``model`` (bundle directory or MLflow URI), report ``data`` into ``out``; returns report.json."""
    from airwatt.model_uri import load_bundle

    data, out = Path(data), Path(out)
    ds = Dataset(data)  # bad data or selection fails before a model download
    select_devices(ds, devices)
    _check_out(out)
    bundle = load_bundle(model)
    return report_bundle(
        bundle, data, out, period=period, params=params, devices=devices, pages=pages, model_uri=model
    )
