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

import time
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
    max_batch_readings: int  # all devices of a call together
    max_series_readings: int  # answered one by one (predict of every reading), all devices together
    earliest_ms: int  # readings before are implausible
    max_ahead_ms: int  # readings after the server's clock plus this are implausible

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
            max_batch_readings=cfg.max_batch_readings,
            max_series_readings=cfg.max_series_readings,
            earliest_ms=_epoch_ms(cfg.earliest_reading),
            max_ahead_ms=round(cfg.max_ahead_s * 1000),
        )

    def latest_ms(self) -> int:
        """The latest plausible reading time now: the server's clock plus ``max_ahead_ms``."""
        return time.time_ns() // 1_000_000 + self.max_ahead_ms

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


def _implausible(when: str, ms: int, limits: Limits, latest_ms: int) -> str:
    """Why a reading time ``ms`` (written ``when``) is not plausible: before ``earliest_ms`` or after
    ``latest_ms``."""
    if ms < limits.earliest_ms:
        return (
            f"{when} is before {as_time(limits.earliest_ms).isoformat()} (serve.earliest_reading): not a "
            "plausible reading time"
        )
    return (
        f"{when} is after {as_time(latest_ms).isoformat(timespec='seconds')}, the server's clock plus "
        f"{limits.max_ahead_ms / 1000:g} s (serve.max_ahead_s): not a plausible reading time"
    )


def check_times(field: str, first: datetime, n: int, limits: Limits) -> int:
    """Readings ``first + i * interval`` (i < n) at plausible times; their first time (epoch ms). The
    error names ``field`` (``first`` out of range) or the first reading past the latest time."""
    first_ms, iv = _epoch_ms(first), limits.interval_ms
    latest = limits.latest_ms()
    if not limits.earliest_ms <= first_ms <= latest:
        raise RequestError(field, _implausible(first.isoformat(), first_ms, limits, latest))
    if first_ms + (n - 1) * iv > latest:
        k = (latest - first_ms) // iv + 1  # the first reading past it
        when = f"reading {k} ({as_time(first_ms + k * iv).isoformat()})"
        raise RequestError(f"power_w[{k}]", _implausible(when, first_ms + k * iv, limits, latest))
    return first_ms


def _check_timestamps(ts_ms: np.ndarray, timestamps: Sequence[datetime], limits: Limits) -> None:
    latest = limits.latest_ms()
    bad = np.flatnonzero((ts_ms < limits.earliest_ms) | (ts_ms > latest))
    if len(bad):
        i = int(bad[0])
        raise RequestError(
            f"timestamps[{i}]", _implausible(timestamps[i].isoformat(), int(ts_ms[i]), limits, latest)
        )


def grid_length(req: DeviceReadings, limits: Limits) -> int:
    """The readings a request stands for on the model's grid (what checking and computing it costs): its
    readings, or the span of its timestamps, or a session's readings after the slots it skips."""
    n = len(req.power_w)
    if req.timestamps is not None:
        span_s = (req.timestamps[-1] - req.timestamps[0]).total_seconds()
        return max(n, int(span_s // limits.interval_s) + 1)
    if req.continues is not None and req.start is not None:
        skipped = int((req.start - req.continues).total_seconds() // limits.interval_s) - 1
        return n + max(skipped, 0)
    return n


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
        start_ms, raw = check_times("start", req.start, n, limits), power
    else:
        ts_ms = np.array([_epoch_ms(t) for t in req.timestamps], dtype=np.int64)
        _check_timestamps(ts_ms, req.timestamps, limits)
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
    starts = np.array([_epoch_ms(req.start) for req in requests], np.int64)  # type: ignore[arg-type]
    ends = starts + (n - 1) * limits.interval_ms
    if (starts < limits.earliest_ms).any() or (ends > limits.latest_ms()).any():
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
        GridReadings(req.device_id, int(starts[i]), limits.interval_ms, power[i], valid[i], present[i])
        for i, req in enumerate(requests)
    ]


def to_session(req: DeviceReadings, limits: Limits) -> SessionReadings:
    """Check a session-form request (``continues`` set): the readings after ``continues``, at the model's
    cadence; slots between ``continues`` and ``start`` are missing."""
    assert req.continues is not None
    _check_interval(req, limits)
    power = np.array(req.power_w, dtype=np.float64)
    _check_power(power, limits)
    continues_ms, interval_ms = check_times("continues", req.continues, 1, limits), limits.interval_ms
    if req.start is None:
        start_ms = continues_ms + interval_ms
        check_times("continues", as_time(start_ms), len(power), limits)
    else:
        start_ms = check_times("start", req.start, len(power), limits)
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
    continues = np.array([_epoch_ms(req.continues) for req in requests], np.int64)  # type: ignore[arg-type]
    if (continues < limits.earliest_ms).any() or (continues + iv > limits.latest_ms()).any():
        return None
    return [
        SessionReadings(req.device_id, int(continues[i]), iv, power[i : i + 1])
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


def _total_readings(requests: Sequence[DeviceReadings], limits: Limits) -> int:
    """Readings of all devices on the grid, each counted up to ``max_readings`` (more is its own error)."""
    return sum(min(grid_length(r, limits), limits.max_readings + 1) for r in requests)


def check_batch_size(requests: Sequence[DeviceReadings], limits: Limits) -> None:
    """At most ``max_devices`` devices and ``max_batch_readings`` readings in one call."""
    n = len(requests)
    if n > limits.max_devices:
        raise RequestError("devices", f"{n} devices; at most {limits.max_devices} per request")
    total = _total_readings(requests, limits)
    if total > limits.max_batch_readings:
        raise RequestError(
            "devices",
            f"{total:,} readings in {n} devices; at most {limits.max_batch_readings:,} per request "
            "(serve.max_batch_readings): split the batch",
        )


def check_series_size(requests: Sequence[DeviceReadings], limits: Limits) -> None:
    """At most ``max_series_readings`` readings answered one by one in one call (the answer's size)."""
    total = _total_readings(requests, limits)
    if total > limits.max_series_readings:
        raise RequestError(
            "devices" if len(requests) > 1 else "power_w",
            f"{total:,} readings to answer one by one; at most {limits.max_series_readings:,} per request "
            "(serve.max_series_readings): split the call, or ask for newest_only",
        )
