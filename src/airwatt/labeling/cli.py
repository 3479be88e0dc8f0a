"""`airwatt label setup | push | pull`: thin commands over airwatt.labeling (registered in airwatt.cli)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

log = logging.getLogger("airwatt")

label_app = typer.Typer(
    rich_markup_mode=None,  # help text as written: "[params: ...]" is not markup
    help="Label Studio round trip: project setup, active-learning push, pull into labels.parquet. "
    "The API token comes from AIRWATT_LABEL_STUDIO_TOKEN or LABEL_STUDIO_API_KEY.",
    no_args_is_help=True,
)

DataOpt = Annotated[Path, typer.Option("--data", help="Dataset directory (e.g. data/synced).")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="Label Studio URL (default: params label.url).")]
ParamsOpt = Annotated[Path, typer.Option("--params", help="params.yaml to read tunables from.")]


@label_app.command("setup")
def setup_cmd(data: DataOpt, url: UrlOpt = None, params: ParamsOpt = Path("params.yaml")) -> None:
    """Create the Label Studio project, or update its labeling config to the dataset's inventory."""
    from airwatt.config import load_params
    from airwatt.dataset import read_manifest
    from airwatt.labeling.push import connect, setup_project

    p = load_params(params)
    result = setup_project(connect(p.label, url), read_manifest(data), p.label.project_title)
    typer.echo(f"project {result.project.id} {result.project.title!r}: {result.action}")


@label_app.command("push")
def push_cmd(
    data: DataOpt,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Model bundle dir or MLflow URI (models:/airwatt-disaggregator@champion); repeat for "
            "disagreement. The first pre-annotates. None: windows drawn at random, no pre-annotations.",
        ),
    ] = None,
    budget: Annotated[int | None, typer.Option(help="Tasks to add (default: params label.budget).")] = None,
    devices: Annotated[list[str] | None, typer.Option("--device", help="Only these devices.")] = None,
    report: Annotated[Path, typer.Option(help="Push report JSON.")] = Path("data/labeling/push.json"),
    url: UrlOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Pick the windows worth a person's time and import them as tasks with the model's pre-annotations."""
    from airwatt.config import load_params
    from airwatt.labeling.push import push

    r = push(
        load_params(params),
        data,
        model_uris=model or [],
        budget=budget,
        url=url,
        report_path=report,
        devices=devices,
    )
    typer.echo(f"pushed {len(r.pushed)} tasks ({r.already_pushed} pushed before); report {report}")


@label_app.command("pull")
def pull_cmd(
    data: DataOpt,
    report: Annotated[Path, typer.Option(help="Pull report JSON.")] = Path("data/labeling/pull.json"),
    url: UrlOpt = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Merge finished annotations into the dataset's labels.parquet; report skips and agreement."""
    from airwatt.config import load_params
    from airwatt.labeling.pull import pull

    r = pull(load_params(params), data, url=url, report_path=report)
    skipped = r["skipped"]["counts"]
    typer.echo(
        f"{r['labels']['annotator_rows']} annotator label rows "
        f"({'updated' if r['labels']['changed'] else 'unchanged'}); skipped: {skipped or 'none'}; "
        f"report {report}"
    )
