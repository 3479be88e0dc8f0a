"""params.yaml, loaded once into typed, frozen objects: the single source of tunables.

Each section belongs to one pipeline stage; DVC stages list only the keys they read. Unknown keys are errors,
so a typo in params.yaml fails loudly instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

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
    max_fill_s: float = Field(ge=0, description="the first max_fill_s of a gap are filled on the grid")
    val_devices: list[str] = Field(description="explicit validation devices (empty: the seeded rule)")
    test_devices: list[str] = Field(description="explicit test devices (empty: the seeded rule)")
    exclude_devices: list[str] = Field(
        default_factory=list, description="devices in no split (another recording of a held-out house)"
    )
    split_by: Literal["device", "time"] = Field(
        "device", description="device: whole devices per split; time: each device's span cut in time"
    )
    appliances: list[str] = Field(
        default_factory=list, description="the model's appliances (empty: every appliance of the dataset)"
    )


TargetPos = Literal["midpoint", "last"]


class AugmentParams(_Section):
    """Activation augmentation of the training windows (airwatt.training.augment; Kelly & Knottenbelt)."""

    add_ratio: float = Field(
        0.0, ge=0, le=1, description="share of windows given another device's activation"
    )
    remove_ratio: float = Field(
        0.0, ge=0, le=1, description="share of windows with one sub-metered load removed"
    )
    distract_ratio: float = Field(
        0.0, ge=0, le=1, description="share of windows given another load's activation (targets unchanged)"
    )
    scale_jitter: float = Field(
        0.0, ge=0, le=1, description="added activations' watts scaled by exp(U(-this, this))"
    )
    max_per_appliance: int = Field(2000, gt=0, description="activations kept per appliance (seeded spread)")
    max_s: float = Field(10800, gt=0, description="longest activation kept, seconds")

    @property
    def enabled(self) -> bool:
        return self.add_ratio > 0 or self.remove_ratio > 0 or self.distract_ratio > 0


class DecisionTuningParams(_Section):
    """The real-time models' causal on/off rule, tuned per appliance on validation (airwatt.models.tuning)."""

    memory_s: float = Field(gt=0, description="how far back the rule reads (/detect: window + this)")
    on_prob: list[float] = Field(min_length=1, description="candidate on-probabilities")
    band: list[float] = Field(min_length=1, description="candidate bands: off_prob = on_prob - band")
    confirm_s: list[float] = Field(min_length=1, description="candidate on and off confirmation durations")
    min_gain: float = Field(ge=0, description="validation F1 a candidate must gain over the current values")

    @model_validator(mode="after")
    def _in_range(self) -> DecisionTuningParams:
        if not all(0 < p <= 1 for p in self.on_prob) or not all(0 <= b < 1 for b in self.band):
            raise ValueError("on_prob values must lie in (0, 1] and band values in [0, 1)")
        if any(c < 0 or c > self.memory_s for c in self.confirm_s):
            raise ValueError(f"confirm_s values must lie in [0, memory_s = {self.memory_s:g}]")
        return self


