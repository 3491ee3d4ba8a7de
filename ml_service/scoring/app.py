"""The scoring service: one HTTP API for every production model (single models and partition models).

Endpoints (``create_app(store, settings)``):

- ``GET /score?model_name=NAME&data=[[...],...]`` and ``POST /score`` with ``{"model_name": NAME, "data": [[...]]}``
  → ``{"model_name", "model_version", "predictions": [...]}`` (+ ``"model_set"``, ``"set_version"`` for a partition
  model). Rows are raw input rows in the model's column order (its signature), e.g. ``["2017-8-12 7:00", 0, 70]``
  (a time stamp and two numbers). A partition model is named ``<model_name>/<model key>``, e.g.
  ``sales/store=s01``.
- ``GET /models[?prefix=P&offset=N&limit=M]``: JSON list of ``{name, version, metrics, kind[, model_set,
  set_version]}``, sorted by name; the header ``X-Total-Count`` gives the number matching ``prefix``.
  ``GET /models/{name}`` adds the input columns and a sample input (reads metadata only, loads no model).
- ``GET /health``: 200 ``{"live": true, "ready": true, ...}`` when models are servable, 503 when none are. It
  never waits for scoring: predictions run on their own thread, not on the event loop.
- ``GET /metrics``: Prometheus text (it names the scored models: protected like ``/models`` when a key is set).
- OpenAPI: ``/docs`` (Swagger UI served from the app's own files, works offline) and ``/openapi.json``.

Concurrent ``/score`` requests for the same model are answered by one ``predict`` call
(``ml_service.scoring.batching``); each caller gets exactly its own rows' predictions.

Errors are JSON ``{"detail": ..., "field": ..., "request_id": ...}``: 400 malformed JSON, 401 missing/wrong key,
404 unknown model (says to ``GET /models``), 413 body over ``SCORING_MAX_BODY_BYTES``, 422 invalid fields, 503 a
model that cannot be loaded (its files are missing, corrupt or not the ones packaged; said once, then refused at
once). When ``SCORING_API_KEY`` is set, ``/score``, ``/models`` and ``/metrics`` need
``Authorization: Bearer <key>``; ``/health`` and the docs stay open. Every request logs one JSON line on the
``ml_service.scoring.requests`` logger; Application Insights (OpenTelemetry) is configured only when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import HTMLResponse, Response
from starlette.staticfiles import StaticFiles

from ml_service.monitoring.collect import collector_for
from ml_service.scoring.batching import Batcher, ModelRejected
from ml_service.scoring.inputs import InputError
from ml_service.scoring.model_store import ModelStore, ModelUnavailable
from ml_service.util.env_variables import Settings

LOGGER_NAME = "ml_service.scoring.requests"
log = logging.getLogger(LOGGER_NAME)
STATE_KEY = "scoring.log"
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
KNOWN_PATHS = ("/score", "/models", "/health", "/metrics", "/docs", "/openapi.json")
LIST_HINT = "list the servable models with GET /models (partition models are named <model_name>/<model key>)"
MAX_NAME = 256  # longest model_name accepted (a longer one is refused without being echoed or logged whole)
DOCS_ASSETS = "/docs/assets"


def _docs_assets_folder() -> Path:
    """Swagger UI's JavaScript and CSS from the fastapi-offline wheel: /docs works without internet."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def _bounded(name: str) -> str:
    return name if len(name) <= 80 else f"{name[:60]}...({len(name)} characters)"


