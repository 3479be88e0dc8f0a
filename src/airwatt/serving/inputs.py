"""Request readings -> the model's regular grid, with the gap policy; model-dependent checks (HTTP 422).

Gap policy (the same rule as training data, airwatt.prepare.grid.fill_short_gaps):

- a run of missing readings (null, or empty grid slots between timestamps) no longer than ``max_fill_s`` is
  forward-filled from the reading before it and counts as a reading;
- longer runs (and missing readings at the very start) stay missing; the model sees the training mean there,
  as in evaluation (ModelBundle.normalise);
- a window (the ``window_length`` readings ending at the answered reading) is answered only when that reading
  is present and at most ``max_invalid_fraction`` of the window is missing; otherwise the answer is
  ``status: "unknown"`` with the reason. /predict for every reading follows ModelBundle.predict_series: a
  prediction wherever the reading is present (after filling), null elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from airwatt.config import ServeParams
from airwatt.errors import AirwattError
from airwatt.prepare.grid import bin_mean, fill_short_gaps, grid_span
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


@dataclass(frozen=True)
class Limits:
    """What a request must satisfy for the loaded model (from ServeParams and the model spec)."""

    interval_s: float
    window_length: int
    max_fill_s: float
    max_invalid_fraction: float
    max_power_w: float
    max_readings: int
    max_devices: int

    @classmethod
    def of(cls, cfg: ServeParams, interval_s: float, window_length: int, model_max_fill_s: float) -> Limits:
        return cls(
            interval_s=interval_s,
            window_length=window_length,
            max_fill_s=model_max_fill_s if cfg.max_fill_s is None else cfg.max_fill_s,
            max_invalid_fraction=cfg.max_invalid_fraction,
            max_power_w=cfg.max_power_w,
            max_readings=cfg.max_readings,
            max_devices=cfg.max_devices,
        )


@dataclass(frozen=True)
class GridReadings:
    """One device's readings on the model's grid: slot k is at ``start_ms + k * interval_ms``."""

    device_id: str
    start_ms: int
    interval_ms: int
    aggregate_w: np.ndarray  # (T,) float64, NaN where missing after the gap policy
    valid: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.valid)

    def time_of(self, slot: int) -> datetime:
        return datetime.fromtimestamp((self.start_ms + slot * self.interval_ms) / 1000, tz=UTC)


def _epoch_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)


def to_grid(req: DeviceReadings, limits: Limits) -> GridReadings:
    """Check ``req`` against ``limits``, put it on the grid with the gap policy; RequestError if unusable."""
    n = len(req.power_w)
    if n > limits.max_readings:
        raise RequestError("power_w", f"{n} readings; at most {limits.max_readings} per device per request")
    power = np.array(req.power_w, dtype=np.float64)  # null (None) -> NaN
    too_big = np.flatnonzero(power > limits.max_power_w)
    if len(too_big):
        i = int(too_big[0])
        raise RequestError(
            f"power_w[{i}]", f"{power[i]:g} W is above the plausible maximum of {limits.max_power_w:g} W"
        )
    interval_ms = round(limits.interval_s * 1000)
    if req.timestamps is None:
        assert req.start is not None and req.interval_s is not None  # the schema guarantees one time form
        if abs(req.interval_s - limits.interval_s) > 1e-9:
            raise RequestError(
                "interval_s",
                f"{req.interval_s:g} s, but the model reads one reading every {limits.interval_s:g} s "
                "(send readings at that cadence, or timestamps to have them placed on its grid)",
            )
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
            f"({limits.window_length * limits.interval_s / 60:g} min at {limits.interval_s:g} s)",
        )
    filled, valid = fill_short_gaps(raw, int(limits.max_fill_s // limits.interval_s))
    filled[~valid] = np.nan
    return GridReadings(req.device_id, start_ms, interval_ms, filled, valid)


def to_grids(requests: Sequence[DeviceReadings], limits: Limits) -> list[GridReadings] | None:
    """``to_grid`` of every request in one pass for the common batch (the platform's): every device in the
    compact form at the model's cadence with the same number of readings, each a plausible number of watts.
    The same grids as ``to_grid``, a third of the time per device; None when the batch is not that (then
    ``to_grid`` device by device, whose errors name the device and field)."""
    n = len(requests[0].power_w) if requests else 0
    if not limits.window_length <= n <= limits.max_readings:
        return None
    for req in requests:
        if req.timestamps is not None or len(req.power_w) != n or req.interval_s != limits.interval_s:
            return None
    power = np.array([req.power_w for req in requests], dtype=np.float64)  # (D, n); null -> NaN
    if (power > limits.max_power_w).any():
        return None
    valid = ~np.isnan(power)
    max_slots = int(limits.max_fill_s // limits.interval_s)
    for i in np.flatnonzero(~valid.all(axis=1)):  # the rows with missing readings: the gap policy
        power[i], valid[i] = fill_short_gaps(power[i], max_slots)
        power[i, ~valid[i]] = np.nan
    interval_ms = round(limits.interval_s * 1000)
    return [
        GridReadings(req.device_id, _epoch_ms(req.start), interval_ms, power[i], valid[i])  # type: ignore[arg-type]
        for i, req in enumerate(requests)
    ]


def window_problems(grid: GridReadings, ends: np.ndarray, limits: Limits) -> list[str | None]:
    """Why each window ending at a slot of ``ends`` (each >= window_length - 1) cannot be answered (the gap
    policy), or None where it can."""
    if grid.valid.all():  # the common case
        return [None] * len(ends)
    w = limits.window_length
    missing_before = np.concatenate([[0], np.cumsum(~grid.valid)])  # missing slots in [0, k) at k
    missing = missing_before[ends + 1] - missing_before[ends + 1 - w]  # (K,) in each window
    bad = ~grid.valid[ends] | (missing > limits.max_invalid_fraction * w)
    problems: list[str | None] = [None] * len(ends)
    for k in np.flatnonzero(bad):
        end = int(ends[k])
        when = grid.time_of(end).isoformat()
        if not grid.valid[end]:
            problems[k] = f"the reading at {when} is missing (a gap longer than {limits.max_fill_s:g} s)"
        else:
            problems[k] = (
                f"{missing[k]} of the {w} readings in the window ending {when} are missing "
                f"(at most {limits.max_invalid_fraction:.0%} allowed)"
            )
    return problems


def check_batch_size(n_devices: int, limits: Limits) -> None:
    if n_devices > limits.max_devices:
        raise RequestError("devices", f"{n_devices} devices; at most {limits.max_devices} per request")
