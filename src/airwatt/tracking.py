"""MLflow tracking and registry: where runs go, what a training run records, and the champion rule.

- Tracking URI: ``MLFLOW_TRACKING_URI`` when set (a team server), else a sqlite store at an ABSOLUTE path
  (``<repository root>/mlflow.db``), so DVC stages, notebooks and tests started from any folder agree.
  Artifacts of a local store go beside it (``mlruns/``), never into the current directory.
- Models are logged as an MLflow pyfunc "model from code" (airwatt/pyfunc_model.py) whose artifact
  ``bundle`` is the AirWatt model bundle (model.json + weights.safetensors): no pickles anywhere.
  ``download_bundle`` fetches that directory only, so loading it never runs code from the store.
- Registry: every new version gets the candidate alias; ``promote`` moves the champion alias to it only when
  it beats the current champion (rule in params.yaml ``register``) on the selected data less everything
  either model trained or validated on (their provenance, airwatt.data_ranges): a champion must not keep its
  place, nor a candidate win it, on data it has seen. No such data: the champion stays, and the reason says
  so. A candidate whose provenance is unknown (an older bundle) is never compared; a champion whose
  provenance is unknown is compared on data disjoint from the candidate's, with a warning (its possible
  advantage only keeps it in place). Decisions: docs/metrics.md, "Overlap with training, and the fair
  champion gate".

Only mlflow is imported here (no Lightning), so evaluation and serving can use it.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from airwatt.errors import ConfigError
from airwatt.models.bundle import ModelLoadError

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airwatt.config import RegisterParams
    from airwatt.data_ranges import DataRanges
    from airwatt.models import ModelBundle, ModelSpec

log = logging.getLogger(__name__)

PYFUNC_MODEL_FILE = Path(__file__).with_name("pyfunc_model.py")
BUNDLE_ARTIFACT = "bundle"  # the pyfunc artifact key, and its folder: <model>/artifacts/bundle
MODEL_ARTIFACT = "model"  # name of the logged model inside a run (runs:/<id>/model)
DATA_RANGES_ARTIFACT = "provenance/data_ranges.json"  # what a run's model trained and validated on


# ------------------------------------------------------------------------------------------ where runs go
def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the current one) holding dvc.yaml or .git."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "dvc.yaml").is_file() or (d / ".git").exists():
            return d
    return here


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
    from mlflow import MlflowClient

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    return MlflowClient(tracking_uri=uri or tracking_uri(), registry_uri=uri or tracking_uri())


def ensure_experiment(name: str, uri: str | None = None) -> str:
    """Id of experiment ``name``, created (with its artifact root beside a local store) when missing."""
    uri = uri or tracking_uri()
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(c.create_experiment(name, artifact_location=artifact_location(uri, name)))


# --------------------------------------------------------------------------------- what a run records
def pipeline_outputs(root: Path) -> list[str]:
    """Paths under ``root`` that `dvc repro` itself rewrites: dvc.lock, data/, and every out, metric and plot
    dvc.yaml declares (with the .gitignore DVC keeps beside it). A run changing them is not a code change."""
    paths = {"dvc.lock", "data"}
    try:
        stages = (yaml.safe_load((root / "dvc.yaml").read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError):
        stages = {}
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key) or []:
                for path in [entry] if isinstance(entry, str) else list(entry):
                    paths |= {str(path).rstrip("/"), (Path(path).parent / ".gitignore").as_posix()}
    return sorted(p for p in paths if p != ".gitignore")


def git_state(cwd: Path | None = None) -> dict[str, str]:
    """What a run was made from: {"git_commit": sha or "unknown", "git_dirty": "true"/"false"/"unknown"}.

    ``git_dirty`` says whether the project's tracked files differ from that commit, leaving out what the
    pipeline itself writes (``pipeline_outputs``: dvc.lock, data/, metrics), so a `dvc repro` from a clean
    clone records "false", and an edited source file or params.yaml "true"; untracked files never count.
    """
    root = repo_root(cwd)

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    excluded = [f":(exclude){p}" for p in pipeline_outputs(root)]
    status = git("status", "--porcelain", "--untracked-files=no", "--", ".", *excluded)
    dirty = "unknown" if status is None else str(bool(status.strip())).lower()
    if status and status.strip():
        changed = [line[3:] for line in status.splitlines()]
        log.debug("source differs from commit %s: %s", commit.strip()[:12], ", ".join(changed[:10]))
    return {"git_commit": commit.strip(), "git_dirty": dirty}


def _dvc_lock_md5(prepared_dir: Path) -> str | None:
    """The md5 dvc.lock records for ``prepared_dir`` when it is an output there, else None."""
    root = repo_root(prepared_dir.parent if prepared_dir.exists() else None)
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    try:
        rel = prepared_dir.resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if out.get("path") == rel and out.get("md5"):
                return str(out["md5"])
    return None


def _content_hash(prepared_dir: Path) -> str:
    """sha256 of the prepared directory's json/npy files (relative path + bytes), first 16 hex digits."""
    h = hashlib.sha256()
    for path in sorted(p for p in prepared_dir.rglob("*") if p.suffix in {".json", ".npy"}):
        h.update(path.relative_to(prepared_dir).as_posix().encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def dataset_version(prepared_dir: Path) -> str:
    """``dvc:<md5>`` from dvc.lock when the folder is a DVC output there, else ``sha256:<content hash>``.

    dvc.lock records the data of the last `dvc repro`/`dvc commit`; a hand-edited folder is not what it names,
    so outside a DVC checkout (tests, notebooks) the content itself is hashed.
    """
    md5 = _dvc_lock_md5(Path(prepared_dir))
    return f"dvc:{md5}" if md5 else f"sha256:{_content_hash(Path(prepared_dir))}"


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


# ------------------------------------------------------------------------------ the pyfunc's contract
INPUT_COLUMNS = ("timestamp", "power_w")


def utc_timestamps(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; naive ones are taken to be UTC already."""
    import pandas as pd

    ts = pd.to_datetime(values)
    return ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")


def predict_frame(bundle: ModelBundle, readings: pd.DataFrame) -> pd.DataFrame:
    """One device's readings (timestamp, power_w) -> per-slot predictions (module docstring)."""
    import numpy as np
    import pandas as pd

    from airwatt.errors import DataError
    from airwatt.prepare.grid import grid_device
    from airwatt.timeutil import from_epoch_ms

    missing = [c for c in INPUT_COLUMNS if c not in readings.columns]
    if missing:
        raise DataError(f"model input lacks columns {missing} (it needs {list(INPUT_COLUMNS)})")
    frame = pd.DataFrame(
        {"timestamp": utc_timestamps(readings["timestamp"]), "power_w": readings["power_w"].astype(float)}
    )
    if frame.empty:
        raise DataError("model input has no readings")
    g = grid_device(frame, None, None, [], interval_s=bundle.interval_s, max_fill_s=bundle.gap.max_fill_s)
    pred = bundle.predict_series(g.aggregate_w, g.valid)
    step_ms = round(bundle.interval_s * 1000)
    ts = from_epoch_ms(g.start_ms + np.arange(len(g), dtype=np.int64) * step_ms).tz_localize(None)
    out: dict[str, Any] = {"timestamp": ts, "predicted": pred.predicted}
    for j, name in enumerate(pred.appliances):
        out[f"{name}_power_w"] = pred.power_w[:, j].astype(np.float64)
        out[f"{name}_on"] = pred.on[:, j]
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------ loading a bundle
def bundle_cache_dir() -> Path:
    """Where ``download_bundle`` keeps bundles fetched without a destination: ``$AIRWATT_CACHE_DIR/bundles``,
    else ``$XDG_CACHE_HOME/airwatt/bundles`` (default ``~/.cache/airwatt/bundles``)."""
    base = os.environ.get("AIRWATT_CACHE_DIR") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "airwatt"
    )
    return Path(base) / "bundles"


def bundle_cache_path(model_uri: str, uri: str | None = None) -> Path:
    """The one cache folder of ``model_uri`` at tracking URI ``uri``: readable name + hash of both."""
    uri = uri or tracking_uri()
    slug = re.sub(r"[^A-Za-z0-9@._-]+", "_", model_uri.removeprefix("models:/").removeprefix("runs:/"))
    key = hashlib.sha256(f"{uri}\n{model_uri}".encode()).hexdigest()[:12]
    return bundle_cache_dir() / f"{slug[:60]}-{key}"


def download_bundle(model_uri: str, dst: Path | None = None) -> Path:
    """Download the model bundle directory of ``model_uri`` and return its local path.

    ``model_uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID/model``. Only the
    ``bundle`` artifact (JSON + safetensors) is fetched, never the pyfunc: loading it cannot run code.
    ``dst`` (replaced atomically) receives the files; without it, the URI's folder in ``bundle_cache_dir()``
    does (one folder per model URI and tracking URI, replaced by the next download, so repeated calls leave
    nothing behind). The staging folder is removed whether the download succeeds or fails.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from airwatt.atomic import atomic_dir

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not model_uri.startswith(("models:/", "runs:/")):
        raise ModelLoadError(
            f"{model_uri}: not an MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model)"
        )
    dst = Path(dst) if dst is not None else bundle_cache_path(model_uri, uri)
    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".airwatt-bundle-", dir=dst.parent))
    try:
        try:
            got = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{model_uri.rstrip('/')}/artifacts/{BUNDLE_ARTIFACT}", dst_path=str(staging)
                )
            )
        except (MlflowException, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{model_uri}: cannot resolve the model at tracking URI {uri} ({first})"
            ) from None
        if not got.is_dir():
            raise ModelLoadError(f"{model_uri}: no '{BUNDLE_ARTIFACT}' artifact at tracking URI {uri}")
        with atomic_dir(dst) as tmp:
            for item in got.iterdir():
                shutil.move(str(item), tmp / item.name)
        return dst
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a failure too: nothing half-downloaded left


# ------------------------------------------------------------------------------------ the champion rule
def metric_value(report: Mapping[str, Any], dotted: str) -> float | None:
    """``report["mean"]["f1"]`` for ``"mean.f1"``; None where missing or undefined (null/NaN)."""
    node: Any = report
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if node is None:
        return None
    try:
        value = float(node)
    except (TypeError, ValueError):
        raise ConfigError(
            f"register: metric {dotted!r} is not a number in the evaluation ({node!r})"
        ) from None
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def beats(candidate: Mapping[str, Any], champion: Mapping[str, Any], cfg: RegisterParams) -> Decision:
    """Does the candidate's evaluation beat the champion's under ``cfg``'s rule?

    The primary metric must improve by more than ``min_improvement``; a smaller difference either way is a
    tie, won only by a strictly better tie-breaker. An undefined candidate metric never wins; an undefined
    champion metric loses to a defined one. A full tie keeps the champion.
    """
    for metric, higher, tol in (
        (cfg.metric, cfg.higher_is_better, cfg.min_improvement),
        (cfg.tie_breaker, cfg.tie_breaker_higher_is_better, 0.0),
    ):
        c, h = metric_value(candidate, metric), metric_value(champion, metric)
        if c is None:
            return Decision(False, f"candidate {metric} is undefined")
        if h is None:
            return Decision(True, f"champion {metric} is undefined, candidate {metric}={c:.4g}")
        gain = (c - h) if higher else (h - c)
        if gain > tol:
            return Decision(True, f"{metric} {c:.4g} vs champion {h:.4g}")
        if gain < -tol:
            return Decision(False, f"{metric} {c:.4g} vs champion {h:.4g}")
    return Decision(False, f"tie on {cfg.metric} and {cfg.tie_breaker}: the champion stays")


def version_by_alias(name: str, alias: str, uri: str | None = None) -> ModelVersion | None:
    """The model version holding ``alias``, or None when the alias (or the model) does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return client(uri).get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"}:
            return None
        raise


def version_of_run(name: str, run_id: str, uri: str | None = None) -> ModelVersion | None:
    """The newest version of ``name`` registered from run ``run_id``."""
    versions = client(uri).search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return max(versions, key=lambda v: int(v.version), default=None)


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


# ------------------------------------------------------------------------------------------- promotion
class Evaluator(Protocol):
    """``evaluate_model(model, out_json, is_candidate, exclude)``: airwatt.evaluate of ``model`` on the chosen
    data with nothing inside ``exclude`` scored (None: everything); the report, also written to ``out_json``.
    Raises airwatt.data_ranges.NoDisjointData when the exclusion leaves nothing to score."""

    def __call__(
        self, model: str | Path, out: Path, is_candidate: bool, exclude: DataRanges | None, /
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Promotion:
    """What ``promote`` decided; ``as_json()`` is the DVC metrics file of the evaluate stage."""

    model_name: str
    candidate_version: str
    champion_before: str | None
    champion_after: str | None
    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    candidate_overlaps_training: bool | None = None  # its report's data vs its own training; None: unknown
    compared_on: DataRanges | None = None  # the data candidate and champion were compared on

    def as_json(self) -> dict[str, Any]:
        def num(v: str | None) -> int | None:
            return int(v) if v is not None else None

        return {
            "model_name": self.model_name,
            "candidate_version": num(self.candidate_version),
            "champion_version_before": num(self.champion_before),
            "champion_version": num(self.champion_after),
            "promoted": self.promoted,
            "reason": self.reason,
            "metric": self.metric,
            "candidate_metric": self.candidate_value,
            "champion_metric": self.champion_value,
            "candidate_overlaps_training": self.candidate_overlaps_training,
            "compared_devices": None if self.compared_on is None else self.compared_on.devices,
            "compared_hours": None if self.compared_on is None else round(self.compared_on.hours(), 6),
        }


def candidate_version(candidate: str | Path, cfg: RegisterParams, uri: str | None = None) -> ModelVersion:
    """The registry version of ``candidate``: a bundle directory (found by the run in its provenance), or a
    ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI of ``cfg.model_name``."""
    from airwatt.models.bundle import read_spec

    text = str(candidate)
    if Path(text).is_dir():
        run_id = read_spec(text).provenance.get("run_id")
        mv = version_of_run(cfg.model_name, run_id, uri) if run_id else None
        if mv is None:
            raise ModelLoadError(
                f"{text}: this bundle (run {run_id}) is not a registered version of {cfg.model_name!r} at "
                f"tracking URI {uri or tracking_uri()}; train it with `airwatt train` against this store"
            )
        return mv
    prefix = f"models:/{cfg.model_name}"
    rest = text.removeprefix(prefix)
    c = client(uri)
    from mlflow.exceptions import MlflowException

    try:
        if rest.startswith("@"):
            return c.get_model_version_by_alias(cfg.model_name, rest[1:])
        if rest.startswith("/") and rest[1:].isdigit():
            return c.get_model_version(cfg.model_name, rest[1:])
    except MlflowException as e:
        raise ModelLoadError(
            f"{text}: not found at tracking URI {uri or tracking_uri()} ({e.message})"
        ) from None
    raise ModelLoadError(f"{text}: promote takes a bundle directory or {prefix}@ALIAS or {prefix}/VERSION")


def model_spec(model: str | Path, uri: str | None = None) -> ModelSpec:
    """The spec (model.json) of a bundle directory or an MLflow model URI, without fetching its weights."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from airwatt.models.bundle import SPEC_FILE, read_spec

    text = str(model)
    if Path(text).is_dir():
        return read_spec(text)
    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with tempfile.TemporaryDirectory(prefix="airwatt-spec-") as tmp:
        try:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{text.rstrip('/')}/artifacts/{BUNDLE_ARTIFACT}/{SPEC_FILE}", dst_path=tmp
            )
        except (MlflowException, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{text}: cannot read its model spec at tracking URI {uri} ({first})"
            ) from None
        return read_spec(Path(got).parent)


@dataclass(frozen=True)
class Comparison:
    """The fair comparison's outcome: the decision, both reports on the disjoint data (None when none was
    scored) and that data (None when the reports do not say)."""

    decision: Decision
    candidate_report: Mapping[str, Any] | None = None
    champion_report: Mapping[str, Any] | None = None
    compared_on: DataRanges | None = None


def compare_fairly(
    candidate: str | Path,
    champion: str,
    report: Mapping[str, Any],
    evaluate_model: Evaluator,
    cfg: RegisterParams,
    uri: str | None = None,
) -> Comparison:
    """Candidate against champion on the selected data less everything either trained or validated on.

    ``report`` is the candidate's evaluation of the whole selection: when it already is disjoint from both
    (the usual held-out test split) it is reused, else the candidate is evaluated again without that data.
    A candidate of unknown provenance is not compared (it could be scored on its own training data); a
    champion of unknown provenance is, on data disjoint from the candidate's, with a warning: whatever it
    trained on can only make it harder to beat, never hand the alias to a worse model.
    """
    from airwatt.data_ranges import NoDisjointData, evaluated_of, seen_by

    candidate_seen = seen_by(model_spec(candidate, uri).provenance)
    if candidate_seen is None:
        return Comparison(
            Decision(
                False,
                "the candidate's provenance does not record the data it trained and validated on (a bundle "
                "from before data ranges were recorded): no fair comparison is possible, the champion stays",
            )
        )
    champion_seen = seen_by(model_spec(champion, uri).provenance)
    if champion_seen is None:
        log.warning(
            "champion %s does not record the data it trained and validated on: comparing on data disjoint "
            "from the candidate's only (a champion scored on its own training data can only look better)",
            champion,
        )
    exclude = candidate_seen if champion_seen is None else candidate_seen | champion_seen
    whose = "both models'" if champion_seen is not None else "the candidate's (the champion's are unknown)"
    nothing = Decision(
        False, f"no evaluation data disjoint from {whose} training and validation: the champion stays"
    )
    evaluated = evaluated_of(report)
    if evaluated is not None and not evaluated - exclude:
        return Comparison(nothing)
    with tempfile.TemporaryDirectory(prefix="airwatt-promote-") as tmp:
        try:
            if evaluated is not None and not evaluated & exclude:
                candidate_report = report
            else:
                candidate_report = evaluate_model(candidate, Path(tmp) / "candidate.json", True, exclude)
            champion_report = evaluate_model(champion, Path(tmp) / "champion.json", False, exclude)
        except NoDisjointData as e:
            log.info("%s", e)
            return Comparison(nothing)
    compared = evaluated_of(candidate_report)
    decision = beats(candidate_report, champion_report, cfg)
    where = f"disjoint from {whose} training and validation"
    if compared is not None:
        where = f"on {len(compared.devices)} device(s), {compared.hours():.4g} h {where}"
    return Comparison(
        Decision(decision.promote, f"{decision.reason} ({where})"),
        candidate_report,
        champion_report,
        compared,
    )


def promote(
    candidate: str | Path,
    evaluate_model: Evaluator,
    cfg: RegisterParams,
    *,
    report_path: Path,
    split_tag: str,
    uri: str | None = None,
) -> Promotion:
    """Evaluate the candidate (report to ``report_path``), log its metrics to its run, and give it the
    champion alias when it beats the current champion on data neither trained nor validated on
    (``compare_fairly``; rule: ``beats``). When no such data exists the champion stays and the reason says so.

    With no champion yet the candidate becomes champion (the Promotion records whether its evaluation
    overlapped its own training); a version that already is champion stays so.
    """
    uri = uri or tracking_uri()
    c = client(uri)
    mv = candidate_version(candidate, cfg, uri)
    champion = version_by_alias(cfg.model_name, cfg.champion_alias, uri)
    report = evaluate_model(candidate, report_path, True, None)
    if mv.run_id:
        log_evaluation(mv.run_id, report, f"eval_{split_tag}", uri)
        c.log_dict(mv.run_id, report, f"evaluation/{split_tag}.json")
    overlap = report.get("overlap")  # absent from a report that does not say (not airwatt.evaluate's)
    overlaps = overlap.get("with_training") if isinstance(overlap, Mapping) else None
    comparison = None
    if champion is None:
        note = ""
        if overlaps is True:
            note = " (its evaluation overlaps its own training data)"
        elif isinstance(overlap, Mapping) and overlaps is None:
            note = " (its provenance is unknown)"
        decision = Decision(True, f"no champion yet{note}")
    elif champion.version == mv.version:
        decision = Decision(False, f"version {mv.version} already is the champion")
    else:
        champion_uri = f"models:/{cfg.model_name}/{champion.version}"
        comparison = compare_fairly(candidate, champion_uri, report, evaluate_model, cfg, uri)
        decision = comparison.decision
    if decision.promote:
        c.set_registered_model_alias(cfg.model_name, cfg.champion_alias, mv.version)
    c.set_model_version_tag(cfg.model_name, mv.version, "promotion", decision.reason)
    after = mv.version if decision.promote else (champion.version if champion else None)
    log.info(
        "%s version %s %s @%s: %s",
        cfg.model_name,
        mv.version,
        "is now" if decision.promote else "is not",
        cfg.champion_alias,
        decision.reason,
    )
    compared = comparison.candidate_report if comparison else None
    champion_report = comparison.champion_report if comparison else None
    return Promotion(
        cfg.model_name,
        str(mv.version),
        str(champion.version) if champion else None,
        str(after) if after is not None else None,
        decision.promote,
        decision.reason,
        cfg.metric,
        metric_value(compared if compared is not None else report, cfg.metric),
        metric_value(champion_report, cfg.metric) if champion_report else None,
        overlaps if isinstance(overlaps, bool) else None,
        comparison.compared_on if comparison else None,
    )
