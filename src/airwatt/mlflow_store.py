"""Where the MLflow store is: its tracking URI, a client of it, and the artifact root of a new experiment.

``MLFLOW_TRACKING_URI`` when set (a team server), else a sqlite store at an ABSOLUTE path
(``<repository root>/mlflow.db``), so DVC stages, notebooks, tests and the service started from any folder
agree. Artifacts of a local store go beside it (``mlruns/``), never into the current directory.

Both the logging side (airwatt.tracking) and the reading side (airwatt.model_uri: resolving a model URI,
which the service does) start here; mlflow itself is imported only when a client is made.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from airwatt.lineage import repo_root

if TYPE_CHECKING:
    from mlflow import MlflowClient


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo root>/mlflow.db`` (absolute path)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / 'mlflow.db'}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifact root of a NEW experiment: beside a local sqlite store; None (the server decides) otherwise."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.parent / "mlruns" / experiment).resolve().as_uri()


def client(uri: str | None = None) -> MlflowClient:
    """A client of the store at ``uri`` (default: ``tracking_uri()``), for tracking and registry alike."""
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowClient(tracking_uri=uri or tracking_uri(), registry_uri=uri or tracking_uri())
