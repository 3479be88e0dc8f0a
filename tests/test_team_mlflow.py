"""The team set-up (docs/team-mlflow.md): `mlflow server` on a real PostgreSQL with proxied artifacts, and the
workbench's own commands against it through MLFLOW_TRACKING_URI alone: `airwatt train` logs and registers a
version, `airwatt promote` moves @champion, `airwatt evaluate` and `airwatt serve` load
models:/NAME@champion. The rows are read back from PostgreSQL itself: the store really is PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest
import yaml
from conftest import REPO

from airwatt.config import load_params
from airwatt.prepare import prepare
from airwatt.procs import free_port, stop_process, wait_until_ok
from airwatt.simulate import simulate_fleet

AIRWATT = str(Path(sys.executable).parent / "airwatt")
NAME = "airwatt-disaggregator"  # params.yaml register.model_name; serve.model_uri is its @champion

pytestmark = pytest.mark.slow


def small_params(tmp: Path) -> Path:
    """params.yaml with a few training steps and one serving worker."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(
        model="causal",
        batch_size=32,
        limit_train_batches=4,
        limit_val_batches=2,
        max_epochs=1,
        num_workers=0,
        checkpoint_dir=str(tmp / "checkpoints"),
    )
    params["serve"].update(workers=1)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def only_tracking_uri(tracking_uri: str, tmp: Path) -> dict[str, str]:
    """This process's environment with no MLflow or model settings of its own, then MLFLOW_TRACKING_URI."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AIRWATT_"))}
    return keep | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "AIRWATT_CACHE_DIR": str(tmp / "cache"),
        "BENTOML_HOME": str(tmp / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
    }


def airwatt(*args: str, env: dict[str, str], cwd: Path) -> None:
    done = subprocess.run([AIRWATT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"airwatt {' '.join(args)}:\n{done.stdout}{done.stderr[-4000:]}"


def rows(postgres_uri: str, sql: str, *params: object) -> list[tuple]:
    with psycopg.connect(postgres_uri) as conn:
        return conn.execute(sql, params).fetchall()


def test_train_promote_evaluate_serve_through_mlflow_on_postgresql(
    mlflow_postgres_server: str, postgres_server: str, tmp_path: Path
) -> None:
    # A 3-device, 6-hour simulated fleet (one device per split), and a work folder that is a git repository
    # with a dvc.yaml (the run records its commit).
    base = load_params(REPO / "params.yaml", overrides={"simulate.devices": 3})
    simulate_fleet(tmp_path / "sim", base.simulate, start=base.sync.start, days=0.25, interval_s=5)
    prepare(tmp_path / "sim", base, tmp_path / "prepared")
    work = tmp_path / "work"
    work.mkdir()
    (work / "dvc.yaml").write_text("stages: {}\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@airwatt.local"]
    for args in (["init", "-q"], ["add", "dvc.yaml"], ["commit", "-qm", "init"]):
        subprocess.run([*git, *args], cwd=work, check=True, capture_output=True)
    params = small_params(tmp_path)
    env = only_tracking_uri(mlflow_postgres_server, tmp_path)
    split = ["--split-file", str(tmp_path / "prepared" / "split.json"), "--split", "test"]

    # train: a run and a registered @candidate version in PostgreSQL's tables; artifacts via the server.
    airwatt(
        "train",
        "--data",
        str(tmp_path / "prepared"),
        "--out",
        str(tmp_path / "model"),
        "--metrics",
        str(tmp_path / "train.json"),
        "--epochs",
        str(tmp_path / "epochs.csv"),
        "--params",
        str(params),
        env=env,
        cwd=work,
    )
    version = json.loads((tmp_path / "train.json").read_text())["model_version"]
    [(run_id, status, artifact_uri)] = rows(
        postgres_server,
        "SELECT r.run_uuid, r.status, r.artifact_uri FROM runs r JOIN experiments e USING (experiment_id)"
        " WHERE e.name = %s",
        base.register_.experiment,
    )
    assert status == "FINISHED" and artifact_uri.startswith("mlflow-artifacts:/")
    assert rows(
        postgres_server, "SELECT run_id FROM model_versions WHERE name = %s AND version = %s", NAME, version
    ) == [(run_id,)]
    aliases = "SELECT alias, version FROM registered_model_aliases WHERE name = %s ORDER BY alias"
    assert rows(postgres_server, aliases, NAME) == [("candidate", version)]
    assert rows(postgres_server, "SELECT count(*) FROM metrics WHERE run_uuid = %s", run_id)[0][0] > 0

    # promote: the first candidate becomes @champion.
    airwatt(
        "promote",
        "--data",
        str(tmp_path / "sim"),
        *split,
        "--out",
        str(tmp_path / "promote-eval.json"),
        "--decision",
        str(tmp_path / "promotion.json"),
        "--params",
        str(params),
        env=env,
        cwd=work,
    )
    assert json.loads((tmp_path / "promotion.json").read_text())["promoted"] is True
    assert rows(postgres_server, aliases, NAME) == [("candidate", version), ("champion", version)]

    # evaluate models:/NAME@champion: the bundle downloaded through the server.
    airwatt(
        "evaluate",
        "--model",
        f"models:/{NAME}@champion",
        "--data",
        str(tmp_path / "sim"),
        *split,
        "--out",
        str(tmp_path / "champion.json"),
        env=env,
        cwd=work,
    )
    report = json.loads((tmp_path / "champion.json").read_text())
    assert report["model"]["registry"]["version"] == str(version) and report["appliances"]

    # serve: params.yaml's serve.model_uri (models:/airwatt-disaggregator@champion), resolved at the server.
    # (From the repository: `airwatt serve` runs serving/service.py.)
    port = free_port()
    (tmp_path / "tmp").mkdir()
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [AIRWATT, "serve", "--params", str(params), "--host", "127.0.0.1", "--port", str(port)],
        env=env | {"TMPDIR": str(tmp_path / "tmp")},
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    power_w = 90 + 100 * ((np.arange(600) * 5 % 3600) < 1200)
    try:
        wait_until_ok(f"{url}/readyz", proc, tmp_path / "serve.log", what="airwatt serve", timeout_s=120)
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.post("/model", json={}).json()["model_version"] == f"{NAME}/{version}"
            det = c.post(
                "/detect",
                json={
                    "device_id": "d-1",
                    "start": "2026-01-05T06:00:00Z",
                    "interval_s": 5,
                    "power_w": power_w.tolist(),
                },
            ).json()
    finally:
        stop_process(proc, timeout_s=30)
        log.close()
    assert det["status"] == "ok" and det["model_version"] == f"{NAME}/{version}", det
