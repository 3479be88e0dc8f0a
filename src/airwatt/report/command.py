"""`airwatt report`: the batch report of a dataset (registered in airwatt.cli)."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger(__name__)


class PeriodChoice(StrEnum):
    week = "week"
    month = "month"


def report_cmd(
    data: Annotated[
        Path, typer.Option(help="Dataset directory in the workbench format (e.g. data/validated).")
    ],
    model: Annotated[
        str,
        typer.Option(
            help="MLflow model URI (models:/airwatt-disaggregator@champion, models:/NAME/VERSION, "
            "runs:/RUN_ID/model) or a local model bundle directory."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Report directory (replaced atomically), e.g. data/reports.")],
    period: Annotated[
        PeriodChoice,
        typer.Option(help="week: ISO-week tables, weekly view; month: months, last three months."),
    ] = PeriodChoice.week,
    devices: Annotated[
        list[str] | None, typer.Option("--devices", help="Only these devices (repeatable).")
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(help="A prepare split.json; with --split, report only that split's devices."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="train | val | test (with --split-file).")] = None,
    pages: Annotated[bool, typer.Option(help="Write the PNG charts and HTML page per device.")] = True,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read tunables from.")] = Path(
        "params.yaml"
    ),
) -> None:
    """Per device and local day, week or month: energy, on-hours, cycles, peak, share and cost per appliance
    and the unexplained remainder; events; gaps. Parquet + report.json + PNG/HTML pages."""
    from airwatt.config import load_params
    from airwatt.dataset import Dataset
    from airwatt.evaluate import select_devices
    from airwatt.report.run import report_dataset

    p = load_params(params)
    if split_file is not None or split is not None:
        devices = select_devices(Dataset(data), devices, split_file, split)
    summary = report_dataset(
        model,
        data,
        out,
        period=period.value,
        params=p.report,
        devices=devices,
        pages=pages,
    )
    t = summary["totals"]
    log.info(
        "wrote %s: %d devices, %.1f kWh measured (%.1f by appliances), cost %.2f %s, %.1f h missing, "
        "%d events",
        out,
        len(summary["devices"]),
        t["measured_kwh"],
        t["appliances_kwh"],
        t["cost"],
        summary["currency"],
        t["missing_hours"],
        t["events"],
    )
