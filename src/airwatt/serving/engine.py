"""The in-process engine behind the service: readings -> detect / predict answers through ModelBundle.

Every model call goes through ``ModelBundle`` (the code ``airwatt evaluate`` uses): the newest-reading path
stacks the windows of all devices of a call into one (B, W) tensor for ``predict_windows``; /predict of every
reading calls ``predict_series`` per device (for the causal model one O(T) sequence pass, the exact evaluation
path). The service splits detect into prepare -> infer -> answer so that BentoML's adaptive batching can merge
the ``infer`` step of concurrent single-device calls.

/detect evaluates the window ending at the newest reading and, to say when the current state began, the
windows ending at the readings before it that have a full window of history, up to ``detect_since_max_s``
back (cost: one window per reading evaluated). The state of a reading is ``prob_on >= 0.5`` (no duration
rule: a single reading has no duration). ``since`` is the first reading of the newest run of that state when
a reading in the other state precedes the run inside the evaluated span; null otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import numpy as np
import torch

from airwatt.config import ReportParams, ServeParams
from airwatt.models import ModelBundle
from airwatt.models.predict import ON_PROBABILITY_THRESHOLD
from airwatt.serving.inputs import (
    GridReadings,
    Limits,
    RequestError,
    check_batch_size,
    to_grid,
    to_grids,
    window_problems,
)
from airwatt.serving.loading import StagedModel
from airwatt.serving.schemas import (
    ApplianceInfo,
    DetectResponse,
    DeviceReadings,
    ModelInfo,
    PredictResponse,
    ReportRequest,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PreparedWindows:
    """Windows to evaluate for one device: the readings ``ends`` (ascending, the newest last) they end at."""

    grid: GridReadings
    ends: np.ndarray  # (K,) slots
    problems: list[str | None]  # (K,) why a window cannot be answered, None if it can
    windows: np.ndarray  # (number of None problems, W) float32, normalised, in ``ends`` order

    @property
    def newest_problem(self) -> str | None:
        return self.problems[-1]


class Engine:
    """A loaded model and the request limits; thread-safe for inference (torch inference_mode)."""

    def __init__(self, bundle: ModelBundle, staged: StagedModel, cfg: ServeParams) -> None:
        self.bundle = bundle
        self.staged = staged
        self.cfg = cfg
        model_fill_s = float(bundle.spec.provenance.get("max_fill_s", 0.0))
        self.limits = Limits.of(cfg, bundle.interval_s, bundle.window_length, model_fill_s)
        self.since_readings = int(cfg.detect_since_max_s // bundle.interval_s)
        self.appliances = bundle.appliances
        self._offsets = np.arange(1 - bundle.window_length, 1)  # a window's slots relative to its end

    @classmethod
    def load(cls, staged: StagedModel, cfg: ServeParams) -> Engine:
        return cls(ModelBundle.load(staged.bundle_dir), staged, cfg)

    @property
    def model_version(self) -> str:
        return self.staged.version

    # ---- model information ------------------------------------------------------------------------------
    def info(self) -> ModelInfo:
        spec = self.bundle.spec
        return ModelInfo(
            model_version=self.model_version,
            model_uri=self.staged.uri,
            arch=spec.arch,
            appliances=list(spec.appliances),
            window_length=spec.window_length,
            interval_s=spec.interval_s,
            min_history_s=spec.window_length * spec.interval_s,
            max_fill_s=self.limits.max_fill_s,
            max_invalid_fraction=self.limits.max_invalid_fraction,
            detect_since_max_s=self.cfg.detect_since_max_s,
            max_readings=self.limits.max_readings,
            max_report_readings=self.cfg.max_report_readings,
            max_devices=self.limits.max_devices,
            max_power_w=self.limits.max_power_w,
            thresholds={a: ApplianceInfo(**spec.on_off[a].model_dump()) for a in spec.appliances},
            provenance=dict(spec.provenance),
        )

    # ---- the three steps -----------------------------------------------------------------------------------
    def prepare(self, req: DeviceReadings, since_readings: int) -> PreparedWindows:
        """Check and grid ``req``; windows ending at the newest reading and up to since_readings before."""
        return self.windows_of(to_grid(req, self.limits), since_readings)

    def windows_of(self, grid: GridReadings, since_readings: int) -> PreparedWindows:
        """The windows of ``grid`` ending at its newest reading and up to since_readings before."""
        ends = self._ends(len(grid), since_readings)
        problems = window_problems(grid, ends, self.limits)
        if problems[-1] is not None:  # the newest cannot be answered: nothing to evaluate
            ends, problems = ends[-1:], problems[-1:]
        ok = ends[[p is None for p in problems]]
        lo = int(ends[0]) - (self.limits.window_length - 1)  # the first slot any window reads
        x = self.bundle.normalise(grid.aggregate_w[lo:], grid.valid[lo:])  # float32
        windows = x[(ok - lo)[:, None] + self._offsets]  # (K_ok, W), a copy
        return PreparedWindows(grid, ends, problems, windows)

    def prepare_all(self, requests: Sequence[DeviceReadings], since_readings: int) -> list[PreparedWindows]:
        """``prepare`` of every request; a batch of one length in the compact form (the platform's) with
        nothing missing is gridded and normalised in one pass (the same windows). RequestErrors name the
        device (``devices[i].field``)."""
        check_batch_size(len(requests), self.limits)
        grids = to_grids(requests, self.limits)
        if grids is None:
            return [_under(i, self.prepare, r, since_readings) for i, r in enumerate(requests)]
        if not all(g.valid.all() for g in grids):
            return [self.windows_of(g, since_readings) for g in grids]
        ends = self._ends(len(grids[0]), since_readings)
        lo = int(ends[0]) - (self.limits.window_length - 1)
        x = self.bundle.normalise(np.stack([g.aggregate_w[lo:] for g in grids]))  # (D, n - lo), all valid
        windows = x[:, (ends - lo)[:, None] + self._offsets]  # (D, K, W)
        problems: list[str | None] = [None] * len(ends)
        return [PreparedWindows(g, ends, problems, w) for g, w in zip(grids, windows, strict=True)]

    def windows_needed(self, requests: Sequence[DeviceReadings], since_readings: int) -> int:
        """About how many windows ``prepare_all`` gives these requests (from the number of readings sent)."""
        w, most = self.limits.window_length, since_readings + 1
        return sum(min(most, max(1, len(r.power_w) - w + 1)) for r in requests)

    def _ends(self, readings: int, since_readings: int) -> np.ndarray:
        """The slots windows end at: the newest and up to since_readings before it with a full window."""
        return np.arange(max(self.limits.window_length - 1, readings - 1 - since_readings), readings)

    def infer(self, windows: np.ndarray) -> np.ndarray:
        """(B, W) normalised windows -> (B, 2A) float32: watts of each appliance, then on-probabilities."""
        if len(windows) == 0:
            return np.zeros((0, 2 * len(self.bundle.appliances)), np.float32)
        power_w, prob_on = self.bundle.predict_windows(torch.from_numpy(np.asarray(windows, np.float32)))
        return torch.cat([power_w, prob_on], dim=1).cpu().numpy()

    def answer_detect(self, prep: PreparedWindows, outputs: np.ndarray) -> DetectResponse:
        """The detect answer from ``infer``'s rows for ``prep.windows`` (validated from plain dicts in one
        pydantic call: a third cheaper than an object per appliance, twice as fast as model_construct)."""
        grid, apps = prep.grid, self.appliances
        at = grid.time_of(int(prep.ends[-1]))
        if prep.newest_problem is not None:
            return DetectResponse(
                device_id=grid.device_id, model_version=self.model_version, at=at, status="unknown",
                reason=prep.newest_problem, appliances={},
            )  # fmt: skip
        n_app = len(apps)
        if len(outputs) == len(prep.ends):  # every window answered (the common case)
            prob = outputs[:, n_app:]  # (K, A)
        else:
            prob = np.full((len(prep.ends), n_app), np.nan, np.float32)  # NaN where not answered
            prob[[p is None for p in prep.problems]] = outputs[:, n_app:]
        on = prob >= ON_PROBABILITY_THRESHOLD
        newest_on, newest_prob = on[-1].tolist(), prob[-1].astype(np.float64).tolist()
        since: list[datetime | None] = [None] * n_app
        if len(on) > 1:
            unknown = np.isnan(prob)
            for j in range(n_app):
                k = _run_start(on[:, j], unknown[:, j])
                since[j] = None if k is None else grid.time_of(int(prep.ends[k]))
        values = zip(apps, newest_on, newest_prob, since, strict=True)
        states = {a: {"on": o, "prob_on": p, "since": t} for a, o, p, t in values}
        return DetectResponse.model_validate({
            "device_id": grid.device_id, "model_version": self.model_version, "at": at, "status": "ok",
            "reason": None, "appliances": states,
        })  # fmt: skip

    def answer_newest_prediction(self, prep: PreparedWindows, outputs: np.ndarray) -> PredictResponse:
        """/predict with newest_only: watts at the newest reading from its window (null if unknown)."""
        grid, apps = prep.grid, self.bundle.appliances
        newest = int(prep.ends[-1])
        if prep.newest_problem is not None:
            power: list[float | None] = [None] * len(apps)
            remainder = None
        else:
            values = outputs[-1, : len(apps)].astype(np.float64)
            power = list(values.tolist())
            remainder = float(grid.aggregate_w[newest] - values.sum())
        return PredictResponse(
            device_id=grid.device_id,
            model_version=self.model_version,
            start=grid.time_of(newest),
            interval_s=self.limits.interval_s,
            power_w={a: [p] for a, p in zip(apps, power, strict=True)},
            remainder_w=[remainder],
            predicted=[prep.newest_problem is None],
        )

    def predict_series(self, req: DeviceReadings) -> PredictResponse:
        """/predict of every reading: ModelBundle.predict_series on the gridded readings (as evaluation)."""
        grid = to_grid(req, self.limits)
        pred = self.bundle.predict_series(grid.aggregate_w, grid.valid)
        power = pred.power_w.astype(np.float64)  # (T, A)
        remainder = grid.aggregate_w - power.sum(axis=1)
        ok = pred.predicted
        return PredictResponse(
            device_id=grid.device_id,
            model_version=self.model_version,
            start=grid.time_of(0),
            interval_s=self.limits.interval_s,
            power_w={a: _nullable(power[:, j], ok) for j, a in enumerate(pred.appliances)},
            remainder_w=_nullable(remainder, ok),
            predicted=ok.tolist(),
        )

    # ---- whole calls (batch endpoints, tests, benchmarks) --------------------------------------------------
    def report(self, req: ReportRequest, params: ReportParams) -> dict[str, Any]:
        """POST /report: the readings on the grid (the gap policy above), predicted through
        ModelBundle.predict_series, then the report core of `airwatt report` (airwatt.report)."""
        from airwatt.report import report_for_series

        grid = to_grid(req, dataclasses.replace(self.limits, max_readings=self.cfg.max_report_readings))
        pred = self.bundle.predict_series(grid.aggregate_w, grid.valid)
        timestamps_ms = grid.start_ms + np.arange(len(grid), dtype=np.int64) * grid.interval_ms
        body = report_for_series(
            timestamps_ms,
            grid.aggregate_w,
            grid.valid,
            np.asarray(pred.power_w),
            np.asarray(pred.on, bool),
            appliances=self.bundle.appliances,
            interval_s=self.bundle.interval_s,
            timezone=req.timezone,
            params=params,
            period=req.period,
            device_id=req.device_id,
        )
        return {"model_version": self.model_version, **body}

    def prepare_detect(self, req: DeviceReadings) -> PreparedWindows:
        return self.prepare(req, self.since_readings)

    def prepare_newest(self, req: DeviceReadings) -> PreparedWindows:
        return self.prepare(req, 0)

    def detect(self, requests: Sequence[DeviceReadings]) -> list[DetectResponse]:
        """Detect for many devices with ONE model call over all their windows."""
        preps = self.prepare_all(requests, self.since_readings)
        return [self.answer_detect(p, o) for p, o in zip(preps, self._infer_all(preps), strict=True)]

    def predict(self, requests: Sequence[DeviceReadings], newest_only: bool) -> list[PredictResponse]:
        """Predict for many devices: the newest reading (one model call) or every reading (per device)."""
        if not newest_only:
            check_batch_size(len(requests), self.limits)
            return [_under(i, self.predict_series, r) for i, r in enumerate(requests)]
        preps = self.prepare_all(requests, 0)
        outputs = self._infer_all(preps)
        return [self.answer_newest_prediction(p, o) for p, o in zip(preps, outputs, strict=True)]

    def _infer_all(self, preps: list[PreparedWindows]) -> list[np.ndarray]:
        """One model call over every device's windows, split back per device."""
        outputs = self.infer(np.concatenate([p.windows for p in preps]))  # (sum K_ok, 2A)
        bounds = np.cumsum([len(p.windows) for p in preps])[:-1]
        return np.split(outputs, bounds)


def _under(i: int, fn: Callable[..., T], req: DeviceReadings, *args: Any) -> T:
    """``fn(req, *args)`` with a RequestError's field placed under ``devices[i]``."""
    try:
        return fn(req, *args)
    except RequestError as e:
        raise e.under(f"devices[{i}]") from None


def _nullable(values: np.ndarray, ok: np.ndarray) -> list[float | None]:
    return [float(v) if k else None for v, k in zip(values.tolist(), ok.tolist(), strict=True)]


def _run_start(state: np.ndarray, unknown: np.ndarray) -> int | None:
    """Index where the last run of ``state[-1]`` begins, if a known opposite state precedes it; else None."""
    i = len(state) - 1
    while i > 0 and not unknown[i - 1] and state[i - 1] == state[-1]:
        i -= 1
    if i == 0 or unknown[i - 1]:
        return None
    return i


def configure_torch(threads: int) -> None:
    """Intra-op threads of this process (one per worker: the workers already use the cores)."""
    torch.set_num_threads(threads)
