"""Which model the service answers with: settings, resolving the URI once, and the version it reports.

Start-up (``bentoml serve``): the service's deployment hook runs ``stage_model`` ONCE in the main process,
before any worker starts. It resolves the configured URI (an alias is pinned to its version number first, so
every worker serves the same version even if the alias moves meanwhile), downloads the bundle, loads it once
to prove it works, and records the local copy in the environment (``AIRWATT_SERVING_STAGED``), which the
worker processes inherit and load from. A model that cannot be loaded raises ``SystemExit`` with a message
naming the URI: the server exits non-zero instead of serving errors. The staged copy and the workers'
warm-mark folder are temporary folders of the process that made them, removed when it exits (a server
stopped by SIGTERM or Ctrl-C leaves nothing behind in the temp folder; only a SIGKILL does).

``model_version``: ``NAME/VERSION`` (registry: ``models:/NAME/VERSION`` loads exactly it) when the model came
from the registry, else ``sha256:<first 16 hex digits>`` of the bundle's files.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from airwatt.config import ReportParams, ServeParams, load_params
from airwatt.errors import AirwattError
from airwatt.models.bundle import SPEC_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

MODEL_URI_ENV = "AIRWATT_MODEL_URI"  # overrides serve.model_uri (tests, containers)
PARAMS_ENV = "AIRWATT_PARAMS"  # params.yaml to read (default: the repository's, else ./params.yaml)
STAGED_ENV = "AIRWATT_SERVING_STAGED"  # set by the deployment hook: the staged model's JSON record
WARM_DIR_ENV = "AIRWATT_SERVING_WARM_DIR"  # set by the deployment hook: where workers mark themselves warm
EVERY_URL = "^"  # an OpenTelemetry excluded_urls pattern (a regex search) that every URL matches


def _params_path() -> Path:
    from airwatt.lineage import repo_root

    return Path(os.environ.get(PARAMS_ENV) or repo_root() / "params.yaml")


def report_settings() -> ReportParams:
    """params.yaml ``report`` (tariff, events, reconciliation) for POST /report."""
    return load_params(_params_path()).report


def serve_settings() -> ServeParams:
    """params.yaml ``serve`` (``AIRWATT_PARAMS`` or the repository's), ``AIRWATT_MODEL_URI`` applied."""
    cfg = load_params(_params_path()).serve
    uri = os.environ.get(MODEL_URI_ENV)
    return cfg.model_copy(update={"model_uri": uri}) if uri else cfg


def service_config(cfg: ServeParams) -> dict[str, Any]:
    """``@bentoml.service`` settings from params.yaml ``serve``. With ``tracing`` off every route bypasses
    BentoML's OpenTelemetry middleware (~0.6 ms CPU per call; by default it records nothing anyway); with it
    on, BENTOML_CONFIG's ``tracing`` section (exporter, sample rate) applies as BentoML documents it."""
    config: dict[str, Any] = {
        "workers": cfg.workers,
        "traffic": {"timeout": cfg.timeout_s},  # no max_concurrency: airwatt.serving.guard answers 503
    }
    if not cfg.tracing:
        config["tracing"] = {"excluded_urls": [EVERY_URL]}
    return config


@dataclass(frozen=True)
class StagedModel:
    """A resolved model: its local bundle directory and the identity responses report."""

    uri: str
    bundle_dir: str
    version: str

    def to_env(self) -> None:
        os.environ[STAGED_ENV] = json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> StagedModel | None:
        raw = os.environ.get(STAGED_ENV)
        return cls(**json.loads(raw)) if raw else None


def bundle_hash(bundle_dir: Path) -> str:
    """``sha256:`` + 16 hex digits over the spec and the weights."""
    h = hashlib.sha256()
    for name in (SPEC_FILE, WEIGHTS_FILE):
        h.update((bundle_dir / name).read_bytes())
    return f"sha256:{h.hexdigest()[:16]}"


def resolve_model(uri: str, work_dir: Path) -> StagedModel:
    """Pin ``uri`` to one version and have its bundle locally (downloaded into ``work_dir`` if remote):
    airwatt.model_uri.resolve, which imports MLflow only for a model in the store."""
    from airwatt.model_uri import resolve

    resolved = resolve(uri, work_dir / "bundle")
    registry = resolved.registry
    version = f"{registry.name}/{registry.version}" if registry else bundle_hash(resolved.bundle_dir)
    return StagedModel(uri, str(resolved.bundle_dir), version)


def process_temp_dir(prefix: str) -> Path:
    """A fresh temporary folder that this process removes when it exits (spawned workers do not inherit
    the registration: BentoML starts them as new interpreters)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def stage_model(uri: str) -> StagedModel:
    """Resolve and load ``uri`` once, record it for the workers; SystemExit naming the URI if it fails."""
    from airwatt.models import ModelBundle

    try:
        staged = resolve_model(uri, process_temp_dir("airwatt-serving-"))
        ModelBundle.load(staged.bundle_dir)
    except AirwattError as e:
        detail = str(e) if str(e).startswith(uri) else f"{uri}: {e}"
        log.error("cannot serve the model: %s", detail)
        raise SystemExit(f"airwatt serving: cannot load the model {detail}") from None
    log.info("serving model %s (%s) from %s", uri, staged.version, staged.bundle_dir)
    staged.to_env()
    return staged


class WarmMarks:
    """Which workers of this server have loaded the model and run their warm-up: one file per worker in a
    directory the deployment hook creates (``AIRWATT_SERVING_WARM_DIR``, inherited by the workers), so
    that any worker answering /readyz can tell whether all of them are warm. Without the directory (the
    service in-process, one instance) only this instance counts."""

    def __init__(self, workers: int, worker_index: int | None) -> None:
        root = os.environ.get(WARM_DIR_ENV)
        self.dir = Path(root) if root else None
        self.workers = workers
        self.mine = f"worker-{worker_index or 1}"
        self.warm = False
        if self.dir is not None:
            (self.dir / self.mine).unlink(missing_ok=True)  # a restarted worker is cold again

    @staticmethod
    def prepare() -> None:
        """Main process, before the workers start: a fresh, empty directory for their marks."""
        os.environ[WARM_DIR_ENV] = str(process_temp_dir("airwatt-serving-warm-"))

    def mark_warm(self) -> None:
        self.warm = True
        if self.dir is not None:
            (self.dir / self.mine).write_text(str(os.getpid()))

    def all_warm(self) -> bool:
        if not self.warm:
            return False
        if self.dir is None:
            return True
        return sum(1 for p in self.dir.glob("worker-*")) >= self.workers
