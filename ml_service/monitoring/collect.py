"""Inference data collection for monitoring: the rows and predictions of sampled ``/score`` requests, written off
the request path.

``collector_for(settings, registry)`` gives None when ``SCORING_COLLECT_RATE`` is 0 (the default): nothing is
constructed, no thread runs, no request body is ever written. Otherwise a ``Collector`` that the scoring service
calls once per answered request (``offer``): one random draw decides whether the request is kept (the same draw
for its rows and its predictions), and a kept request is put on a bounded in-memory queue. That is all the request
pays: one writer thread per serving process takes the whole queue four times a second and writes it. When the
queue is full (the writer cannot keep up, or the disk is slow), records are dropped and counted, never waited for.

Where records go:

- **local files** (default): ``<SCORING_COLLECT_DIR>/<YYYY>/<MM>/<DD>/<HH>/<host>-<pid>-<n>.jsonl``, one JSON
  object per request (the record of ``ml_service.monitoring.collected``), folder from the UTC hour of the file's
  first record. A file is written only by the process that created it (opened exclusively, so a restart never
  appends to another's), with one ``write`` per batch of whole lines; it is closed and the next one begun at
  ``SCORING_COLLECT_MAX_BYTES`` and at each new hour. A process killed mid-write may leave a partial last line,
  which the reader skips and reports.
- **Azure ML's data collector**, when the service runs on an online deployment with ``data_collector``
  configured: ``azureml-ai-monitoring``'s ``Collector`` with the collections ``model_inputs`` (the input columns
  and a ``correlationid`` column = the request id) and ``model_outputs`` (``correlationid``, ``model_name``,
  ``model_version``, ``model_set``, ``set_version``, ``prediction``). How the package detects it (its source,
  1.0.0 from PyPI, ``config/config.py``): Azure sets ``AZUREML_MDC_CONFIG_PATH`` (a JSON file of the enabled
  collections and their sampling percentages) in the inference container, or the older ``AZUREML_MDC_ENABLED``;
  the package then posts each logged DataFrame to the collector beside the container
  (``http://$AZUREML_MDC_HOST:$AZUREML_MDC_PORT/modeldata/log``, 127.0.0.1:50011 by default), which writes the
  blob files. Nothing here needs the Azure side to start: without those variables the local files are used.
  The package samples each collection on its own draw, so the deployment's ``sampling_rate`` is left at 1.0 and
  ``SCORING_COLLECT_RATE`` samples whole requests here (see ``ml_service.scoring.deploy.online_endpoint``).

A record holds no header but ``traceparent``: never ``Authorization``, never the body as sent (the validated rows
and the answered predictions are written, re-encoded). Metrics (the app's Prometheus registry):
``scoring_collected_records_total`` and ``scoring_collect_dropped_records_total{reason}`` (``queue_full``,
``write_error``, ``closed``).
"""

from __future__ import annotations

import logging
import os
import random
import re
import socket
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from ml_service.monitoring.collected import AZURE_INPUTS, AZURE_OUTPUT_COLUMNS, AZURE_OUTPUTS, CORRELATION

log = logging.getLogger(__name__)

