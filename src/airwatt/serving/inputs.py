"""Request readings -> the model's regular grid with its gap policy; model-dependent checks (HTTP 422).

Gap policy (the model's own, ``spec.gap``; the rule training data was prepared with,
airwatt.prepare.grid.fill_short_gaps, and the one evaluation scores with):

- the first ``max_fill_s`` of a run of missing readings (null, or empty grid slots between timestamps) are
  forward-filled from the last reading before it and count as readings; the rest of a longer run (and
  missing readings at the very start) stay missing; the model sees the training mean there;
- a reading is answered only when it is present and at most ``max_invalid_fraction`` of the window ending
  at it is missing (readings before the history sent count as missing); otherwise the answer is
  ``status: "unknown"`` with the reason.

Two request forms: *stateless* (a device's recent readings: ``start`` + ``interval_s`` or ``timestamps``) and
*session* (``continues``: only the readings after the last one sent before, at the model's cadence).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from airwatt.config import ServeParams
from airwatt.errors import AirwattError
from airwatt.models import ModelBundle
from airwatt.prepare.grid import bin_mean, fill_short_gaps, grid_span, max_missing
from airwatt.serving.schemas import DeviceReadings


class RequestError(AirwattError):
    """A well-formed request the model cannot answer; ``field`` is the path of the offending field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem

    def under(self, prefix: str) -> RequestError:
        """The same error with its field inside ``prefix`` (e.g. devices[3])."""
        return RequestError(f"{prefix}.{self.field}", self.problem)


class SessionConflict(AirwattError):
    """Session-form calls for devices whose state this worker does not hold at the time they continue."""

    def __init__(self, fields: list[str], devices: list[str], history: int, interval_s: float) -> None:
        self.fields = fields
        self.devices = devices
        self.history = history
        super().__init__(
            f"no session state on this worker for device(s) {', '.join(devices)} ending at the time given in "
            f"'continues' (evicted, restarted, another worker, or a reading was lost): resend these devices' "
            f"history without 'continues', at least {history} readings ({history * interval_s / 60:g} min)"
        )


