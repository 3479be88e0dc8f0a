"""MLflow tracking: the experiment a run goes to, what a training run records (params, tags, the data it
trained on, the model), and registering a model as the new candidate.

- Where the store is: airwatt.mlflow_store (``MLFLOW_TRACKING_URI``, else ``<repository root>/mlflow.db``);
  what a run was made from (git commit, tree state, data version): airwatt.lineage.
- Models are logged as an MLflow pyfunc "model from code" (airwatt/pyfunc_model.py) whose artifact
  ``bundle`` is the AirWatt model bundle (model.json + weights.safetensors): no pickles anywhere. Reading a
  model back (``download_bundle``, any model URI) is airwatt.model_uri; the champion rule and the fair gate
  that moves the champion alias are airwatt.promotion.
- Registry: every new version gets the candidate alias (``register``).

Only mlflow is imported here (no Lightning), and only inside the functions that use it. The service never
imports this module: it resolves its model with airwatt.model_uri alone.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

# The `name as name` imports are re-exports: airwatt.protocol reads repo_root and git_state from here, and the
# pyfunc_model.py stored with every model logged before airwatt.models.frame existed imports predict_frame
# from here (MLflow runs that stored copy when it loads the model).
from airwatt.lineage import git_state as git_state
from airwatt.lineage import repo_root as repo_root
from airwatt.mlflow_store import artifact_location, client, tracking_uri
from airwatt.model_uri import BUNDLE_ARTIFACT
from airwatt.models.frame import predict_frame as predict_frame

if TYPE_CHECKING:
    import pandas as pd

    from airwatt.config import RegisterParams

log = logging.getLogger(__name__)

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
MODEL_ARTIFACT = "model"  # name of the logged model inside a run (runs:/<id>/model)
DATA_RANGES_ARTIFACT = "provenance/data_ranges.json"  # what a run's model trained and validated on


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Id of experiment ``name``, created (with its artifact root beside a local store) when missing."""
    uri = uri or tracking_uri()
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(c.create_experiment(name, artifact_location=artifact_location(uri, name)))


# --------------------------------------------------------------------------------- what a run records
def flatten(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; empty mappings are kept as "{}" so every key shows up."""
    out: dict[str, Any] = {}
    for k, v in mapping.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out |= flatten(v, f"{key}.")
        else:
            out[key] = "{}" if isinstance(v, Mapping) else v
    return out


def run_exists(run_id: str, uri: str | None = None) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def log_run_params(run_id: str, params: Mapping[str, Any], uri: str | None = None) -> None:
    """Log params to a run. MLflow refuses to change a logged param, so when a resumed run is given a new
    value (say a larger max_epochs) the value is kept as tag ``param.<key>`` instead."""
    from mlflow.entities import Param, RunTag

    c = client(uri)
    logged = c.get_run(run_id).data.params
    new = [Param(k, str(v)) for k, v in params.items() if k not in logged]
    changed = [RunTag(f"param.{k}", str(v)) for k, v in params.items() if k in logged and logged[k] != str(v)]
    for i in range(0, len(new), 100):
        c.log_batch(run_id, params=new[i : i + 100])
    if changed:
        c.log_batch(run_id, tags=changed)


def tag_run(run_id: str, provenance: Mapping[str, Any], uri: str | None = None) -> None:
    """Git commit (MLflow's own tag, shown in the UI), tree state and data version as run tags; the devices
    and time ranges it trained and validated on (airwatt.data_ranges) as the artifact DATA_RANGES_ARTIFACT,
    with ``seen``: everything the model has seen, its initial model's data included (null when unknown)."""
    from airwatt.data_ranges import RECORD_KEY, seen_by

    tags = {
        "mlflow.source.git.commit": provenance.get("git_commit"),
        "git_dirty": provenance.get("git_dirty"),
        "data_version": provenance.get("data_version"),
    }
    c = client(uri)
    for key, value in tags.items():
        if value not in (None, "unknown"):
            c.set_tag(run_id, key, str(value))
    if RECORD_KEY in provenance:
        seen = seen_by(provenance)
        record = {**provenance[RECORD_KEY], "seen": None if seen is None else seen.to_json()}
        c.log_dict(run_id, record, DATA_RANGES_ARTIFACT)


def log_bundle_model(
    run_id: str,
    bundle_dir: Path,
    input_example: pd.DataFrame,
    output_example: pd.DataFrame,
    uri: str | None = None,
) -> str:
    """Log ``bundle_dir`` to run ``run_id`` as the pyfunc model-from-code ``model``; returns its model URI."""
    import mlflow
    from mlflow.models import infer_signature

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    signature = infer_signature(input_example, output_example)
    with tempfile.TemporaryDirectory(prefix="airwatt-log-") as tmp, mlflow.start_run(run_id=run_id):
        # MLflow stores an artifact under its folder's own name: copy it to "bundle" so that the path is
        # always <model>/artifacts/bundle, whatever the local folder was called.
        staged = shutil.copytree(bundle_dir, Path(tmp) / BUNDLE_ARTIFACT)
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=str(PYFUNC_MODEL_FILE),
            artifacts={BUNDLE_ARTIFACT: str(staged)},
            signature=signature,
            input_example=input_example,
            pip_requirements=_pip_requirements(),
        )
    return str(info.model_uri)


def _pip_requirements() -> list[str]:
    """What the pyfunc needs besides the airwatt package itself (which the serving image installs)."""
    from importlib.metadata import version

    return [
        f"{pkg}=={version(pkg)}" for pkg in ("mlflow", "torch", "numpy", "pandas", "safetensors", "pydantic")
    ]


def register(model_uri: str, run_id: str, cfg: RegisterParams, uri: str | None = None) -> str:
    """Register ``model_uri`` as a new version of ``cfg.model_name`` with the candidate alias; its version."""
    import mlflow

    uri = uri or tracking_uri()
    mlflow.set_registry_uri(uri)
    mlflow.set_tracking_uri(uri)
    mv = mlflow.register_model(model_uri, cfg.model_name, tags={"run_id": run_id})
    client(uri).set_registered_model_alias(cfg.model_name, cfg.candidate_alias, mv.version)
    log.info("registered %s version %s as @%s", cfg.model_name, mv.version, cfg.candidate_alias)
    return str(mv.version)


def log_evaluation(run_id: str, report: Mapping[str, Any], prefix: str, uri: str | None = None) -> None:
    """Log an evaluation report's defined numbers to a run as ``<prefix>/<appliance|mean>/<metric>``."""
    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}/{key}".replace(".", "/"), float(v), now_ms, 0)
        for key, v in flatten(report).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(float(v))
    ]
    c = client(uri)
    for i in range(0, len(metrics), 500):
        c.log_batch(run_id, metrics=metrics[i : i + 500])