class TrainParams(_Section):
    """Training (airwatt.training). Keys that only bound the run's length are not part of the resume hash."""

    model: str = Field(description="architecture name in airwatt.models.MODEL_NAMES")
    window_length: int | None = Field(gt=0, description="readings per window; null: the model's default")
    target: TargetPos | None = Field(description="predicted slot; null: the model's default_target")
    stride: int = Field(gt=0, description="slots between training window (or chunk) starts")
    sequence_targets: int = Field(
        1, gt=0, description="targets per training item: 1 a window; S > 1 a chunk of S (real-time models)"
    )
    val_stride: int = Field(gt=0, description="slots between validation window starts")
    max_invalid_fraction: float = Field(ge=0, le=1, description="invalid slots allowed in a window")
    batch_size: int = Field(gt=0, description="windows per step in all: split evenly between DDP processes")
    lr: float = Field(gt=0, description="learning rate (the peak of one_cycle)")
    lr_schedule: Literal["constant", "one_cycle"] = Field(
        "constant", description="constant, or torch's OneCycleLR over the run's optimizer steps"
    )
    weight_decay: float = Field(ge=0)
    power_loss_weight: float = Field(ge=0, description="weight of the masked MSE on normalised power")
    power_loss_when: Literal["all", "on"] = Field(
        "all", description="power loss on every target slot, or (models with an on/off head) where on only"
    )
    onoff_loss_weight: float = Field(ge=0, description="weight of the masked BCE on on/off logits")
    max_epochs: int = Field(gt=0)
    max_steps: int = Field(ge=-1, description="optimizer steps in all; -1: no limit")
    limit_train_batches: int | None = Field(gt=0, description="batches per epoch; null: all windows")
    limit_val_batches: int | None = Field(gt=0, description="validation batches per epoch; null: all")
    early_stopping_patience: int | None = Field(gt=0, description="epochs without val/loss gain; null: off")
    keep: Literal["best", "last"] = Field(
        "best", description="the weights kept: best (lowest val/loss) or last (the final step's)"
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="exponential moving average of the weights (validated, kept); null: off"
    )
    num_workers: int = Field(ge=0, description="DataLoader worker processes")
    seed: int
    accelerator: str = Field(description="auto | cpu | gpu (Lightning)")
    devices: int | str = Field(description="auto or a count (Lightning); N > 1: N training processes (DDP)")
    strategy: str = Field(description="auto | ddp | ... (Lightning; DDP on CPU talks gloo)")
    precision: str | None = Field(description="Lightning precision; null: bf16-mixed on CUDA, 32-true on CPU")
    checkpoint_dir: str = Field(description="checkpoints go to <checkpoint_dir>/<model>-<config hash>/")
    arch: dict[str, dict[str, Any]] = Field(description="constructor arguments per architecture name")
    source_weights: dict[str, float] = Field(
        default_factory=dict,
        description="share of training windows per source dataset; {}: every window alike",
    )
    augment: AugmentParams
    init_from: str | None = Field(
        None, description="fine-tune this model (bundle dir or MLflow model URI) instead of a fresh one"
    )
    finetune: Literal["all", "heads"] = Field(
        "all", description="what fine-tuning (init_from) updates: every weight, or the output heads only"
    )
    decision: DecisionTuningParams

    @model_validator(mode="after")
    def _weights(self) -> TrainParams:
        bad = {k: v for k, v in self.source_weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"source_weights must be >= 0: {bad}")
        if self.source_weights and not any(self.source_weights.values()):
            raise ValueError("source_weights: at least one source needs a weight above 0")
        return self


class RegisterParams(_Section):
    """MLflow experiment, registered model, aliases and the champion promotion rule (airwatt.promotion)."""

    experiment: str = Field(min_length=1)
    model_name: str = Field(min_length=1)
    candidate_alias: str = Field(min_length=1)
    champion_alias: str = Field(min_length=1)
    metric: str = Field(description="evaluation metric deciding promotion, e.g. mean.f1")
    higher_is_better: bool
    min_improvement: float = Field(ge=0, description="a smaller gain on `metric` is a tie")
    tie_breaker: str = Field(description="metric deciding a tie, e.g. mean.mae_w")
    tie_breaker_higher_is_better: bool


class LabelParams(_Section):
    """Label Studio round trip (airwatt.labeling). The API token comes only from the environment."""

    url: str = Field(min_length=1, description="Label Studio base URL")
    project_title: str = Field(min_length=1, description="project `airwatt label setup` creates or updates")
    budget: int = Field(gt=0, description="tasks per `airwatt label push`")
    random_share: float = Field(ge=0, le=1, description="share of the budget drawn at random")
    window_hours: float = Field(gt=0, description="length of one labeling task")
    min_valid_fraction: float = Field(ge=0, le=1, description="valid readings a candidate window needs")
    import_batch: int = Field(gt=0, description="tasks per import request")
    timeout_s: float = Field(gt=0, description="HTTP timeout of one Label Studio request")
    seed: int


