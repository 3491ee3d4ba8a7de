"""The one fan-out engine: apply a batch function to a list of items, in this process, a process pool or a
Dask cluster. It knows nothing of models or data: what an item is and what the function does is the caller's.

Why this shape: each item's work reads and writes files on its own (all-or-nothing), so the same function runs
here, in a pool worker, on a Dask worker or inside an Azure ML parallel job's `run(mini_batch)`. Items are
grouped into batches so the per-task overhead (pickling, scheduling: 2-4 ms a task on Dask) stays small next to
work that may take a millisecond an item.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def batch_size_for(n_items: int, workers: int, largest: int = 100) -> int:
    """About eight batches per worker (for balance and a live progress bar), at most `largest` items each."""
    return max(1, min(largest, math.ceil(n_items / max(1, workers * 8))))


def batches(items: Sequence[Item], size: int) -> list[list[Item]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _one_thread_per_worker() -> None:
    """A pool worker is one core's worth of work: BLAS/OpenMP thread pools in every worker oversubscribe the
    cores (measured on 2 cores: 2 workers were slower than 1 until each was limited to one thread)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _LIMITS.append(threadpool_limits(limits=1))


_LIMITS: list[Any] = []


def _with_retries(function: Callable[[list[Item]], list[Result]], batch: list[Item], retries: int) -> list[Result]:
    for attempt in range(retries + 1):
        try:
            return function(batch)
        except Exception:  # a batch function isolates item failures itself; this is a crash of the whole batch
            if attempt == retries:
                raise
    raise AssertionError("unreachable")


def fan_out(
    function: Callable[[list[Item]], list[Result]],
    items: Sequence[Item],
    *,
    workers: int = 1,
    dask_scheduler_address: str = "",
    batch_size: int | None = None,
    retries: int = 0,
    on_progress: Callable[[int], None] | None = None,
    meanwhile: Callable[[], None] | None = None,
    preload: Callable[[], None] | None = None,
) -> list[Result]:
    """`function(batch)` over `items` in batches; results in the order of `items` (one result per item).

    `function` must be picklable (a module-level function or a `functools.partial` of one) for the pool and
    Dask. `meanwhile` runs once in this process while the workers work (set-up that would otherwise wait);
    `preload` runs before forking so the workers inherit its imports. A batch that raises is retried `retries`
    times, then its error propagates.
    """
    size = batch_size or batch_size_for(len(items), workers)
    chunks = batches(items, size)
    done: dict[int, list[Result]] = {}

    def collect(index: int, results: list[Result]) -> None:
        if len(results) != len(chunks[index]):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(chunks[index])} items")
        done[index] = results
        if on_progress:
            on_progress(len(results))

    if dask_scheduler_address:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed

        with Client(dask_scheduler_address) as client:
            futures = {
                client.submit(_with_retries, function, chunk, retries, pure=False): i for i, chunk in enumerate(chunks)
            }
            _while_they_run(meanwhile, list(futures))
            for future in dask_completed(futures):
                collect(futures[future], future.result())
    elif workers <= 1 or len(chunks) <= 1:
        _while_they_run(meanwhile, [])
        for i, chunk in enumerate(chunks):
            collect(i, _with_retries(function, chunk, retries))
    else:
        if preload:
            preload()
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), initializer=_one_thread_per_worker) as pool:
            futures = {pool.submit(_with_retries, function, chunk, retries): i for i, chunk in enumerate(chunks)}
            _while_they_run(meanwhile, list(futures))
            for future in as_completed(futures):
                collect(futures[future], future.result())
    return [result for i in range(len(chunks)) for result in done[i]]


def _while_they_run(meanwhile: Callable[[], None] | None, futures: Sequence[Any]) -> None:
    if meanwhile is None:
        return
    try:
        meanwhile()
    except BaseException:
        for future in futures:  # no point working on: stop what has not started
            future.cancel()
        raise
