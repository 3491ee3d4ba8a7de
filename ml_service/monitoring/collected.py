"""Read what the scoring service collected: ``read_collected(folder) -> Collected``, one frame per served model.

Two formats, found anywhere below ``folder`` (``**/*.jsonl``), told apart line by line:

- **local** (``ml_service.monitoring.collect`` writes it): one JSON object per answered, sampled ``/score``
  request: ``{"time", "request_id", "traceparent", "model_name", "model_version", "model_set", "set_version",
  "columns", "data": [[...]], "predictions": [...]}`` in ``<dir>/<YYYY>/<MM>/<DD>/<HH>/<host>-<pid>-<n>.jsonl``.
- **Azure ML data collector** (what ``azureml-ai-monitoring``'s ``Collector`` sends from an online deployment
  with ``data_collector`` configured, written by Azure to
  ``<datastore path>/<endpoint>/<deployment>/<collection>/<yyyy>/<MM>/<dd>/<HH>/<instance id>.jsonl``): one
  CloudEvents JSON object per line, ``{"specversion": "1.0", "id", "source", "type":
  "azureml.inference.<collection>", "datacontenttype", "time": "2024-03-05T18:16:25Z", "data": [{column: value,
  ...}, ...], "correlationid", "xrequestid", "modelversion", "collectdatatype": "pandas.core.frame.DataFrame",
  "agent": "azureml-ai-monitoring/<version>", "contentrange"}``; ``data`` is the logged DataFrame as
  ``to_json(orient="records")``. Followed: Microsoft Learn "Collect production data from models for real-time
  inferencing" (MicrosoftDocs/azure-ai-docs articles/machine-learning/how-to-collect-production-data.md, ms.date
  2025-12-30: sections "Store collected data in Blob Storage", "Data collector batching", "Store large payloads")
  and the source of azureml-ai-monitoring 1.0.0 from PyPI (payload/logdata.py: ``to_json(orient="records")``;
  worker/sender.py: the correlation id is sent as ``ce-x-request-id``). Azure may batch requests sent close
  together into one event under one correlation id (the doc's "Data collector batching"), so the service's
  adapter also logs the request id as a ``correlationid`` column in both collections (what that doc recommends);
  rows are joined on that column when present, else on the event's ``correlationid``, in order.
  The adapter's ``model_outputs`` rows: ``correlationid, model_name, model_version, model_set, set_version,
  prediction``; its ``model_inputs`` rows: the model's input columns and ``correlationid``. Only the
  ``model_inputs`` and ``model_outputs`` collections are read (payload logging's ``request``/``response`` are
  not tabular). Numbers there are what pandas' ``to_json`` writes: floats to 10 decimal places.

Each frame (key: the served model name, ``m`` or ``set/key``): the input columns (values as sent), then
``prediction``, ``model_version``, ``set_version`` (None for a single model), ``request_id``, ``row`` (index in its
request), ``time`` (UTC), sorted by time. Nothing raises for bad input: an unreadable, empty or non-JSON file, a
bad line, a partial last line (a file still being written), an Azure event whose payload is in a separate blob,
inputs without outputs: each is one line ``"<file>: <reason>"`` in ``problems``, and the rest is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

# Frame columns after the input columns (the contract in the module docstring).
META_COLUMNS = ("prediction", "model_version", "set_version", "request_id", "row", "time")
# The Azure data collector's collections the service logs to, and the per-row join column it adds to both.
AZURE_INPUTS = "model_inputs"
AZURE_OUTPUTS = "model_outputs"
AZURE_EVENT_PREFIX = "azureml.inference."
CORRELATION = "correlationid"
AZURE_OUTPUT_COLUMNS = (CORRELATION, "model_name", "model_version", "model_set", "set_version", "prediction")
LOCAL_KEYS = ("time", "request_id", "model_name", "model_version", "columns", "data", "predictions")
REPORTED_LINES = 5  # bad lines named one by one per file; the rest are counted


@dataclass
class Collected:
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class BadRecord(ValueError):
    """A line that is JSON but not a collected record; the message says what is wrong."""


def _time(value: Any) -> datetime:
    if not isinstance(value, str):
        raise BadRecord(f"time {value!r} is not an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadRecord(f"time {value[:40]!r} is not an ISO 8601 time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class _Frames:
    """Rows per served model, grouped by their tuple of input columns (a new version may change them)."""

    def __init__(self) -> None:
        self._rows: dict[str, dict[tuple[str, ...], list[list[Any]]]] = {}

    def add(self, model: str, columns: tuple[str, ...], values: list, prediction: Any, model_version: Any,
            set_version: Any, request_id: Any, row: int, time: datetime) -> None:  # fmt: skip
        meta = [prediction, _text(model_version), _text(set_version), _text(request_id), row, time]
        self._rows.setdefault(model, {}).setdefault(columns, []).append([*values, *meta])

    def frames(self) -> dict[str, pd.DataFrame]:
        out = {}
        for model, groups in sorted(self._rows.items()):
            parts = [pd.DataFrame(rows, columns=[*columns, *META_COLUMNS]) for columns, rows in groups.items()]
            frame = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True, sort=False)
            inputs = [c for c in frame.columns if c not in META_COLUMNS]
            frame = frame[[*inputs, *META_COLUMNS]]
            frame["time"] = pd.to_datetime(frame["time"], utc=True)
            for column in ("set_version", "model_version", "request_id"):
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
            out[model] = frame.sort_values("time", kind="stable").reset_index(drop=True)
        return out


def _columns(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise BadRecord("columns is not a list of names")
    clash = sorted(set(value) & set(META_COLUMNS))
    if clash:
        raise BadRecord(f"input column(s) {', '.join(clash)} clash with the frame's own columns")
    if len(set(value)) != len(value):
        raise BadRecord("columns repeats a name")
    return tuple(value)


def _add_local(record: dict, frames: _Frames) -> None:
    missing = [key for key in LOCAL_KEYS if key not in record]
    if missing:
        raise BadRecord(f"not a collected record: no {', '.join(missing)}")
    model = record["model_name"]
    if not isinstance(model, str) or not model:
        raise BadRecord("model_name is not a non-empty string")
    columns = _columns(record["columns"])
    data, predictions = record["data"], record["predictions"]
    if not isinstance(data, list) or not all(isinstance(r, list) and len(r) == len(columns) for r in data):
        raise BadRecord(f"data is not a list of rows of {len(columns)} values")
    if not isinstance(predictions, list) or len(predictions) != len(data):
        raise BadRecord(f"predictions is not a list of {len(data)} values (one per row)")
    time = _time(record["time"])
    for i, (values, prediction) in enumerate(zip(data, predictions, strict=True)):
        frames.add(model, columns, values, prediction, record["model_version"], record.get("set_version"),
                   record["request_id"], i, time)  # fmt: skip


@dataclass
class _AzureRow:
    values: dict
    time: datetime
    source: str  # "<file>" of the event, for problems


class _AzureJoin:
    """Rows of the model_inputs and model_outputs collections by correlation id, joined once all files are read."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[_AzureRow]] = {}
        self.outputs: dict[str, list[_AzureRow]] = {}
        self.ignored: dict[str, str] = {}  # collection -> first file, for collections this reader does not read

    def add(self, event: dict, source: str) -> None:
        kind = event.get("type")
        if not isinstance(kind, str) or not kind.startswith(AZURE_EVENT_PREFIX):
            raise BadRecord(f"Azure data collector event of unknown type {kind!r}")
        collection = kind[len(AZURE_EVENT_PREFIX) :]
        if collection not in (AZURE_INPUTS, AZURE_OUTPUTS):
            self.ignored.setdefault(collection, source)
            return
        if str(event.get("datainblob", "")).lower() == "true":
            raise BadRecord("the payload is stored in a separate blob (over the collector's event size), not read")
        data = event.get("data")
        if isinstance(data, str):  # a JSON text rather than the array itself
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise BadRecord("data is a string that is not JSON") from None
        if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
            raise BadRecord("data is not a list of row objects (a DataFrame as to_json(orient='records'))")
        time = _time(event.get("time"))
        event_id = event.get(CORRELATION) or event.get("xrequestid")
        target = self.inputs if collection == AZURE_INPUTS else self.outputs
        for row in data:
            key = row.get(CORRELATION) or event_id
            if not key:
                raise BadRecord("no correlationid (neither in the event nor in its rows)")
            target.setdefault(str(key), []).append(_AzureRow(row, time, source))

    def join(self, frames: _Frames, problems: list[str]) -> None:
        for collection, source in self.ignored.items():
            problems.append(f"{source}: collection {collection!r} is not read (only {AZURE_INPUTS}, {AZURE_OUTPUTS})")
        no_outputs: list[tuple[str, str]] = []
        no_model = None
        for key, inputs in self.inputs.items():
            outputs = self.outputs.pop(key, None)
            if outputs is None:
                no_outputs.append((key, inputs[0].source))
                continue
            if len(outputs) != len(inputs):
                problems.append(
                    f"{inputs[0].source}: correlationid {key}: {len(inputs)} {AZURE_INPUTS} rows but "
                    f"{len(outputs)} {AZURE_OUTPUTS} rows; not joined"
                )
                continue
            for i, (given, answered) in enumerate(zip(inputs, outputs, strict=True)):
                model = answered.values.get("model_name")
                if not isinstance(model, str) or not model:
                    no_model = no_model or answered.source
                    continue
                values = {k: v for k, v in given.values.items() if k != CORRELATION}
                try:
                    columns = _columns(list(values))
                except BadRecord as exc:
                    problems.append(f"{given.source}: correlationid {key}: {exc}")
                    continue
                frames.add(model, columns, list(values.values()), answered.values.get("prediction"),
                           answered.values.get("model_version"), answered.values.get("set_version"), key, i,
                           given.time)  # fmt: skip
        if no_model:
            problems.append(
                f"{no_model}: {AZURE_OUTPUTS} rows without a model_name column (not logged by this project's "
                "scoring service); skipped"
            )
        _unmatched(no_outputs, f"have {AZURE_INPUTS} but no {AZURE_OUTPUTS}", problems)
        _unmatched([(k, rows[0].source) for k, rows in self.outputs.items()],
                   f"have {AZURE_OUTPUTS} but no {AZURE_INPUTS}", problems)  # fmt: skip


