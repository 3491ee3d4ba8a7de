"""Training through the use-case contract: prepared partitions on disk, one task per model, results on disk.

Why this shape: a model's task is a prepared CSV plus the hashes of its data, its configuration and its model
code, and its result is a folder written all-or-nothing. So the same `train_batch` runs in this process, a pool
worker, a Dask worker or an Azure ML parallel job (`ml_service.fanout`), and a rerun after any interruption
trains only what is missing or changed. A single model is a use case with one partition (key "").
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import pickle
import shutil
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_service.config import UseCaseConfig, declared_use_cases
from ml_service.data_checks import TEXT_TYPES, TIME_FORMAT
from ml_service.monitoring.profile import profile_frame, write_profile
from ml_service.use_case import LoadedUseCase, check_metrics, fit_many, fit_one, load_use_case
from ml_service.util.files import read_json, write_json

PLAN_FILE = "prepared.json"
RESULT_FILE = "result.json"
MODEL_FILE = "model.pkl"
MODELS_DIR = "models"
SUMMARY_FILE = "train_summary.json"
HOLDOUT_ROWS = 500  # hold-out rows kept per model for the report's plots
SAMPLE_ROWS = 2  # input rows kept per model: the registered input example and the smoke test's request


@dataclass(frozen=True)
class ModelTask:
    use_case: str
    model_id: str  # "<model_name>" or "<model_name>/<partition key>"
    model_name: str
    key: str
    data_file: str  # relative to the prepared folder
    data_hash: str
    config_hash: str


@dataclass
class ModelResult:
    use_case: str
    model_id: str
    model_name: str
    key: str
    status: str  # "trained", "skipped" (already trained on the same data, config and code) or "failed"
    data_hash: str
    config_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    estimator: str = ""
    seconds: float = 0.0
    error: str = ""


class TooManyFailures(RuntimeError):
    """More models failed than the error threshold allows."""


# ---------------------------------------------------------------------------------------------------- files


def model_id(model_name: str, key: str = "") -> str:
    """The name a partition's model is stored and served under: `<model_name>/<partition key>`."""
    return f"{model_name}/{key}" if key else model_name


def model_folder(trained_dir: Path, model_id: str) -> Path:
    return trained_dir / MODELS_DIR / model_id


def partition_path(folder: Path, key: str) -> Path:
    """A prepared partition's file: `<folder>/<key>.csv` (key "" gives data.csv)."""
    return Path(folder) / (f"{key}.csv" if key else "data.csv")


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Same frame, same bytes: fixed time format, no index, \\n line ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, date_format=TIME_FORMAT, lineterminator="\n")
    return path


def _typed(frame: pd.DataFrame, config: UseCaseConfig) -> pd.DataFrame:
    for column, spec in config.columns.items():
        if spec.type == "datetime":
            try:  # the format prepare writes: parsing it is twice as fast as inferring one
                frame[column] = pd.to_datetime(frame[column], format=TIME_FORMAT)
            except ValueError:
                frame[column] = pd.to_datetime(frame[column])
        elif spec.type in ("number", "integer"):
            frame[column] = frame[column].astype("float64")
    return frame


def _text_dtypes(config: UseCaseConfig) -> dict[str, Any]:
    return {c: str for c, spec in config.columns.items() if spec.type in TEXT_TYPES}


def read_prepared(path: Path, config: UseCaseConfig) -> pd.DataFrame:
    """One prepared file back with its declared types."""
    return _typed(pd.read_csv(path, dtype=_text_dtypes(config), keep_default_na=False, na_values=[""]), config)


