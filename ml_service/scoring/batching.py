"""Adaptive micro-batching: concurrent requests for the same model become one ``predict`` call.

Why: a model's cost is per call, not per row (an ExtraTrees forest takes ~5.4 ms for 1 row and ~5.3 ms for 32),
so 32 concurrent one-row requests cost 32 calls where one would do, and every request queues behind them.

How (``Batcher``): requests for a model join its queue; when the model has no batch running, the queue is
flushed at once (or after ``max_wait`` seconds, if set, to let more requests join) as one batch of whole
requests, at most ``max_rows`` rows (a larger request goes alone). While a batch runs, the next one gathers, so
the batch size follows the load: 1 when idle, up to the number of waiting callers under load, with no fixed
delay. Batches run on two prediction threads per process, at most one batch per model at a time (the event
loop never predicts, so ``/health`` and new connections are served meanwhile, and one slow model cannot hold up
every other model); model loads use another pool.

Correctness (``predict_batch``, run on a prediction thread):

- each request's rows are checked alone first (``check_rows``), so a bad request fails alone with its own field
  path (``data[i][j]`` relative to its own rows) and never joins a batch;
- the checked rows of all requests are converted together and predicted in one call; each caller gets the slice
  of the predictions for its own rows;
- if the joint conversion or prediction fails, each request is converted and predicted alone, so an error is
  reported to exactly the requests it belongs to (a model that fails for every input fails each of them);
- conversion is row-wise and column types come from the schema (categories included), so a row's input does not
  depend on the other rows in its batch;
- a model's arithmetic may (BLAS matrix-vector products round differently for 1 row and for n rows, and with the
  row's position: a Ridge's prediction moves in the last bits). So a model is batched across requests only if
  ``batch_invariant`` found, when it loaded, that its sample rows predicted in batches of several sizes and
  positions give exactly the one-row predictions (trees and the calendar pipelines do; linear models on arrays
  usually do not). Other models get one ``predict`` per request, still off the event loop and in one hop to the
  prediction thread: their answers are exactly those of an unbatched service. Tested against unbatched
  ``predict`` row by row.
"""

from __future__ import annotations

import asyncio
import math
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml_service.scoring.inputs import InputError, check_rows, checked_rows_to_input
from ml_service.scoring.model_store import LoadedModel

MODEL_ERRORS = (ValueError, TypeError, KeyError, OverflowError)  # a model rejecting its input: the caller's 422


class ModelRejected(Exception):
    """The model raised one of ``MODEL_ERRORS`` for this request's rows."""


def predict(loaded: LoadedModel, features: Any) -> np.ndarray:
    """The model's predictions for one input, as a 1-D or 2-D NumPy array (the unbatched path). ``loaded.fast``
    (``ml_service.scoring.fast_predict``), when set, computes exactly what ``model.predict`` computes."""
    run = loaded.fast or loaded.model.predict
    if loaded.array_input:
        with warnings.catch_warnings():  # "X does not have valid feature names": checked at load time
            warnings.simplefilter("ignore", UserWarning)
            return np.asarray(run(features))
    return np.asarray(run(features))


def to_json_values(predictions: np.ndarray) -> list:
    """Predictions as JSON-ready Python values; NaN and infinities (not JSON) become null."""
    values = predictions.tolist()
    if predictions.dtype.kind == "f" and not np.isfinite(predictions).all():
        if predictions.ndim == 1:
            return [v if math.isfinite(v) else None for v in values]
        return [[v if math.isfinite(v) else None for v in row] for row in values]
    return values


PROBE_SIZES = (2, 3, 5, 8, 17, 33)


def probe_inputs(schema: Any, sample: Any, array_input: bool) -> list[Any]:
    """The model's sample rows converted as the service converts them: each alone, then in batches of
    ``PROBE_SIZES`` rows (rows repeated to fill them); [] without usable sample rows."""
    if not isinstance(sample, list) or not sample:
        return []
    try:
        check_rows(schema, sample)
        alone = [checked_rows_to_input(schema, [row], array_input) for row in sample]
        sizes = [[sample[i % len(sample)] for i in range(size)] for size in PROBE_SIZES]
        return alone + [checked_rows_to_input(schema, rows, array_input) for rows in sizes]
    except InputError:
        return []


def batch_invariant(model: Any, schema: Any, sample: Any, array_input: bool, fast: Any = None) -> bool:
    """Whether ``model`` predicts each of its sample rows exactly as alone when they sit in batches of several sizes
    and at several positions. No sample rows: not known, so False (the model is never batched across requests).
    ``fast``: the model's verified fast path (it gives the same bits as ``model.predict`` on these rows)."""
    if not isinstance(sample, list) or not sample:
        return False
    probe = LoadedModel(None, model, schema, array_input, fast=fast)  # type: ignore[arg-type]
    try:
        check_rows(schema, sample)
        alone = [predict(probe, checked_rows_to_input(schema, [row], array_input)) for row in sample]
        for size in PROBE_SIZES:
            rows = [sample[i % len(sample)] for i in range(size)]
            together = predict(probe, checked_rows_to_input(schema, rows, array_input))
            if len(together) != size:
                return False
            for i in range(size):
                if not np.array_equal(together[i : i + 1], alone[i % len(sample)], equal_nan=True):
                    return False
    except Exception:  # noqa: BLE001 - a model that fails the probe is simply not batched
        return False
    return True


