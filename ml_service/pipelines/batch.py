"""Batch scoring through the use-case contract: new rows per partition, each scored by its production model.

Three stages, so the same code runs as one local step or as an Azure ML pipeline (plan → parallel score →
combine):

- plan: resolve each use case's production version (or a given one), download its data folder (manifest and
  one pickle per partition) once, and split the new rows into one CSV per partition (`<partitions>/<use
  case>/<key>.csv`; a file that already holds exactly one partition is referenced, not copied), listed in
  `batch_plan.json` with what could not be planned (an empty file, missing partition columns) as failures;
- score: per partition, read the rows with the declared input types and checks (the same engine as training,
  `ml_service.data_checks`), load that partition's pickle (and only it: a worker never holds more than one
  model, so 10,000 models never sit in memory together), predict, and write `<output>/<use case>/<key>.parquet`
  all-or-nothing (temporary file renamed). A partition already scored from the same input by the same model
  version is skipped, so a rerun after kill -9 scores only what is missing;
- combine: one Parquet per use case (`<output>/<use case>.parquet`), streamed file by file, and the summary.

A partition's failure (no production model for it, a missing column, a wrong type, no rows) is its own: it is
reported with one line and counted against the use case's `parallel.error_threshold`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_service.config import UseCaseConfig
from ml_service.data_checks import DataValidationError, check_frame, coerce, read_csv
from ml_service.registry.mlops_pyfunc_model import ModelKeyError, model_key, parse_model_key
from ml_service.registry.model_set import MODEL_FILE, ModelSetError, partition_folder, read_manifest
from ml_service.use_case import load_use_case, predictions
from ml_service.util.files import file_sha256, read_json, write_json

PLAN_FILE = "batch_plan.json"
SUMMARY_FILE = "batch_summary.json"
PREDICTION_COLUMN = "prediction"
MODEL_NAME_COLUMN = "model_name"
MODEL_VERSION_COLUMN = "model_version"
SINGLE_FILE = "data"  # a use case without partitions: `<use case>/data.csv` in, `<use case>/data.parquet` out
_COMBINE_FILES = 500
_METADATA_KEY = b"mlops.batch"  # Parquet metadata: which input and model version a partition file was scored from


@dataclass(frozen=True)
class BatchTask:
    use_case: str
    model_name: str
    key: str  # "" for a use case without partitions
    data_file: str  # relative to the partitions folder, or absolute (an input file used as it is)
    data_hash: str
    model_version: str  # the registered version whose data folder holds the partition's model ("" when none)
    models_dir: str  # the use case's downloaded data folder, relative to the models folder ("" when none)


@dataclass
class BatchResult:
    use_case: str
    key: str
    status: str  # "scored", "skipped" (already scored from the same input and model) or "failed"
    rows: int = 0
    model_version: str = ""
    seconds: float = 0.0
    error: str = ""


@dataclass
class BatchPlan:
    tasks: list[BatchTask] = field(default_factory=list)
    failed: list[BatchResult] = field(default_factory=list)  # what could not even be planned
    versions: dict[str, str] = field(default_factory=dict)  # use case -> the version scored ("" when none)

    def write(self, folder: Path) -> None:
        write_json(
            folder / PLAN_FILE,
            {
                "tasks": [asdict(t) for t in self.tasks],
                "failed": [asdict(r) for r in self.failed],
                "versions": self.versions,
            },
        )

    @classmethod
    def read(cls, folder: Path) -> BatchPlan:
        raw = read_json(folder / PLAN_FILE)
        return cls(
            [BatchTask(**t) for t in raw["tasks"]], [BatchResult(**r) for r in raw["failed"]], dict(raw["versions"])
        )


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def output_file(output: Path, use_case: str, key: str) -> Path:
    return Path(output) / use_case / f"{key or SINGLE_FILE}.parquet"


def combined_file(output: Path, use_case: str) -> Path:
    return Path(output) / f"{use_case}.parquet"


def scoring_config(config: UseCaseConfig) -> UseCaseConfig:
    """The use case's columns without the label: what new rows must have, checked as training checks them."""
    columns = {c: spec for c, spec in config.columns.items() if c != config.label}
    return config.model_copy(update={"columns": columns})


# ------------------------------------------------------------------------------------------------------- plan


