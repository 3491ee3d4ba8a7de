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
- ``GET /health``: 200 ``{"live": true, "ready": true, ...}`` when models are servable, 503 when none are.
- ``GET /metrics``: Prometheus text. OpenAPI: ``/docs`` and ``/openapi.json``.

Errors are JSON ``{"detail": ..., "field": ..., "request_id": ...}``: 400 malformed JSON, 401 missing/wrong key,
404 unknown model (says to ``GET /models``), 413 body over ``SCORING_MAX_BODY_BYTES``, 422 invalid fields.
When ``SCORING_API_KEY`` is set, ``/score`` and ``/models`` need ``Authorization: Bearer <key>``; ``/health``,
``/metrics`` and the docs stay open. Every request logs one JSON line on the ``ml_service.scoring.requests``
logger; Application Insights (OpenTelemetry) is configured only when ``APPLICATIONINSIGHTS_CONNECTION_STRING``
is set.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import time
import uuid
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ml_service.scoring.inputs import InputError, rows_to_array, rows_to_frame
from ml_service.scoring.model_store import ModelStore
from ml_service.util.env_variables import Settings

LOGGER_NAME = "ml_service.scoring.requests"
log = logging.getLogger(LOGGER_NAME)
STATE_KEY = "scoring.log"
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
KNOWN_PATHS = ("/score", "/models", "/health", "/metrics", "/docs", "/openapi.json")
LIST_HINT = "list the servable models with GET /models (partition models are named <model_name>/<model key>)"

SCORE_BODY_SCHEMA = {
    "type": "object",
    "required": ["model_name", "data"],
    "properties": {
        "model_name": {"type": "string", "example": "sales/store=s01"},
        "data": {
            "type": "array",
            "items": {"type": "array", "items": {}},
            "example": [["2017-08-13 06:00", 0, 50]],
        },
    },
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
    """Parse JSON; Python's parser is the fallback so NaN/Infinity get a field-level error later."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"not valid JSON: {exc}", "body") from None


def create_app(store: ModelStore, settings: Settings) -> FastAPI:
    """The FastAPI application serving ``store``; see the module docstring for the API."""
    if settings.applicationinsights_connection_string:
        _configure_azure_monitor(settings.applicationinsights_connection_string)
    log.setLevel(logging.INFO)
    metrics = _Metrics()
    api_key = settings.scoring_api_key.encode()
    max_body = settings.scoring_max_body_bytes
    app = FastAPI(
        title="Scoring service",
        description="Every production model behind one API. Partition models: `<model_name>/<model key>`.",
        version="1",
        default_response_class=JSONBody,
    )
    app.state.store = store

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
        info["model"] = model_name
        loaded = store.cached(model_name)
        if loaded is None:
            entry = store.entry(model_name)
            if entry is None:
                raise ApiError(404, f"unknown model {model_name!r}: {LIST_HINT}", "model_name", models_url="/models")
            try:
                loaded = await run_in_threadpool(store.get, model_name)
            except Exception as exc:
                logging.getLogger(__name__).exception("loading %s failed", model_name)
                raise ApiError(500, f"model {model_name!r} could not be loaded ({type(exc).__name__})") from None
        entry = loaded.entry
        info["model_version"] = entry.version
        try:
            features = (rows_to_array if loaded.array_input else rows_to_frame)(loaded.schema, rows)
        except InputError as exc:
            raise ApiError(422, str(exc), exc.field) from None
        try:
            if loaded.array_input:
                with warnings.catch_warnings():  # "X does not have valid feature names": checked at load time
                    warnings.simplefilter("ignore", UserWarning)
                    predictions = np.asarray(loaded.model.predict(features))
            else:
                predictions = np.asarray(loaded.model.predict(features))
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise ApiError(422, f"model {model_name!r} rejected the data: {exc}", "data") from None
        values = predictions.tolist()
        if predictions.dtype.kind == "f" and not np.isfinite(predictions).all():
            values = [v if not isinstance(v, float) or math.isfinite(v) else None for v in values]
        info["predictions"] = len(values)
        metrics.predictions.labels(entry.model_set or entry.name).inc(len(values))
        body: dict[str, Any] = {"model_name": entry.name, "model_version": entry.version, "predictions": values}
        if entry.model_set:
            info["set_version"] = entry.set_version
            body["model_set"] = entry.model_set
            body["set_version"] = entry.set_version
        return JSONBody(body)

    @app.get("/score", summary="Score rows given in the query string")
    async def score_get(
        request: Request,
        model_name: str = Query(..., description="e.g. churn, or sales/store=s01 for a partition model"),
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
        prefix: str = Query("", description="only names starting with this, e.g. sales/"),
        offset: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=10000),
    ) -> Response:
        check_key(request)
        names = store.names(prefix)
        page = [store.entry(name).describe() for name in names[offset : offset + limit]]
        return JSONBody(page, headers={"X-Total-Count": str(len(names))})

    @app.get("/models/{name:path}", summary="One model: version, metrics, input columns, sample input")
    async def model_detail(request: Request, name: str) -> Response:
        check_key(request)
        entry = store.entry(name)
        if entry is None:
            raise ApiError(404, f"unknown model {name!r}: {LIST_HINT}", "name", models_url="/models")
        metadata = await run_in_threadpool(entry.metadata)
        out = entry.describe()
        out["input_columns"] = metadata.get("input_columns") or []
        if metadata.get("input_schema"):
            out["input_schema"] = metadata["input_schema"]
        if metadata.get("sample_input") is not None:
            out["sample_input"] = metadata["sample_input"]
        out["loaded"] = store.cached(name) is not None
        return JSONBody(out)

    @app.get("/health", summary="Liveness and readiness")
    async def health() -> Response:
        ready = len(store) > 0
        body = {
            "status": "ok" if ready else "not ready: no models",
            "live": True,
            "ready": ready,
            "models": len(store),
            "loaded": len(store.loaded),
            "cache_size": store.cache_size,
        }
        return JSONBody(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        metrics.models.set(len(store))
        metrics.loaded.set(len(store.loaded))
        metrics.loads.set(store.loads)
        metrics.evictions.set(store.evictions)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(RequestLog, metrics=metrics)
    return app