def read_prepared_batch(paths: Sequence[Path], config: UseCaseConfig) -> tuple[pd.DataFrame, list[int]]:
    """Several prepared files as one frame, and where each file's rows start (plus the total at the end).

    Why: parsing a few hundred rows costs pandas about a millisecond of set-up per call; one parse of the files
    joined costs a fraction of that per file. Raises ValueError when the files cannot be joined (different
    headers, quoted multi-line rows): read them one by one then.
    """
    header: bytes | None = None
    bodies: list[bytes] = []
    starts = [0]
    for path in paths:
        first, _, body = Path(path).read_bytes().partition(b"\n")
        if header is None:
            header = first
        elif first != header:
            raise ValueError(f"{path}: its header differs from {paths[0]}'s")
        if body and not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        starts.append(starts[-1] + body.count(b"\n"))
    if header is None:
        raise ValueError("no prepared file to read")
    frame = pd.read_csv(
        io.BytesIO(header + b"\n" + b"".join(bodies)), dtype=_text_dtypes(config), keep_default_na=False, na_values=[""]
    )
    if len(frame) != starts[-1]:
        raise ValueError(f"{len(frame)} rows parsed from {len(bodies)} files that have {starts[-1]} lines")
    return _typed(frame, config), starts


@functools.lru_cache(maxsize=32)
def _code_hash(paths: tuple[str, ...], configs: frozenset[str]) -> str:
    digest = hashlib.sha256()
    for top in paths:
        top_path = Path(top)
        files = [top_path] if top_path.is_file() else sorted(top_path.rglob("*"))
        for path in files:
            parts = path.relative_to(top_path.parent).parts
            if not path.is_file() or "__pycache__" in parts or "tests" in parts or path.suffix == ".pyc":
                continue
            if str(path.resolve()) in configs:  # configurations are hashed as parsed, each by its own use case
                continue
            digest.update("/".join(parts).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def config_hash(use_case: LoadedUseCase) -> str:
    """What decides a model besides its data: the configuration and the use case's model code (any file of it,
    so model code in a new file retrains too)."""
    config = use_case.config.model_dump(mode="json", exclude={"path", "description", "parallel"})
    configs = frozenset(str(p.resolve()) for p in declared_use_cases(use_case.root).values())
    code = _code_hash(tuple(str(p) for p in use_case.model_code()), configs)
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode() + code.encode()).hexdigest()


def write_plan(prepared_dir: Path, tasks: Sequence[ModelTask]) -> None:
    write_json(prepared_dir / PLAN_FILE, {"tasks": [asdict(t) for t in tasks]})


def read_plan(prepared_dir: Path) -> list[ModelTask]:
    return [ModelTask(**task) for task in read_json(prepared_dir / PLAN_FILE)["tasks"]]


# ------------------------------------------------------------------------------------------------- training


def _finished(folder: Path, task: ModelTask) -> dict[str, Any] | None:
    """The saved result if this exact task (same data, config and code) already finished."""
    try:
        saved = read_json(folder / RESULT_FILE)
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    same = saved.get("data_hash") == task.data_hash and saved.get("config_hash") == task.config_hash
    return saved if same and saved.get("status") == "trained" else None


def _skipped(saved: dict[str, Any]) -> ModelResult:
    known = {f for f in ModelResult.__dataclass_fields__}
    return ModelResult(**{**{k: v for k, v in saved.items() if k in known}, "status": "skipped"})


def _json_values(values: Any, kind: str) -> list[Any]:
    array = np.asarray(values)
    if kind == "datetime":
        return [str(s).replace("T", " ") for s in np.datetime_as_string(array.astype("datetime64[s]"), unit="s")]
    if array.dtype.kind == "f":
        return [None if not np.isfinite(v) else float(v) for v in array.tolist()]
    return array.tolist()


def sample_input(frame: pd.DataFrame, config: UseCaseConfig, rows: int = SAMPLE_ROWS) -> list[list[Any]]:
    """The first rows of the model's input columns as JSON-ready values (time stamps as text)."""
    head = frame.iloc[:rows]
    columns = [_json_values(head[c].to_numpy(), config.columns[c].type) for c in config.input_columns]
    return [list(row) for row in zip(*columns, strict=True)]


