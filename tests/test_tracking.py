"""MLflow tracking, lineage, the registry and the champion rule (airwatt.tracking, .lineage, .model_uri,
.promotion), against a real `mlflow server` on loopback and against the default local sqlite store: what a
training run logs, aliases, promotion, and loading a registered bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from airwatt import lineage, mlflow_store, promotion, tracking
from airwatt.config import RegisterParams, load_params
from airwatt.evaluate import evaluate
from airwatt.model_uri import download_bundle
from airwatt.models import ModelBundle, ModelLoadError
from airwatt.prepare import prepare
from airwatt.results import EvaluationReport, Metrics
from airwatt.simulate import simulate_fleet
from airwatt.training.train import train

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAME = "airwatt-disaggregator"


def register_params(**update: Any) -> RegisterParams:
    return load_params(REPO / "params.yaml").register_.model_copy(update=update)


def report(f1: float | None, mae_w: float | None) -> EvaluationReport:
    """A scripted evaluation: only the rule's metrics (mean F1 and MAE) are set; it does not say what data
    it scored (no overlap block)."""
    mean = Metrics(mae_w=mae_w, sae=None, nde=None, f1=f1, precision=None, recall=None, eac=None)
    model = {"uri": None, "registry": None, "arch": "scripted", "arch_kwargs": {}, "appliances": []}
    return EvaluationReport.model_validate(
        {
            "model": {**model, "window_length": 1, "target": "last", "interval_s": 5.0, "provenance": {}},
            "data": {
                "path": "scripted",
                "name": "scripted",
                "devices": [],
                "skipped_devices": {},
                "selection": {"devices": None, "split_file": None, "split": None, "time_ranges": None},
                "appliances_missing": [],
                **{"interval_s": 5.0, "max_fill_s": 30.0, "max_invalid_fraction": 0.1},
                **{"readings": {}, "answered": {}, "plotted_days": {}},
            },
            "rule": "offline",
            "appliances": {},
            "mean": mean,
            "switches": {},
            "devices": {},
        }
    )


# ------------------------------------------------------------------------------------ the rule (fast)
@pytest.mark.parametrize(
    ("candidate", "champion", "promoted"),
    [
        (report(0.80, 30.0), report(0.70, 20.0), True),  # clearly better F1 wins, whatever the MAE
        (report(0.60, 10.0), report(0.70, 20.0), False),  # clearly worse F1 loses, whatever the MAE
        (report(0.702, 15.0), report(0.70, 20.0), True),  # F1 tie (< min_improvement): lower MAE wins
        (report(0.702, 25.0), report(0.70, 20.0), False),  # F1 tie: higher MAE loses
        (report(0.70, 20.0), report(0.70, 20.0), False),  # a full tie keeps the champion
        (report(None, 10.0), report(0.70, 20.0), False),  # undefined candidate F1 never wins
        (report(0.10, 90.0), report(None, 20.0), True),  # a defined F1 beats an undefined one
        (report(float("nan"), 1.0), report(0.1, 20.0), False),
    ],
)
def test_promotion_rule(candidate: EvaluationReport, champion: EvaluationReport, promoted: bool) -> None:
    decision = promotion.beats(candidate, champion, register_params())
    assert decision.promote is promoted, decision.reason


def test_rule_direction_follows_params() -> None:
    cfg = register_params(metric="mean.mae_w", higher_is_better=False, min_improvement=0.0)
    assert promotion.beats(report(0.1, 10.0), report(0.9, 20.0), cfg).promote
    assert not promotion.beats(report(0.9, 30.0), report(0.1, 20.0), cfg).promote


def test_default_tracking_uri_is_an_absolute_sqlite_path_at_the_repository_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert mlflow_store.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert mlflow_store.tracking_uri() == "http://127.0.0.1:5999"


def test_dataset_version_is_a_content_hash_outside_dvc(tmp_path: Path) -> None:
    (tmp_path / "norm_stats.json").write_text("{}")
    np.save(tmp_path / "a.npy", np.arange(3))
    v1 = lineage.dataset_version(tmp_path)
    assert v1.startswith("sha256:") and lineage.dataset_version(tmp_path) == v1
    np.save(tmp_path / "a.npy", np.arange(4))
    assert lineage.dataset_version(tmp_path) != v1


def test_flatten_keeps_every_key() -> None:
    flat = tracking.flatten({"lr": 0.1, "arch": {"multitask": {"widths": [8]}, "mean": {}}}, "train.")
    assert flat == {"train.lr": 0.1, "train.arch.multitask.widths": [8], "train.arch.mean": "{}"}


# ------------------------------------------------------------------------------------ real stores
@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(dataset, prepared): 3 simulated devices, 6 hours; one device per split."""
    root = tmp_path_factory.mktemp("fleet")
    params = load_params(REPO / "params.yaml", overrides={"simulate.devices": 3})
    simulate_fleet(root / "sim", params.simulate, start=params.sync.start, days=0.25, interval_s=5)
    prepare(root / "sim", params, root / "prepared")
    return root / "sim", root / "prepared"