class FlatTariff(_Section):
    """One price for every kWh."""

    kind: Literal["flat"]
    currency: str = Field(min_length=1, description="ISO 4217 code the prices are in, e.g. USD, PHP")
    price_per_kwh: float = Field(ge=0)


def _clock_from_base60(value: Any) -> Any:
    """An unquoted HH:MM reads as a base-60 integer in YAML 1.1 (18:00 -> 1080): back to "18:00". Tools that
    rewrite params.yaml (`dvc exp run -S`) may drop the quotes."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return f"{value // 60:02d}:{value % 60:02d}"
    return value


ClockTime = Annotated[
    str,
    BeforeValidator(_clock_from_base60),
    Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="HH:MM local time"),
]


class TouPeriod(_Section):
    """A daily time window [start, end) in the device's local time; end < start wraps past midnight."""

    start: ClockTime
    end: ClockTime
    price_per_kwh: float = Field(ge=0)


class TimeOfUseTariff(_Section):
    """Prices by local time of day; hours outside every period pay ``price_per_kwh``."""

    kind: Literal["time_of_use"]
    currency: str = Field(min_length=1)
    price_per_kwh: float = Field(ge=0, description="price outside every period")
    periods: list[TouPeriod] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_overlap(self) -> TimeOfUseTariff:
        covered = [0] * 1440  # minutes of the day
        for p in self.periods:
            s, e = (int(t[:2]) * 60 + int(t[3:]) for t in (p.start, p.end))
            if s == e:
                raise ValueError(f"period {p.start}-{p.end} is empty (start equals end)")
            for m in range(s, e if e > s else e + 1440):
                covered[m % 1440] += 1
        if max(covered) > 1:
            raise ValueError("time-of-use periods overlap")
        return self


class TariffBlock(_Section):
    up_to_kwh: float | None = Field(gt=0, description="block ends at this monthly total; null: no end")
    price_per_kwh: float = Field(ge=0)


class TieredTariff(_Section):
    """Block prices by the energy used so far in the device's local calendar month."""

    kind: Literal["tiered"]
    currency: str = Field(min_length=1)
    blocks: list[TariffBlock] = Field(min_length=1)

    @model_validator(mode="after")
    def _blocks_increase(self) -> TieredTariff:
        ends = [b.up_to_kwh for b in self.blocks]
        if ends[-1] is not None or None in ends[:-1]:
            raise ValueError("only the last block, and it must, have up_to_kwh: null (no upper end)")
        bounded = [e for e in ends if e is not None]
        if bounded != sorted(set(bounded)):
            raise ValueError(f"block ends up_to_kwh must increase: {bounded}")
        return self


Tariff = Annotated[FlatTariff | TimeOfUseTariff | TieredTariff, Field(discriminator="kind")]


class ReportParams(_Section):
    """Report data (airwatt.report): tariff, event thresholds, reconciliation tolerance."""

    tariff: Tariff
    reconcile_tolerance_kwh: float = Field(ge=0, description="allowed |appliances + remainder - measured|")
    reconcile_tolerance_fraction: float = Field(ge=0, description="... plus this share of the measured")
    night_start: ClockTime
    night_end: ClockTime
    overnight_min_on_s: float = Field(gt=0, description="on this long in the night window: left on")
    overnight_appliances: list[str] = Field(description="appliances watched for being left on overnight")
    cycling_appliances: list[str] = Field(description="appliances that must cycle off (fridge, freezer)")
    max_on_s: float = Field(gt=0, description="a cycling appliance on longer than this never cycles off")
    baseline_factor: float = Field(gt=1, description="day energy above factor x baseline median: event")
    baseline_days: int = Field(gt=0, description="previous days the baseline median is taken over")
    baseline_min_days: int = Field(gt=0, description="no baseline event with fewer previous days")
    baseline_min_kwh: float = Field(ge=0, description="days below this energy never raise the event")
    min_day_coverage: float = Field(ge=0, le=1, description="days measured less are not in baselines")


