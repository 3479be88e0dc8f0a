"""The serving boundary: the service imports and answers without the workbench's training, labeling and
validation stacks, which the bento (serving/bentofile.yaml) does not ship.

Each check runs in a fresh interpreter that imports the service as `bentoml serve service:AirWatt
--working-dir serving` does (serving/ first on ``sys.path``, module ``service``) and lists the modules loaded.
Kept out: every top-level module of a pyproject.toml dependency that bentofile.yaml does not list (Lightning,
torchmetrics, Great Expectations, the Label Studio SDK, DVC, typer, matplotlib...), and Lightning's own
distributions. MLflow ships in the bento, but only to resolve and download a ``models:/`` URI when the model
is staged (airwatt.model_uri.resolve): importing the service, and serving a bundle directory, load
no mlflow module at all (its tracking and logging parts included).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO

ALWAYS_FORBIDDEN = frozenset(
    {"lightning", "pytorch_lightning", "lightning_fabric", "label_studio_sdk", "great_expectations", "mlflow"}
)
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])  # as bentoml serve --working-dir does
import service
if len(sys.argv) > 2:  # serve: start-up (model staging, every worker hook, warm-up) and one call of each kind
    from starlette.testclient import TestClient
    with TestClient(service.SERVICE.to_asgi()) as client:
        assert client.get("/readyz").status_code == 200
        assert client.post("/model").status_code == 200
print(json.dumps(sorted(sys.modules)))
"""


def distribution_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def workbench_only_modules() -> frozenset[str]:
    """Top-level modules of the project's dependencies that the bento does not install (bentoml aside)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    bentofile = yaml.safe_load((REPO / "serving" / "bentofile.yaml").read_text())
    shipped = {distribution_name(r) for r in bentofile["python"]["packages"]} | {"bentoml"}
    missing = {distribution_name(r) for r in project} - shipped
    modules = {
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if any(distribution_name(d) in missing for d in dists)
    }
    return frozenset(modules)


def loaded_modules(service_dir: Path, serve: bool = False, **env: str) -> set[str]:
    """Top-level modules loaded by importing ``service_dir``/service.py in a fresh interpreter."""
    args = [sys.executable, "-c", PROBE, str(service_dir), *(["serve"] if serve else [])]
    run_env = os.environ | {"BENTOML_DO_NOT_TRACK": "true", "AIRWATT_PARAMS": str(REPO / "params.yaml")} | env
    done = subprocess.run(
        args, cwd=service_dir, env=run_env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


def forbidden() -> frozenset[str]:
    return ALWAYS_FORBIDDEN | workbench_only_modules()


@pytest.mark.slow
def test_importing_the_service_loads_nothing_the_bento_lacks() -> None:
    assert loaded_modules(REPO / "serving") & forbidden() == set()


@pytest.mark.slow
def test_serving_a_bundle_loads_nothing_the_bento_lacks(trained_bundle: Path) -> None:
    """Start-up (staging, worker hooks, the warm-up runs every kind of call) and /model, in-process."""
    loaded = loaded_modules(REPO / "serving", serve=True, AIRWATT_MODEL_URI=str(trained_bundle))
    assert "torch" in loaded  # the probe really served the model
    assert loaded & forbidden() == set()


@pytest.mark.slow
def test_the_check_fails_when_the_service_imports_lightning(tmp_path: Path) -> None:
    """The guard itself: the same service with ``import lightning`` added is caught."""
    text = (REPO / "serving" / "service.py").read_text()
    shutil.copytree(REPO / "serving", tmp_path, dirs_exist_ok=True)
    with_lightning = text.replace("import bentoml\n", "import bentoml\nimport lightning\n", 1)
    assert with_lightning != text
    (tmp_path / "service.py").write_text(with_lightning)
    assert "lightning" in loaded_modules(tmp_path) & forbidden()


def test_the_workbench_only_stacks_are_named() -> None:
    named = {"lightning", "pytorch_lightning", "great_expectations", "label_studio_sdk", "dvc", "typer"}
    assert named | {"mlflow"} <= forbidden()
