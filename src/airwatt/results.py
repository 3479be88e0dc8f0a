"""Typed results: the JSON documents the workbench writes for the platform and DVC, as pydantic models.

- ``EvaluationReport``: ``airwatt evaluate`` / the candidate's report of ``airwatt promote``
  (data/metrics/evaluate.json; airwatt.evaluate), and ``EvaluationSummary``, its compact DVC copy;
- ``PromotionReport``: what ``airwatt promote`` decided (data/metrics/promotion.json; airwatt.promotion);
- ``PushReport``: ``airwatt label push`` (data/labeling/push.json; airwatt.labeling.push);
- ``ReportSummary``: report.json of ``airwatt report`` (airwatt.report.run);
- ``FleetSummary``: fleet.json of ``airwatt fleet report`` (airwatt.report.fleet).

Why one module: evaluation and report share the ``model`` block, and promotion, the CLI and the protocol
read evaluation reports without importing airwatt.evaluate (torch, the dataset code); this module imports only
pydantic and the params models. The code that builds a result still lives beside its stage.

The JSON shape is the contract: every model's field order is the key order of the file, and
``model_dump(mode="json")`` written with the same ``json.dumps(..., indent=2)`` gives the same text as the
dicts these models replaced. Fixed blocks are nested models (``extra="forbid"``: a renamed key fails to
parse); tables keyed by appliance, device or table name are ``dict[str, Model]``. A key the file leaves out
where it does not apply (a served model's ``offline`` block, a page not written) is a field that is None and
excluded from the dump. Reading a stored file back: ``EvaluationReport.read`` (a malformed file is a
DataError naming it, never a KeyError).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from airwatt.config import ReportParams
from airwatt.errors import DataError

Spans = dict[str, list[tuple[str, str]]]  # device -> [[start, end], ...] in ISO 8601 (airwatt.data_ranges)


def _absent(value: object) -> bool:
    return value is None


def omitted_when_none() -> Any:
    """A field default of None that is left out of the JSON (the key is absent where it does not apply)."""
    return Field(default=None, exclude_if=_absent)


class Result(BaseModel):
    """A fixed block of a result: unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")


def dotted(result: BaseModel, path: str) -> object | None:
    """The value at a dotted path (``"mean.f1"``, ``"appliances.fridge.f1"``): fields by name, tables by key;
    None where the path leads nowhere."""
    node: object = result
    for part in path.split("."):
        if isinstance(node, BaseModel):
            if part not in type(node).model_fields:
                return None
            node = getattr(node, part)
        elif isinstance(node, Mapping):
            if part not in node:
                return None
            node = node[part]
        else:
            return None
    return node


R = TypeVar("R", bound="Result")


def read_result(model: type[R], path: Path, what: str) -> R:
    """``model`` parsed from the JSON file ``path``; DataError naming the file (and the first problems) when
    it is missing, not JSON or not ``what``."""
    try:
        return model.model_validate_json(Path(path).read_bytes())
    except FileNotFoundError:
        raise DataError(f"{what} not found", file=path) from None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise DataError(f"not a valid {what}: {problems}", file=path) from None


# --------------------------------------------------------------------------------------------- the model
class RegistryRef(Result):
    """The registered version a ``models:/`` URI resolved to (airwatt.model_uri.RegistryVersion)."""

    name: str
    alias: str | None
    version: str
    run_id: str | None


class ModelInfo(Result):
    """What was evaluated or reported with: the URI or path, the registered version, the bundle's spec."""

    uri: str | None
    registry: RegistryRef | None
    arch: str
    arch_kwargs: dict[str, Any]
    appliances: list[str]
    window_length: int
    target: str
    interval_s: float
    provenance: dict[str, Any]  # open-ended: data version, git commit, run id, data ranges, ...


# ---------------------------------------------------------------------------------------- evaluation
class Metrics(Result):
    """Per-appliance metrics (airwatt.metrics.METRIC_KEYS, in that order); None where undefined."""

    mae_w: float | None
    sae: float | None
    nde: float | None
    f1: float | None
    precision: float | None
    recall: float | None
    eac: float | None


class SwitchMetrics(Result):
    """Switch-on events of one appliance, or their mean (airwatt.metrics.SWITCH_KEYS, in that order)."""

    switch_ons: float | None
    detected: float | None
    delay_median_s: float | None
    delay_p90_s: float | None
    false_switches_per_day: float | None


class Selection(Result):
    devices: list[str] | None
    split_file: str | None
    split: str | None
    time_ranges: dict[str, tuple[str, str]] | None


class ReadingCounts(Result):
    power: int
    onoff: int


class PlottedDay(Result):
    device: str
    day: str


class EvaluationData(Result):
    """What was evaluated: the dataset, the devices scored and skipped, the selection and gap policy."""

    path: str
    name: str
    devices: list[str]
    skipped_devices: dict[str, str]
    selection: Selection
    appliances_missing: list[str]
    interval_s: float
    max_fill_s: float
    max_invalid_fraction: float
    readings: dict[str, ReadingCounts]
    answered: dict[str, float | None]
    plotted_days: dict[str, PlottedDay]


class Scores(Result):
    """Pooled per-appliance metrics and their unweighted mean."""

    appliances: dict[str, Metrics]
    mean: Metrics


class OverlapInfo(Result):
    """The evaluated data against the model's training and validation data (airwatt.data_ranges.Overlap)."""

    with_training: bool | None
    provenance: Literal["recorded", "unknown"]
    devices: Spans
    hours: float
    evaluated: Spans
    excluded: Spans | None


