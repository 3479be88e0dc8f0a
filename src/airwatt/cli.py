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
from airwatt.labeling.cli import label_app
from airwatt.report.command import fleet_report_cmd, report_cmd
from airwatt.serving.cli import serve_command

log = logging.getLogger("airwatt")

app = typer.Typer(
    rich_markup_mode=None,  # help text as written: "[params: ...]" is not markup
    help="AirWatt ML workbench: energy-disaggregation data, models, serving and labeling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    rich_markup_mode=None,  # help text as written: "[params: ...]" is not markup
    help="Beta-user datasets: simulate, import, sync, validate, prepare.",
    no_args_is_help=True,
)
fleet_app = typer.Typer(
    rich_markup_mode=None,
    help="Fleet-scale jobs on Ray: the monthly report of every device.",
    no_args_is_help=True,
)
fleet_app.command("report")(fleet_report_cmd)
app.add_typer(data_app, name="data")
app.add_typer(fleet_app, name="fleet")
app.add_typer(label_app, name="label")
app.command("report")(report_cmd)
app.command("serve")(serve_command)

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
            "refit (8 s CSV, monthly 30 s gzip or day CSV), ukdale (6 s CSV)."
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


@app.command("evaluate")
def evaluate_cmd(
    model: Annotated[
        str,
        typer.Option(
            help="MLflow model URI (models:/airwatt-disaggregator@champion, models:/NAME/VERSION, "
            "runs:/RUN_ID/model) or a local model bundle directory."
        ),
    ],
    data: Annotated[
        Path, typer.Option(help="Dataset directory in the workbench format (e.g. data/validated).")
    ],
    out: Annotated[Path, typer.Option(help="Metrics JSON to write (atomically).")],
    devices: Annotated[
        list[str] | None, typer.Option("--devices", help="Only these devices (repeatable).")
    ] = None,
    split_file: Annotated[
        Path | None,
        typer.Option(help="A prepare split.json; with --split, evaluate only that split's devices."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split name in --split-file (train, val, test).")] = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            help="Write <appliance>.png and .csv (DVC plots) of the most active day here (replaced)."
        ),
    ] = None,
) -> None:
    """Evaluate a model on a dataset: MAE, SAE, NDE, F1, precision, recall, EAC per appliance and device.

    A real-time model is scored on what the service answers at each reading (its causal decision rule and
    gap policy; unanswered readings count as off), with detection delays and false switches; its offline
    (smoothed) figures are in the report's "offline" block."""
    from airwatt.evaluate import evaluate

    report = evaluate(
        model,
        data,
        out,
        devices=devices,
        split_file=split_file,
        split=split,
        plots_dir=plots,
    )
    mean = report.mean
    log.info(
        "wrote %s: %d devices, %s: mean MAE %s W, mean F1 %s",
        out,
        len(report.data.devices),
        report.rule,
        "n/a" if mean.mae_w is None else f"{mean.mae_w:.2f}",
        "n/a" if mean.f1 is None else f"{mean.f1:.3f}",
    )


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Option(help="Prepared directory (output of `airwatt data prepare`).")],
    model: Annotated[
        str | None,
        typer.Option(help="seq2point, multitask, causal, mean or always_off [params: train.model]."),
    ] = None,
    out: Annotated[Path, typer.Option(help="Model bundle directory (replaced atomically).")] = Path(
        "data/model"
    ),
    metrics: Annotated[Path, typer.Option(help="Train metrics JSON (DVC metrics).")] = Path(
        "data/metrics/train.json"
    ),
    epochs: Annotated[Path, typer.Option(help="Per-epoch validation metrics CSV (DVC plots).")] = Path(
        "data/metrics/train_epochs.csv"
    ),
    fresh: Annotated[bool, typer.Option(help="Ignore a checkpoint of the same config; start over.")] = False,
    fast_dev_run: Annotated[
        bool, typer.Option(help="One batch of train and val, no checkpoint, no MLflow (a smoke test).")
    ] = False,
    init_from: Annotated[
        str | None,
        typer.Option(
            help="Fine-tune this model on the data instead of training a fresh one: a bundle directory or "
            "models:/NAME@ALIAS (docs/generalisation.md) [params: train.init_from]."
        ),
    ] = None,
    finetune: Annotated[
        str | None, typer.Option(help="What fine-tuning updates: all or heads [params: train.finetune].")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Train a model (resuming an interrupted run), save its bundle, log it to MLflow and register it."""
    from airwatt.config import load_params
    from airwatt.training.train import train

    chosen = {"train.init_from": init_from, "train.finetune": finetune}
    result = train(
        load_params(params, overrides={k: v for k, v in chosen.items() if v is not None}),
        data,
        out_dir=out,
        metrics_path=metrics,
        epochs_path=epochs,
        model_name=model,
        fresh=fresh,
        fast_dev_run=fast_dev_run,
    )
    log.info(
        "bundle %s; run %s; registered version %s",
        result.bundle_dir,
        result.run_id or "-",
        result.model_version or "-",
    )


def parse_sets(sets: list[str]) -> dict[str, object]:
    """``--set SECTION.KEY=VALUE`` options -> load_params overrides (values read as YAML, so JSON works)."""
    import yaml

    out: dict[str, object] = {}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or "." not in key or not key.partition(".")[2]:
            raise typer.BadParameter(f"{item!r}: expected SECTION.KEY=VALUE", param_hint="--set")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise typer.BadParameter(f"{item!r}: VALUE is not YAML: {e}", param_hint="--set") from None
        if isinstance(parsed, bool) and value.strip().lower() not in ("true", "false"):
            parsed = value.strip()  # YAML 1.1 reads on/off/yes/no as booleans; a key's value "on" stays "on"
        out[key.strip()] = parsed
    return out


@app.command("protocol")
def protocol_cmd(
    work: Annotated[
        Path, typer.Option(help="Work folder: sources, mix, folds, results (reruns resume).")
    ] = Path("data/protocol"),
    max_steps: Annotated[int | None, typer.Option(help="Steps per run [params: protocol.max_steps].")] = None,
    seeds: Annotated[
        list[int] | None, typer.Option("--seed", help="Seeds (repeatable) [protocol.seeds].")
    ] = None,
    folds: Annotated[
        list[str] | None, typer.Option("--fold", help="Held-out houses (repeatable) [protocol.folds].")
    ] = None,
    cross_dataset: Annotated[
        list[str] | None,
        typer.Option("--cross", help="Cross-dataset folds (repeatable) [protocol.cross_dataset]."),
    ] = None,
    models: Annotated[
        list[str] | None, typer.Option("--model", help="Models (repeatable) [protocol.models].")
    ] = None,
    no_cross: Annotated[bool, typer.Option("--no-cross", help="Skip the cross-dataset folds.")] = False,
    mlflow: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Track in MLflow (--no-mlflow: a bare GPU box).")
    ] = True,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="SECTION.KEY=VALUE",
            help="Override a params key for this run (repeatable; VALUE in YAML/JSON), e.g. "
            "--set 'protocol.train={causal: {lr: 0.001}}' or --set train.power_loss_when=on.",
        ),
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Leave-one-house-out over the real data (and a cross-dataset fold), several seeds: one MLflow parent run
    with a child per model, fold and seed; prints F1 / MAE per appliance and fold, mean and standard deviation
    (docs/generalisation.md)."""
    from airwatt.protocol import run_protocol

    chosen = {
        "protocol.max_steps": max_steps,
        "protocol.seeds": seeds or None,
        "protocol.folds": folds or None,
        "protocol.cross_dataset": [] if no_cross else (cross_dataset or None),
        "protocol.models": models or None,
    }
    overrides = {**parse_sets(sets or []), **{k: v for k, v in chosen.items() if v is not None}}
    result = run_protocol(params, work, overrides=overrides, use_mlflow=mlflow)
    typer.echo(result.table)
    log.info(
        "protocol: %d runs; %s; parent run %s", len(result.runs), work / "protocol.md", result.parent_run_id
    )


@app.command("promote")
def promote_cmd(
    data: Annotated[Path, typer.Option(help="Dataset directory to evaluate on (e.g. data/validated).")],
    candidate: Annotated[
        str | None,
        typer.Option(
            help="Bundle directory of a registered run, or models:/NAME@ALIAS | models:/NAME/VERSION "
            "[default: models:/<register.model_name>@<register.candidate_alias>]."
        ),
    ] = None,
    split_file: Annotated[
        Path | None, typer.Option(help="A prepare split.json; with --split, evaluate that split only.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split name in --split-file (e.g. test).")] = None,
    out: Annotated[Path, typer.Option(help="The candidate's full evaluation report (JSON).")] = Path(
        "data/metrics/evaluate.json"
    ),
    summary: Annotated[
        Path | None,
        typer.Option(help="A compact copy for `dvc metrics`: the report's mean and per-appliance blocks."),
    ] = None,
    decision: Annotated[Path, typer.Option(help="The promotion decision JSON (DVC metrics).")] = Path(
        "data/metrics/promotion.json"
    ),
    plots: Annotated[
        Path | None, typer.Option(help="The candidate's disaggregation plots (PNG + CSV) here.")
    ] = None,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """Evaluate the candidate; compare it with the champion on the selected data less what either trained or
    validated on, and move @champion only if the candidate wins there (no such data: the champion stays)."""
    from airwatt.atomic import write_json_atomic
    from airwatt.config import load_params
    from airwatt.data_ranges import DataRanges
    from airwatt.evaluate import evaluate
    from airwatt.promotion import promote
    from airwatt.results import EvaluationReport, EvaluationSummary

    p = load_params(params)
    reg = p.register_

    def evaluate_model(
        model: str | Path, report: Path, is_candidate: bool, exclude: DataRanges | None
    ) -> EvaluationReport:
        return evaluate(
            model,
            data,
            report,
            split_file=split_file,
            split=split,
            plots_dir=plots if is_candidate and exclude is None else None,
            exclude=exclude,
        )

    result = promote(
        candidate or f"models:/{reg.model_name}@{reg.candidate_alias}",
        evaluate_model,
        reg,
        report_path=out,
        split_tag=split or "all",
    )
    write_json_atomic(decision, result.as_json().model_dump(mode="json"))
    if summary is not None:
        compact = EvaluationSummary.of(EvaluationReport.read(out))
        write_json_atomic(summary, compact.model_dump(mode="json"))


if __name__ == "__main__":
    run()
