"""params.yaml, loaded once into typed, frozen objects: the single source of tunables.

Each section belongs to one pipeline stage; DVC stages list only the keys they read. Unknown keys are errors,
so a typo in params.yaml fails loudly instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airwatt.errors import ConfigError

DEFAULT_PARAMS = Path("params.yaml")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataParams(_Section):
    interval_s: float = Field(gt=0, description="nominal reading interval of the monitors")


class SimulateParams(_Section):
    devices: int = Field(gt=0)
    seed: int
    home_fraction: float = Field(ge=0, le=1, description="share of homes; the rest are cafes and restaurants")
    missing_reading_fraction: float = Field(ge=0, le=1, description="readings dropped at random")
    connectivity_gaps_per_day: float = Field(ge=0, description="mean number of monitor offline periods")
    power_outages_per_week: float = Field(ge=0, description="mean number of site power outages (0 W rows)")
    noise_w: float = Field(ge=0, description="standard deviation of measurement noise")


SourceKind = Literal["simulator", "folder", "url", "redd", "refit", "ukdale"]


class SyncParams(_Section):
    source: SourceKind
    path: str | None = Field(default=None, description="folder, URL or importer source (not the simulator)")
    start: str = Field(description="window start, ISO 8601 UTC")
    days: float = Field(gt=0)


Severity = Literal["fail", "warn"]


class ValidateParams(_Section):
    cadence_tolerance_s: float = Field(ge=0)
    min_cadence_fraction: float = Field(ge=0, le=1)
    max_gap_fraction: float = Field(ge=0, le=1)
    max_outage_fraction: float = Field(ge=0, le=1)
    submeter_tolerance_w: float = Field(ge=0)
    submeter_tolerance_fraction: float = Field(ge=0)
    max_submeter_excess_fraction: float = Field(ge=0, le=1)
    example_rows: int = Field(gt=0)
    severity: dict[str, Severity]


class ImportParams(_Section):
    max_fill_s: float = Field(ge=0, description="importers forward-fill empty 5 s slots up to this long")


class PrepareParams(_Section):
    seed: int
    val_fraction: float = Field(ge=0, lt=1)
    test_fraction: float = Field(ge=0, lt=1)
    max_fill_s: float = Field(ge=0, description="gaps up to this long are forward-filled on the grid")
    val_devices: list[str] = Field(description="explicit validation devices (empty: the seeded rule)")
    test_devices: list[str] = Field(description="explicit test devices (empty: the seeded rule)")
    split_by: Literal["device", "time"] = Field(
        "device", description="device: whole devices per split; time: each device's span cut in time"
    )


TargetPos = Literal["midpoint", "last"]


class TrainParams(_Section):
    """Training (airwatt.training). Keys that only bound the run's length are not part of the resume hash."""

    model: str = Field(description="architecture name in airwatt.models.MODEL_NAMES")
    window_length: int | None = Field(gt=0, description="readings per window; null: the model's default")
    target: TargetPos | None = Field(description="predicted slot; null: the model's default_target")
    stride: int = Field(gt=0, description="slots between training window starts")
    val_stride: int = Field(gt=0, description="slots between validation window starts")
    max_invalid_fraction: float = Field(ge=0, le=1, description="invalid slots allowed in a window")
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    weight_decay: float = Field(ge=0)
    power_loss_weight: float = Field(ge=0, description="weight of the masked MSE on normalised power")
    onoff_loss_weight: float = Field(ge=0, description="weight of the masked BCE on on/off logits")
    max_epochs: int = Field(gt=0)
    max_steps: int = Field(ge=-1, description="optimizer steps in all; -1: no limit")
    limit_train_batches: int | None = Field(gt=0, description="batches per epoch; null: all windows")
    limit_val_batches: int | None = Field(gt=0, description="validation batches per epoch; null: all")
    early_stopping_patience: int | None = Field(gt=0, description="epochs without val/loss gain; null: off")
    num_workers: int = Field(ge=0, description="DataLoader worker processes")
    seed: int
    accelerator: str = Field(description="auto | cpu | gpu (Lightning)")
    devices: int | str = Field(description="auto or a count (Lightning)")
    strategy: str = Field(description="auto | ddp | ... (Lightning)")
    precision: str | None = Field(description="Lightning precision; null: bf16-mixed on CUDA, 32-true on CPU")
    checkpoint_dir: str = Field(description="checkpoints go to <checkpoint_dir>/<model>-<config hash>/")
    arch: dict[str, dict[str, Any]] = Field(description="constructor arguments per architecture name")


class RegisterParams(_Section):
    """MLflow experiment, registered model, aliases and the champion promotion rule (airwatt.tracking)."""

    experiment: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    candidate_alias: str = Field(min_length=1)
    champion_alias: str = Field(min_length=1)
    metric: str = Field(description="evaluation metric deciding promotion, e.g. mean.f1")
    higher_is_better: bool
    min_improvement: float = Field(ge=0, description="a smaller gain on `metric` is a tie")
    tie_breaker: str = Field(description="metric deciding a tie, e.g. mean.mae_w")
    tie_breaker_higher_is_better: bool


class Params(_Section):
    data: DataParams
    simulate: SimulateParams
    sync: SyncParams
    validate_: ValidateParams = Field(alias="validate")
    prepare: PrepareParams
    import_: ImportParams = Field(alias="import")
    train: TrainParams
    register_: RegisterParams = Field(alias="register")
    # Sections of later stages (train, evaluate, serve, label, report) are kept as raw mappings here until
    # their stage defines them.
    extra: dict[str, Any] = Field(default_factory=dict)


def load_params(path: str | Path = DEFAULT_PARAMS, overrides: dict[str, Any] | None = None) -> Params:
    """Read params.yaml; ``overrides`` maps "section.key" to a value (as `dvc exp run -S` would)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        raw.setdefault(section, {})[key] = value
    known = {"data", "simulate", "sync", "validate", "prepare", "import", "train", "register"}
    raw = {
        **{k: v for k, v in raw.items() if k in known},
        "extra": {k: v for k, v in raw.items() if k not in known},
    }
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: invalid parameters:\n  " + "\n  ".join(lines)) from None
