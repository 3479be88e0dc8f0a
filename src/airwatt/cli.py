"""The `airwatt` command line. Thin: parse options, load params.yaml, call one library function.

Heavy imports happen inside the commands so `airwatt --help` stays fast.
"""

from __future__ import annotations

import logging
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from airwatt.errors import AirwattError

log = logging.getLogger("airwatt")

app = typer.Typer(
    help="AirWatt ML workbench: energy-disaggregation data, models, serving and labeling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="Beta-user datasets: simulate, import, sync, validate, prepare.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read tunables from.")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    from airwatt.logs import setup_logging

    setup_logging(verbose)


def run() -> None:
    """Entry point: AirwattError becomes a one-line message and exit code 2 (no traceback)."""
    try:
        app()
    except AirwattError as e:
        log.error("%s", e)
        sys.exit(2)


class ImportKind(StrEnum):
    redd = "redd"
    refit = "refit"
    ukdale = "ukdale"


@data_app.command("simulate")
def simulate_cmd(
    out: Annotated[Path, typer.Option(help="Output dataset directory (replaced atomically).")],
    devices: Annotated[int | None, typer.Option(help="Number of devices [params: simulate.devices].")] = None,
    days: Annotated[float | None, typer.Option(help="Days to simulate [params: sync.days].")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed [params: simulate.seed].")] = None,
    start: Annotated[
        str | None, typer.Option(help="First timestamp, ISO 8601 UTC [params: sync.start].")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Generate a simulated beta fleet at 5 s: homes, cafes and restaurants, deterministic per seed."""
    from airwatt.config import load_params
    from airwatt.simulate import simulate_fleet

    p = load_params(params)
    cfg = p.simulate.model_copy(
        update={k: v for k, v in {"devices": devices, "seed": seed}.items() if v is not None}
    )
    manifest = simulate_fleet(
        out, cfg, start=start or p.sync.start, days=days or p.sync.days, interval_s=p.data.interval_s
    )
    log.info(
        "wrote %s: %d devices, %d readings", out, len(manifest.devices), manifest.tables["readings"].rows
    )


@data_app.command("import")
def import_cmd(
    kind: Annotated[
        ImportKind,
        typer.Argument(
            help="Public dataset: redd (synchronised CSV or raw low_freq), "
            "refit (8 s CSV or monthly 30 s gzip), ukdale (6 s CSV)."
        ),
    ],
    src: Annotated[Path, typer.Argument(help="Folder (or file) holding the public dataset.")],
    out: Annotated[Path, typer.Option(help="Output dataset directory (replaced atomically).")],
    houses: Annotated[
        list[int] | None, typer.Option("--house", help="Only these houses (repeatable).")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Convert REDD, REFIT or UK-DALE to the AirWatt format on the 5 s grid, with on/off labels."""
    from airwatt.config import load_params
    from airwatt.importers import import_dataset

    p = load_params(params)
    manifest = import_dataset(
        kind.value,
        src,
        out,
        houses=houses,
        interval_s=p.data.interval_s,
        max_fill_s=p.import_.max_fill_s,
    )
    log.info(
        "wrote %s: %d devices, %d readings, %d labels",
        out,
        len(manifest.devices),
        manifest.tables["readings"].rows,
        manifest.tables["labels"].rows,
    )


@data_app.command("sync")
def sync_cmd(
    out: Annotated[Path, typer.Option(help="Synced dataset directory (merged idempotently).")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Pull the two-week dataset from the source named in params.yaml (sync.source)."""
    from airwatt.config import load_params
    from airwatt.sync import sync

    manifest = sync(load_params(params), out)
    log.info(
        "synced %s: %d devices, %d readings", out, len(manifest.devices), manifest.tables["readings"].rows
    )


@data_app.command("validate")
def validate_cmd(
    data: Annotated[Path, typer.Argument(help="Dataset directory to validate.")],
    docs: Annotated[Path | None, typer.Option(help="Write Great Expectations Data Docs (HTML) here.")] = None,
    summary: Annotated[Path | None, typer.Option(help="Write a JSON summary (DVC metrics) here.")] = None,
    publish: Annotated[
        Path | None,
        typer.Option(help="On success, copy the dataset here (atomically); on failure leave it untouched."),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Run the expectation suites on readings, ground truth and labels; exit 1 if a 'fail' one fails."""
    from airwatt.config import load_params
    from airwatt.validation import validate_dataset

    result = validate_dataset(
        data, load_params(params), docs_dir=docs, summary_path=summary, publish_to=publish
    )
    typer.echo(result.format_text())
    if not result.success:
        raise typer.Exit(1)


@data_app.command("prepare")
def prepare_cmd(
    data: Annotated[Path, typer.Argument(help="Validated dataset directory.")],
    out: Annotated[Path, typer.Option(help="Prepared output directory (replaced atomically).")],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Split devices into train/val/test, fit normalisation on train devices, write the 5 s grid arrays."""
    from airwatt.config import load_params
    from airwatt.prepare import prepare

    summary = prepare(data, load_params(params), out)
    log.info("prepared %s: %s", out, summary)


@data_app.command("info")
def info_cmd(data: Annotated[Path, typer.Argument(help="Dataset directory.")]) -> None:
    """Print a dataset's manifest summary: devices, span, appliances, row counts."""
    from airwatt.dataset import read_manifest

    m = read_manifest(data)
    typer.echo(
        f"{data}: {m.name} (schema {m.schema_version}), interval {m.interval_s:g} s, {m.start} .. {m.end}"
    )
    for name, t in m.tables.items():
        typer.echo(f"  {name:<13} {t.rows:>12,d} rows")
    for d in m.devices:
        typer.echo(
            f"  {d.device_id:<14} {d.site_type:<10} {d.timezone:<22} "
            f"gt={'yes' if d.has_ground_truth else 'no'}"
            f" {', '.join(d.appliances)}"
        )


if __name__ == "__main__":
    run()
