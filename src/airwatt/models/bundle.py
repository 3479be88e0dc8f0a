"""The self-describing model artifact shared by evaluation, notebooks and serving.

A bundle is a directory::

    model.json           ModelSpec: architecture name and arguments, appliances, window, target position,
                         interval, normalisation statistics, on/off parameters, provenance
    weights.safetensors  the state dict as plain tensors (loading it cannot run code, unlike a pickle)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file

from airwatt.appliances import ApplianceSpec
from airwatt.atomic import atomic_dir
from airwatt.errors import AirwattError
from airwatt.models.base import TargetPosition

BUNDLE_SCHEMA_VERSION = "1"
SPEC_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"


class ModelLoadError(AirwattError):
    """A model artifact that is missing, unreadable or inconsistent."""


class NormStats(BaseModel):
    """Normalisation fitted on training devices (see airwatt.prepare.normalize)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    aggregate_mean_w: float
    aggregate_std_w: float
    power_mean_w: dict[str, float]
    power_std_w: dict[str, float]


class OnOffSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    on_threshold_w: float
    min_on_s: float
    min_off_s: float
    max_w: float

    @classmethod
    def of(cls, spec: ApplianceSpec) -> OnOffSpec:
        return cls(
            on_threshold_w=spec.on_threshold_w,
            min_on_s=spec.min_on_s,
            min_off_s=spec.min_off_s,
            max_w=spec.max_w,
        )

    def appliance_spec(self, name: str) -> ApplianceSpec:
        return ApplianceSpec(name, self.on_threshold_w, self.min_on_s, self.min_off_s, self.max_w)


class ModelSpec(BaseModel):
    """Everything needed to rebuild a model and use it correctly, stored beside its weights."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: str = BUNDLE_SCHEMA_VERSION
    arch: str
    arch_kwargs: dict[str, Any] = Field(default_factory=dict)
    appliances: list[str]
    window_length: int = Field(gt=0, description="readings per input window")
    target: TargetPosition
    interval_s: float = Field(gt=0)
    norm: NormStats
    on_off: dict[str, OnOffSpec]
    provenance: dict[str, Any] = Field(default_factory=dict, description="data version, git commit, run id")


def save_bundle(out_dir: str | Path, spec: ModelSpec, model: torch.nn.Module) -> Path:
    """Write ``model.json`` and ``weights.safetensors`` atomically; returns ``out_dir``."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_dir(out_dir) as tmp:
        (tmp / SPEC_FILE).write_text(spec.model_dump_json(indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_FILE), metadata={"arch": spec.arch})
    return Path(out_dir)


def read_spec(bundle_dir: str | Path) -> ModelSpec:
    path = Path(bundle_dir) / SPEC_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: model spec not found (is this an AirWatt model bundle?)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if str(raw.get("schema_version")) != BUNDLE_SCHEMA_VERSION:
        raise ModelLoadError(
            f"{path}: bundle schema_version {raw.get('schema_version')!r} is not "
            f"{BUNDLE_SCHEMA_VERSION!r}; retrain or convert the model"
        )
    return ModelSpec.model_validate(raw)


def read_weights(bundle_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(bundle_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights not found")
    return load_file(str(path), device="cpu")