def _unmatched(keys: list[tuple[str, str]], what: str, problems: list[str]) -> None:
    if keys:
        key, source = keys[0]
        more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
        problems.append(f"{source}: correlationid {key}{more} {what} (not written yet, or lost); skipped")


def _lines(raw: bytes) -> Iterable[tuple[int, bytes, bool]]:
    """(line number, line, whether it is an unterminated last line) for each non-blank line."""
    lines = raw.split(b"\n")
    unterminated = lines[-1] != b""
    if not unterminated:
        lines.pop()
    last = len(lines)
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, line, unterminated and number == last


def _read_file(path: Path, frames: _Frames, azure: _AzureJoin, problems: list[str]) -> None:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(f"{path}: cannot be read ({exc.strerror or exc})")
        return
    if not raw.strip():
        problems.append(f"{path}: empty file")
        return
    bad: list[str] = []
    good = 0
    for number, line, partial in _lines(raw):
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if partial:
                problems.append(f"{path}: line {number}: partial last line (still being written?), skipped")
            else:
                bad.append(f"line {number}: not JSON ({str(exc).split(':')[0]})")
            continue
        try:
            if not isinstance(record, dict):
                raise BadRecord("not a JSON object")
            if "specversion" in record or str(record.get("type", "")).startswith(AZURE_EVENT_PREFIX):
                azure.add(record, str(path))
            else:
                _add_local(record, frames)
            good += 1
        except BadRecord as exc:
            bad.append(f"line {number}: {exc}")
    for reason in bad[:REPORTED_LINES]:
        problems.append(f"{path}: {reason}")
    if len(bad) > REPORTED_LINES:
        problems.append(f"{path}: {len(bad) - REPORTED_LINES} more bad line(s); {good} record(s) read")


def read_collected(folder: Path | str) -> Collected:
    """Every collected record below ``folder`` (local and Azure data-collector files) as one frame per served
    model; see the module docstring. Bad input is listed in ``problems``, never raised."""
    folder = Path(folder)
    if not folder.is_dir():
        return Collected({}, [f"{folder}: not a folder (nothing collected there)"])
    frames, azure, problems = _Frames(), _AzureJoin(), []
    for path in sorted(p for p in folder.rglob("*.jsonl") if not p.is_dir()):
        _read_file(path, frames, azure, problems)
    azure.join(frames, problems)
    return Collected(frames.frames(), problems)