def input_files(source: Path, use_case: str, several: bool) -> list[Path]:
    """The CSV files of new rows for a use case: `source/<use case>/` when it exists (required with several use
    cases), else `source` itself (a folder of CSV files, or one file)."""
    source = Path(source)
    own = source / use_case
    if own.is_dir():
        source = own
    elif several:
        raise FileNotFoundError(f"{own} not found: with several use cases, --input holds one folder per use case")
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise FileNotFoundError(f"batch input {source} not found")
    return sorted(p for p in source.glob("*.csv") if p.is_file())


def _stem_key(path: Path, partition_columns: Sequence[str]) -> str:
    """A file without the partition columns is one partition, named by its file: `region=r0001.csv`."""
    try:
        values = parse_model_key(path.stem)
    except ModelKeyError:
        raise ValueError(
            f"{path.name}: no partition column(s) {', '.join(partition_columns)} and the file name is not a "
            "partition key such as region=r0001.csv"
        ) from None
    if list(values) != list(partition_columns):
        raise ValueError(f"{path.name}: the file name names {list(values)}, not the partition columns")
    return path.stem


def split_input(
    files: Iterable[Path], config: UseCaseConfig, partitions_dir: Path, copy: bool = False
) -> tuple[dict[str, Path], list[BatchResult]]:
    """{partition key: its CSV file} for one use case, and the files that could not be split (one reason each).

    A file holding one partition is used where it is (copied with `copy`: an Azure ML parallel step splits
    the partitions folder, so every partition must be a file of it); a file holding several is split into
    `<partitions_dir>/<use case>/<key>.csv`. Rows are checked later, per partition, so one bad partition does
    not stop the others.
    """
    columns = list(config.partition_columns)
    found: dict[str, Path] = {}
    failed: list[BatchResult] = []
    folder = Path(partitions_dir) / config.name
    for path in files:
        try:
            if not columns:
                if found:
                    raise ValueError(f"{path.name}: {config.name} has no partitions; give one file of rows")
                read_csv(path, config)  # empty or unreadable files fail here, with the reason
                found[""] = _copied(path, folder / f"{SINGLE_FILE}.csv") if copy else path.resolve()
                continue
            key = _one_key(path, config)
            if key is not None:
                if key in found:
                    raise ValueError(f"{path.name}: partition {key} is in another file too")
                found[key] = _copied(path, folder / f"{key}.csv") if copy else path.resolve()
                continue
            frame = read_csv(path, config)
            if not set(columns) <= set(frame.columns):
                if set(columns) & set(frame.columns):
                    raise ValueError(f"{path.name}: has some of the partition columns {columns}, not all")
                key = _stem_key(path, columns)
                if key in found:
                    raise ValueError(f"{path.name}: partition {key} is in another file too")
                found[key] = _copied(path, folder / f"{key}.csv") if copy else path.resolve()
                continue
            if frame[columns].isna().any().any():
                raise ValueError(f"{path.name}: rows with a missing partition value in {columns}")
            groups = frame.groupby(columns, sort=True, observed=True)
            several = groups.ngroups > 1
            for values, rows in groups:
                values = values if isinstance(values, tuple) else (values,)
                key = model_key(dict(zip(columns, [str(v) for v in values], strict=True)))
                if key in found:
                    raise ValueError(f"{path.name}: partition {key} is in another file too")
                if several:
                    target = folder / f"{key}.csv"
                    target.parent.mkdir(parents=True, exist_ok=True)
                    _write_csv_atomic(rows, target)
                    found[key] = target.resolve()
                elif copy:
                    found[key] = _copied(path, folder / f"{key}.csv")
                else:
                    found[key] = path.resolve()
        except (DataValidationError, ValueError, ModelKeyError) as exc:
            failed.append(BatchResult(config.name, path.stem, "failed", error=one_line(exc)))
    return found, failed


def _one_key(path: Path, config: UseCaseConfig) -> str | None:
    """The key of a file whose rows all belong to one partition (text partition columns, read with the csv
    module: a tenth of pandas' cost for a 48-row file); None when that is not plainly so (pandas decides)."""
    columns = list(config.partition_columns)
    if any(config.columns[c].type not in ("string", "category") for c in columns):
        return None
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header or not set(columns) <= set(header):
            return None
        positions = [header.index(c) for c in columns]
        seen: set[tuple[str, ...]] = set()
        for row in reader:
            if len(row) != len(header):
                return None
            seen.add(tuple(row[i] for i in positions))
            if len(seen) > 1:
                return None
    if len(seen) != 1 or not all(v.strip() and v.strip() == v for v in next(iter(seen))):
        return None
    return model_key(dict(zip(columns, next(iter(seen)), strict=True)))