@dataclass(frozen=True)
class Limits:
    """What a request must satisfy for the loaded model (its spec and params.yaml ``serve``)."""

    interval_s: float
    window_length: int
    history: int  # readings a full answer depends on: window + decision memory - 1
    max_fill_s: float
    max_invalid_fraction: float
    max_power_w: float
    max_readings: int
    max_devices: int

    @classmethod
    def of(cls, cfg: ServeParams, bundle: ModelBundle) -> Limits:
        return cls(
            interval_s=bundle.interval_s,
            window_length=bundle.window_length,
            history=bundle.history_length,
            max_fill_s=bundle.gap.max_fill_s,
            max_invalid_fraction=bundle.gap.max_invalid_fraction,
            max_power_w=cfg.max_power_w,
            max_readings=cfg.max_readings,
            max_devices=cfg.max_devices,
        )

    @property
    def interval_ms(self) -> int:
        return round(self.interval_s * 1000)

    @property
    def fill_slots(self) -> int:
        return int(self.max_fill_s // self.interval_s)

    @property
    def max_missing(self) -> int:
        return max_missing(self.window_length, self.max_invalid_fraction)


@dataclass(frozen=True)
class GridReadings:
    """One device's readings on the model's grid: slot k is at ``start_ms + k * interval_ms``."""

    device_id: str
    start_ms: int
    interval_ms: int
    aggregate_w: np.ndarray  # (T,) float64, NaN where missing after the gap policy
    valid: np.ndarray  # (T,) bool
    present: np.ndarray  # (T,) bool: a reading was sent (before the gap policy)

    def __len__(self) -> int:
        return len(self.valid)

    def fill_state(self) -> tuple[float, int]:
        """(the last reading sent, missing readings after it): where the gap policy stands at the end."""
        sent = np.flatnonzero(self.present)
        if not len(sent):
            return float("nan"), len(self)
        return float(self.aggregate_w[sent[-1]]), int(len(self) - 1 - sent[-1])

    @property
    def end_ms(self) -> int:
        return self.start_ms + (len(self) - 1) * self.interval_ms

    def time_of(self, slot: int) -> datetime:
        return as_time(self.start_ms + slot * self.interval_ms)


@dataclass(frozen=True)
class SessionReadings:
    """A session-form call: the readings after ``continues_ms`` (NaN: missing, before the gap policy)."""

    device_id: str
    continues_ms: int
    interval_ms: int
    raw_w: np.ndarray  # (k,) float64 for the slots continues + 1 .. continues + k

    @property
    def end_ms(self) -> int:
        return self.continues_ms + len(self.raw_w) * self.interval_ms


def as_time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _epoch_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def _check_power(power: np.ndarray, limits: Limits) -> None:
    too_big = np.flatnonzero(power > limits.max_power_w)
    if len(too_big):
        i = int(too_big[0])
        raise RequestError(
            f"power_w[{i}]", f"{power[i]:g} W is above the plausible maximum of {limits.max_power_w:g} W"
        )


def _check_interval(req: DeviceReadings, limits: Limits) -> None:
    if req.interval_s is not None and abs(req.interval_s - limits.interval_s) > 1e-9:
        raise RequestError(
            "interval_s",
            f"{req.interval_s:g} s, but the model reads one reading every {limits.interval_s:g} s "
            "(send readings at that cadence, or timestamps to have them placed on its grid)",
        )


def to_grid(req: DeviceReadings, limits: Limits) -> GridReadings:
    """Check a stateless request against ``limits``, put it on the grid with the gap policy; RequestError
    if unusable."""
    n = len(req.power_w)
    if n > limits.max_readings:
        raise RequestError("power_w", f"{n} readings; at most {limits.max_readings} per device per request")
    power = np.array(req.power_w, dtype=np.float64)  # null (None) -> NaN
    _check_power(power, limits)
    interval_ms = limits.interval_ms
    if req.timestamps is None:
        assert req.start is not None and req.interval_s is not None  # the schema guarantees one time form
        _check_interval(req, limits)
        start_ms, raw = _epoch_ms(req.start), power
    else:
        ts_ms = np.array([_epoch_ms(t) for t in req.timestamps], dtype=np.int64)
        start_ms, slots_n = grid_span(ts_ms, interval_ms)
        if slots_n > limits.max_readings:
            raise RequestError(
                "timestamps",
                f"span {slots_n} readings of {limits.interval_s:g} s; at most {limits.max_readings} allowed",
            )
        raw = bin_mean((ts_ms - start_ms) // interval_ms, power, slots_n).astype(np.float64)
    if len(raw) < limits.window_length:
        raise RequestError(
            "power_w",
            f"history of {len(raw)} readings ({len(raw) * limits.interval_s / 60:g} min) is shorter than the "
            f"model's window: send at least {limits.window_length} readings "
            f"({limits.window_length * limits.interval_s / 60:g} min at {limits.interval_s:g} s; "
            f"{limits.history} for the full decision rule)",
        )
    filled, valid = fill_short_gaps(raw, limits.fill_slots)
    filled[~valid] = np.nan
    return GridReadings(req.device_id, start_ms, interval_ms, filled, valid, ~np.isnan(raw))


def to_grids(requests: Sequence[DeviceReadings], limits: Limits) -> list[GridReadings] | None:
    """``to_grid`` of every request in one pass for the common batch (the platform's): every device in the
    stateless compact form at the model's cadence with the same number of readings, each a plausible
    number of watts. The same grids as ``to_grid``; None when the batch is not that (then ``to_grid``
    device by device, whose errors name the device and field)."""
    n = len(requests[0].power_w) if requests else 0
    if not limits.window_length <= n <= limits.max_readings:
        return None
    for req in requests:
        if (
            req.continues is not None
            or req.timestamps is not None
            or len(req.power_w) != n
            or req.interval_s != limits.interval_s
        ):
            return None
    power = np.array([req.power_w for req in requests], dtype=np.float64)  # (D, n); null -> NaN
    if (power > limits.max_power_w).any():
        return None
    present = ~np.isnan(power)
    valid = present.copy()
    for i in np.flatnonzero(~valid.all(axis=1)):  # the rows with missing readings: the gap policy
        power[i], valid[i] = fill_short_gaps(power[i], limits.fill_slots)
        power[i, ~valid[i]] = np.nan
    return [
        GridReadings(req.device_id, _epoch_ms(req.start), limits.interval_ms, power[i], valid[i], present[i])  # type: ignore[arg-type]
        for i, req in enumerate(requests)
    ]


def to_session(req: DeviceReadings, limits: Limits) -> SessionReadings:
    """Check a session-form request (``continues`` set): the readings after ``continues``, at the model's
    cadence; slots between ``continues`` and ``start`` are missing."""
    assert req.continues is not None
    _check_interval(req, limits)
    power = np.array(req.power_w, dtype=np.float64)
    _check_power(power, limits)
    continues_ms, interval_ms = _epoch_ms(req.continues), limits.interval_ms
    start_ms = continues_ms + interval_ms if req.start is None else _epoch_ms(req.start)
    skip, off_grid = divmod(start_ms - continues_ms - interval_ms, interval_ms)
    if skip < 0 or off_grid:
        raise RequestError(
            "start",
            f"{as_time(start_ms).isoformat()} is not one or more readings of {limits.interval_s:g} s after "
            f"'continues' ({as_time(continues_ms).isoformat()})",
        )
    raw = np.concatenate([np.full(skip, np.nan), power])
    if len(raw) > limits.max_readings:
        raise RequestError(
            "power_w", f"{len(raw)} readings after 'continues'; at most {limits.max_readings} per request"
        )
    return SessionReadings(req.device_id, continues_ms, interval_ms, raw)


def to_sessions(requests: Sequence[DeviceReadings], limits: Limits) -> list[SessionReadings] | None:
    """``to_session`` of every request in one pass for the common session batch: one new reading each,
    right after ``continues``. The same readings as ``to_session``; None when the batch is not that."""
    for req in requests:
        if (
            req.continues is None
            or req.start is not None
            or len(req.power_w) != 1
            or (req.interval_s is not None and req.interval_s != limits.interval_s)
        ):
            return None
    power = np.array([req.power_w[0] for req in requests], dtype=np.float64)
    if (power > limits.max_power_w).any():
        return None
    iv = limits.interval_ms
    return [
        SessionReadings(req.device_id, _epoch_ms(req.continues), iv, power[i : i + 1])  # type: ignore[arg-type]
        for i, req in enumerate(requests)
    ]


def unknown_reason(at: datetime, valid: bool, missing: int, limits: Limits) -> str:
    """Why the reading at ``at`` is not answered (the gap policy)."""
    if not valid:
        return f"the reading at {at.isoformat()} is missing (a gap longer than {limits.max_fill_s:g} s)"
    return (
        f"{missing} of the {limits.window_length} readings in the window ending {at.isoformat()} are "
        f"missing (at most {limits.max_invalid_fraction:.0%} allowed)"
    )


def check_batch_size(n_devices: int, limits: Limits) -> None:
    if n_devices > limits.max_devices:
        raise RequestError("devices", f"{n_devices} devices; at most {limits.max_devices} per request")
