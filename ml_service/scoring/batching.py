"""Adaptive micro-batching: concurrent requests for the same model become one ``predict`` call.

Why: a model's cost is per call, not per row (an ExtraTrees forest takes ~5.4 ms for 1 row and ~5.3 ms for 32),
so 32 concurrent one-row requests cost 32 calls where one would do, and every request queues behind them.

How (``Batcher``): requests for a model join its queue; when the model has no batch running, the queue is
flushed as one batch of whole requests, at most ``max_rows`` rows (a larger request goes alone). While a batch
runs, the next one gathers, so the batch size follows the load: 1 when idle, up to the number of waiting callers
under load. A busy model's next batch may wait a little for the callers of its last one (bounded by ``max_wait``
and by the model's measured CPU time per call; see ``Batcher``). Batches run on two prediction threads per
process, at most one batch per model at a time (the event loop never predicts, so ``/health`` and new
connections are served meanwhile, and one slow model cannot hold up every other model); model loads use
another pool. The CPU time of each call is measured on its thread and reported (``on_batch``).

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
import weakref
from collections import deque
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


COST_WEIGHT = 0.2  # weight of the newest call in a model's running mean CPU time per predict call


@dataclass
class _Queue:
    """One model's waiting requests, and what its recent batches tell about it (no reference to the model itself:
    the queue lives as long as the model does, and must not keep an evicted model alive)."""

    items: deque[tuple[Any, asyncio.Future]] = field(default_factory=deque)
    rows: int = 0
    running: bool = False
    cost: float | None = None  # running mean CPU seconds per predict call (None: not measured yet)
    demand: int = 0  # requests of the last batch plus those that arrived while it ran
    ended: float = -math.inf  # loop time the last batch ended
    ready: asyncio.Future | None = None  # set by submit once ``demand`` requests (or max_rows rows) are waiting


def _size(rows: Any) -> int:
    return len(rows) if isinstance(rows, list) else 1


class Batcher:
    """Per-model queues on one event loop; ``await submit(loaded, rows)`` gives that request's predictions.

    ``max_wait`` (seconds) bounds how long a busy model's next batch may wait for more of its requests: a model
    batched across requests whose last batch ended less than ``max_wait`` + its call cost ago, with fewer
    requests waiting than its last cycle had (the last batch plus those that arrived while it ran), waits until
    that many are waiting, or ``max_rows`` rows, or at most ``min(max_wait, its mean CPU time per predict
    call)``. Why: under load the callers of a batch come back (closed-loop clients) while the event loop is still
    writing the answers and reading the next requests, so a batch fired at once catches a few of them and the
    next one the rest — two predict calls where one would do (measured: 32 connections, 2 workers, an ExtraTrees
    forest: ~9 requests a batch without the wait). A call is worth waiting for only as long as it costs: a model
    cheaper than the loop's own work per request gains little. A lone request (no recent batch), and every
    model predicted request by request, never waits.
    """

    def __init__(self, max_rows: int = 512, max_wait: float = 0.0, threads: int = 2):
        if max_rows < 1 or max_wait < 0 or threads < 1:
            raise ValueError("max_rows and threads must be at least 1, max_wait at least 0")
        self.max_rows = max_rows
        self.max_wait = max_wait
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="predict")
        self._queues: dict[int, _Queue] = {}
        self.batches = 0  # predict_batch calls
        self.requests = 0  # requests they answered
        self.waited = 0  # batches that waited for more requests
        # (requests, rows, CPU seconds of the prediction thread) of each batch, for metrics
        self.on_batch: Callable[[int, int, float], None] | None = None

    def _queue(self, loaded: LoadedModel) -> _Queue:
        key = id(loaded)  # a reloaded model is a new object: its requests never join the old one's batches
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue()
            # the queue (and what it measured) lives as long as the loaded model: dropped when the cache evicts it
            weakref.finalize(loaded, self._queues.pop, key, None)
        return queue

    async def submit(self, loaded: LoadedModel, rows: Any) -> list:
        loop = asyncio.get_running_loop()
        queue = self._queue(loaded)
        future = loop.create_future()
        queue.items.append((rows, future))
        queue.rows += _size(rows)
        if not queue.running:
            queue.running = True
            loop.create_task(self._drain(loaded, queue))
        elif queue.ready is not None and not queue.ready.done():
            if len(queue.items) >= queue.demand or queue.rows >= self.max_rows:
                queue.ready.set_result(None)
        outcome = await future
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _take(self, queue: _Queue) -> list[tuple[Any, asyncio.Future]]:
        taken, rows = [], 0
        while queue.items:
            size = _size(queue.items[0][0])
            if taken and rows + size > self.max_rows:
                break
            taken.append(queue.items.popleft())
            rows += size
        queue.rows -= rows
        return taken

    def _wait(self, loaded: LoadedModel, queue: _Queue, now: float) -> float:
        """Seconds the next batch of ``queue`` may wait for more requests (0: fire at once)."""
        if not self.max_wait or queue.cost is None or not loaded.batch_invariant:
            return 0.0
        if len(queue.items) >= queue.demand or queue.rows >= self.max_rows:
            return 0.0
        if now - queue.ended > self.max_wait + queue.cost:  # not busy: a lone request goes at once
            return 0.0
        return min(self.max_wait, queue.cost)

    async def _gather(self, queue: _Queue, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        ready = queue.ready = loop.create_future()
        timer = loop.call_later(seconds, lambda: ready.done() or ready.set_result(None))
        try:
            await ready
        finally:
            timer.cancel()
            queue.ready = None
        self.waited += 1

    async def _drain(self, loaded: LoadedModel, queue: _Queue) -> None:
        loop = asyncio.get_running_loop()
        try:
            while queue.items:
                wait = self._wait(loaded, queue, loop.time())
                if wait:
                    await self._gather(queue, wait)
                batch = self._take(queue)
                requests = [rows for rows, _ in batch]
                try:
                    outcomes, cpu = await loop.run_in_executor(self._executor, _timed, loaded, requests)
                except Exception as exc:  # noqa: BLE001 - predict_batch itself failed: every caller hears why
                    outcomes, cpu = [exc] * len(batch), 0.0
                queue.ended = loop.time()
                queue.demand = len(batch) + len(queue.items)
                if cpu:
                    queue.cost = cpu if queue.cost is None else queue.cost + COST_WEIGHT * (cpu - queue.cost)
                self.batches += 1
                self.requests += len(batch)
                if self.on_batch is not None:
                    self.on_batch(len(batch), sum(_size(r) for r in requests), cpu)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():  # the caller may have gone (client disconnected)
                        future.set_result(outcome)
        finally:
            queue.running = False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
