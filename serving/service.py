"""The AirWatt real-time service (BentoML 1.4 class API). Thin: every rule lives in airwatt.serving.

    airwatt serve [--port P] [--host H] [--model URI]     # or: bentoml serve serving.service:AirWatt

Endpoints (JSON; the OpenAPI page is at /docs): POST /detect, /predict (one device), POST /detect_batch,
/predict_batch (many devices, one model call), POST /report (a week or month of one device's readings -> the
report data of `airwatt report`), POST /model (version, appliances, window, decision rule, limits);
BentoML's own GET /healthz, /livez, /readyz (ready once every worker has loaded the model and run its
warm-up) and /metrics (Prometheus, with the device-state cache's counters:
airwatt_state_cache_lookups_total{outcome}, _evictions_total, _devices; and the warm-up's).

A call is answered from the readings it sends (or, in the session form, all readings sent in the session);
each worker's device-state cache only saves computing what it already computed (docs/serving.md).

Errors: 400 for a malformed body (pydantic: the field and the problem), 422 ``{"error", "field"}`` for a
well-formed request this model cannot answer, 409 ``{"error", "field", "devices"}`` for a session-form call
this worker holds no state for (resend the history); before any parsing, 413 for a body over
``serve.max_body_mib``, 415 for a form or pickle body, 503 with Retry-After while ``serve.max_concurrency``
calls are in progress in the worker (airwatt.serving.guard). Settings come from params.yaml ``serve`` (read
once, here, when the service is imported: they size the workers); AIRWATT_MODEL_URI overrides the model.

To add an endpoint: a method that calls one function of the package, as below.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

import bentoml
import pydantic_core
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from airwatt.serving.engine import Engine, configure_threads, expected_history_passes
from airwatt.serving.guard import BodyLimit, ConcurrencyLimit
from airwatt.serving.inputs import RequestError, SessionConflict
from airwatt.serving.loading import (
    StagedModel,
    WarmMarks,
    report_settings,
    serve_settings,
    service_config,
    stage_model,
)
from airwatt.serving.openapi import OpenAPIDocument
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
from airwatt.serving.state import OUTCOMES
from airwatt.serving.warmup import warm_up

log = logging.getLogger("airwatt.serving")
SETTINGS = serve_settings()
REPORT_SETTINGS = report_settings()
T = TypeVar("T")


@functools.cache
def warmup_metrics() -> tuple[Any, Any]:
    """The warm-up's metrics (created in the worker, as ``cache_metrics``)."""
    import prometheus_client

    calls = prometheus_client.Counter("airwatt_warmup_calls", "engine calls run by the workers' warm-ups")
    warm = prometheus_client.Gauge(
        "airwatt_workers_warm", "workers that finished their warm-up", multiprocess_mode="livesum"
    )
    return calls, warm


@functools.cache
def cache_metrics() -> tuple[Any, Any, Any]:
    """The device-state cache's Prometheus metrics, created in the worker on first use: prometheus_client
    is imported only after BentoML has set the worker's multiprocess directory (else /metrics misses them)."""
    import prometheus_client

    lookups = prometheus_client.Counter(
        "airwatt_state_cache_lookups",
        "device-state cache lookups by outcome (hit, duplicate, session, miss_*, conflict)",
        ["outcome"],
    )
    evictions = prometheus_client.Counter("airwatt_state_cache_evictions", "device states evicted (LRU)")
    devices = prometheus_client.Gauge(
        "airwatt_state_cache_devices", "device states held, summed over workers", multiprocess_mode="livesum"
    )
    for outcome in OUTCOMES:
        lookups.labels(outcome=outcome)  # every series exists from the start
    return lookups, evictions, devices


def unprocessable(e: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(e), "field": e.field}, status_code=422)


def conflict(e: SessionConflict) -> JSONResponse:
    return JSONResponse({"error": str(e), "field": e.fields[0], "devices": e.devices}, status_code=409)


def answers(schema: type[BaseModel] | type[dict[str, Any]]) -> type[bentoml.IODescriptor]:
    """The ``output_spec`` of an endpoint that returns a ready ``Response`` (``as_json``, or an error):
    BentoML documents ``schema`` as the answer, as it would for a method annotated ``-> schema``. The cast
    is for BentoML's signature, which names IODescriptor only: its converter takes any pydantic model or
    dict class and wraps it as it wraps a return annotation (BentoML 1.4 ``APIMethod``)."""
    return cast("type[bentoml.IODescriptor]", schema)


def as_json(body: BaseModel | dict[str, Any]) -> Response:
    """``body`` serialised once, by pydantic. Returned as is by BentoML, which would otherwise dump a
    response model twice (to Python, then to JSON). Detect answers are plain rows of their schema
    (Engine.detect_rows): no model object per device on the hot path."""
    text = body.model_dump_json() if isinstance(body, BaseModel) else pydantic_core.to_json(body)
    return Response(text, media_type="application/json")