def _holdout_record(holdout: pd.DataFrame, predicted: np.ndarray, config: UseCaseConfig) -> dict[str, list]:
    rows = slice(0, HOLDOUT_ROWS)
    record = {
        "actual": _json_values(holdout[config.label].to_numpy(dtype=float)[rows], "number"),
        "predicted": _json_values(np.asarray(predicted, dtype=float)[rows], "number"),
    }
    if config.time is not None:
        record["time"] = _json_values(holdout[config.time.column].to_numpy()[rows], "datetime")
    return record


def describe(use_case: LoadedUseCase, model: Any) -> str:
    """The use case's short name for a fitted model (`describe(model)`), else its class name."""
    if use_case.has("describe"):
        return str(use_case.implementation.describe(model))
    return type(model).__name__


def _write_model(
    task: ModelTask,
    use_case: LoadedUseCase,
    fitted: tuple[Any, pd.DataFrame, np.ndarray],
    rows: pd.DataFrame,
    trained_dir: Path,
    seconds: float,
) -> ModelResult:
    """Save a trained model with its result into its folder, all-or-nothing (a staging folder renamed)."""
    started = time.perf_counter()
    model, holdout, predicted = fitted
    config = use_case.config
    actual = holdout[config.label].to_numpy(dtype=float)
    metrics = check_metrics(use_case, use_case.implementation.metrics(actual, np.asarray(predicted, dtype=float)))
    outcome = ModelResult(
        task.use_case,
        task.model_id,
        task.model_name,
        task.key,
        "trained",
        task.data_hash,
        task.config_hash,
        metrics,
        describe(use_case, model),
    )
    folder = model_folder(trained_dir, task.model_id)
    staging = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with (staging / MODEL_FILE).open("wb") as handle:
        pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
    # what production data is compared with (drift): it travels with the model into the registry
    write_profile(staging, profile_frame(rows, config.input_types(), predicted))
    outcome.seconds = seconds + time.perf_counter() - started
    record = {
        **asdict(outcome),
        "sample_input": sample_input(rows, config),
        "holdout": _holdout_record(holdout, predicted, config),
        "rows": len(rows),
    }
    # a plain write: the folder's rename below is what makes the result all-or-nothing (an fsync'd atomic
    # write here cost more than a small model's fit)
    (staging / RESULT_FILE).write_text(json.dumps(record, sort_keys=True) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(staging, folder)
    return outcome


def _failed(task: ModelTask, exc: BaseException) -> ModelResult:
    message = " ".join(str(exc).split()) or type(exc).__name__
    if os.environ.get("MLOPS_DEBUG"):
        traceback.print_exception(exc)
    return ModelResult(
        task.use_case,
        task.model_id,
        task.model_name,
        task.key,
        "failed",
        task.data_hash,
        task.config_hash,
        error=f"{type(exc).__name__}: {message}",
    )


def _train_alone(task: ModelTask, use_case: LoadedUseCase, prepared_dir: Path, trained_dir: Path) -> ModelResult:
    try:
        started = time.perf_counter()
        frame = read_prepared(prepared_dir / task.data_file, use_case.config)
        fitted = fit_one(use_case, frame)
        return _write_model(task, use_case, fitted, frame, trained_dir, time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - isolate each model; the error is reported with its name
        return _failed(task, exc)


def _train_together(
    tasks: Sequence[ModelTask], use_case: LoadedUseCase, prepared_dir: Path, trained_dir: Path
) -> list[ModelResult]:
    """Partitions of one use case through its `fit_many`: one read for all, one call for all."""
    started = time.perf_counter()
    try:
        frame, starts = read_prepared_batch([prepared_dir / task.data_file for task in tasks], use_case.config)
        fitted = fit_many(use_case, frame, starts)
    except Exception:  # noqa: BLE001 - what cannot be read or fitted together is trained one by one, errors per model
        fitted = None
    if fitted is None:
        return [_train_alone(task, use_case, prepared_dir, trained_dir) for task in tasks]
    if len(fitted) != len(tasks):
        raise RuntimeError(f"{use_case.name}: fit_many returned {len(fitted)} results for {len(tasks)} partitions")
    shared = (time.perf_counter() - started) / len(tasks)
    outcomes = []
    for task, first, end, result in zip(tasks, starts[:-1], starts[1:], fitted, strict=True):
        try:
            if isinstance(result, Exception):
                raise result
            outcomes.append(_write_model(task, use_case, result, frame.iloc[first:end], trained_dir, shared))
        except Exception as exc:  # noqa: BLE001 - isolate each model; the error is reported with its name
            outcomes.append(_failed(task, exc))
    return outcomes


def train_batch(tasks: Sequence[ModelTask], prepared_dir: Path, trained_dir: Path, root: Path) -> list[ModelResult]:
    """Train several models in one worker call; one model's failure is recorded, never raised.

    Partitions of a use case with `fit_many` are trained together; everything else one by one. Results are in
    the order of `tasks`.
    """
    results: dict[str, ModelResult] = {}
    together: dict[str, list[ModelTask]] = {}
    loaded: dict[str, LoadedUseCase] = {}
    for task in tasks:
        saved = _finished(model_folder(trained_dir, task.model_id), task)
        if saved is not None:
            results[task.model_id] = _skipped(saved)
            continue
        try:
            loaded[task.use_case] = loaded.get(task.use_case) or load_use_case(task.use_case, root)
        except Exception as exc:  # noqa: BLE001 - e.g. a use case no longer declared
            results[task.model_id] = _failed(task, exc)
            continue
        if task.key and loaded[task.use_case].has("fit_many"):
            together.setdefault(task.use_case, []).append(task)
        else:
            results[task.model_id] = _train_alone(task, loaded[task.use_case], prepared_dir, trained_dir)
    for name, group in together.items():
        for outcome in _train_together(group, loaded[name], prepared_dir, trained_dir):
            results[outcome.model_id] = outcome
    return [results[task.model_id] for task in tasks]


def remove_stale_staging(trained_dir: Path) -> list[Path]:
    """Delete the staging folders a killed run left behind; they are never results (only a complete folder is
    renamed into place), but they would pile up with each interruption. Call before any worker starts."""
    models = trained_dir / MODELS_DIR
    stale = [p for pattern in (".*.tmp", "*/.*.tmp") for p in models.glob(pattern) if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def check_error_threshold(results: Sequence[ModelResult], threshold: int) -> None:
    """Like Azure ML parallel jobs: -1 tolerates any number of failures, N tolerates up to N."""
    failed = [r for r in results if r.status == "failed"]
    if threshold >= 0 and len(failed) > threshold:
        shown = "; ".join(f"{r.model_id}: {r.error}" for r in failed[:3])
        more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
        raise TooManyFailures(
            f"{len(failed)} of {len(results)} models failed, error threshold {threshold}: {shown}{more}"
        )


def read_training_summary(trained_dir: Path) -> dict[str, Any]:
    """The train step's summary; when it has none (an Azure ML parallel job writes only the model folders),
    rebuilt from every model's result.json, with no training runs."""
    summary_path = trained_dir / SUMMARY_FILE
    if summary_path.is_file():
        return read_json(summary_path)
    known = set(ModelResult.__dataclass_fields__)
    results = []
    for path in sorted((trained_dir / MODELS_DIR).rglob(RESULT_FILE)):
        results.append({k: v for k, v in read_json(path).items() if k in known})
    return {"results": results, "runs": {}}


def read_result(trained_dir: Path, model_id: str) -> dict[str, Any]:
    """A trained model's full result record (with its sample input and hold-out)."""
    return read_json(model_folder(trained_dir, model_id) / RESULT_FILE)
