"""Which model a URI names, and getting its bundle: the one resolver every consumer calls (evaluation,
reports, labeling, fine-tuning's ``--init-from``, promotion, the service's start-up, notebooks).

A model is named by one of:

- a model bundle directory (model.json + weights.safetensors): used where it is, no MLflow involved;
- ``models:/NAME@ALIAS``: the registered version holding the alias (resolving pins it to that version once);
- ``models:/NAME/VERSION``: one registered version;
- ``runs:/RUN_ID/PATH``: the model a run logged (``runs:/RUN_ID/model``).

``parse_model_uri`` says which, as a ``ModelRef``, without touching the store; ``resolve`` gives the local
bundle directory and, for the registry, the pinned version. Only the ``bundle`` artifact of a logged model
(JSON + safetensors) is ever fetched, never the pyfunc: loading a model cannot run code from the store.
Errors are ``ModelLoadError``s that start with the URI as given.

mlflow is imported only to resolve a store URI (never for a bundle directory), and nothing here logs to
MLflow (that is airwatt.tracking): the service can resolve its model with MLflow's client alone.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from airwatt.mlflow_store import client, tracking_uri
from airwatt.models.bundle import ModelLoadError

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from airwatt.models import ModelBundle, ModelSpec

BUNDLE_ARTIFACT = "bundle"  # the pyfunc artifact key, and its folder: <model>/artifacts/bundle
FORMS = "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model"
ModelKind = Literal["bundle", "registered", "run"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # models:/, runs:/, s3://, file:// (not C:\)
_REGISTERED = re.compile(r"^models:/(?P<name>[^/@\s]+)(?:@(?P<alias>[^/@\s]+)|/(?P<version>\d+))/?$")
_RUN = re.compile(r"^runs:/(?P<run_id>[^/\s]+)/(?P<path>[^\s]*[^/\s])/*$")


@dataclass(frozen=True)
class ModelRef:
    """What a model URI names (module docstring). ``uri`` is the text as given, for messages and records."""

    uri: str
    kind: ModelKind
    path: Path | None = None  # bundle: the directory
    name: str | None = None  # registered: the model's name, and its alias or its version
    alias: str | None = None
    version: str | None = None
    run_id: str | None = None  # run: the run and the logged model's path inside it
    artifact_path: str | None = None

    @property
    def in_store(self) -> bool:
        """Whether the model lives in the MLflow store (else a local bundle directory)."""
        return self.kind != "bundle"


@dataclass(frozen=True)
class RegistryVersion:
    """One registered model version; ``alias`` is the alias it was found by (None: by its number)."""

    name: str
    version: str
    alias: str | None
    run_id: str | None

    @property
    def uri(self) -> str:
        """``models:/NAME/VERSION``: exactly this version, whatever the alias holds later."""
        return f"models:/{self.name}/{self.version}"

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "alias": self.alias, "version": self.version, "run_id": self.run_id}


@dataclass(frozen=True)
class ResolvedModel:
    """A model URI resolved: its local bundle directory and, from the registry, the version pinned."""

    ref: ModelRef
    bundle_dir: Path
    registry: RegistryVersion | None = None


# ------------------------------------------------------------------------------------------ parsing
def match_model_uri(text: str | Path) -> ModelRef | None:
    """The ``ModelRef`` of ``text`` (module docstring), or None when it names no model in any form."""
    text = str(text)
    if text and Path(text).is_dir():  # Path("") is the current folder
        return ModelRef(text, "bundle", path=Path(text))
    if m := _REGISTERED.match(text):
        return ModelRef(text, "registered", name=m["name"], alias=m["alias"], version=m["version"])
    if m := _RUN.match(text):
        return ModelRef(text, "run", run_id=m["run_id"], artifact_path=m["path"])
    return None


def parse_model_uri(text: str | Path) -> ModelRef:
    """The ``ModelRef`` of ``text``; ``ModelLoadError`` naming it when it is neither a bundle directory nor a
    model URI of one of the supported forms."""
    ref = match_model_uri(text)
    if ref is not None:
        return ref
    if _SCHEME.match(str(text)):
        raise ModelLoadError(f"{text}: not an MLflow model URI this workbench resolves ({FORMS})")
    raise ModelLoadError(f"{text}: no model bundle directory there, and not an MLflow model URI ({FORMS})")


# ------------------------------------------------------------------------------------------ the registry
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


def _lookup(ref: ModelRef, uri: str) -> ModelVersion | None:
    """The version a registered ref names; None when its alias (or model) does not exist."""
    assert ref.name is not None
    if ref.alias is not None:
        return version_by_alias(ref.name, ref.alias, uri)
    return client(uri).get_model_version(ref.name, str(ref.version))


def registry_version(ref: ModelRef, uri: str | None = None) -> RegistryVersion:
    """The registered version a ``models:/`` ref names, an alias pinned to the version holding it now."""
    from mlflow.exceptions import MlflowException

    if ref.kind != "registered" or ref.name is None:
        raise ModelLoadError(
            f"{ref.uri}: not a registered model URI (models:/NAME@ALIAS, models:/NAME/VERSION)"
        )
    uri = uri or tracking_uri()
    try:
        mv = _lookup(ref, uri)
    except MlflowException as e:
        raise ModelLoadError(f"{ref.uri}: not found at tracking URI {uri} ({e.message})") from None
    if mv is None:
        raise ModelLoadError(
            f"{ref.uri}: no version of registered model {ref.name!r} holds alias {ref.alias!r} "
            f"at tracking URI {uri}"
        )
    return RegistryVersion(ref.name, str(mv.version), ref.alias, mv.run_id)


def registry_info(model: str | Path) -> RegistryVersion | None:
    """The registered version behind ``model`` when it is a ``models:/`` URI; None for anything else and for
    an alias no version holds (what a report records beside the model it evaluated)."""
    ref = match_model_uri(model)
    if ref is None or ref.kind != "registered" or ref.name is None:
        return None
    mv = _lookup(ref, tracking_uri())
    return None if mv is None else RegistryVersion(ref.name, str(mv.version), ref.alias, mv.run_id)


# ------------------------------------------------------------------------------------------ downloading
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


def _store_ref(model_uri: str | Path) -> ModelRef:
    """The ref of a model in the store; a bundle directory or anything else is refused, naming it."""
    ref = match_model_uri(model_uri)
    if ref is None or not ref.in_store:
        raise ModelLoadError(f"{model_uri}: not an MLflow model URI ({FORMS})")
    return ref


def download_bundle(model_uri: str, dst: Path | None = None) -> Path:
    """Download the model bundle directory of ``model_uri`` and return its local path.

    ``model_uri``: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID/model``. Only the
    ``bundle`` artifact (JSON + safetensors) is fetched, never the pyfunc: loading it cannot run code.
    ``dst`` (replaced atomically) receives the files; without it, the URI's folder in ``bundle_cache_dir()``
    does (one folder per model URI and tracking URI, replaced by the next download, so repeated calls leave
    nothing behind). The staging folder is removed whether the download succeeds or fails.
    """
    return _download(_store_ref(model_uri).uri, dst, shown=model_uri)


def _download(model_uri: str, dst: Path | None, *, shown: str) -> Path:
    """``download_bundle`` of ``model_uri``; errors name ``shown`` (the URI the caller was given)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from airwatt.atomic import atomic_dir

    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
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
                f"{shown}: cannot resolve the model at tracking URI {uri} ({first})"
            ) from None
        if not got.is_dir():
            raise ModelLoadError(f"{shown}: no '{BUNDLE_ARTIFACT}' artifact at tracking URI {uri}")
        with atomic_dir(dst) as tmp:
            for item in got.iterdir():
                shutil.move(str(item), tmp / item.name)
        return dst
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # after a failure too: nothing half-downloaded left