def _copied(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copyfile(source, staging)
    os.replace(staging, target)
    return target.resolve()


def _write_csv_atomic(frame: pd.DataFrame, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        frame.to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _local_data_folder(client: Any, model: Any) -> Path | None:
    from urllib.parse import unquote, urlparse

    from ml_service.registry.mlflow_registry import DATA_FOLDER

    uri = client.get_model_version_download_uri(model.name, model.version)
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    folder = Path(unquote(parsed.path)) / DATA_FOLDER
    return folder if (folder / "manifest.json").is_file() else None


def download_models(model_name: str, version: str | None, models_dir: Path, copy: bool = True) -> tuple[str, str]:
    """Download the production version of `model_name` (or `version`) once: (version, folder relative to
    `models_dir`). ("", "") when there is no such version. A folder already downloaded is reused (resume)."""
    from ml_service.registry.mlflow_registry import (
        ProductionModel,
        connect,
        download_data,
        production_model,
    )
    from ml_service.util.env_variables import load_settings

    settings = load_settings()
    client = connect(settings)
    if version:
        found = client.get_model_version(model_name, str(version))
        model: Any = ProductionModel(found.name, found.version, found.source, dict(found.tags), found.run_id)
    else:
        model = production_model(client, model_name, settings.production_alias)
        if model is None:
            return "", ""
    if not copy:
        # a registry on this machine (the local MLflow store): its version folder is read where it is, not
        # copied (copying 10,000 pickles costs more than scoring them); an Azure ML step (copy) always copies
        local = _local_data_folder(client, model)
        if local is not None:
            return str(model.version), str(local)
    relative = f"{model_name}/v{model.version}"
    target = Path(models_dir) / relative
    if not (target / "manifest.json").is_file():
        staging = target.with_name(f".v{model.version}.{os.getpid()}.tmp")
        shutil.rmtree(staging, ignore_errors=True)
        data = download_data(client, model, staging)
        read_manifest(data)
        if target.exists():
            shutil.rmtree(target)
        os.replace(data, target)
        shutil.rmtree(staging, ignore_errors=True)
    return str(model.version), relative


def plan_batch(
    names: Sequence[str],
    root: Path,
    source: Path,
    partitions_dir: Path,
    models_dir: Path,
    version: str | None = None,
    copy: bool = False,
) -> BatchPlan:
    """The plan stage: models downloaded, new rows split per partition, one task per partition."""
    plan = BatchPlan()
    for name in names:
        use_case = load_use_case(name, root)
        config = use_case.config
        files = input_files(source, name, len(names) > 1)
        found, failed = split_input(files, config, partitions_dir, copy)
        plan.failed += failed
        model_version, relative = download_models(config.model_name, version, models_dir, copy)
        plan.versions[name] = model_version
        for key, path in sorted(found.items()):
            try:
                data_file = path.relative_to(Path(partitions_dir).resolve()).as_posix()
            except ValueError:
                data_file = str(path)
            plan.tasks.append(
                BatchTask(name, config.model_name, key, data_file, file_sha256(path), model_version, relative)
            )
    return plan


# ------------------------------------------------------------------------------------------------------ score


def read_new_rows(path: Path, config: UseCaseConfig, key: str) -> pd.DataFrame:
    """A partition's new rows with the declared types and checks (label not needed); partition columns from
    the key when the file has none."""
    frame = read_csv(path, config)
    if config.partition_columns:
        values = parse_model_key(key)
        for column, value in values.items():
            if column not in frame.columns:
                frame[column] = value
    wanted = scoring_config(config)
    problems = check_frame(frame, wanted)
    if problems:
        raise DataValidationError(path.name, problems)
    typed = coerce(frame, wanted)
    for column in config.partition_columns:
        typed[column] = typed[column].astype(str)
    if key:
        for column, value in parse_model_key(key).items():
            others = typed[column] != value
            if others.any():
                raise ValueError(f"{path.name}: {int(others.sum())} row(s) not of partition {key}")
    return typed


def _finished(target: Path, task: BatchTask) -> int | None:
    """The row count of a partition already scored from this input by this model version, else None."""
    if not target.is_file():
        return None
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(target).metadata or {}
        saved = json.loads(metadata.get(_METADATA_KEY, b"{}"))
    except (OSError, ValueError):
        return None
    if saved.get("data_hash") == task.data_hash and saved.get("model_version") == task.model_version:
        return int(saved.get("rows", 0))
    return None


def _write_parquet_atomic(frame: Any, target: Path, metadata: dict[str, Any]) -> None:
    """A frame (or an Arrow table) as one Parquet file, all-or-nothing, with our metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), _METADATA_KEY: json.dumps(metadata)})
    if not target.parent.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")  # one writer per partition at a time
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_MANIFESTS: dict[str, dict[str, Any]] = {}


def _load_model(models_dir: Path, task: BatchTask, load: bool = True) -> tuple[Any, str]:
    """The partition's model, unpickled now and not kept; and the version it was trained in."""
    if not task.models_dir:
        raise LookupError(f"no production version of model {task.model_name} (train and register it first)")
    folder = Path(models_dir) / task.models_dir
    if str(folder) not in _MANIFESTS:  # one parse per worker process: a set of 10,000 is one JSON file
        _MANIFESTS[str(folder)] = read_manifest(folder)
    entry = _MANIFESTS[str(folder)]["models"].get(task.key)
    if entry is None:
        what = f"partition {task.key}" if task.key else "the model"
        raise LookupError(f"no production model for {what} in {task.model_name} version {task.model_version}")
    version = str(entry.get("version") or task.model_version)
    if not load:
        return None, version
    with (partition_folder(folder, task.key) / MODEL_FILE).open("rb") as handle:
        return pickle.load(handle), version


def _task_path(task: BatchTask, partitions_dir: Path) -> Path:
    path = Path(task.data_file)
    return path if path.is_absolute() else Path(partitions_dir) / path


def _rows_together(
    tasks: Sequence[BatchTask], paths: Sequence[Path], config: UseCaseConfig
) -> list[pd.DataFrame] | None:
    """The rows of several partitions read and checked as one frame, split back per partition; None when they
    cannot be (different headers, partition columns not in the files, any problem): then one by one, so each
    partition gets its own reason.

    Why: parsing and checking a 48-row file costs pandas a few milliseconds of set-up per call, more than the
    model's predict; one parse and one check of a hundred files joined costs a fraction of that per file.
    """
    header: bytes | None = None
    bodies: list[bytes] = []
    starts = [0]
    for path in paths:
        first, _, body = path.read_bytes().partition(b"\n")
        if header is None:
            header = first
        elif first != header or not body.strip():
            return None
        if not body.endswith(b"\n"):
            body += b"\n"
        bodies.append(body)
        starts.append(starts[-1] + body.count(b"\n"))
    if header is None or b'"' in header or any(b'"' in b for b in bodies):
        return None  # quoted fields may span lines: line counts would not be row counts
    text = {c: str for c, spec in config.columns.items() if spec.type in ("string", "category")}
    try:
        frame = pd.read_csv(io.BytesIO(header + b"\n" + b"".join(bodies)), dtype=text, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return None
    if len(frame) != starts[-1] or not set(config.partition_columns) <= set(frame.columns):
        return None
    wanted = scoring_config(config)
    if check_frame(frame, wanted):
        return None
    typed = coerce(frame, wanted)
    for column in config.partition_columns:
        typed[column] = typed[column].astype(str)
    parts = []
    for task, first, end in zip(tasks, starts[:-1], starts[1:], strict=True):
        part = typed.iloc[first:end].reset_index(drop=True)
        if config.partition_columns and task.key:
            values = parse_model_key(task.key)
            if any((part[c] != v).any() for c, v in values.items()):
                return None  # rows of another partition: let the one-by-one path name it
        parts.append(part)
    return parts


def _predict_together(
    use_case: Any, tasks: Sequence[BatchTask], parts: Sequence[pd.DataFrame], models_dir: Path
) -> list[Any] | None:
    """The use case's `predict_many` over a worker's batch (its models only: at most a batch in memory), or
    None (not for these models, or any model missing: one by one, each failure with its reason)."""
    if not use_case.has("predict_many"):
        return None
    try:
        models = [_load_model(models_dir, task)[0] for task in tasks]
    except (LookupError, OSError, ModelSetError):
        return None
    starts = [0]
    for part in parts:
        starts.append(starts[-1] + len(part))
    frame = pd.concat(parts, ignore_index=True)
    columns = list(use_case.config.input_columns)
    out = use_case.implementation.predict_many(models, frame[columns], starts)
    if out is None or len(out) != len(tasks):
        return None
    return [o if isinstance(o, BaseException) else np.asarray(o, dtype=float).reshape(-1) for o in out]


def _score_one(
    task: BatchTask,
    rows: pd.DataFrame,
    config: UseCaseConfig,
    models_dir: Path,
    output: Path,
    predicted: Any = None,
) -> int:
    """Predict one partition's rows with its model (unless `predicted` already) and write its Parquet file
    all-or-nothing; rows written."""
    model, trained_in = _load_model(models_dir, task, load=predicted is None)
    if predicted is None:
        predicted = predictions(model, rows[list(config.input_columns)])
    del model  # one model in memory at a time
    if len(predicted) != len(rows):
        raise ValueError(f"the model returned {len(predicted)} predictions for {len(rows)} rows")
    if PREDICTION_COLUMN in rows.columns:
        raise ValueError(f"the input has a column named {PREDICTION_COLUMN!r}, which the output adds")
    out = rows.reset_index(drop=True)
    out[PREDICTION_COLUMN] = predicted
    out[MODEL_NAME_COLUMN] = f"{task.model_name}/{task.key}" if task.key else task.model_name
    out[MODEL_VERSION_COLUMN] = trained_in
    metadata = {"data_hash": task.data_hash, "model_version": task.model_version, "rows": len(out)}
    _write_parquet_atomic(out, output_file(output, task.use_case, task.key), metadata)
    return len(out)


def _write_together(
    tasks: Sequence[BatchTask],
    parts: Sequence[pd.DataFrame],
    predicted: Sequence[np.ndarray],
    models_dir: Path,
    output: Path,
) -> list[BatchResult]:
    """The batch's output built as one Arrow table (one conversion from pandas instead of one per partition),
    each partition's slice written to its own file, all-or-nothing."""
    import pyarrow as pa

    started = time.perf_counter()
    lengths = [len(p) for p in parts]
    if any(len(v) != n for v, n in zip(predicted, lengths, strict=True)):
        raise ValueError("a model returned a different number of predictions than rows")
    frame = pd.concat(parts, ignore_index=True)
    if PREDICTION_COLUMN in frame.columns:
        raise ValueError(f"the input has a column named {PREDICTION_COLUMN!r}, which the output adds")
    frame[PREDICTION_COLUMN] = np.concatenate(predicted) if predicted else np.zeros(0)
    served = [f"{t.model_name}/{t.key}" if t.key else t.model_name for t in tasks]
    versions = [_load_model(models_dir, t, load=False)[1] for t in tasks]
    frame[MODEL_NAME_COLUMN] = np.repeat(np.asarray(served, dtype=object), lengths)
    frame[MODEL_VERSION_COLUMN] = np.repeat(np.asarray(versions, dtype=object), lengths)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    shared = (time.perf_counter() - started) / max(len(tasks), 1)
    results, first = [], 0
    for task, n in zip(tasks, lengths, strict=True):
        begun = time.perf_counter()
        metadata = {"data_hash": task.data_hash, "model_version": task.model_version, "rows": n}
        _write_parquet_atomic(table.slice(first, n), output_file(output, task.use_case, task.key), metadata)
        first += n
        seconds = shared + time.perf_counter() - begun
        results.append(BatchResult(task.use_case, task.key, "scored", n, task.model_version, seconds))
    return results


def _failure(task: BatchTask, exc: BaseException, seconds: float) -> BatchResult:
    return BatchResult(
        task.use_case,
        task.key,
        "failed",
        model_version=task.model_version,
        seconds=seconds,
        error=f"{type(exc).__name__}: {one_line(exc)}",
    )


def score_batch(
    tasks: Sequence[BatchTask], partitions_dir: Path, models_dir: Path, output: Path, root: Path
) -> list[BatchResult]:
    """Score several partitions in one worker call; one partition's failure is recorded, never raised.
    Results are in the order of `tasks`."""
    results: dict[int, BatchResult] = {}
    todo: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        done = _finished(output_file(output, task.use_case, task.key), task)
        if done is not None:
            results[index] = BatchResult(task.use_case, task.key, "skipped", done, task.model_version)
        else:
            todo.setdefault(task.use_case, []).append(index)
    for name, indices in todo.items():
        started = time.perf_counter()
        try:
            config = load_use_case(name, root).config
        except Exception as exc:  # noqa: BLE001 - e.g. a use case no longer declared: each of its partitions fails
            for index in indices:
                results[index] = _failure(tasks[index], exc, 0.0)
            continue
        own = [tasks[i] for i in indices]
        paths = [_task_path(t, partitions_dir) for t in own]
        changed = [p for t, p in zip(own, paths, strict=True) if not p.is_file() or file_sha256(p) != t.data_hash]
        together = None if changed else _rows_together(own, paths, config)
        predicted = _predict_together(load_use_case(name, root), own, together, models_dir) if together else None
        whole = predicted is not None and not any(isinstance(p, BaseException) for p in predicted)
        if together is not None and predicted is not None and whole:
            try:
                written = _write_together(own, together, predicted, models_dir, output)
                for index, result in zip(indices, written, strict=True):
                    results[index] = result
                continue
            except (Exception, ModelSetError):  # noqa: BLE001 - one by one below: each failure with its reason
                pass
        shared = (time.perf_counter() - started) / len(own)
        for position, (index, task, path) in enumerate(zip(indices, own, paths, strict=True)):
            started = time.perf_counter()
            try:
                if together is not None:
                    rows = together[position]
                else:
                    if not path.is_file() or file_sha256(path) != task.data_hash:
                        raise ValueError(f"{path.name} changed since the plan was made")
                    rows = read_new_rows(path, config, task.key)
                given = predicted[position] if predicted is not None else None
                if isinstance(given, BaseException):
                    raise given
                written = _score_one(task, rows, config, models_dir, output, given)
                seconds = shared + time.perf_counter() - started
                results[index] = BatchResult(task.use_case, task.key, "scored", written, task.model_version, seconds)
            except (Exception, ModelSetError) as exc:  # noqa: BLE001 - isolate each partition; reported with its key
                results[index] = _failure(task, exc, shared + time.perf_counter() - started)
    return [results[i] for i in range(len(tasks))]


# ---------------------------------------------------------------------------------------------------- combine


def combine(output: Path, use_case: str, keys: Sequence[str]) -> tuple[Path, int]:
    """Stream the scored partitions of a use case into one Parquet file (written atomically): rows count."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    target = combined_file(output, use_case)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    rows = 0
    writer = None
    try:
        for first in range(0, len(keys), _COMBINE_FILES):
            # a few hundred files per read, on pyarrow's threads: one file at a time costs a millisecond each
            paths = [str(output_file(output, use_case, key)) for key in keys[first : first + _COMBINE_FILES]]
            table = ds.dataset(paths, format="parquet").to_table().replace_schema_metadata(None)
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is None:
            raise ValueError(f"{use_case}: no scored partition to combine")
        writer.close()
        writer = None
        os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
    return target, rows


def results_from_files(plan: BatchPlan, output: Path) -> list[BatchResult]:
    """What an Azure ML parallel job left (it writes only the partition files): each task scored or not."""
    results = list(plan.failed)
    for task in plan.tasks:
        rows = _finished(output_file(output, task.use_case, task.key), task)
        if rows is None:
            results.append(
                BatchResult(task.use_case, task.key, "failed", 0, task.model_version, error="not scored (see logs)")
            )
        else:
            results.append(BatchResult(task.use_case, task.key, "scored", rows, task.model_version))
    return results


def summary(results: Sequence[BatchResult], seconds: float) -> dict[str, Any]:
    by_use_case: dict[str, dict[str, Any]] = {}
    for r in results:
        own = by_use_case.setdefault(r.use_case, {"scored": 0, "skipped": 0, "failed": 0, "rows": 0})
        own[r.status] += 1
        own["rows"] += r.rows
    return {
        "use_cases": by_use_case,
        "seconds": round(seconds, 3),
        "failed": [{"use_case": r.use_case, "key": r.key, "error": r.error} for r in results if r.status == "failed"],
        "results": [asdict(r) for r in results],
    }
