"""The AirWatt real-time service (BentoML 1.4 class API). Thin: every rule lives in airwatt.serving.

    airwatt serve [--port P] [--host H] [--model URI]     # or: bentoml serve serving.service:AirWatt

Endpoints (JSON; the OpenAPI page is at /docs): POST /detect, /predict (one device; concurrent calls share
model invocations through adaptive batching of /infer_windows), POST /detect_batch, /predict_batch (many
devices, one model call), POST /report (a week or month of one device's readings -> the report data of
`airwatt report`), POST /model (version, appliances, window, thresholds); BentoML's own GET /healthz,
/livez, /readyz (ready once the model is loaded) and /metrics (Prometheus).

Errors: 400 for a malformed body (pydantic: the field and the problem), 422 ``{"error", "field"}`` for a
well-formed request this model cannot answer. Settings come from params.yaml ``serve`` (read once, here, when
the service is imported: they size the workers and the batching); AIRWATT_MODEL_URI overrides the model.

To add an endpoint (e.g. /report): a method that calls one function of the package, as below.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import bentoml
import numpy as np
from bentoml.exceptions import InvalidArgument
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from airwatt.serving.engine import Engine, configure_torch
from airwatt.serving.inputs import RequestError
from airwatt.serving.loading import (
    StagedModel,
    report_settings,
    serve_settings,
    service_config,
    stage_model,
)
from airwatt.serving.schemas import (
    DetectBatchRequest,
    DetectBatchResponse,
    DetectResponse,
    DeviceReadings,
    ModelInfo,
    PredictBatchRequest,
    PredictBatchResponse,
    PredictRequest,
    PredictResponse,
    ReportRequest,
)

log = logging.getLogger("airwatt.serving")
SETTINGS = serve_settings()
REPORT_SETTINGS = report_settings()
LOOPBACK_TIMEOUT_S = 2 * SETTINGS.max_latency_ms / 1000  # adaptive batching: then answer directly
T = TypeVar("T")


def unprocessable(e: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(e), "field": e.field}, status_code=422)


def as_json(body: BaseModel) -> Response:
    """``body`` serialised once, by pydantic. Returned as is by BentoML, which would otherwise dump a
    response model twice (to Python, then to JSON): about a tenth of a /detect_batch call's time."""
    return Response(body.model_dump_json(), media_type="application/json")


@bentoml.service(name="airwatt", **service_config(SETTINGS))
class AirWatt:
    @bentoml.on_deployment
    def stage() -> None:
        """Main process, before any worker: resolve, download and check the model; exit if it fails."""
        stage_model(SETTINGS.model_uri)

    def __init__(self) -> None:
        configure_torch(SETTINGS.torch_threads)
        staged = StagedModel.from_env() or stage_model(SETTINGS.model_uri)
        self.engine = Engine.load(staged, SETTINGS)

    async def _infer(self, windows: np.ndarray) -> np.ndarray:
        """Through the batchable endpoint when served with ``serve.adaptive_batching``, directly otherwise
        (in the event loop: one device's windows take about 0.1 ms each)."""
        to_async = getattr(self, "to_async", None)
        if len(windows) == 0 or to_async is None or not SETTINGS.adaptive_batching:
            return self.engine.infer(windows)
        try:  # bounded: a loopback call seen hanging under load would otherwise hold the client 30 s
            return await asyncio.wait_for(to_async.infer_windows(windows), LOOPBACK_TIMEOUT_S)
        except Exception as e:  # the loopback round trip failed or timed out (seen under load: dropped
            # keep-alive connections): answer this call directly rather than fail the client with a 500
            log.warning("batched inference failed (%s: %s); answering directly", type(e).__name__, e)
            return await asyncio.to_thread(self.engine.infer, windows)

    @bentoml.api(route="/detect")
    async def detect(self, request: DeviceReadings, /) -> DetectResponse:
        """Which appliances are on at the newest reading, with probability and since when."""
        try:
            prep = self.engine.prepare_detect(request)
        except RequestError as e:
            return unprocessable(e)  # type: ignore[return-value]
        return as_json(self.engine.answer_detect(prep, await self._infer(prep.windows)))  # type: ignore[return-value]

    @bentoml.api(route="/predict")
    async def predict(self, request: PredictRequest, /) -> PredictResponse:
        """Watts per appliance for every reading sent (or the newest only), plus the remainder."""
        try:
            if not request.newest_only:
                return as_json(await asyncio.to_thread(self.engine.predict_series, request))  # type: ignore[return-value]
            prep = self.engine.prepare_newest(request)
        except RequestError as e:
            return unprocessable(e)  # type: ignore[return-value]
        answer = self.engine.answer_newest_prediction(prep, await self._infer(prep.windows))
        return as_json(answer)  # type: ignore[return-value]

    async def _call(self, windows: int | None, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in this worker's event loop when it evaluates at most ``serve.inline_max_windows``
        windows (no thread hop, no GIL hand-offs: about 20% less CPU per update), else (or when ``windows``
        is None: whole series) in a thread so that it does not hold up /healthz and the calls behind it."""
        if windows is not None and windows <= SETTINGS.inline_max_windows:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    @bentoml.api(route="/detect_batch")
    async def detect_batch(self, request: DetectBatchRequest, /) -> DetectBatchResponse:
        """/detect for many devices in one call (one model invocation)."""
        windows = self.engine.windows_needed(request.devices, self.engine.since_readings)
        try:
            results = await self._call(windows, self.engine.detect, request.devices)
        except RequestError as e:
            return unprocessable(e)  # type: ignore[return-value]
        response = DetectBatchResponse(model_version=self.engine.model_version, results=results)
        return as_json(response)  # type: ignore[return-value]

    @bentoml.api(route="/predict_batch")
    async def predict_batch(self, request: PredictBatchRequest, /) -> PredictBatchResponse:
        """/predict for many devices in one call."""
        windows = len(request.devices) if request.newest_only else None  # one each, or whole series
        try:
            results = await self._call(windows, self.engine.predict, request.devices, request.newest_only)
        except RequestError as e:
            return unprocessable(e)  # type: ignore[return-value]
        response = PredictBatchResponse(model_version=self.engine.model_version, results=results)
        return as_json(response)  # type: ignore[return-value]

    @bentoml.api(route="/report")
    async def report(self, request: ReportRequest, /) -> dict[str, Any]:
        """A period of one device's readings -> per local day and week/month: energy (kWh), on-hours, cycles,
        peak, share and cost per appliance and the unexplained remainder; events; gaps (docs/reports.md)."""
        try:
            return await asyncio.to_thread(self.engine.report, request, REPORT_SETTINGS)
        except RequestError as e:
            return unprocessable(e)  # type: ignore[return-value]

    @bentoml.api(route="/model")
    def model(self) -> ModelInfo:
        """The served model: version, appliances, window, interval, thresholds, request limits."""
        return self.engine.info()

    @bentoml.api(
        route="/infer_windows",
        batchable=True,
        max_batch_size=SETTINGS.max_batch_size,
        max_latency_ms=SETTINGS.max_latency_ms,
    )
    def infer_windows(self, windows: np.ndarray) -> np.ndarray:
        """Internal (keep it off the public gateway): (B, W) normalised windows -> (B, 2A) watts then
        on-probabilities. /detect and /predict call it so BentoML can batch concurrent calls."""
        w = self.engine.limits.window_length
        if windows.ndim != 2 or windows.shape[1] != w or not np.isfinite(windows).all():
            shape = windows.shape
            raise InvalidArgument(f"windows: expected finite (B, {w}) normalised windows; got {shape}")
        return self.engine.infer(windows)
