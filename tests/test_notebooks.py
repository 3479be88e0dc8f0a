"""The notebooks (notebooks/*.ipynb): committed clean, and each one executed headless on small generated data.

The executed notebooks read their inputs from environment variables (their first code cell); here they point
at a 3-device, 1-day simulated fleet, the session's ``trained_bundle`` (a bundle directory, as data/model) and
a temporary MLflow sqlite store holding two really trained and evaluated runs (causal -> champion, mean ->
candidate); the weekly report loads the champion by its models:/ URI.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

from airwatt.config import load_params

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
EXPECTED = [
    "01-explore-dataset.ipynb",
    "02-compare-runs.ipynb",
    "03-inspect-disaggregation.ipynb",
    "04-weekly-report.ipynb",
]
PLOTLY = "application/vnd.plotly.v1+json"


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def code_of(cell: Any) -> str:
    """A code cell's Python, IPython magics (%...) and shell escapes (!...) left out."""
    return "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


# ------------------------------------------------------------------------------------------- committed form
def test_the_four_notebooks_are_there() -> None:
    assert [p.name for p in notebook_paths()] == EXPECTED


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, (
        f"{path.name}: cells {dirty} hold outputs or execution counts (clear them before commit)"
    )
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_notebook_imports_the_package_and_defines_no_logic(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [code_of(c) for c in nb.cells if c.cell_type == "code"]
    defined = [
        f"{type(node).__name__} {getattr(node, 'name', '')}"
        for src in code
        for node in ast.walk(ast.parse(src))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda)
    ]
    assert not defined, f"{path.name} defines {defined}: put reusable logic into the airwatt package"
    assert any("from airwatt" in src or "import airwatt" in src for src in code)
    first = code[0]
    assert "os.environ" in first, (
        f"{path.name}: the first code cell must read the inputs from the environment"
    )


# ------------------------------------------------------------------------------------- executed headless
@pytest.fixture(scope="module")
def workbench(tmp_path_factory: pytest.TempPathFactory, trained_bundle: Path) -> Iterator[dict[str, str]]:
    """Environment of the executed notebooks: small fleet, trained bundle, tracking store with two runs."""
    from airwatt import promotion
    from airwatt.evaluate import evaluate
    from airwatt.prepare import prepare
    from airwatt.results import EvaluationReport
    from airwatt.simulate import simulate_fleet
    from airwatt.training.train import train

    root = tmp_path_factory.mktemp("notebooks")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    params = load_params(
        REPO / "params.yaml",
        overrides={
            "simulate.devices": 3,
            "train.batch_size": 32,
            "train.limit_train_batches": 3,
            "train.limit_val_batches": 2,
            "train.max_epochs": 2,
            "train.num_workers": 0,
            "train.checkpoint_dir": str(root / "checkpoints"),
        },
    )
    data = root / "fleet"
    simulate_fleet(data, params.simulate, start=params.sync.start, days=1, interval_s=5, workers=1)
    prepare(data, params, root / "prepared")
    split_file = root / "prepared" / "split.json"

    def evaluate_model(model: str | Path, out: Path, is_candidate: bool, exclude: Any) -> EvaluationReport:
        return evaluate(model, data, out, split_file=split_file, split="test", exclude=exclude)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for model in ("causal", "mean"):
            result = train(
                params,
                root / "prepared",
                out_dir=root / model,
                metrics_path=root / "metrics" / f"{model}.json",
                epochs_path=root / "metrics" / f"{model}.csv",
                model_name=model,
            )
            promotion.promote(
                result.bundle_dir,
                evaluate_model,
                params.register_,
                report_path=root / "metrics" / f"{model}-eval.json",
                split_tag="test",
            )
    yield {
        "AIRWATT_DATA": str(data),
        "AIRWATT_MODEL": str(trained_bundle),
        "AIRWATT_SPLIT_FILE": str(split_file),
        "AIRWATT_DOCS": str(root / "data-docs"),
        "AIRWATT_REPORT_OUT": str(root / "report"),
        "MLFLOW_TRACKING_URI": uri,
    }