MAX_QUEUED_ROWS = 200_000  # rows waiting for the writer (memory bound); beyond, requests are dropped and counted
MAX_QUEUED_RECORDS = 20_000
BATCH_RECORDS = 1_000  # most records per write
FLUSH_SECONDS = 0.25  # the writer takes the queue this often
CLOSE_SECONDS = 10.0  # how long shutdown waits for the queue to be written
TRACEPARENT = re.compile(rb"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class Record(NamedTuple):
    """What a request hands over (references only: the work of encoding is the writer's)."""

    time: float
    request_id: str
    headers: Sequence[tuple[bytes, bytes]]  # the ASGI scope's raw headers; only traceparent is ever read
    loaded: Any  # ml_service.scoring.model_store.LoadedModel: its entry (name, versions) and schema (columns)
    rows: list
    predictions: list


def traceparent(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    for key, value in headers:
        if key == b"traceparent":
            value = value.strip().lower()
            return value.decode("ascii") if TRACEPARENT.match(value) else None
    return None


def utc_text(moment: float) -> str:
    """``moment`` (seconds since the epoch) as ISO 8601 UTC to the millisecond: 2026-12-01T22:40:00.123+00:00."""
    second, micro = divmod(round(moment * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)) + f".{micro // 1000:03d}+00:00"


def as_json(record: Record) -> dict[str, Any]:
    """The local record of one request (``ml_service.monitoring.collected`` reads it); ``Lines`` writes the same
    bytes faster."""
    entry = record.loaded.entry
    return {
        "time": utc_text(record.time),
        "request_id": record.request_id,
        "traceparent": traceparent(record.headers),
        "model_name": entry.name,
        "model_version": entry.version,
        "model_set": entry.model_set,
        "set_version": entry.set_version,
        "columns": [column.name for column in record.loaded.schema],
        "data": record.rows,
        "predictions": record.predictions,
    }


class Lines:
    """``orjson.dumps(as_json(record)) + newline``, with what repeats cached: the model's part of the record (per
    loaded model, held weakly so an evicted model is not kept alive) and the time stamp's second."""

    def __init__(self) -> None:
        self._models: dict[int, tuple[Any, bytes]] = {}
        self._second: int | None = None
        self._stamp = b""
        self.hour: tuple[int, int, int, int] = (0, 0, 0, 0)  # UTC hour of the last line

    def _model(self, loaded: Any) -> bytes:
        cached = self._models.get(id(loaded))
        if cached is not None and cached[0]() is loaded:
            return cached[1]
        entry = loaded.entry
        part = orjson.dumps(
            {
                "model_name": entry.name,
                "model_version": entry.version,
                "model_set": entry.model_set,
                "set_version": entry.set_version,
                "columns": [column.name for column in loaded.schema],
            }
        )[1:-1]
        if len(self._models) >= 4096:
            self._models.clear()
        self._models[id(loaded)] = (weakref.ref(loaded), part)
        return part

    def __call__(self, record: Record) -> bytes:
        second, micro = divmod(round(record.time * 1_000_000), 1_000_000)
        if second != self._second:
            moment = time.gmtime(second)
            self._second, self._stamp, self.hour = (
                second,
                time.strftime("%Y-%m-%dT%H:%M:%S", moment).encode(),
                moment[:4],
            )
        return b'{"time":"%s.%03d+00:00","request_id":%s,"traceparent":%s,%s,"data":%s,"predictions":%s}\n' % (
            self._stamp,
            micro // 1000,
            orjson.dumps(record.request_id),
            orjson.dumps(traceparent(record.headers)),
            self._model(record.loaded),
            orjson.dumps(record.rows, option=orjson.OPT_SERIALIZE_NUMPY),
            orjson.dumps(record.predictions, option=orjson.OPT_SERIALIZE_NUMPY),
        )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text) or "host"


class LocalFiles:
    """Rotated JSONL files in ``folder``; used by one writer thread only."""

    def __init__(self, folder: Path, max_bytes: int, host: str | None = None):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.host = _safe_name(host or socket.gethostname())
        self._file: Any = None
        self._hour: tuple[int, int, int, int] | None = None
        self._size = 0
        self._next = 0
        self.files: list[Path] = []  # every file this sink began, in order
        self._lines = Lines()

    def describe(self) -> str:
        return f"files in {self.folder}"

    def write(self, records: list[Record]) -> None:
        """Append ``records``, a file at a time: lines of one UTC hour, at most ``max_bytes`` a file (a single larger
        line gets a file of its own), each file's share in one ``write``."""
        chunk: list[bytes] = []
        size = 0  # of chunk
        for record in records:
            line = self._lines(record)
            hour = self._lines.hour
            full = self._size + size > 0 and self._size + size + len(line) > self.max_bytes
            if self._file is None or hour != self._hour or full:
                self._append(chunk)
                chunk, size = [], 0
                self._begin(hour)
            chunk.append(line)
            size += len(line)
        self._append(chunk)

    def _append(self, lines: list[bytes]) -> None:
        if not lines:
            return
        view = memoryview(b"".join(lines))
        self._size += len(view)
        while view:  # an unbuffered file: one write() of whole lines (looped only if the system cuts it short)
            view = view[self._file.write(view) :]

    def _begin(self, hour: tuple[int, int, int, int]) -> None:
        self.close()
        folder = self.folder.joinpath(f"{hour[0]:04d}", f"{hour[1]:02d}", f"{hour[2]:02d}", f"{hour[3]:02d}")
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            path = folder / f"{self.host}-{os.getpid()}-{self._next}.jsonl"
            self._next += 1
            try:
                self._file = open(path, "xb", buffering=0)  # kept open across batches; close() closes it
            except FileExistsError:  # a previous process with the same id wrote it: never append to it
                continue
            break
        self._hour, self._size = hour, 0
        self.files.append(path)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class AzureDataCollector:
    """``azureml-ai-monitoring``'s collectors ``model_inputs`` and ``model_outputs``; used by the writer thread.

    One ``collect`` per collection and per batch of records with the same input columns: the rows carry their
    request id in the ``correlationid`` column, so the reader joins them row by row whatever events Azure makes of
    them; the event's own correlation id is the batch's first request id."""

    def __init__(self) -> None:
        from azureml.ai.monitoring import Collector

        self._errors: list[Exception] = []
        self._inputs = Collector(name=AZURE_INPUTS, on_error=self._errors.append)
        self._outputs = Collector(name=AZURE_OUTPUTS, on_error=self._errors.append)
        if self._errors:  # e.g. "collection model_inputs is not enabled": the deployment does not collect them
            raise RuntimeError(f"Azure ML data collector not usable: {self._errors[0]}")
        self.last_error = ""

    def describe(self) -> str:
        return f"Azure ML's data collector ({AZURE_INPUTS}, {AZURE_OUTPUTS})"

    def write(self, records: list[Record]) -> int:
        """Log ``records``; returns how many the package accepted (its queue refuses when full)."""
        import pandas as pd
        from azureml.ai.monitoring.context import BasicCorrelationContext

        accepted = 0
        groups: dict[tuple[str, ...], list[Record]] = {}
        for record in records:
            groups.setdefault(tuple(c.name for c in record.loaded.schema), []).append(record)
        for columns, group in groups.items():
            inputs, outputs = [], []
            for record in group:
                entry = record.loaded.entry
                for row, prediction in zip(record.rows, record.predictions, strict=True):
                    inputs.append([*row, record.request_id])
                    outputs.append(
                        [record.request_id, entry.name, entry.version, entry.model_set, entry.set_version, prediction]
                    )
            first = group[0]
            context = BasicCorrelationContext(id=first.request_id, timestamp=int(first.time))
            del self._errors[:]
            self._inputs.collect(pd.DataFrame(inputs, columns=[*columns, CORRELATION]), context)
            self._outputs.collect(pd.DataFrame(outputs, columns=list(AZURE_OUTPUT_COLUMNS)), context)
            if self._errors:  # the package's own queue was full, or it refused the frame: said by the caller
                self.last_error = str(self._errors[0])
            else:
                accepted += len(group)
        return accepted

    def close(self) -> None:
        from azureml.ai.monitoring.init import teardown

        teardown(wait_for_flush=True)  # the package's sender thread posts what it still holds


def azure_configured(environ: Mapping[str, str]) -> bool:
    """Whether Azure ML set up its data collector for this container (the variables azureml-ai-monitoring reads)."""
    return bool(environ.get("AZUREML_MDC_CONFIG_PATH")) or environ.get("AZUREML_MDC_ENABLED", "").lower() == "true"


class Collector:
    """Sampling on the request path, a bounded queue, one writer thread writing batches to ``sink``."""

    def __init__(
        self,
        sink: Any,
        rate: float,
        registry: Any = None,
        max_rows: int = MAX_QUEUED_ROWS,
        max_records: int = MAX_QUEUED_RECORDS,
        draw: Callable[[], float] | None = None,
    ):
        from prometheus_client import CollectorRegistry, Counter

        if not 0 < rate <= 1:
            raise ValueError(f"rate must be in (0, 1], not {rate}")
        self.sink, self.rate = sink, rate
        self.max_rows, self.max_records = max_rows, max_records
        self._draw = draw or random.Random().random
        registry = registry if registry is not None else CollectorRegistry()
        self.collected = Counter("scoring_collected_records", "Requests collected for monitoring", registry=registry)
        self.dropped = Counter(
            "scoring_collect_dropped_records", "Sampled requests not collected", ["reason"], registry=registry
        )
        self._lock = threading.Lock()
        self._pending: list[Record] = []  # the queue: appended by requests, taken whole by the writer
        self._rows = 0  # in the queue
        self._closed = False
        self._stopping = threading.Event()
        self._failures = 0
        self._thread = threading.Thread(target=self._run, name="collect-writer", daemon=True)
        self._thread.start()

    def offer(
        self, request_id: str, headers: Sequence[tuple[bytes, bytes]], loaded: Any, rows: list, predictions: list
    ) -> None:
        """Called by the service for each answered request: keep it at ``rate``, without ever waiting."""
        if self.rate < 1 and self._draw() >= self.rate:
            return
        record = Record(time.time(), request_id, headers, loaded, rows, predictions)
        with self._lock:
            refused = self._closed or len(self._pending) >= self.max_records or self._rows + len(rows) > self.max_rows
            if not refused:
                self._pending.append(record)
                self._rows += len(rows)
        if refused:
            self.dropped.labels("closed" if self._closed else "queue_full").inc()

    def _take(self) -> list[Record]:
        with self._lock:
            batch, self._pending = self._pending, []
            self._rows = 0
        return batch

    def _run(self) -> None:
        stopping = False
        while not stopping:
            # Wake a few times a second, not once per request: a thread woken for every record takes the GIL from
            # the event loop thousands of times a second (measured: -40 % throughput on a 0.1 ms model).
            stopping = self._stopping.wait(FLUSH_SECONDS)
            batch = self._take()
            for start in range(0, len(batch), BATCH_RECORDS):
                self._write(batch[start : start + BATCH_RECORDS])
        try:
            self.sink.close()
        except Exception as exc:  # noqa: BLE001 - at shutdown: said, nothing else to do
            log.error("collection: closing %s failed (%s)", self.sink.describe(), exc)

    def _write(self, batch: list[Record]) -> None:
        """``sink.write(batch)`` returns None (all written) or how many were; the others are counted and said."""
        try:
            written = self.sink.write(batch)
            reason = getattr(self.sink, "last_error", "")
        except Exception as exc:  # noqa: BLE001 - the records are lost, counted and said; the service carries on
            written, reason = 0, f"{type(exc).__name__}: {exc}"
        written = len(batch) if written is None else written
        if written:
            self.collected.inc(written)
        if written < len(batch):
            self.dropped.labels("write_error").inc(len(batch) - written)
            self._failures += 1
            if self._failures in (1, 10, 100) or self._failures % 1000 == 0:
                log.error("collection: %d record(s) not written (%s)", len(batch) - written, reason)

    def close(self, timeout: float = CLOSE_SECONDS) -> None:
        """Write what is queued (within ``timeout`` seconds), close the file; later offers are dropped."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("collection: the writer did not finish within %.0f s; queued records are lost", timeout)


def collector_for(settings: Any, registry: Any = None, environ: Mapping[str, str] | None = None) -> Collector | None:
    """The service's collector for ``settings``, or None when collection is off (``SCORING_COLLECT_RATE=0``)."""
    rate = settings.scoring_collect_rate
    if rate <= 0:
        return None
    environ = os.environ if environ is None else environ
    sink: Any = None
    if azure_configured(environ):
        try:
            sink = AzureDataCollector()
        except (ImportError, RuntimeError) as exc:
            log.warning("collection: Azure ML data collector configured but not usable (%s); writing files", exc)
    if sink is None:
        folder = Path(settings.scoring_collect_dir)
        sink = LocalFiles(
            folder if folder.is_absolute() else settings.project_root / folder, settings.scoring_collect_max_bytes
        )
    log.info("collection: %.0f%% of answered requests to %s", rate * 100, sink.describe())
    return Collector(sink, rate, registry)
