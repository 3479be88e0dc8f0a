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
    t = summary.totals
    log.info(
        "wrote %s: %d devices, %.1f kWh measured (%.1f by appliances), cost %.2f %s, %.1f h missing, "
        "%d events",
        out,
        len(summary.devices),
        t.measured_kwh,
        t.appliances_kwh,
        t.cost,
        summary.currency,
        t.missing_hours,
        t.events,
    )


class EngineChoice(StrEnum):
    local = "local"
    ray = "ray"


PARTIAL_FAILURE_EXIT = 3


def fleet_report_cmd(
    data: Annotated[Path, typer.Option(help="Dataset directory in the workbench format (e.g. data/synced).")],
    model: Annotated[
        str,
        typer.Option(
            help="MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/...) or a bundle dir."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(help="Output directory: tables partitioned by period; a rerun resumes it."),
    ],
    period: Annotated[
        PeriodChoice, typer.Option(help="Partition by local month or by ISO week.")
    ] = PeriodChoice.month,
    engine: Annotated[
        EngineChoice,
        typer.Option(help="ray: actors on a Ray cluster; local: one process, the same partition code."),
    ] = EngineChoice.ray,
    address: Annotated[
        str | None,
        typer.Option(help="An existing Ray cluster (ray://HOST:10001, or 'auto'); default: a local one."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Ray workers (one core and one model each); default: all CPUs.")
    ] = None,
    devices: Annotated[
        list[str] | None, typer.Option("--devices", help="Only these devices (repeatable).")
    ] = None,
    pages: Annotated[bool, typer.Option(help="Also write each partition's charts and HTML page.")] = False,
    params: Annotated[Path, typer.Option("--params", help="params.yaml to read tunables from.")] = Path(
        "params.yaml"
    ),
) -> None:
    """The monthly (or weekly) report job of a whole fleet: every device x period, on Ray. Resumable: a
    rerun skips partitions already written with the same model, params and readings. A failing partition is
    recorded in errors.parquet and the job goes on; exit status 3 when any failed, 0 when none."""
    from airwatt.config import load_params
    from airwatt.report.fleet import fleet_report

    p = load_params(params)
    s = fleet_report(
        model,
        data,
        out,
        period=period.value,
        params=p.report,
        engine=engine.value,
        address=address,
        workers=workers,
        devices=devices,
        pages=pages,
    )
    n = s.partitions
    log.info(
        "wrote %s: %d partitions of %d devices: %d done, %d skipped (already written), %d failed; "
        "%.1f s on %d worker(s): %s device-months per core-hour",
        out,
        n.planned,
        s.data.devices,
        n.done,
        n.skipped,
        n.failed,
        s.wall_s,
        s.workers,
        s.device_months_per_core_hour,
    )
    if n.failed:
        log.error("%d partition(s) failed: see %s", n.failed, out / "errors.parquet")
        raise typer.Exit(PARTIAL_FAILURE_EXIT)
