"""`dvc repro` of the data stages on a tiny simulated fleet, in a temporary git repository.

This is the real pipeline (dvc.yaml, params.yaml, the `airwatt` CLI), shrunk by params only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # a test's setup may run the whole pipeline


def _run(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db",
    }
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def _set_params(repo: Path, **updates: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in updates.items():
        for key, value in values.items():
            node = params[section]
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def pipeline_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("pipeline") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy2(REPO / name, repo / name)
    shutil.copytree(REPO / "src", repo / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    _run(["git", "init", "-q"], repo)
    _run(["git", "config", "user.email", "test@airwatt.local"], repo)
    _run(["git", "config", "user.name", "AirWatt Test"], repo)
    _run(["dvc", "init", "-q"], repo)
    shutil.copy2(REPO / ".dvc" / "config", repo / ".dvc" / "config")
    _set_params(
        repo,
        simulate={"devices": 4},
        sync={"days": 1},
        train={"max_epochs": 1, "limit_train_batches": 5, "limit_val_batches": 2, "batch_size": 32},
    )
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "init"], repo)
    return repo


@pytest.fixture
def reproduced(pipeline_repo: Path) -> Path:
    """The repository with its committed params.yaml and an up-to-date pipeline, whatever ran before (a
    no-op `dvc repro` when an earlier test left it so): each test sets up the state it needs, so the tests
    pass alone (`pytest -k label`) and in any order."""
    _run(["git", "checkout", "--", "params.yaml"], pipeline_repo)
    _run(["dvc", "repro"], pipeline_repo)
    return pipeline_repo


def test_repro_builds_validated_prepared_data_and_data_docs(reproduced: Path) -> None:
    pipeline_repo = reproduced
    assert "up to date" in _run(["dvc", "status"], pipeline_repo).stdout
    manifest = json.loads((pipeline_repo / "data/validated/manifest.json").read_text())
    assert len(manifest["devices"]) == 4
    assert manifest["tables"]["readings"]["rows"] > 0.9 * 4 * 17280
    assert (pipeline_repo / "data/validation/docs/index.html").is_file()
    split = json.loads((pipeline_repo / "data/prepared/split.json").read_text())
    assert split  # train/val/test devices
    metrics = _run(["dvc", "metrics", "show", "--json"], pipeline_repo).stdout
    assert "summary.json" in metrics
    # train + evaluate: a self-describing bundle, the evaluation contract, and a champion in the registry
    assert json.loads((pipeline_repo / "data/model/model.json").read_text())["arch"]
    report = json.loads((pipeline_repo / "data/metrics/evaluate.json").read_text())
    assert set(report["mean"]) >= {"mae_w", "sae", "nde", "f1", "precision", "recall", "eac"}
    decision = json.loads((pipeline_repo / "data/metrics/promotion.json").read_text())
    if decision["champion_version_before"] is None:
        assert decision["promoted"] is True  # the first model becomes champion
    else:  # another test's repro trained again: the champion is the better of the two
        contenders = (decision["candidate_version"], decision["champion_version_before"])
        assert decision["champion_version"] in contenders
    # report: weekly report data and a page per test device, with energies that reconcile
    weekly = json.loads((pipeline_repo / "data/reports/report.json").read_text())
    assert sorted(weekly["data"]["devices"]) == sorted(split["test"])
    assert weekly["totals"]["measured_kwh"] > 0
    for dev in split["test"]:
        assert list((pipeline_repo / "data/reports/devices").glob(f"{dev}*/report.html"))


def test_second_repro_changes_nothing(reproduced: Path) -> None:
    pipeline_repo = reproduced
    before = (pipeline_repo / "data/synced/readings.parquet").read_bytes()
    proc = _run(["dvc", "repro"], pipeline_repo)
    assert "Running stage" not in proc.stdout
    assert (pipeline_repo / "data/synced/readings.parquet").read_bytes() == before


def test_push_and_pull_through_the_default_local_remote(reproduced: Path) -> None:
    pipeline_repo = reproduced
    _run(["dvc", "push"], pipeline_repo)
    assert any((pipeline_repo / ".dvcstore").rglob("*"))
    shutil.rmtree(pipeline_repo / "data/prepared")
    shutil.rmtree(pipeline_repo / ".dvc/cache")
    _run(["dvc", "pull"], pipeline_repo)
    assert (pipeline_repo / "data/prepared/split.json").is_file()


def test_pulled_labels_survive_the_next_repro(reproduced: Path) -> None:
    pipeline_repo = reproduced
    """The labeling loop's last step: `airwatt label pull` writes annotator labels into data/synced (sync's
    persisted output); `dvc repro` re-syncs without losing them, validates them and prepares again (training
    reruns when the prepared targets change; here the device is sub-metered, so sub-meter targets win)."""
    import pandas as pd

    from airwatt.config import load_params
    from airwatt.dataset import Dataset, coerce_labels
    from airwatt.labeling.pull import write_labels

    synced = pipeline_repo / "data/synced"
    ds = Dataset(synced)
    dev, appliance = ds.device_ids[0], ds.appliances[0]
    t0 = ds.readings([dev], columns=["timestamp"])["timestamp"].iloc[720]
    pulled = pd.DataFrame(
        {
            "device_id": [dev, dev],
            "appliance": [appliance, appliance],
            "start": [t0 + pd.Timedelta(minutes=10), t0],
            "end": [t0 + pd.Timedelta(minutes=20), t0 + pd.Timedelta(hours=1)],
            "source": ["annotator", "reviewed"],
            "annotator_id": ["labeler@airwatt.local"] * 2,
            "task_id": [424242, 424242],
        }
    )
    merged = coerce_labels(pd.concat([ds.labels(), coerce_labels(pulled)], ignore_index=True))
    write_labels(synced, merged, load_params(pipeline_repo / "params.yaml"))
    proc = _run(["dvc", "repro"], pipeline_repo)
    assert "Running stage 'prepare'" in proc.stdout
    for data in ("data/synced", "data/validated"):
        labels = Dataset(pipeline_repo / data).labels([dev])
        mine = labels[labels["task_id"] == 424242]
        assert sorted(mine["source"]) == ["annotator", "reviewed"], data


def test_failed_validation_stops_repro_and_keeps_the_good_data(reproduced: Path) -> None:
    pipeline_repo = reproduced
    validated = pipeline_repo / "data/validated/readings.parquet"
    before = validated.read_bytes()
    # The simulated fleet has connectivity gaps: a zero gap budget with severity 'fail' stops the pipeline.
    _set_params(pipeline_repo, validate={"max_gap_fraction": 0.0, "severity.gap_fraction": "fail"})
    proc = _run(["dvc", "repro"], pipeline_repo, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "gap_fraction" in out
    assert "Running stage 'prepare'" not in out
    assert validated.read_bytes() == before
