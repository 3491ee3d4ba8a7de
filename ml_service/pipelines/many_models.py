"""Many models: plan one training task per model, train them in parallel, skip what is already trained.

Why this shape: a model's task is a prepared CSV plus the hashes of its data and configuration, and its
result is a folder written all-or-nothing. So the same `train_one` runs in a local process pool, on a Dask
cluster or inside an Azure ML parallel job, and a rerun after any interruption trains only what is missing
or changed. Small models are grouped into batches so the per-task overhead stays low.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ml_service.util.files import file_sha256, read_json, write_json

PLAN_FILE = "prepared.json"
RESULT_FILE = "result.json"
PLOT_FILE = "holdout.png"
MODELS_DIR = "models"


@dataclass(frozen=True)
class ModelTask:
    model_id: str  # "<model_name>" or "<model_name>/<partition key>"
    model_name: str
    key: str
    data_file: str  # relative to the prepared folder
    data_hash: str
    config_hash: str
    fast: bool
    plot: bool


@dataclass
class ModelResult:
    model_id: str
    model_name: str
    key: str
    status: str  # "trained", "skipped" (already trained with the same data and config) or "failed"
    data_hash: str
    config_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    estimator: str = ""
    seconds: float = 0.0
    error: str = ""


class TooManyFailures(RuntimeError):
    """More models failed than the error threshold allows."""


def model_folder(trained_dir: Path, model_id: str) -> Path:
    return trained_dir / MODELS_DIR / model_id


@functools.lru_cache(maxsize=8)
def _load_config(config_path: str):
    from ff.config import load_pipeline_config  # use-case code, imported where it is used

    return load_pipeline_config(config_path)


def read_plan(prepared_dir: Path) -> list[ModelTask]:
    return [ModelTask(**task) for task in read_json(prepared_dir / PLAN_FILE)["tasks"]]


def write_plan(prepared_dir: Path, tasks: Sequence[ModelTask]) -> None:
    write_json(prepared_dir / PLAN_FILE, {"tasks": [asdict(t) for t in tasks]})


def plan_use_case(
    use_case: Any, files: dict[str, Path], prepared_dir: Path, config_hash: str, fast: bool, plots: int
) -> list[ModelTask]:
    """One task per prepared file; the first `plots` partitions (all, when unpartitioned) get a plot."""
    from ff.prepare import model_id

    tasks = []
    for index, (key, path) in enumerate(sorted(files.items())):
        tasks.append(
            ModelTask(
                model_id=model_id(use_case.model_name, key),
                model_name=use_case.model_name,
                key=key,
                data_file=path.relative_to(prepared_dir).as_posix(),
                data_hash=file_sha256(path),
                config_hash=config_hash,
                fast=fast,
                plot=not key or index < plots,
            )
        )
    return tasks


def _finished(folder: Path, task: ModelTask) -> dict[str, Any] | None:
    """The saved result if this exact task (same data, same config) already finished."""
    try:
        saved = read_json(folder / RESULT_FILE)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    same = saved.get("data_hash") == task.data_hash and saved.get("config_hash") == task.config_hash
    return saved if same and saved.get("status") == "trained" else None


def train_one(task: ModelTask, prepared_dir: Path, trained_dir: Path, config_path: Path) -> ModelResult:
    """Train one model into its folder, atomically: a temporary folder renamed into place when complete."""
    saved = _finished(model_folder(trained_dir, task.model_id), task)
    if saved is not None:
        return ModelResult(**{**saved, "status": "skipped"})
    return _train_fresh(task, _load_config(str(config_path)).get(task.model_name), prepared_dir, trained_dir)


def _train_fresh(task: ModelTask, use_case: Any, prepared_dir: Path, trained_dir: Path) -> ModelResult:
    """Train a model known not to be trained yet (the caller checked), on its own."""
    from ff.prepare import read_prepared
    from ff.train_automl import train_model

    started = time.perf_counter()
    frame = read_prepared(prepared_dir / task.data_file, use_case)
    result = train_model(frame, use_case, fast=task.fast)
    return _write_model(task, use_case, result, frame, trained_dir, time.perf_counter() - started)


def _write_model(
    task: ModelTask, use_case: Any, result: Any, frame: Any, trained_dir: Path, seconds: float
) -> ModelResult:
    """Save a trained model (its first data rows as the sample input) into its folder, all-or-nothing."""
    from ff.plots import plot_holdout
    from ff.train_automl import save_model

    started = time.perf_counter()
    folder = model_folder(trained_dir, task.model_id)
    outcome = ModelResult(
        task.model_id,
        task.model_name,
        task.key,
        "trained",
        task.data_hash,
        task.config_hash,
        {k: float(v) for k, v in result.metrics.items()},
        result.estimator,
        0.0,
    )
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    save_model(
        result,
        staging,
        {
            "model_name": task.model_name,
            "model_id": task.model_id,
            "partition_key": task.key,
            "task": use_case.task,
            "sample_input": _sample_input(frame, use_case),
            "data_hash": task.data_hash,
            "config_hash": task.config_hash,
        },
    )
    if task.plot:
        plot_holdout(result.holdout, use_case, staging / PLOT_FILE, title=f"{task.model_id}: hold-out")
    outcome.seconds = seconds + time.perf_counter() - started
    # a plain write: the folder's rename below is what makes the result all-or-nothing (an fsync'd atomic
    # write here cost more than a small model's fit)
    (staging / RESULT_FILE).write_text(json.dumps(asdict(outcome), indent=2, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return outcome


def _sample_input(frame: Any, use_case: Any, rows: int = 2) -> list[list[Any]]:
    """The first rows of the model's input columns, as JSON-ready values (time stamps as text)."""
    import numpy as np

    head = frame.iloc[:rows]
    columns = []
    for column in use_case.input_columns:
        values = head[column]
        if column != use_case.time_column:
            columns.append(values.tolist())
        elif isinstance(values.dtype, np.dtype) and values.dtype.kind == "M":  # numpy datetime64: ~0.5 ms faster
            columns.append([s.replace("T", " ") for s in np.datetime_as_string(values.to_numpy(), unit="s")])
        else:
            columns.append(values.dt.strftime("%Y-%m-%d %H:%M:%S").tolist())
    return [list(row) for row in zip(*columns, strict=True)]