def execute(name: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Run a notebook top to bottom in the python3 kernel of this interpreter; the executed copy is kept in
    tmp_path for a look when a test fails."""
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    )
    try:
        client.execute()
    finally:
        nbformat.write(nb, tmp_path / name)
    return nb


def outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def text_of(nb: Any) -> str:
    """Everything the notebook printed or displayed as text, HTML or Markdown."""
    parts = []
    for o in outputs(nb):
        parts.append(o.get("text", ""))
        for mime in ("text/plain", "text/html", "text/markdown"):
            parts.append(o.get("data", {}).get(mime, ""))
    return "\n".join(parts)


def figures(nb: Any, mime: str) -> list[Any]:
    return [o["data"][mime] for o in outputs(nb) if mime in o.get("data", {})]


def assert_no_errors(nb: Any) -> None:
    errors = [o for o in outputs(nb) if o.output_type == "error"]
    assert not errors, errors


@pytest.mark.slow
def test_explore_dataset_shows_the_fleet_a_device_day_and_its_validation(
    workbench: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    nb = execute("01-explore-dataset.ipynb", workbench, monkeypatch, tmp_path)
    assert_no_errors(nb)
    text = text_of(nb)
    for device in ("sim-0000", "sim-0001", "sim-0002"):
        assert device in text
    assert len(figures(nb, "image/png")) >= 2  # the device-day and its label intervals
    assert "expect_column_values_to_be_between" in text  # the per-expectation table
    docs = Path(workbench["AIRWATT_DOCS"]) / "index.html"
    assert docs.is_file()
    links = [o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})]
    assert any("index.html" in link for link in links)


@pytest.mark.slow
def test_compare_runs_lists_both_runs_their_curves_and_the_aliases(
    workbench: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    nb = execute("02-compare-runs.ipynb", workbench, monkeypatch, tmp_path)
    assert_no_errors(nb)
    uri = workbench["MLFLOW_TRACKING_URI"]
    c = MlflowClient(uri, uri)
    exp = c.get_experiment_by_name(load_params(REPO / "params.yaml").register_.experiment)
    runs = c.search_runs([exp.experiment_id])
    assert len(runs) == 2
    text = text_of(nb)
    for run in runs:
        assert run.info.run_id in text
    assert "champion" in text and "candidate" in text
    curves = figures(nb, PLOTLY)
    assert curves, "no per-epoch curves"
    names = {t.get("name", "") for fig in curves for t in fig["data"]}
    for run in runs:  # one curve per run, named "<run name> (<run id prefix>)"
        assert f"{run.info.run_name} ({run.info.run_id[:8]})" in names


@pytest.mark.slow
def test_inspect_disaggregation_draws_an_interactive_day_per_appliance(
    workbench: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trained_bundle: Path
) -> None:
    nb = execute("03-inspect-disaggregation.ipynb", workbench, monkeypatch, tmp_path)
    assert_no_errors(nb)
    (fig,) = figures(nb, PLOTLY)
    appliances = json.loads((trained_bundle / "model.json").read_text())["appliances"]
    menu = [b["label"] for b in fig["layout"]["updatemenus"][0]["buttons"]]
    assert menu and set(menu) <= set(appliances)
    names = {t["name"] for t in fig["data"]}
    assert "aggregate" in names and f"{menu[0]} predicted (W)" in names and f"{menu[0]} truth (W)" in names


@pytest.mark.slow
def test_weekly_report_builds_the_report_of_one_device_with_the_registered_champion(
    workbench: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    champion = f"models:/{load_params(REPO / 'params.yaml').register_.model_name}@champion"
    nb = execute("04-weekly-report.ipynb", {**workbench, "AIRWATT_MODEL": champion}, monkeypatch, tmp_path)
    assert_no_errors(nb)
    assert len(figures(nb, "image/png")) == 3  # daily energy, share, on-hours heat map
    text = text_of(nb)
    assert "week 2026-W02" in text and "unexplained" in text and "measured_kwh" in text
    pages = list(Path(workbench["AIRWATT_REPORT_OUT"]).glob("*/report.html"))
    assert len(pages) == 1 and "kWh" in pages[0].read_text()
