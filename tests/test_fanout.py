"""The generic fan-out engine: results in item order, batches, retries, a real process pool, Dask, errors."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

from ml_service.fanout import batch_size_for, batches, fan_out


def square_with_batch(batch: list[int]) -> list[tuple[int, int, int]]:
    """(item squared, size of the batch it came in, process id): what ran where."""
    return [(i * i, len(batch), os.getpid()) for i in batch]


def flaky(batch: list[int], counter: Path, failures: int) -> list[int]:
    """Fails the first `failures` calls for the batch holding 0 (counted in a file: works across processes)."""
    if 0 in batch:
        calls = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(calls + 1))
        if calls < failures:
            raise OSError(f"transient failure {calls + 1}")
    return [i + 100 for i in batch]


def broken(batch: list[int]) -> list[int]:
    if 13 in batch:
        raise ZeroDivisionError("item 13 is unlucky")
    return batch


def short(batch: list[int]) -> list[int]:
    return batch[:-1]


def test_batch_sizes():
    assert batch_size_for(10, 1) == 2 and batch_size_for(10_000, 2) == 100 and batch_size_for(0, 4) == 1
    assert batch_size_for(50_000, 2, largest=1000) == 1000
    assert batches(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]


def test_order_is_kept_and_batches_are_the_size_asked_in_process():
    progress: list[int] = []
    out = fan_out(square_with_batch, list(range(23)), workers=1, batch_size=5, on_progress=progress.append)
    assert [r[0] for r in out] == [i * i for i in range(23)]
    assert [r[1] for r in out] == [5] * 20 + [3] * 3
    assert {r[2] for r in out} == {os.getpid()}  # one worker: here
    assert progress == [5, 5, 5, 5, 3]


@pytest.mark.slow
def test_a_process_pool_keeps_the_order_and_runs_elsewhere():
    preloaded: list[bool] = []
    meanwhile: list[bool] = []
    items = list(range(101))
    out = fan_out(
        square_with_batch,
        items,
        workers=2,
        batch_size=4,
        preload=lambda: preloaded.append(True),
        meanwhile=lambda: meanwhile.append(True),
    )
    assert [r[0] for r in out] == [i * i for i in items]
    assert max(r[1] for r in out) == 4
    assert os.getpid() not in {r[2] for r in out}  # worked in pool processes, not in this one
    assert preloaded == [True] and meanwhile == [True]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_batch_is_retried_then_succeeds(tmp_path, workers):
    counter = tmp_path / "calls"
    function = functools.partial(flaky, counter=counter, failures=2)
    out = fan_out(function, list(range(10)), workers=workers, batch_size=3, retries=2)
    assert out == [i + 100 for i in range(10)]
    assert counter.read_text() == "3"  # two failures, then the success


@pytest.mark.parametrize("workers", [1, 2])
def test_retries_exhausted_the_error_propagates(tmp_path, workers):
    counter = tmp_path / "calls"
    function = functools.partial(flaky, counter=counter, failures=5)
    with pytest.raises(OSError, match="transient failure 2"):
        fan_out(function, list(range(10)), workers=workers, batch_size=3, retries=1)
    assert counter.read_text() == "2"


@pytest.mark.parametrize("workers", [1, 2])
def test_an_error_in_a_batch_propagates_with_its_type(workers):
    with pytest.raises(ZeroDivisionError, match="item 13 is unlucky"):
        fan_out(broken, list(range(20)), workers=workers, batch_size=4)


def test_a_batch_function_must_give_one_result_per_item():
    with pytest.raises(RuntimeError, match="batch function returned 2 results for 3 items"):
        fan_out(short, [1, 2, 3], workers=1, batch_size=3)


def test_what_runs_meanwhile_fails_the_run():
    def unreachable_registry() -> None:
        raise ConnectionError("registry unreachable")

    with pytest.raises(ConnectionError, match="registry unreachable"):
        fan_out(square_with_batch, list(range(40)), workers=2, batch_size=2, meanwhile=unreachable_registry)
    with pytest.raises(ConnectionError, match="registry unreachable"):
        fan_out(square_with_batch, list(range(4)), workers=1, meanwhile=unreachable_registry)


def test_no_items_no_work():
    assert fan_out(square_with_batch, [], workers=2) == []


@pytest.mark.slow
def test_a_dask_cluster_gives_the_same_results_in_order(tmp_path):
    from dask.distributed import LocalCluster

    counter = tmp_path / "calls"
    function = functools.partial(flaky, counter=counter, failures=1)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        out = fan_out(
            function, list(range(30)), dask_scheduler_address=cluster.scheduler_address, batch_size=4, retries=1
        )
        assert out == [i + 100 for i in range(30)]
        with pytest.raises(ZeroDivisionError, match="unlucky"):
            fan_out(broken, list(range(20)), dask_scheduler_address=cluster.scheduler_address, batch_size=4)
    assert counter.read_text() == "2"
