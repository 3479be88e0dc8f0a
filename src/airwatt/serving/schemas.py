"""Request and response bodies of the serving API (pydantic; they make the OpenAPI page).

Structural rules live here and fail with HTTP 400 naming the field (BentoML turns a pydantic
ValidationError into ``{"error": ..., "detail": [{"loc": [...], "msg": ...}]}``): wrong types, missing or
unknown fields, NaN or infinite or negative watts, naive or unsorted or duplicate timestamps, empty lists.
Rules that depend on the loaded model or on params.yaml (cadence, history length, plausible watts, size
limits) are checked by ``airwatt.serving.inputs`` and fail with HTTP 422.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from airwatt.serving.openapi import openapi_30

# A reading: finite watts >= 0, or null for a missing one. strict: "312.5" (a string) or true is refused.
PowerReading = Annotated[float, Field(ge=0, strict=True, allow_inf_nan=False)] | None


class _Schema(BaseModel):
    """A body whose JSON schema is written in OpenAPI 3.0's dialect, the one BentoML publishes
    (airwatt.serving.openapi)."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return openapi_30(super().model_json_schema(*args, **kwargs))


class _Body(_Schema):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceReadings(_Body):
    """One device's recent readings, oldest first, ending with the newest.

    Compact form (what monitors send): ``start`` + ``interval_s`` + ``power_w``; reading i is at
    ``start + i * interval_s``. Alternative: ``timestamps`` (one per reading, strictly increasing) instead of
    ``start``/``interval_s``, for irregular senders; the readings are then placed on the model's grid the way
    training data is (airwatt.prepare.grid: each on the slot containing it, several in one slot averaged).

    Session form, for clients that keep a session with one worker: ``continues`` (the time of the last
    reading sent before) and ``power_w`` with only the readings after it, at the model's cadence (``start``
    defaults to one interval after ``continues``). A worker that holds no state ending exactly there answers
    HTTP 409: resend the history in one of the forms above.
    """

    device_id: str = Field(min_length=1, max_length=200, examples=["d-0001"])
    start: AwareDatetime | None = Field(
        default=None,
        description="time of power_w[0] (ISO 8601 with a zone)",
        examples=["2026-01-05T00:00:00Z"],
    )
    interval_s: float | None = Field(default=None, gt=0, allow_inf_nan=False, examples=[5])
    timestamps: list[AwareDatetime] | None = Field(
        default=None, description="instead of start/interval_s: the time of each reading, strictly increasing"
    )
    power_w: list[PowerReading] = Field(
        min_length=1, description="aggregate watts, oldest first; null marks a missing reading"
    )
    continues: AwareDatetime | None = Field(
        default=None,
        description="session form: the time of the last reading sent before; power_w holds only the "
        "readings after it (409 if this worker holds no state ending there)",
    )
    appliances: list[str] | None = Field(
        default=None,
        max_length=100,
        description="the site's registered appliances (vocabulary names): only these are answered and "
        "reported; null or empty: every appliance of the model",
        examples=[["fridge", "kettle"]],
    )

    @field_validator("appliances")
    @classmethod
    def _in_vocabulary(cls, names: list[str] | None) -> list[str] | None:
        from airwatt.appliances import APPLIANCES

        for i, name in enumerate(names or []):
            if name not in APPLIANCES:
                raise ValueError(
                    f"appliances[{i}] {name!r} is not an appliance of the vocabulary "
                    f"({', '.join(sorted(APPLIANCES))})"
                )
        return names

    @field_validator("timestamps")
    @classmethod
    def _increasing(cls, ts: list[datetime] | None) -> list[datetime] | None:
        if ts is None:
            return ts
        for i in range(1, len(ts)):
            if ts[i] <= ts[i - 1]:
                what = "duplicates" if ts[i] == ts[i - 1] else "is before"
                raise ValueError(
                    f"timestamps[{i}] ({ts[i].isoformat()}) {what} timestamps[{i - 1}]: timestamps must be "
                    "strictly increasing"
                )
        return ts

    @model_validator(mode="after")
    def _one_time_form(self) -> DeviceReadings:
        if self.continues is not None:
            if self.timestamps is not None:
                raise ValueError(
                    "the session form (continues) takes readings at the model's cadence, not timestamps"
                )
            return self
        if self.timestamps is not None:
            if self.start is not None or self.interval_s is not None:
                raise ValueError("give either timestamps or start + interval_s, not both")
            if len(self.timestamps) != len(self.power_w):
                raise ValueError(
                    f"timestamps has {len(self.timestamps)} entries but power_w has {len(self.power_w)}"
                )
        elif self.start is None or self.interval_s is None:
            missing = [k for k in ("start", "interval_s") if getattr(self, k) is None]
            raise ValueError(f"missing {' and '.join(missing)} (or give timestamps instead)")
        return self