def _alone(loaded: LoadedModel, rows: list) -> list | Exception:
    try:
        features = checked_rows_to_input(loaded.schema, rows, loaded.array_input)
    except InputError as exc:
        return exc
    try:
        predictions = predict(loaded, features)
        if len(predictions) != len(rows):
            raise ValueError(f"the model returned {len(predictions)} predictions for {len(rows)} rows")
    except MODEL_ERRORS as exc:
        return ModelRejected(str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to this request's caller, the worker carries on
        return exc
    return to_json_values(predictions)


def predict_batch(loaded: LoadedModel, requests: list[Any]) -> list[list | Exception]:
    """For each request's rows: its predictions (JSON-ready list) or the exception meant for that caller."""
    outcomes: list[list | Exception | None] = [None] * len(requests)
    good: list[int] = []
    for i, rows in enumerate(requests):
        try:
            check_rows(loaded.schema, rows)
            good.append(i)
        except InputError as exc:
            outcomes[i] = exc
    if len(good) == 1 or not loaded.batch_invariant:
        for i in good:
            outcomes[i] = _alone(loaded, requests[i])
    elif good:
        joined = [row for i in good for row in requests[i]]
        try:
            predictions = predict(loaded, checked_rows_to_input(loaded.schema, joined, loaded.array_input))
            if len(predictions) != len(joined):
                raise ValueError("prediction count differs from row count")
        except Exception:  # noqa: BLE001 - find out whose rows fail: each request alone
            for i in good:
                outcomes[i] = _alone(loaded, requests[i])
        else:
            start = 0
            for i in good:
                end = start + len(requests[i])
                outcomes[i] = to_json_values(predictions[start:end])
                start = end
    return outcomes  # type: ignore[return-value]


def _timed(loaded: LoadedModel, requests: list[Any]) -> tuple[list[list | Exception], float]:
    """``predict_batch`` and the CPU time it took on this thread (not wall time: robust to a busy host)."""
    started = time.thread_time()
    outcomes = predict_batch(loaded, requests)
    return outcomes, time.thread_time() - started


@dataclass
class _Queue:
    loaded: LoadedModel
    items: list[tuple[Any, asyncio.Future]] = field(default_factory=list)
    rows: int = 0
    running: bool = False


class Batcher:
    """Per-model queues on one event loop; ``await submit(loaded, rows)`` gives that request's predictions."""

    def __init__(self, max_rows: int = 512, max_wait: float = 0.0, threads: int = 2):
        if max_rows < 1 or max_wait < 0 or threads < 1:
            raise ValueError("max_rows and threads must be at least 1, max_wait at least 0")
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
        self._queues: dict[int, _Queue] = {}
        self.batches = 0  # predict_batch calls
        self.requests = 0  # requests they answered
        # (requests, rows, CPU seconds of the prediction thread) of each batch, for metrics
        self.on_batch: Callable[[int, int, float], None] | None = None

    async def submit(self, loaded: LoadedModel, rows: Any) -> list:
        loop = asyncio.get_running_loop()
        key = id(loaded)  # a reloaded model is a new object: its requests never join the old one's batches
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(loaded)
        future = loop.create_future()
        queue.items.append((rows, future))
        queue.rows += len(rows) if isinstance(rows, list) else 1
        if not queue.running:
            queue.running = True
            loop.create_task(self._drain(key, queue))
        outcome = await future
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _take(self, queue: _Queue) -> list[tuple[Any, asyncio.Future]]:
        taken, rows = [], 0
        while queue.items:
            size = len(queue.items[0][0]) if isinstance(queue.items[0][0], list) else 1
            if taken and rows + size > self.max_rows:
                break
            taken.append(queue.items.pop(0))
            rows += size
        queue.rows -= rows
        return taken

    async def _drain(self, key: int, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        try:
            while queue.items:
                if self.max_wait and queue.rows < self.max_rows:
                    await asyncio.sleep(self.max_wait)
                batch = self._take(queue)
                requests = [rows for rows, _ in batch]
                try:
                    outcomes, cpu = await loop.run_in_executor(self._executor, _timed, queue.loaded, requests)
                except Exception as exc:  # noqa: BLE001 - predict_batch itself failed: every caller hears why
                    outcomes, cpu = [exc] * len(batch), 0.0
                self.batches += 1
                self.requests += len(batch)
                if self.on_batch is not None:
                    self.on_batch(len(batch), sum(len(r) if isinstance(r, list) else 1 for r in requests), cpu)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():  # the caller may have gone (client disconnected)
                        future.set_result(outcome)
        finally:
            queue.running = False
            if not queue.items:
                self._queues.pop(key, None)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