@pytest.fixture(params=["local-sqlite", pytest.param("server", marks=pytest.mark.server)])
def store(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The tracking URI under test: the DEFAULT (no MLFLOW_TRACKING_URI: sqlite beside dvc.yaml), or the
    loopback server through MLFLOW_TRACKING_URI. Every test starts with an empty registry."""
    if request.param == "server":
        uri = request.getfixturevalue("mlflow_server")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        c = MlflowClient(uri, uri)
        if c.search_registered_models(f"name = '{NAME}'"):
            c.delete_registered_model(NAME)
    else:
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@airwatt.local"]
    for args in (["init", "-q"], ["add", "dvc.yaml"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], cwd=tmp_path, check=True, capture_output=True)
    monkeypatch.chdir(tmp_path)
    return mlflow_store.tracking_uri()


def train_tiny(prepared: Path, out: Path, model: str) -> Any:
    params = load_params(
        REPO / "params.yaml",
        overrides={
            "train.batch_size": 32,
            "train.limit_train_batches": 3,
            "train.limit_val_batches": 2,
            "train.max_epochs": 2,
            "train.num_workers": 0,
            "train.checkpoint_dir": str(out / "checkpoints"),
            "train.arch": {"multitask": {"widths": [8, 16], "hidden": 32, "head_hidden": 8}},
        },
    )
    result = train(
        params,
        prepared,
        out_dir=out / model,
        metrics_path=out / "metrics" / f"{model}.json",
        epochs_path=out / "metrics" / f"{model}.csv",
        model_name=model,
    )
    return params, result


@pytest.mark.slow
def test_training_run_is_logged_registered_promoted_and_loadable(
    store: str, fleet: tuple[Path, Path], tmp_path: Path
) -> None:
    data, prepared = fleet
    params, first = train_tiny(prepared, tmp_path, "multitask")
    client = MlflowClient(store, store)

    # What the run records.
    run = client.get_run(first.run_id)
    assert run.data.params["train.model"] == "multitask"
    assert run.data.params["train.lr"] == str(params.train.lr)
    assert run.data.params["train.arch_kwargs.widths"] == "[8, 16]"
    assert run.data.params["data.version"].startswith("sha256:")
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
    assert run.data.params["git.commit"] == head.strip()
    excluded = [f":(exclude){p}" for p in lineage.pipeline_outputs(Path.cwd())]
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert run.data.params["git.dirty"] == str(bool(dirty)).lower()  # pipeline outputs do not count
    assert run.data.tags["mlflow.source.git.commit"] == run.data.params["git.commit"]
    val_loss = client.get_metric_history(first.run_id, "val/loss")
    assert len(val_loss) == 2  # one per epoch
    assert {"val/mae_w", "val/f1", "train/loss_epoch"} <= set(run.data.metrics)
    plots = [f.path for f in client.list_artifacts(first.run_id, "plots")]
    assert plots and all(p.endswith(".png") for p in plots)

    # Registered with the candidate alias; the logged pyfunc has a signature and input example.
    mv = client.get_model_version_by_alias(NAME, "candidate")
    assert str(mv.version) == first.model_version and mv.run_id == first.run_id
    info = mlflow.models.get_model_info(f"models:/{NAME}@candidate")
    assert info.signature is not None and info.saved_input_example_info is not None
    assert [c.name for c in info.signature.inputs.inputs] == ["timestamp", "power_w"]

    # The first candidate becomes champion (no champion yet), with the real evaluation logged to its run.
    cfg = params.register_

    def real_evaluate(model: str | Path, out: Path, is_candidate: bool, exclude: Any) -> EvaluationReport:
        split_file = prepared / "split.json"
        return evaluate(model, data, out, split_file=split_file, split="test", exclude=exclude)

    promo = promotion.promote(
        first.bundle_dir, real_evaluate, cfg, report_path=tmp_path / "eval.json", split_tag="test"
    )
    assert promo.promoted and promo.champion_after == first.model_version
    assert promo.candidate_overlaps_training is False  # the test split's devices are held out
    # What it trained and validated on: logged to its run as well as kept in its bundle.
    got = client.download_artifacts(first.run_id, tracking.DATA_RANGES_ARTIFACT, str(tmp_path))
    logged, split = json.loads(Path(got).read_text()), json.loads((prepared / "split.json").read_text())
    assert sorted(logged["train"]) == split["train"] and sorted(logged["val"]) == split["val"]
    assert sorted(logged["seen"]) == sorted(split["train"] + split["val"])
    assert json.loads((tmp_path / "eval.json").read_text())["appliances"]
    assert "eval_test/mean/mae_w" in client.get_run(first.run_id).data.metrics
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == first.model_version

    # download_bundle gets the JSON + safetensors bundle (no pickle) and it predicts; so does the pyfunc.
    local = download_bundle(f"models:/{NAME}@champion", tmp_path / "champion")
    assert sorted(p.name for p in local.iterdir()) == ["model.json", "weights.safetensors"]
    bundle = ModelBundle.load(local)
    agg = np.load(prepared / "test" / "aggregate_w.npy")
    assert bundle.predict_series(agg).power_w.shape == (len(agg), len(bundle.appliances))
    for i, uri in enumerate((f"models:/{NAME}/{first.model_version}", f"runs:/{first.run_id}/model")):
        assert ModelBundle.load(download_bundle(uri, tmp_path / f"by-uri-{i}")).spec == bundle.spec
    # `airwatt evaluate` on the registered champion, by URI.
    by_uri = evaluate(
        f"models:/{NAME}@champion",
        data,
        tmp_path / "champion.json",
        split_file=prepared / "split.json",
        split="test",
    )
    assert by_uri.model.registry is not None and by_uri.model.registry.version == first.model_version
    assert (
        by_uri.model_dump(mode="json")["appliances"]
        == json.loads((tmp_path / "eval.json").read_text())["appliances"]
    )
    pyfunc = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    readings = pd.DataFrame(
        {"timestamp": pd.date_range("2026-01-05", periods=700, freq="5s"), "power_w": agg[:700].astype(float)}
    )
    frame = pyfunc.predict(readings)
    assert len(frame) == 700 and f"{bundle.appliances[0]}_power_w" in frame.columns

    # A second version is the new candidate; promotion follows the evaluation, never a worse model.
    _, second = train_tiny(prepared, tmp_path, "always_off")
    assert str(client.get_model_version_by_alias(NAME, "candidate").version) == second.model_version

    def scripted(candidate_f1: float) -> Any:
        def evaluate_model(
            model: str | Path, out: Path, is_candidate: bool, exclude: Any
        ) -> EvaluationReport:
            return report(candidate_f1 if is_candidate else 0.5, 20.0)

        return evaluate_model

    out = tmp_path / "e.json"
    worse = promotion.promote(second.bundle_dir, scripted(0.3), cfg, report_path=out, split_tag="t")
    assert not worse.promoted and worse.champion_after == first.model_version
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == first.model_version
    better = promotion.promote(
        f"models:/{NAME}@candidate", scripted(0.9), cfg, report_path=out, split_tag="t"
    )
    assert better.promoted and better.champion_before == first.model_version
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == second.model_version
    tag = client.get_model_version(NAME, second.model_version).tags["promotion"]
    assert "mean.f1" in tag


@pytest.mark.slow
def test_a_model_uri_that_does_not_resolve_names_the_uri_and_the_store(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    monkeypatch.setenv("AIRWATT_CACHE_DIR", str(tmp_path / "cache"))  # where a download without dst goes
    (tmp_path / "tmp").mkdir()
    for uri in (f"models:/{NAME}@champion", "models:/no-such-model/3", "runs:/0123456789abcdef/model"):
        with pytest.raises(ModelLoadError) as e:
            download_bundle(uri)
        assert uri in str(e.value) and store in str(e.value)
    # nothing half-downloaded left behind
    assert list((tmp_path / "tmp").iterdir()) == [] and list((tmp_path / "cache" / "bundles").iterdir()) == []
    with pytest.raises(ModelLoadError, match="not an MLflow model URI"):
        download_bundle("champion")


# ------------------------------------------------------------------------------------ lineage (fast)
def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def test_git_dirty_means_source_changed_not_pipeline_outputs(tmp_path: Path) -> None:
    """A `dvc repro` from a clean clone rewrites dvc.lock and the git-tracked metrics: the run still records a
    clean tree; an edited source file or params.yaml makes it dirty; untracked files never do."""
    repo = tmp_path / "clone"
    (repo / "src").mkdir(parents=True)
    (repo / "data" / "metrics").mkdir(parents=True)
    (repo / "reports").mkdir()
    (repo / "dvc.yaml").write_text(
        "stages:\n  s:\n    cmd: x\n    outs: [data/model]\n"
        "    metrics: [{reports/score.json: {cache: false}}]\n"
    )
    files = {
        "src/a.py": "x = 1\n",
        "params.yaml": "a: 1\n",
        "dvc.lock": "schema: '2.0'\n",
        "data/.gitignore": "/model\n",
        "data/metrics/train.json": "{}\n",
        "reports/score.json": "{}\n",
    }
    for name, text in files.items():
        (repo / name).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.email=t@airwatt.local", "-c", "user.name=T", "commit", "-qm", "init")
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert lineage.git_state(repo) == {"git_commit": head, "git_dirty": "false"}

    # What the pipeline writes: dvc.lock, data/ (its .gitignore, metrics), outs declared outside data/.
    for name in ("dvc.lock", "data/.gitignore", "data/metrics/train.json", "reports/score.json"):
        (repo / name).write_text("rewritten by dvc repro\n")
    (repo / "notes.txt").write_text("untracked\n")
    assert lineage.git_state(repo) == {"git_commit": head, "git_dirty": "false"}
    assert lineage.git_state(repo / "src")["git_dirty"] == "false"  # from a subfolder too

    for name in ("src/a.py", "params.yaml"):
        (repo / name).write_text("edited\n")
        assert lineage.git_state(repo) == {"git_commit": head, "git_dirty": "true"}, name
        _git(repo, "checkout", "--", name)
    (tmp_path / "no-git").mkdir()
    assert lineage.git_state(tmp_path / "no-git") == {"git_commit": "unknown", "git_dirty": "unknown"}


@pytest.mark.slow
def test_download_without_a_destination_leaves_one_folder_per_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Notebooks call download_bundle(uri) again and again: each call replaces the URI's one cache folder
    (in AIRWATT_CACHE_DIR) and leaves no temporary folder behind."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("AIRWATT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.json").write_text("{}")
    (bundle / "weights.safetensors").write_bytes(b"w")
    c = MlflowClient(store)
    exp = c.create_experiment("x", artifact_location=(tmp_path / "artifacts").as_uri())
    run_ids = []
    for _ in range(2):
        run = c.create_run(exp)
        c.log_artifacts(run.info.run_id, str(bundle), "model/artifacts/bundle")
        run_ids.append(run.info.run_id)

    got = [download_bundle(f"runs:/{run_ids[0]}/model") for _ in range(3)]
    got.append(download_bundle(f"runs:/{run_ids[1]}/model"))
    assert got[0] == got[1] == got[2] != got[3]
    assert sorted(p.name for p in got[0].iterdir()) == ["model.json", "weights.safetensors"]
    assert sorted(p.name for p in (tmp_path / "cache" / "bundles").iterdir()) == sorted({g.name for g in got})
    assert list((tmp_path / "tmp").iterdir()) == []