class PredictRequest(DeviceReadings):
    newest_only: bool = Field(default=False, description="answer only the newest reading")


class ReportRequest(DeviceReadings):
    """A period of one device's readings (a week or up to ``max_report_readings``) -> the report data the
    batch job (`airwatt report`) writes for it: energy, on-hours, cycles, peak, share and cost per appliance
    and the unexplained remainder per local day and period, events and gaps."""

    period: Literal["week", "month"] = Field(default="week", description="ISO weeks or calendar months")
    timezone: str = Field(
        default="UTC",
        min_length=1,
        description="IANA zone of the site: days are local days",
        examples=["UTC"],
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, tz: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r} (an IANA name such as Europe/London)") from None
        return tz


class DetectBatchRequest(_Body):
    devices: list[DeviceReadings] = Field(min_length=1)


class PredictBatchRequest(_Body):
    devices: list[DeviceReadings] = Field(min_length=1)
    newest_only: bool = False


Status = Literal["ok", "unknown"]


class ApplianceState(_Schema):
    on: bool = Field(description="the state by the model's causal decision rule (docs/serving.md)")
    prob_on: float = Field(
        description="the model's probability that the appliance is on at the newest reading"
    )
    since: datetime | None = Field(
        description="the first reading of the run that confirmed the current state, when the previous "
        "state's confirmation lies inside the rule's memory (/model decision_memory_s); null: earlier"
    )


class DetectResponse(_Schema):
    device_id: str
    model_version: str
    at: datetime = Field(description="the newest reading (the one answered)")
    status: Status = Field(description="unknown: the newest window has too many missing readings")
    reason: str | None = None
    appliances: dict[str, ApplianceState] = Field(description="empty when status is unknown")


class PredictResponse(_Schema):
    device_id: str
    model_version: str
    start: datetime = Field(description="time of the first value below")
    interval_s: float
    power_w: dict[str, list[float | None]] = Field(
        description="estimated watts per appliance per reading; null where no prediction (missing reading)"
    )
    remainder_w: list[float | None] = Field(description="aggregate minus the appliances' sum, per reading")
    predicted: list[bool]


class DetectBatchResponse(_Schema):
    model_version: str
    results: list[DetectResponse]


class PredictBatchResponse(_Schema):
    model_version: str
    results: list[PredictResponse]


class ApplianceInfo(_Schema):
    on_threshold_w: float
    min_on_s: float
    min_off_s: float
    max_w: float
    on_prob: float = Field(description="decision rule: on-qualifying probability")
    off_prob: float = Field(description="decision rule: off-qualifying below this (hysteresis)")
    confirm_on_s: float = Field(description="decision rule: an on-run is confirmed once it lasted this long")
    confirm_off_s: float = Field(
        description="decision rule: an off-run is confirmed once it lasted this long"
    )


class ModelInfo(_Schema):
    model_version: str
    model_uri: str
    arch: str
    appliances: list[str]
    window_length: int
    interval_s: float
    min_history_s: float = Field(description="history a request must cover: window_length * interval_s")
    history_readings: int = Field(
        description="readings the answer at the newest depends on (window + decision memory - 1): send at "
        "least these for the full rule and for a worker to continue its cached state"
    )
    decision_memory_s: float = Field(description="how far back the decision rule reads")
    max_fill_s: float = Field(description="the first max_fill_s of a gap are forward-filled")
    max_invalid_fraction: float = Field(description="windows with more missing readings answer 'unknown'")
    state_cache_devices: int = Field(description="device states one worker keeps (LRU)")
    max_readings: int
    max_report_readings: int
    max_devices: int
    max_power_w: float
    thresholds: dict[str, ApplianceInfo]
    provenance: dict[str, object]
    worker: int | None = Field(
        default=None,
        description="the server worker that answered (one connection stays on one worker; each worker keeps "
        "its own device states)",
    )
