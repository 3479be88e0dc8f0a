"""Report data: per device and local day, week and month, energy per appliance and the unexplained remainder,
on-hours, cycles, peak power, share, cost under a tariff, notable events and gaps (see docs/reports.md).

``device_report`` / ``report_for_series`` are the pure per-device core (no files, no model);
``report_for_readings`` grids and predicts one device's readings with a model bundle first (the service);
``report_dataset`` is the batch job (``airwatt report``). Names load on first use, so importing the
package (e.g. for the CLI) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airwatt.report.core import (
        UNEXPLAINED,
        DeviceReport,
        DeviceSeries,
        Period,
        device_report,
        report_for_series,
    )
    from airwatt.report.run import report_dataset, report_for_readings

_WHERE = {
    "UNEXPLAINED": "airwatt.report.core",
    "DeviceReport": "airwatt.report.core",
    "DeviceSeries": "airwatt.report.core",
    "Period": "airwatt.report.core",
    "device_report": "airwatt.report.core",
    "report_for_series": "airwatt.report.core",
    "report_dataset": "airwatt.report.run",
    "report_for_readings": "airwatt.report.run",
}
__all__ = [
    "UNEXPLAINED",
    "DeviceReport",
    "DeviceSeries",
    "Period",
    "device_report",
    "report_dataset",
    "report_for_readings",
    "report_for_series",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'airwatt.report' has no attribute {name!r}")