class EvaluationReport(Result):
    """The evaluation report (airwatt.evaluate's module docstring). ``offline`` only for a real-time model;
    ``overlap`` is None only in a report written before it was recorded."""

    model: ModelInfo
    data: EvaluationData
    rule: Literal["served", "offline"]
    appliances: dict[str, Metrics]
    mean: Metrics
    switches: dict[str, SwitchMetrics]  # per appliance, and "mean"
    offline: Scores | None = omitted_when_none()
    devices: dict[str, dict[str, Metrics]]
    overlap: OverlapInfo | None = omitted_when_none()

    @classmethod
    def read(cls, path: Path) -> EvaluationReport:
        """A stored report (e.g. data/metrics/evaluate.json); DataError naming the file when malformed."""
        return read_result(cls, path, "evaluation report")


class EvaluationSummary(Result):
    """The compact copy of a report for ``dvc metrics`` (``airwatt promote --summary``)."""

    mean: Metrics
    appliances: dict[str, Metrics]
    switches: dict[str, SwitchMetrics]
    offline: Scores | None = omitted_when_none()

    @classmethod
    def of(cls, report: EvaluationReport) -> EvaluationSummary:
        return cls(
            mean=report.mean, appliances=report.appliances, switches=report.switches, offline=report.offline
        )


# ----------------------------------------------------------------------------------------- promotion
class PromotionReport(Result):
    """promotion.json: what ``airwatt promote`` decided (airwatt.promotion.Promotion)."""

    model_name: str
    candidate_version: int
    champion_version_before: int | None
    champion_version: int | None
    promoted: bool
    reason: str
    metric: str
    candidate_metric: float | None
    champion_metric: float | None
    candidate_overlaps_training: bool | None
    compared_devices: list[str] | None
    compared_hours: float | None


# -------------------------------------------------------------------------------------- labeling push
class ProjectRef(Result):
    id: int
    title: str


class PushedModel(Result):
    uri: str
    version: str


class PushedTask(Result):
    """One imported task: its key and Label Studio id, the window, why it was chosen and its scores."""

    key: str
    task_id: int | None
    device_id: str
    window_start_ms: int
    selection: str
    score: float | None
    uncertainty: float | None
    disagreement: float | None
    valid_fraction: float


class PushReport(Result):
    """The push report (airwatt.labeling.push): filled in as batches are confirmed; ``complete`` once all
    were, ``seconds`` when written."""

    url: str
    project: ProjectRef
    dataset: str
    data_dir: str
    models: list[PushedModel]
    candidates: int
    already_pushed: int
    selected: int
    pushed: list[PushedTask] = Field(default_factory=list)
    payload_bytes: int = 0
    complete: bool = False
    seconds: float = 0.0


# ------------------------------------------------------------------------------------------- report
class ReportWindow(Result):
    start: str
    end: str


class ReportData(Result):
    path: str
    name: str
    devices: list[str]
    skipped_devices: dict[str, str]
    window: ReportWindow | None


class TableFile(Result):
    file: str
    rows: int


class Reconciliation(Result):
    """One device's reconciled totals over the window (airwatt.report.core.reconcile)."""

    measured_kwh: float
    appliances_kwh: float
    unexplained_kwh: float
    clipped_kwh: float
    cost: float
    max_error_kwh: float
    tolerance_kwh: float
    missing_hours: float
    ok: bool


class PageView(Result):
    """The days a device's page shows (airwatt.report.run.write_device_page)."""

    label: str
    first_day: str
    last_day: str


class DeviceSummary(Result):
    timezone: str
    site_type: str
    totals: Reconciliation
    events: int
    gaps: int
    view: PageView | None = omitted_when_none()  # with pages only
    page: str | None = omitted_when_none()


class ReportTotals(Result):
    measured_kwh: float
    appliances_kwh: float
    unexplained_kwh: float
    clipped_kwh: float
    cost: float
    missing_hours: float
    events: int


class ReportSummary(Result):
    """report.json of the batch report (airwatt.report.run)."""

    model: ModelInfo
    data: ReportData
    period: Literal["week", "month"]
    currency: str
    tariff: str
    params: ReportParams
    max_fill_s: float
    tables: dict[str, TableFile]
    devices: dict[str, DeviceSummary]
    totals: ReportTotals


class FleetModel(Result):
    """The model of a fleet job: the URI given, the registered version an alias was pinned to, the content
    hash its partitions' job key uses."""

    uri: str
    registry: RegistryRef | None
    content_sha256_16: str


class FleetData(Result):
    path: str
    name: str
    devices: int


class PartitionCounts(Result):
    planned: int
    done: int
    skipped: int
    failed: int


class FleetSummary(Result):
    """fleet.json of the fleet report job (airwatt.report.fleet)."""

    model: FleetModel
    data: FleetData
    period: Literal["week", "month"]
    partition_key: Literal["week", "month"]
    job_key: str
    pages: bool
    engine: Literal["local", "ray"]
    address: str | None
    workers: int
    partitions: PartitionCounts
    device_months_computed: float = Field(description="device-days of the partitions done / 30.44")
    wall_s: float
    startup_s: float = Field(description="until every worker had loaded the model")
    core_hours: float = Field(description="wall x workers")
    device_months_per_core_hour: float | None = Field(description="after start-up; None when none done")
    device_months_per_core_hour_with_startup: float | None
    peak_rss_mib_per_worker: list[float]
    tables: list[str]
    errors: TableFile
