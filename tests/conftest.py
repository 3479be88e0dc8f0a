"""Shared fixtures: small generated datasets with known answers, and the path to ../shared/data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from airwatt.appliances import APPLIANCES
from airwatt.dataset import DatasetWriter, DeviceInfo, Manifest
from airwatt.labels import derive_labels
from airwatt.procs import free_port, stop_process, wait_until_ok

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AIRWATT_SHARED_DATA", REPO.parent / "shared" / "data"))

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


REQUIRE_SHARED_DATA = "AIRWATT_REQUIRE_SHARED_DATA"
REQUIRE_POSTGRES = "AIRWATT_REQUIRE_POSTGRES"
# fixtures that start a real server
SERVER_FIXTURES = ("mlflow_server", "label_studio", "postgres_server", "mlflow_postgres_server")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers follow the fixtures a test uses, so `make test-fast` (-m "not slow and not server and not
    realdata") can never run a test that reads ../shared/data or starts a server by forgetting a marker."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if "shared_data" in names:
            item.add_marker(pytest.mark.realdata)
        if names & set(SERVER_FIXTURES):
            item.add_marker(pytest.mark.server)


@pytest.fixture(autouse=True)
def _environment_is_restored() -> Iterator[None]:
    """Whatever a test's in-process code puts in os.environ (the CLI's logging setup sets
    MLFLOW_LOGGING_LEVEL, for one) does not reach the tests after it or their subprocesses."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: the public NILM data is not on a user's machine. With
    AIRWATT_REQUIRE_SHARED_DATA=1 (CI sets it where ../shared/data exists) a missing folder fails instead, so
    a green run means the real-data tests ran."""
    if not SHARED_DATA.is_dir():
        why = f"public NILM data not found at {SHARED_DATA} (set AIRWATT_SHARED_DATA)"
        if os.environ.get(REQUIRE_SHARED_DATA) == "1":
            pytest.fail(f"{why}; {REQUIRE_SHARED_DATA}=1 requires it")
        pytest.skip(why)
    return SHARED_DATA


def square_wave_device(
    device_id: str,
    start: str = "2026-01-05T00:00:00Z",
    hours: float = 24,
    interval_s: float = 5,
    base_w: float = 80.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readings and ground truth with a known answer: a fridge that is on 20 min of every 60 (100 W), and a
    kettle on for 3 min at 07:00 (2200 W), on a constant base load."""
    n = int(hours * 3600 / interval_s)
    ts = pd.date_range(pd.Timestamp(start), periods=n, freq=pd.Timedelta(seconds=interval_s))
    t_s = np.arange(n) * interval_s
    fridge = np.where((t_s % 3600) < 1200, 100.0, 0.0)
    kettle = np.where((t_s >= 7 * 3600) & (t_s < 7 * 3600 + 180), 2200.0, 0.0)
    gt = pd.DataFrame({"timestamp": ts, "fridge": fridge, "kettle": kettle})
    readings = pd.DataFrame({"timestamp": ts, "power_w": base_w + fridge + kettle})
    return readings, gt