# ------------------------------------------------------------------------------------------ resolving
def resolve(model: str | Path, dest: Path) -> ResolvedModel:
    """``model``'s bundle directory, local: a bundle directory as it is; a model in the store downloaded into
    ``dest`` (replaced), an alias first pinned to the version holding it, so what is loaded is what is
    reported even if the alias moves meanwhile."""
    ref = parse_model_uri(model)
    if ref.path is not None:
        return ResolvedModel(ref, ref.path.resolve())
    registry = registry_version(ref) if ref.kind == "registered" else None
    bundle_dir = _download(registry.uri if registry else ref.uri, dest, shown=ref.uri)
    return ResolvedModel(ref, bundle_dir, registry)


def load_bundle(model: str | Path) -> ModelBundle:
    """The loaded bundle of ``model`` (any form): a download goes to a temporary folder, removed once the
    bundle is loaded (it holds its weights in memory)."""
    from airwatt.models import ModelBundle

    ref = parse_model_uri(model)
    if ref.path is not None:
        return ModelBundle.load(ref.path)
    with tempfile.TemporaryDirectory(prefix="airwatt-model-") as tmp:
        return ModelBundle.load(resolve(ref.uri, Path(tmp) / "bundle").bundle_dir)


def model_spec(model: str | Path, uri: str | None = None) -> ModelSpec:
    """The spec (model.json) of ``model`` (any form), without fetching its weights."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from airwatt.models.bundle import SPEC_FILE, read_spec

    ref = parse_model_uri(model)
    if ref.path is not None:
        return read_spec(ref.path)
    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    with tempfile.TemporaryDirectory(prefix="airwatt-spec-") as tmp:
        try:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{ref.uri.rstrip('/')}/artifacts/{BUNDLE_ARTIFACT}/{SPEC_FILE}", dst_path=tmp
            )
        except (MlflowException, OSError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ModelLoadError(
                f"{ref.uri}: cannot read its model spec at tracking URI {uri} ({first})"
            ) from None
        return read_spec(Path(got).parent)