def _failed(task: ModelTask, exc: BaseException) -> ModelResult:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if os.environ.get("MLOPS_DEBUG"):
        traceback.print_exception(exc)
    return ModelResult(
        task.model_id,
        task.model_name,
        task.key,
        "failed",
        task.data_hash,
        task.config_hash,
        error=f"{type(exc).__name__}: {message}",
    )


def _train_isolated(task: ModelTask, use_case: Any, prepared_dir: Path, trained_dir: Path) -> ModelResult:
    try:
        return _train_fresh(task, use_case, prepared_dir, trained_dir)
    except Exception as exc:  # noqa: BLE001 - isolate each model; the error is reported with its name
        return _failed(task, exc)


def _train_together(
    tasks: Sequence[ModelTask], use_case: Any, prepared_dir: Path, trained_dir: Path
) -> list[ModelResult]:
    """Partitions of one use case on the ridge fast path: one read and one feature computation for all."""
    from ff.prepare import read_prepared_batch
    from ff.train_automl import train_ridge_partitions

    started = time.perf_counter()
    try:
        frame, starts = read_prepared_batch([prepared_dir / task.data_file for task in tasks], use_case)
        trained = train_ridge_partitions(frame, starts, use_case)
    except Exception:  # noqa: BLE001 - files that cannot be read together are read one by one, errors per model
        return [_train_isolated(task, use_case, prepared_dir, trained_dir) for task in tasks]
    shared = (time.perf_counter() - started - sum(getattr(r, "train_seconds", 0.0) for r in trained)) / len(tasks)
    outcomes = []
    for task, first, end, result in zip(tasks, starts[:-1], starts[1:], trained, strict=True):
        try:
            if isinstance(result, Exception):
                raise result
            rows = frame.iloc[first:end]
            outcomes.append(_write_model(task, use_case, result, rows, trained_dir, shared + result.train_seconds))
        except Exception as exc:  # noqa: BLE001 - isolate each model; the error is reported with its name
            outcomes.append(_failed(task, exc))
    return outcomes


def train_batch(
    tasks: Sequence[ModelTask], prepared_dir: Path, trained_dir: Path, config_path: Path
) -> list[ModelResult]:
    """Train several models in one worker call; one model's failure is recorded, never raised.

    Partitions on the ridge fast path are trained together (one read, one feature computation, each model
    fitted on its slice); every other model on its own. Results are in the order of `tasks`.
    """
    from ff.train_automl import batch_trainable

    results: dict[str, ModelResult] = {}
    together: dict[str, tuple[Any, list[ModelTask]]] = {}
    for task in tasks:
        saved = _finished(model_folder(trained_dir, task.model_id), task)
        if saved is not None:
            results[task.model_id] = ModelResult(**{**saved, "status": "skipped"})
            continue
        try:
            use_case = _load_config(str(config_path)).get(task.model_name)
        except Exception as exc:  # noqa: BLE001 - e.g. a use case no longer in the configuration
            results[task.model_id] = _failed(task, exc)
            continue
        if task.key and batch_trainable(use_case, task.fast):
            together.setdefault(task.model_name, (use_case, []))[1].append(task)
        else:
            results[task.model_id] = _train_isolated(task, use_case, prepared_dir, trained_dir)
    for use_case, group in together.values():
        for outcome in _train_together(group, use_case, prepared_dir, trained_dir):
            results[outcome.model_id] = outcome
    return [results[task.model_id] for task in tasks]