SCORE_BODY_SCHEMA = {
    "type": "object",
    "required": ["model_name", "data"],
    "properties": {
        "model_name": {"type": "string", "example": "example_model/store=s01"},
        "data": {
            "type": "array",
            "items": {"type": "array", "items": {}},
            "example": [["2017-08-13 06:00", 0, 50]],
        },
    },
}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["detail", "status"],
    "properties": {
        "detail": {"type": "string", "description": "what is wrong and how to fix it"},
        "status": {"type": "integer"},
        "field": {"type": "string", "description": "the request field at fault, e.g. data[0][2]"},
        "request_id": {"type": "string"},
    },
}
SCORE_ANSWER_SCHEMA = {
    "type": "object",
    "required": ["model_name", "model_version", "predictions"],
    "properties": {
        "model_name": {"type": "string", "example": "example_model/store=s01"},
        "model_version": {"type": "string", "example": "3"},
        "predictions": {
            "type": "array",
            "description": "one prediction per row sent, in order (null where the model gave NaN or infinity)",
            "items": {
                "oneOf": [
                    {"type": ["number", "null"]},
                    {"type": "string"},
                    {"type": "array", "items": {"type": ["number", "null"]}},
                ]
            },
            "example": [5123.4],
        },
        "model_set": {"type": "string", "description": "partition models only: the model set's name"},
        "set_version": {"type": "string", "description": "partition models only: the model set's version"},
    },
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    content = {"application/json": {"schema": ERROR_SCHEMA}}
    return {status: {"description": "error", "content": content} for status in statuses}


SCORE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "predictions", "content": {"application/json": {"schema": SCORE_ANSWER_SCHEMA}}},
    **_errors(400, 401, 404, 413, 422, 503),
}


