"""The self-describing model artifact shared by evaluation, notebooks and serving.

A bundle is a directory::

    model.json           ModelSpec: architecture name and arguments, appliances, window, target position,
                         interval, normalisation statistics, on/off parameters, the gap policy, the decision
                         rule of a real-time model, the offline rule's thresholds, provenance
    weights.safetensors  the state dict as plain tensors (loading it cannot run code, unlike a pickle)

``provenance`` records where the model came from: data version, git commit, MLflow run, and under
``data_ranges`` the devices and UTC time ranges it trained and validated on (airwatt.data_ranges; a bundle
without them has unknown provenance, which the champion gate treats as possibly overlapping anything).

Schema versions: "2" (this one) adds ``gap`` and ``decision`` (and, optionally, ``offline_on_prob``: a
bundle without it decides offline with ``prob_on >= 0.5``). Bundles of version "1" still load: their gap
policy is the ``max_fill_s`` their provenance recorded with at most 10 % of a window missing, and a
real-time model among them decides with ``prob_on >= 0.5`` per reading (``DecisionSpec.plain``).
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
from airwatt.models.decision import DecisionSpec

BUNDLE_SCHEMA_VERSION = "2"
READABLE_SCHEMA_VERSIONS = ("1", "2")
LEGACY_MAX_INVALID_FRACTION = 0.1  # what serving and training used before the gap policy was in the bundle
ON_PROBABILITY_THRESHOLD = 0.5  # the per-reading threshold of untuned rules and of the training metrics
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


class GapPolicy(BaseModel):
    """How the model's input is put on its grid and when a reading is answered at all (training, evaluation,
    reports and serving all read it from here: airwatt.prepare.grid.fill_short_gaps, ``window_problems``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_fill_s: float = Field(ge=0, description="the first max_fill_s of a gap are forward-filled")
    max_invalid_fraction: float = Field(
        ge=0, le=1, description="a reading is answered when at most this share of its window is missing"
    )


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
    gap: GapPolicy
    decision: DecisionSpec | None = Field(
        default=None, description="the causal on/off rule of a real-time (target 'last') model"
    )
    offline_on_prob: dict[str, float] | None = Field(
        default=None,
        description="the offline rule's on-probability threshold per appliance, tuned on validation "
        f"(None: {ON_PROBABILITY_THRESHOLD})",
    )
    provenance: dict[str, Any] = Field(default_factory=dict, description="data version, git commit, run id")

    @property
    def real_time(self) -> bool:
        """A model of the newest reading (causal): its answers are what the service serves."""
        return self.target == "last"

    def offline_threshold(self, appliance: str) -> float:
        """The offline rule's on-probability threshold of one appliance (0.5 where untuned)."""
        return (self.offline_on_prob or {}).get(appliance, ON_PROBABILITY_THRESHOLD)

    def decision_or_plain(self) -> DecisionSpec:
        """The decision rule; ``prob_on >= 0.5`` per reading for a real-time model without one."""
        return self.decision or DecisionSpec.plain(self.appliances, self.interval_s)


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
    version = str(raw.get("schema_version"))
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ModelLoadError(
            f"{path}: bundle schema_version {raw.get('schema_version')!r} is not one of "
            f"{', '.join(READABLE_SCHEMA_VERSIONS)}; retrain or convert the model"
        )
    if version == "1":
        raw = upgrade_v1(raw)
    return ModelSpec.model_validate(raw)


def upgrade_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """A schema "1" spec as "2": the gap policy it was served with, no tuned decision rule."""
    provenance = raw.get("provenance") or {}
    gap = {
        "max_fill_s": float(provenance.get("max_fill_s", 0.0)),
        "max_invalid_fraction": LEGACY_MAX_INVALID_FRACTION,
    }
    return {**raw, "schema_version": BUNDLE_SCHEMA_VERSION, "gap": gap}


def read_weights(bundle_dir: str | Path) -> dict[str, torch.Tensor]:
    path = Path(bundle_dir) / WEIGHTS_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: weights not found")
    return load_file(str(path), device="cpu")