class ServeParams(_Section):
    """The BentoML service (airwatt.serving); env AIRWATT_MODEL_URI overrides model_uri."""

    model_uri: str = Field(min_length=1, description="models:/NAME@ALIAS or /VERSION, runs:/, a bundle dir")
    host: str = Field(min_length=1, description="bind address; loopback unless exposed on purpose")
    port: int = Field(gt=0, lt=65536)
    workers: int = Field(gt=0, description="server processes, each holding the model")
    torch_threads: int = Field(gt=0, description="torch intra-op threads per worker")
    timeout_s: float = Field(gt=0, description="request timeout")
    tracing: bool = Field(description="OpenTelemetry spans per request (exporter: BENTOML_CONFIG)")
    inline_max_misses: int = Field(
        ge=0, description="calls needing at most this many history passes run in the event loop"
    )
    state_cache_devices: int = Field(gt=0, description="device states one worker keeps (LRU)")
    max_power_w: float = Field(gt=0, description="readings above are rejected as implausible")
    max_readings: int = Field(gt=0, description="readings per device per request")
    max_report_readings: int = Field(gt=0, description="readings per POST /report request")
    max_devices: int = Field(gt=0, description="devices per batch request")
    max_batch_readings: int = Field(gt=0, description="readings per batch request, all devices together")
    max_series_readings: int = Field(
        gt=0, description="readings answered one by one per call (/predict, /predict_batch of every reading)"
    )
    earliest_reading: AwareDatetime = Field(description="readings (and continues) before are rejected")
    max_ahead_s: float = Field(
        ge=0, description="readings later than the server clock plus this are rejected"
    )
    max_body_mib: float = Field(gt=0, description="request bodies above are refused (413) before parsing")
    max_concurrency: int = Field(gt=0, description="calls in progress per worker; more answer 503")
    large_body_mib: float = Field(gt=0, description="a body over this (or of unknown length) is a large call")
    max_large_calls: int = Field(gt=0, description="large calls in progress per worker; more answer 503")
    retry_after_s: int = Field(gt=0, description="Retry-After of a 503 (overload)")
    max_heavy_calls: int = Field(gt=0, description="/report, /predict of every reading at once per worker")


class ProtocolSource(_Section):
    """One dataset of the protocol's training mix (airwatt.protocol)."""

    kind: Literal["redd", "refit", "ukdale", "simulator", "dataset"] = Field(
        description="an importer, the fleet simulator, or an AirWatt dataset folder"
    )
    path: str | None = Field(None, description="folder under protocol.data_root (importers, dataset)")
    start: str | None = Field(None, description="window start (UTC; importers, simulator)")
    end: str | None = Field(None, description="window end, exclusive (UTC; importers)")
    devices: int | None = Field(None, gt=0, description="simulated devices")
    days: float | None = Field(None, gt=0, description="simulated days")
    seed: int | None = Field(None, description="simulator seed (default: simulate.seed)")
    device_suffix: str = Field("", description="appended to its device ids (a second recording of a house)")

    @model_validator(mode="after")
    def _complete(self) -> ProtocolSource:
        if self.kind == "simulator" and (self.devices is None or self.days is None):
            raise ValueError("a simulator source needs devices and days")
        if self.kind != "simulator" and not self.path:
            raise ValueError(f"a {self.kind} source needs a path")
        return self


class AdaptParams(_Section):
    """The protocol's few-label curve: fine-tune on the held-out house's first days (airwatt.protocol)."""

    days: list[float] = Field(min_length=1, description="labelled days k to fine-tune on (and k = 0)")
    eval_days: float = Field(gt=0, description="scored on the house's last days, the same for every k")
    max_steps: int = Field(gt=0, description="fine-tuning steps")
    finetune: Literal["all", "heads"] = Field(description="what fine-tuning updates")
    val_fraction: float = Field(gt=0, lt=1, description="share of the k days that picks the checkpoint")