def batch_size_for(n_tasks: int, workers: int, largest: int = 100) -> int:
    """About eight batches per worker (for balance and a live progress bar), at most `largest` models each."""
    return max(1, min(largest, math.ceil(n_tasks / max(1, workers * 8))))


def batches(tasks: Sequence[ModelTask], size: int) -> list[list[ModelTask]]:
    return [list(tasks[i : i + size]) for i in range(0, len(tasks), size)]


def _preload_training_modules() -> None:
    # not ff.plots: matplotlib takes ~1 s to import and only the few workers that draw a plot need it
    import ff.prepare  # noqa: F401
    import ff.train_automl  # noqa: F401


_THREAD_LIMITS: list[Any] = []


def _one_thread_per_worker() -> None:
    """A pool worker is one core's worth of work: BLAS/OpenMP thread pools in every worker oversubscribe the
    cores (measured on 2 cores: 2 workers were slower than 1 until each was limited to one thread)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    _THREAD_LIMITS.append(threadpool_limits(limits=1))


def remove_stale_staging(trained_dir: Path) -> list[Path]:
    """Delete the staging folders a killed run left behind; they are never results (only a complete folder is
    renamed into place), but they would pile up with each interruption. Call before any worker starts."""
    models = trained_dir / MODELS_DIR
    stale = [p for pattern in (".*.tmp", "*/.*.tmp") for p in models.glob(pattern) if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def run_tasks(
    tasks: Sequence[ModelTask],
    prepared_dir: Path,
    trained_dir: Path,
    config_path: Path,
    workers: int,
    dask_scheduler_address: str = "",
    on_progress: Callable[[int], None] | None = None,
    meanwhile: Callable[[], None] | None = None,
) -> list[ModelResult]:
    """Train every task: in this process (one worker), a process pool, or a Dask cluster given its address.

    `meanwhile` is called once while the pool's workers train (before training when there is no pool): the
    parent would otherwise sit idle, so set-up such as connecting to the registry costs no extra time.
    """
    remove_stale_staging(trained_dir)
    chunks = batches(tasks, batch_size_for(len(tasks), workers))
    args = (prepared_dir.resolve(), trained_dir.resolve(), config_path.resolve())
    results: list[ModelResult] = []

    def collect(done: Iterable[list[ModelResult]]) -> None:
        for batch in done:
            results.extend(batch)
            if on_progress:
                on_progress(len(batch))

    if dask_scheduler_address:
        from dask.distributed import Client
        from dask.distributed import as_completed as dask_completed

        with Client(dask_scheduler_address) as client:
            futures = [client.submit(train_batch, chunk, *args, pure=False) for chunk in chunks]
            _while_they_run(meanwhile, futures)
            collect(future.result() for future in dask_completed(futures))
    elif workers <= 1 or len(chunks) <= 1:
        _while_they_run(meanwhile, [])
        collect(train_batch(chunk, *args) for chunk in chunks)
    else:
        _preload_training_modules()  # forked workers inherit them instead of each importing them again
        with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), initializer=_one_thread_per_worker) as pool:
            futures = [pool.submit(train_batch, chunk, *args) for chunk in chunks]
            _while_they_run(meanwhile, futures)
            collect(future.result() for future in as_completed(futures))
    order = {task.model_id: i for i, task in enumerate(tasks)}
    return sorted(results, key=lambda r: order[r.model_id])


def _while_they_run(meanwhile: Callable[[], None] | None, futures: Sequence[Any]) -> None:
    if meanwhile is None:
        return
    try:
        meanwhile()
    except BaseException:
        for future in futures:  # no point training on: stop what has not started
            future.cancel()
        raise


def check_error_threshold(results: Sequence[ModelResult], threshold: int) -> None:
    """Like Azure ML parallel jobs: -1 tolerates any number of failures, N tolerates up to N."""
    failed = [r for r in results if r.status == "failed"]
    if threshold >= 0 and len(failed) > threshold:
        shown = "; ".join(f"{r.model_id}: {r.error}" for r in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise TooManyFailures(
            f"{len(failed)} of {len(results)} models failed, error threshold {threshold}: {shown}{more}"
        )


def read_training_summary(trained_dir: Path, summary_file: str) -> dict[str, Any]:
    """The train step's summary; when it has none (an Azure ML parallel job writes only the model folders),
    rebuilt from every model's result.json, with no training runs."""
    summary_path = trained_dir / summary_file
    if summary_path.is_file():
        return read_json(summary_path)
    results = [read_json(path) for path in sorted((trained_dir / MODELS_DIR).rglob(RESULT_FILE))]
    return {"results": results, "runs": {}}