@bentoml.service(name="airwatt", **service_config(SETTINGS))
class AirWatt:
    @bentoml.on_deployment
    def stage() -> None:
        """Main process, before any worker: resolve, download and check the model; exit if it fails."""
        stage_model(SETTINGS.model_uri)
        WarmMarks.prepare()

    def __init__(self) -> None:
        self.marks = WarmMarks(SETTINGS.workers, bentoml.server_context.worker_index)
        configure_threads(SETTINGS.torch_threads)
        staged = StagedModel.from_env() or stage_model(SETTINGS.model_uri)
        self.engine = Engine.load(staged, SETTINGS)
        self._counted = dict.fromkeys(OUTCOMES, 0)
        self._evicted = 0
        self.heavy = asyncio.Semaphore(SETTINGS.max_heavy_calls)
        cache_metrics()

    @bentoml.on_startup
    def warm(self) -> None:
        """Before this worker serves: every kind of call once (airwatt.serving.warmup), then mark it warm."""
        done = warm_up(self.engine, REPORT_SETTINGS)
        calls, warm = warmup_metrics()
        calls.inc(done.calls)
        warm.set(1)
        self.marks.mark_warm()
        log.info("worker %s warm: %d calls in %.2f s", self.marks.mine, done.calls, done.seconds)

    async def __is_ready__(self) -> bool:
        """/readyz: 200 once every worker of the server is warm (503 before)."""
        return self.marks.all_warm()

    def _export_cache_stats(self) -> None:
        lookups, evictions, devices = cache_metrics()
        stats = self.engine.cache.stats
        for outcome, n in stats.outcomes.items():
            if n != self._counted[outcome]:
                lookups.labels(outcome=outcome).inc(n - self._counted[outcome])
                self._counted[outcome] = n
        if stats.evictions != self._evicted:
            evictions.inc(stats.evictions - self._evicted)
            self._evicted = stats.evictions
        devices.set(len(self.engine.cache))

    async def _call(self, requests: list[DeviceReadings], fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in this worker's event loop when the call needs at most ``serve.inline_max_misses``
        history passes and no other call holds the device-state lock (no thread hop: the common, cheap
        case), else in a thread so that it does not hold up /healthz and the calls behind it."""
        engine = self.engine
        inline = expected_history_passes(engine, requests) <= SETTINGS.inline_max_misses
        try:
            if inline and not engine.lock.locked():
                return fn(*args)
            return await asyncio.to_thread(fn, *args)
        finally:
            self._export_cache_stats()

    async def _heavy(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a thread, at most ``serve.max_heavy_calls`` at once in this worker (a month's
        report holds a few hundred MiB while it runs); the others wait here, holding no thread."""
        async with self.heavy:
            return await asyncio.to_thread(fn, *args)

    @bentoml.api(route="/detect", output_spec=answers(DetectResponse))
    async def detect(self, request: DeviceReadings, /) -> Response:
        """Which appliances are on at the newest reading, with probability and since when."""
        try:
            results = await self._call([request], self.engine.detect_rows, [request])
        except RequestError as e:
            return unprocessable(e)
        except SessionConflict as e:
            return conflict(e)
        return as_json(results[0])

    @bentoml.api(route="/predict", output_spec=answers(PredictResponse))
    async def predict(self, request: PredictRequest, /) -> Response:
        """Watts per appliance for every reading sent (or the newest only), plus the remainder."""
        try:
            if not request.newest_only:
                return as_json(await self._heavy(self.engine.predict_series, request))
            results = await self._call([request], self.engine.predict, [request], True)
        except RequestError as e:
            return unprocessable(e)
        except SessionConflict as e:
            return conflict(e)
        return as_json(results[0])

    @bentoml.api(route="/detect_batch", output_spec=answers(DetectBatchResponse))
    async def detect_batch(self, request: DetectBatchRequest, /) -> Response:
        """/detect for many devices in one call (one model invocation)."""
        try:
            rows = await self._call(request.devices, self.engine.detect_rows, request.devices)
        except RequestError as e:
            return unprocessable(e)
        except SessionConflict as e:
            return conflict(e)
        return as_json({"model_version": self.engine.model_version, "results": rows})

    @bentoml.api(route="/predict_batch", output_spec=answers(PredictBatchResponse))
    async def predict_batch(self, request: PredictBatchRequest, /) -> Response:
        """/predict for many devices in one call."""
        try:
            if request.newest_only:
                args = (request.devices, self.engine.predict, request.devices, True)
                results = await self._call(*args)
            else:  # whole series: a heavy call
                results = await self._heavy(self.engine.predict, request.devices, False)
        except RequestError as e:
            return unprocessable(e)
        except SessionConflict as e:
            return conflict(e)
        response = PredictBatchResponse(model_version=self.engine.model_version, results=results)
        return as_json(response)

    @bentoml.api(route="/report", output_spec=answers(dict))
    async def report(self, request: ReportRequest, /) -> dict[str, Any] | Response:
        """A period of one device's readings -> per local day and week/month: energy (kWh), on-hours, cycles,
        peak, share and cost per appliance and the unexplained remainder; events; gaps (docs/reports.md)."""
        try:
            return await self._heavy(self.engine.report, request, REPORT_SETTINGS)
        except RequestError as e:
            return unprocessable(e)

    @bentoml.api(route="/model")
    def model(self) -> ModelInfo:
        """The served model: version, appliances, window, decision rule, request limits, this worker."""
        return self.engine.info().model_copy(update={"worker": bentoml.server_context.worker_index})


# mypy keeps a decorated class's own type (python/mypy#3135): the name holds the Service BentoML made of it.
SERVICE = cast("bentoml.Service[AirWatt]", AirWatt)
# Outermost first: a call over the worker's limit is refused before its body is read.
SERVICE.add_asgi_middleware(
    ConcurrencyLimit,
    max_concurrency=SETTINGS.max_concurrency,
    retry_after_s=SETTINGS.retry_after_s,
    large_body_bytes=round(SETTINGS.large_body_mib * 2**20),
    max_large_calls=SETTINGS.max_large_calls,
)
SERVICE.add_asgi_middleware(BodyLimit, max_body_bytes=round(SETTINGS.max_body_mib * 2**20))
SERVICE.add_asgi_middleware(OpenAPIDocument)  # /docs.json as the service answers (airwatt.serving.openapi)