class JSONBody(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra


def _configure_azure_monitor(connection_string: str) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(connection_string=connection_string)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("scoring_requests", "HTTP requests", ["path", "status"], registry=self.registry)
        self.latency = Histogram(
            "scoring_request_duration_seconds",
            "Request duration",
            ["path"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.predictions = Counter("scoring_predictions", "Predictions returned", ["model"], registry=self.registry)
        self.models = Gauge("scoring_models_servable", "Models in the catalogue", registry=self.registry)
        self.loaded = Gauge("scoring_models_loaded", "Models in the LRU cache", registry=self.registry)
        self.loads = Gauge("scoring_model_loads", "Model loads since start", registry=self.registry)
        self.evictions = Gauge("scoring_model_evictions", "Cache evictions since start", registry=self.registry)
        self.unavailable = Gauge("scoring_models_unavailable", "Models that failed to load", registry=self.registry)
        self.batch_requests = Histogram(
            "scoring_batch_requests",
            "Requests answered by one predict call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.batch_cpu = Counter(
            "scoring_batch_cpu_seconds", "CPU time of the prediction thread in predict calls", registry=self.registry
        )


class RequestLog:
    """Pure ASGI middleware: request id, traceparent, one JSON log line and metrics per request."""

    def __init__(self, app: Any, metrics: _Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = traceparent = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                text = value.decode("latin-1")
                request_id = text if REQUEST_ID.match(text) else None
            elif key == b"traceparent":
                text = value.decode("latin-1").strip().lower()
                traceparent = text if TRACEPARENT.match(text) else None
        request_id = request_id or uuid.uuid4().hex
        info: dict[str, Any] = {"request_id": request_id}
        scope[STATE_KEY] = info
        status = 500

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            path = scope["path"] if scope["path"] in KNOWN_PATHS else "other"
            if path == "other" and scope["path"].startswith("/models/"):
                path = "/models"
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(duration)
            if log.isEnabledFor(logging.INFO):
                line = {
                    "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": request_id,
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(duration * 1000, 3),
                }
                if traceparent:
                    line["traceparent"] = traceparent
                line.update({k: v for k, v in info.items() if k != "request_id"})
                log.info(orjson.dumps(line).decode())


def _json_or_none(raw: bytes | str) -> Any:
    """Parse JSON; Python's parser is the fallback so NaN/Infinity get a field-level error later. orjson refuses
    nesting deeper than 1024; the fallback must not then recurse 100,000 levels into a RecursionError."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise ApiError(400, "not valid JSON: nested too deeply (rows are lists of values)", "body") from None
        try:
            return json.loads(raw)
        except RecursionError:
            raise ApiError(400, "not valid JSON: nested too deeply (rows are lists of values)", "body") from None
        except ValueError as exc:
            raise ApiError(400, f"not valid JSON: {str(exc)[:200]}", "body") from None


def create_app(store: ModelStore, settings: Settings) -> FastAPI:
    """The FastAPI application serving ``store``; see the module docstring for the API."""
    if settings.applicationinsights_connection_string:
        _configure_azure_monitor(settings.applicationinsights_connection_string)
    log.setLevel(logging.INFO)
    metrics = _Metrics()
    api_key = settings.scoring_api_key.encode()
    max_body = settings.scoring_max_body_bytes
    # FastAPI's own OpenTelemetry hooks look up the global providers on every request (~5% of the event loop's
    # time under load, measured): on only when Application Insights is configured, and so are the providers
    quiet: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(
        telemetry=None if settings.applicationinsights_connection_string else quiet,
        title="Scoring service",
        description="Every production model behind one API. Partition models: `<model_name>/<model key>`.",
        version="1",
        default_response_class=JSONBody,
        docs_url=None,
        redoc_url=None,
    )
    app.state.store = store
    batcher = Batcher(settings.scoring_batch_max_rows, settings.scoring_batch_wait_ms / 1000)

    def on_batch(requests: int, rows: int, cpu: float) -> None:
        metrics.batch_requests.observe(requests)
        metrics.batch_cpu.inc(cpu)

    batcher.on_batch = on_batch
    app.state.batcher = batcher
    # Loads (unpickling, hashing) get their own threads: a cold model never waits behind predictions, and
    # predictions for warm models never wait behind a load.
    loads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="load")
    app.router.on_shutdown.append(batcher.close)
    app.router.on_shutdown.append(lambda: loads.shutdown(wait=False, cancel_futures=True))
    # Inference data collection (ml_service.monitoring.collect): None when SCORING_COLLECT_RATE is 0
    collector = collector_for(settings, metrics.registry)
    if collector is not None:
        app.router.on_shutdown.append(collector.close)
    app.state.collector = collector
    app.mount(DOCS_ASSETS, StaticFiles(directory=_docs_assets_folder()), name="docs-assets")

    def error(request: Request, status: int, message: str, field: str | None = None, **extra: Any) -> Response:
        body: dict[str, Any] = {"detail": message, "status": status}
        if field:
            body["field"] = field
        body.update(extra)
        info = request.scope.get(STATE_KEY)
        if info is not None:
            body["request_id"] = info["request_id"]
            info["error"] = message
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONBody(body, status_code=status, headers=headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return error(request, exc.status, exc.message, exc.field, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        problems = exc.errors()
        first = problems[0] if problems else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
        return error(request, 422, f"{field or 'request'}: {first.get('msg', 'invalid')}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return error(request, exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logging.getLogger(__name__).exception("unexpected error")
        return error(request, 500, f"internal error ({type(exc).__name__}); see the service log")

    def check_key(request: Request) -> None:
        if not api_key:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key):
            raise ApiError(401, "missing or wrong key: send 'Authorization: Bearer <key>'", "Authorization")

    async def score(request: Request, model_name: Any, rows: Any) -> Response:
        info = request.scope.get(STATE_KEY, {})
        if not isinstance(model_name, str) or not model_name:
            raise ApiError(422, "model_name must be a non-empty string", "model_name")
        if len(model_name) > MAX_NAME:
            info["model"] = _bounded(model_name)
            raise ApiError(422, f"model_name has {len(model_name)} characters; at most {MAX_NAME}", "model_name")
        info["model"] = model_name
        loaded = store.cached(model_name)
        if loaded is None:
            if store.entry(model_name) is None:
                raise ApiError(404, f"unknown model {model_name!r}: {LIST_HINT}", "model_name", models_url="/models")
            try:
                loaded = await asyncio.get_running_loop().run_in_executor(loads, store.get, model_name)
            except ModelUnavailable as exc:
                raise ApiError(503, str(exc), "model_name") from None
        entry = loaded.entry
        info["model_version"] = entry.version
        try:
            values = await batcher.submit(loaded, rows)
        except InputError as exc:
            raise ApiError(422, str(exc), exc.field) from None
        except ModelRejected as exc:
            raise ApiError(422, f"model {model_name!r} rejected the data: {str(exc)[:300]}", "data") from None
        info["predictions"] = len(values)
        if collector is not None:  # sampled and queued here, encoded and written by the collector's own thread
            collector.offer(info["request_id"], request.scope["headers"], loaded, rows, values)
        metrics.predictions.labels(entry.model_set or entry.name).inc(len(values))
        body: dict[str, Any] = {"model_name": entry.name, "model_version": entry.version, "predictions": values}
        if entry.model_set:
            info["set_version"] = entry.set_version
            body["model_set"] = entry.model_set
            body["set_version"] = entry.set_version
        return JSONBody(body)

    @app.get("/score", summary="Score rows given in the query string", responses=SCORE_RESPONSES)
    async def score_get(
        request: Request,
        model_name: str = Query(
            ..., description="a registered model name, or <model>/<column>=<value> for a partition model"
        ),
        data: str = Query(..., description='JSON rows, e.g. [["2017-8-12 7:00",0,70]]'),
    ) -> Response:
        check_key(request)
        if len(data) > max_body:
            raise ApiError(413, f"data is larger than {max_body} bytes", "data")
        try:
            rows = _json_or_none(data)
        except ApiError as exc:
            raise ApiError(400, f"data: {exc.message}", "data") from None
        return await score(request, model_name, rows)

    @app.post(
        "/score",
        summary="Score rows given in a JSON body",
        responses=SCORE_RESPONSES,
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": SCORE_BODY_SCHEMA}}}
        },
    )
    async def score_post(request: Request) -> Response:
        check_key(request)
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "Content-Length is not a number", "Content-Length")
            if int(length) > max_body:
                raise ApiError(413, f"body of {length} bytes is over the limit of {max_body}", "body")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise ApiError(413, f"body is over the limit of {max_body} bytes", "body")
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw:
            raise ApiError(400, 'empty body: send {"model_name": ..., "data": [[...]]}', "body")
        payload = _json_or_none(raw)
        if not isinstance(payload, dict):
            raise ApiError(422, 'body must be a JSON object {"model_name": ..., "data": [[...]]}', "body")
        if "data" not in payload:
            raise ApiError(422, "data is required: a list of rows", "data")
        return await score(request, payload.get("model_name"), payload["data"])

    @app.get("/models", summary="Servable models (paginated; filter by name prefix)")
    async def list_models(
        request: Request,
        prefix: str = Query("", description="only names starting with this, e.g. <model>/ for one model set"),
        offset: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=10000),
    ) -> Response:
        check_key(request)
        names = store.names(prefix)
        unavailable = store.unavailable
        page = []
        for name in names[offset : offset + limit]:
            item = store.entry(name).describe()
            if name in unavailable:
                item["unavailable"] = unavailable[name]
            page.append(item)
        return JSONBody(page, headers={"X-Total-Count": str(len(names))})

    @app.get("/models/{name:path}", summary="One model: version, metrics, input columns, sample input")
    async def model_detail(request: Request, name: str) -> Response:
        check_key(request)
        entry = store.entry(name)
        if entry is None:
            raise ApiError(404, f"unknown model {name!r}: {LIST_HINT}", "name", models_url="/models")
        metadata = await asyncio.get_running_loop().run_in_executor(loads, entry.metadata)
        out = entry.describe()
        out["input_columns"] = metadata.get("input_columns") or []
        if metadata.get("input_schema"):
            out["input_schema"] = metadata["input_schema"]
        if metadata.get("sample_input") is not None:
            out["sample_input"] = metadata["sample_input"]
        out["loaded"] = store.cached(name) is not None
        reason = store.unavailable.get(name)
        if reason:
            out["unavailable"] = reason
        return JSONBody(out)

    @app.get("/health", summary="Liveness and readiness")
    async def health() -> Response:
        unavailable = len(store.unavailable)
        ready = len(store) > unavailable
        status = "ok" if ready else ("not ready: no models" if not len(store) else "not ready: no model loads")
        if ready and unavailable:
            status = f"degraded: {unavailable} model(s) cannot be loaded (GET /models lists why)"
        body = {
            "status": status,
            "live": True,
            "ready": ready,
            "models": len(store),
            "loaded": len(store.loaded),
            "unavailable": unavailable,
            "cache_size": store.cache_size,
        }
        if settings.scoring_instance_id:
            body["instance"] = settings.scoring_instance_id
        return JSONBody(body, status_code=200 if ready else 503)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        )

    @app.get("/metrics", summary="Prometheus metrics (names the scored models: needs the key when one is set)")
    async def prometheus(request: Request) -> Response:
        check_key(request)
        metrics.unavailable.set(len(store.unavailable))
        metrics.models.set(len(store))
        metrics.loaded.set(len(store.loaded))
        metrics.loads.set(store.loads)
        metrics.evictions.set(store.evictions)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestLog, metrics=metrics)
    return app