@pytest.fixture
def make_dataset(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a small dataset of square-wave devices and return its directory."""

    def _make(name: str = "tiny", devices: int = 3, hours: float = 24, interval_s: float = 5) -> Path:
        out = tmp_path / name
        apps = ["fridge", "kettle"]
        start = pd.Timestamp("2026-01-05T00:00:00Z")
        with DatasetWriter(
            out,
            name=name,
            appliances=apps,
            interval_s=interval_s,
            start=start,
            end=start + pd.Timedelta(hours=hours),
            provenance={"source": "test"},
        ) as w:
            for i in range(devices):
                dev = f"d-{i:04d}"
                readings, gt = square_wave_device(dev, hours=hours, interval_s=interval_s)
                labels = derive_labels(gt, apps, APPLIANCES, interval_s)
                w.add_device(
                    DeviceInfo(device_id=dev, appliances=apps, rated_max_w=10000),
                    readings,
                    ground_truth=gt,
                    labels=labels,
                )
        return out

    return _make


def manifest_of(path: Path) -> Manifest:
    from airwatt.dataset import read_manifest

    return read_manifest(path)


# ------------------------------------------------------------------ real servers and a trained model
@contextmanager
def running_mlflow_server(root: Path, backend_store_uri: str, timeout_s: float = 90) -> Iterator[str]:
    """`mlflow server` on ``backend_store_uri``, artifacts proxied to ``root``/artifacts, loopback."""
    port = free_port()
    hosts = f"127.0.0.1:{port},127.0.0.1,localhost:{port},localhost"
    log = (root / "server.log").open("w")
    args = ["--backend-store-uri", backend_store_uri, "--artifacts-destination", str(root / "artifacts")]
    args += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1", "--allowed-hosts", hosts]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", *args],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ok(f"{url}/health", proc, root / "server.log", what="mlflow server", timeout_s=timeout_s)
        yield url
    finally:
        stop_process(proc)
        log.close()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server (sqlite backend, proxied artifacts) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with running_mlflow_server(root, f"sqlite:///{root / 'server.db'}") as url:
        yield url


POSTGRES_SCRIPT = REPO / "training" / "mlflow-postgres.sh"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL server, started by the project's own script (training/mlflow-postgres.sh start-db): a
    fresh cluster on a free loopback port, loopback logins trusted, an empty database "mlflow"; its URI.
    Skips where PostgreSQL is not installed; with AIRWATT_REQUIRE_POSTGRES=1 (CI installs it and sets it)
    that fails instead, so a green CI run means the PostgreSQL tests ran."""
    script = ["bash", str(POSTGRES_SCRIPT)]
    if subprocess.run([*script, "bindir"], capture_output=True).returncode != 0:
        why = "PostgreSQL server binaries not found (bash training/mlflow-postgres.sh install)"
        if os.environ.get(REQUIRE_POSTGRES) == "1":
            pytest.fail(f"{why}; {REQUIRE_POSTGRES}=1 requires them")
        pytest.skip(why)
    # Not under pytest's tmp folder (mode 0700 parents): as root the cluster runs as the postgres user.
    root = Path(tempfile.mkdtemp(prefix="airwatt-postgres-"))
    try:
        started = subprocess.run(
            [*script, "start-db", str(root), str(free_port())], capture_output=True, text=True, timeout=120
        )
        if started.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start in {root}:\n{started.stdout}{started.stderr}")
        yield started.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([*script, "stop-db", str(root)], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_postgres_server(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A team-like tracking server: PostgreSQL backend store, proxied artifacts (a local folder standing in
    for S3), on a free loopback port. The first start creates MLflow's tables (~30 s on 2 cores)."""
    root = tmp_path_factory.mktemp("mlflow-postgres-server")
    with running_mlflow_server(root, postgres_server, timeout_s=180) as url:
        yield url


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small causal model really trained (a few steps, no MLflow) on a 3-device, 6-hour simulated fleet:
    a valid self-describing bundle directory for serving, labeling and report tests."""
    from airwatt.config import load_params
    from airwatt.prepare import prepare
    from airwatt.simulate import simulate_fleet
    from airwatt.training.train import train

    root = tmp_path_factory.mktemp("trained")
    params = load_params(
        REPO / "params.yaml",
        overrides={
            "simulate.devices": 3,
            "train.model": "causal",
            "train.batch_size": 32,
            "train.limit_train_batches": 4,
            "train.limit_val_batches": 2,
            "train.max_epochs": 2,
            "train.num_workers": 0,
            "train.checkpoint_dir": str(root / "checkpoints"),
        },
    )
    simulate_fleet(root / "sim", params.simulate, start=params.sync.start, days=0.25, interval_s=5)
    prepare(root / "sim", params, root / "prepared")
    train(
        params,
        root / "prepared",
        out_dir=root / "model",
        metrics_path=root / "metrics" / "train.json",
        epochs_path=root / "metrics" / "epochs.csv",
        model_name="causal",
        use_mlflow=False,
    )
    return root / "model"