# train keys the protocol sets itself per run (protocol.train must not)
PROTOCOL_TRAIN_KEYS = frozenset(
    {
        "augment",
        "model",
        "seed",
        "max_steps",
        "max_epochs",
        "limit_train_batches",
        "source_weights",
        "checkpoint_dir",
        "init_from",
        "finetune",
        "devices",
    }
)


class ProtocolParams(_Section):
    """The cross-house protocol (airwatt.protocol): training mix, folds, seeds, the few-label curve."""

    data_root: str = Field(description="folder of the public data; AIRWATT_SHARED_DATA overrides")
    sources: dict[str, ProtocolSource] = Field(min_length=1)
    weights: dict[str, float] = Field(description="train.source_weights of every fold")
    folds: list[str] = Field(min_length=1, description="houses held out in turn (leave-one-house-out)")
    cross_dataset: list[str] = Field(default_factory=list, description="further folds: another dataset")
    val_devices: list[str] = Field(min_length=1, description="validation devices of every fold")
    seeds: list[int] = Field(min_length=1)
    models: list[str] = Field(min_length=1, description="real-time first; an offline one beside")
    max_steps: int = Field(gt=0, description="optimizer steps per fold and seed")
    reference: list[str] = Field(min_length=1, description="the appliances of the headline mean")
    augment: dict[str, float] = Field(
        default_factory=dict, description="train.augment keys every protocol run overrides"
    )
    train: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per model: train keys its protocol runs (and fine-tuning) override"
    )
    adapt: AdaptParams | None = Field(None, description="the few-label curve; null: not run")

    @model_validator(mode="after")
    def _consistent(self) -> ProtocolParams:
        missing = sorted(set(self.sources) - set(self.weights))
        if missing:
            raise ValueError(f"weights has no entry for source(s) {missing}")
        unknown = sorted(set(self.weights) - set(self.sources))
        if unknown:
            raise ValueError(f"weights names unknown source(s) {unknown}")
        bad = sorted(set(self.augment) - set(AugmentParams.model_fields))
        if bad:
            raise ValueError(
                f"augment: unknown key(s) {bad} (train.augment has {list(AugmentParams.model_fields)})"
            )
        keys = {k for per_model in self.train.values() for k in per_model}
        own = sorted(keys & PROTOCOL_TRAIN_KEYS)
        bad_train = sorted(keys - set(TrainParams.model_fields))
        if own or bad_train:
            raise ValueError(
                f"train: {own + bad_train} are not train keys or are set by the protocol itself "
                f"({sorted(PROTOCOL_TRAIN_KEYS)}; augmentation goes in protocol.augment)"
            )
        clash = sorted(set(self.val_devices) & set(self.folds + self.cross_dataset))
        if clash:
            raise ValueError(f"{clash} are both validation devices and held-out houses")
        return self


class Params(_Section):
    data: DataParams
    simulate: SimulateParams
    sync: SyncParams
    validate_: ValidateParams = Field(alias="validate")
    prepare: PrepareParams
    import_: ImportParams = Field(alias="import")
    train: TrainParams
    register_: RegisterParams = Field(alias="register")
    serve: ServeParams
    label: LabelParams
    report: ReportParams
    protocol: ProtocolParams | None = None
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
    known = {"data", "simulate", "sync", "validate", "prepare", "import", "train", "register", "label"}
    known |= {"report"}
    known |= {"serve", "protocol"}
    raw = {
        **{k: v for k, v in raw.items() if k in known},
        "extra": {k: v for k, v in raw.items() if k not in known},
    }
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        lines = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ConfigError(f"{path}: invalid parameters:\n  " + "\n  ".join(lines)) from None
