"""Batch scoring through the use-case contract: new rows per partition, each scored by its production model.

Three stages, so the same code runs as one local step or as an Azure ML pipeline (plan → parallel score →
combine):

- plan: resolve each use case's production version (or a given one), download its data folder (manifest and
  one pickle per partition) once, and split the new rows into one CSV per partition (`<partitions>/<use
  case>/<key>.csv`; a file that already holds exactly one partition is referenced, not copied), listed in
  `batch_plan.json` with what could not be planned (an empty file, missing partition columns) as failures;
- score: a worker's batch of partitions (up to 100) is read and checked as one frame with the declared input
  types and checks (the same engine as training, `ml_service.data_checks`), each partition predicted by its own
  model (the batch's models only: 10,000 models never sit in memory together), and the scored partitions
  written as one batch file `<output>/<use case>/batch-<digest>.parquet`, all-or-nothing (temporary file
  renamed), its Parquet metadata listing the partitions it holds (key, rows, the sha256 of the input rows, the
  model version). A partition already scored from the same input by the same model version is not scored
  again, so a rerun after kill -9 scores only what is missing;
- combine: one Parquet per use case (`<output>/<use case>.parquet`), in partition order whatever the batches
  were, and the summary.

A partition's failure (no production model for it, a missing column, a wrong type, no rows) is its own: it is
reported with one line and counted against the use case's `parallel.error_threshold`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pickle
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_service.config import UseCaseConfig, load_config
from ml_service.data_checks import DataValidationError, check_frame, coerce, read_csv
from ml_service.registry.mlops_pyfunc_model import ModelKeyError, key_folder, model_key, parse_model_key
from ml_service.registry.model_set import MODEL_FILE, ModelSetError, read_manifest
from ml_service.use_case import load_use_case, predictions
from ml_service.util.files import file_sha256, read_json, write_atomic

PLAN_FILE = "batch_plan.json"
SUMMARY_FILE = "batch_summary.json"
PREDICTION_COLUMN = "prediction"
MODEL_NAME_COLUMN = "model_name"
MODEL_VERSION_COLUMN = "model_version"
SINGLE_FILE = "data"  # a use case without partitions: its rows are `<use case>/data.csv` in the partitions folder
BATCH_FILE_PREFIX = "batch-"
_COMBINE_ROWS = 250_000  # rows per write of the combined file: a few batch files' worth, never all of them
_METADATA_KEY = b"mlops.batch"  # Parquet metadata of a batch file: its partitions, their input and model version


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
        # vars() of these flat dataclasses, not asdict (its deep copy), and JSON's C encoder (no indent): a plan of
        # 10,000 partitions is written in a few tens of milliseconds instead of half a second
        write_atomic(
            folder / PLAN_FILE,
            json.dumps(
                {
                    "tasks": [dict(vars(t)) for t in self.tasks],
                    "failed": [dict(vars(r)) for r in self.failed],
                    "versions": self.versions,
                },
                sort_keys=True,
            ).encode(),
        )

    @classmethod
    def read(cls, folder: Path) -> BatchPlan:
        raw = read_json(folder / PLAN_FILE)
        return cls(
            [BatchTask(**t) for t in raw["tasks"]], [BatchResult(**r) for r in raw["failed"]], dict(raw["versions"])
        )


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


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
    with os.scandir(source) as entries:  # the file type from the directory listing: no stat per file
        names = sorted(e.name for e in entries if e.name.endswith(".csv") and e.is_file())
    return [source / name for name in names]


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
) -> tuple[dict[str, tuple[Path, str]], list[BatchResult]]:
    """{partition key: (its CSV file, the file's sha256)} for one use case, and the files that could not be
    split (one reason each).

    A file holding one partition is used where it is (copied with `copy`: an Azure ML parallel step splits
    the partitions folder, so every partition must be a file of it); a file holding several is split into
    `<partitions_dir>/<use case>/<key>.csv`. Rows are checked later, per partition, so one bad partition does
    not stop the others.
    """
    columns = list(config.partition_columns)
    found: dict[str, tuple[Path, str]] = {}
    failed: list[BatchResult] = []
    folder = Path(partitions_dir) / config.name
    parents: dict[Path, Path] = {}

    def in_place(path: Path) -> Path:
        """The file's absolute path, its folder resolved once (not each of 10,000 files)."""
        if path.parent not in parents:
            parents[path.parent] = path.parent.resolve()
        return parents[path.parent] / path.name

    def add(key: str, path: Path, data_hash: str | None = None) -> None:
        if key in found:
            raise ValueError(f"{path.name}: partition {key} is in another file too")
        found[key] = (path, data_hash or file_sha256(path))

    for path in files:
        try:
            if not columns:
                if found:
                    raise ValueError(f"{path.name}: {config.name} has no partitions; give one file of rows")
                read_csv(path, config)  # empty or unreadable files fail here, with the reason
                add("", _copied(path, folder / f"{SINGLE_FILE}.csv") if copy else in_place(path))
                continue
            key, data_hash = _one_key(path, config)
            if key is not None:
                add(key, _copied(path, folder / f"{key}.csv") if copy else in_place(path), data_hash)
                continue
            frame = read_csv(path, config)
            if not set(columns) <= set(frame.columns):
                if set(columns) & set(frame.columns):
                    raise ValueError(f"{path.name}: has some of the partition columns {columns}, not all")
                key = _stem_key(path, columns)
                add(key, _copied(path, folder / f"{key}.csv") if copy else in_place(path), data_hash)
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
                    add(key, target.resolve())
                elif copy:
                    add(key, _copied(path, folder / f"{key}.csv"), data_hash)
                else:
                    add(key, in_place(path), data_hash)
        except (DataValidationError, ValueError, ModelKeyError) as exc:
            failed.append(BatchResult(config.name, path.stem, "failed", error=one_line(exc)))
    return found, failed


def _one_key(path: Path, config: UseCaseConfig) -> tuple[str | None, str | None]:
    """The key of a file whose rows all belong to one partition (text partition columns), and the sha256 of the
    bytes read; key None when that is not plainly so (pandas decides). The file is read once, as bytes: for a
    48-row file pandas costs ten times more, and the csv module twice more."""
    columns = list(config.partition_columns)
    if any(config.columns[c].type not in ("string", "category") for c in columns):
        return None, None
    try:
        data = path.read_bytes()
    except OSError:
        return None, None
    data_hash = hashlib.sha256(data).hexdigest()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, data_hash
    if '"' in text or "\r" in text:  # quoted fields, other line ends: the csv module reads them
        rows = list(csv.reader(io.StringIO(text, newline="")))
    else:
        rows = [line.split(",") for line in text.split("\n")]
        if rows and rows[-1] == [""]:
            rows.pop()
    if len(rows) < 2 or not set(columns) <= set(rows[0]):
        return None, data_hash
    header = rows[0]
    width = len(header)
    if any(len(row) != width for row in rows):
        return None, data_hash
    values = []
    for column in columns:
        position = header.index(column)
        seen = {row[position] for row in rows[1:]}
        if len(seen) != 1:
            return None, data_hash
        values.append(seen.pop())
    if not all(v.strip() and v.strip() == v for v in values):
        return None, data_hash
    return model_key(dict(zip(columns, values, strict=True))), data_hash


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
    from mlflow.exceptions import MlflowException

    from ml_service.registry.errors import RegistryError
    from ml_service.registry.mlflow_registry import (
        NOT_FOUND,
        ProductionModel,
        connect,
        download_data,
        production_model,
    )
    from ml_service.util.env_variables import load_settings

    settings = load_settings()
    client = connect(settings)
    if version:
        try:
            found = client.get_model_version(model_name, str(version))
        except MlflowException as exc:
            if exc.error_code not in NOT_FOUND:
                raise
            raise RegistryError(f"{model_name} has no registered version {version} (--model-version)") from None
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


def download_all(
    model_names: Sequence[str], version: str | None, models_dir: Path, copy: bool
) -> list[tuple[str, str]]:
    return [download_models(name, version, models_dir, copy) for name in model_names]


def _in_background(function: Any, *args: Any) -> Any:
    """`function(*args)` started in a forked process when that saves time; returns a callable that waits for
    and returns its result (or raises its error).

    Why: the registry lookup imports MLflow and opens its store (2-3 s of one core, most of it imports) while
    the rest of the plan (the use cases' code, splitting the input) needs only the other core. A process that
    already has MLflow loaded runs it here and now.
    """
    import sys

    if "mlflow" in sys.modules:
        result = function(*args)
        return lambda: result
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork"))
    future = pool.submit(function, *args)

    def wait() -> Any:
        try:
            return future.result()
        finally:
            pool.shutdown()

    return wait


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
    configs = [load_config(name, root) for name in names]  # no use-case code imported yet: a quick fork
    downloaded = _in_background(download_all, [c.model_name for c in configs], version, models_dir, copy)
    splits = []
    for name in names:
        config = load_use_case(name, root).config
        files = input_files(source, name, len(names) > 1)
        found, failed = split_input(files, config, partitions_dir, copy)
        plan.failed += failed
        splits.append((name, config, found))
    for (name, config, found), (model_version, relative) in zip(splits, downloaded(), strict=True):
        plan.versions[name] = model_version
        inside = str(Path(partitions_dir).resolve()) + os.sep
        for key, (path, data_hash) in sorted(found.items()):
            # relative to the partitions folder when in it (Azure ML moves that folder), else where it is
            data_file = str(path)
            if data_file.startswith(inside):
                data_file = Path(data_file[len(inside) :]).as_posix()
            plan.tasks.append(BatchTask(name, config.model_name, key, data_file, data_hash, model_version, relative))
    return plan


# ----------------------------------------------------------------------------------------------------- output


@dataclass(frozen=True)
class Scored:
    """Where a scored partition's rows are: `rows` rows of a batch file from `offset`, and what they were scored
    from (the sha256 of its input rows, the model version)."""

    file: Path
    offset: int
    rows: int
    data_hash: str
    model_version: str


def predictions_folder(output: Path, use_case: str) -> Path:
    return Path(output) / use_case


def batch_files(output: Path, use_case: str) -> list[Path]:
    folder = predictions_folder(output, use_case)
    return sorted(folder.glob(f"{BATCH_FILE_PREFIX}*.parquet")) if folder.is_dir() else []


def file_partitions(path: Path) -> list[tuple[str, str, str, int]] | None:
    """The partitions a batch file holds, in row order, from its Parquet metadata: (key, sha256 of the input rows,
    model version, rows); None when the file is not a readable batch file."""
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata or {}
        entries = json.loads(metadata[_METADATA_KEY])["partitions"]
        return [(str(key), str(data_hash), str(version), int(rows)) for key, data_hash, version, rows in entries]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def scored_partitions(output: Path, use_case: str) -> dict[str, list[Scored]]:
    """Every partition the use case's batch files hold: key -> where (a partition is in two files between its
    scoring from new rows or by a new version and the end of that run, when the older rows are removed)."""
    found: dict[str, list[Scored]] = {}
    for path in batch_files(output, use_case):
        offset = 0
        for key, data_hash, version, rows in file_partitions(path) or []:
            found.setdefault(key, []).append(Scored(path, offset, rows, data_hash, version))
            offset += rows
    return found


def finished(found: dict[str, list[Scored]], tasks: Iterable[BatchTask]) -> dict[str, Scored]:
    """The tasks already scored from the same rows by the same model version: key -> where its rows are."""
    out: dict[str, Scored] = {}
    for task in tasks:
        for place in found.get(task.key, ()):
            if place.data_hash == task.data_hash and place.model_version == task.model_version:
                out[task.key] = place
                break
    return out


def read_partition(output: Path, use_case: str, key: str = "") -> pd.DataFrame:
    """One partition's predictions (rows, `prediction`, `model_name`, `model_version`), read from the one batch
    file that holds it (its metadata says where); the newest file when an interrupted run left two."""
    import pyarrow.parquet as pq

    places = scored_partitions(output, use_case).get(key)
    if not places:
        raise LookupError(f"{use_case}: no predictions for partition {key or '(single model)'} in {output}")
    place = max(places, key=lambda p: p.file.stat().st_mtime_ns)
    table = pq.read_table(place.file).slice(place.offset, place.rows)
    return table.to_pandas().reset_index(drop=True)


def _batch_name(entries: Sequence[Sequence[Any]]) -> str:
    """A batch file's name from what it holds: a retried batch rewrites its own file, never a second copy."""
    digest = hashlib.sha256(json.dumps([list(e) for e in entries]).encode()).hexdigest()[:20]
    return f"{BATCH_FILE_PREFIX}{digest}.parquet"


def _write_batch_file(table: Any, folder: Path, entries: list[tuple[str, str, str, int]]) -> Path:
    """A batch's predictions as one Parquet file, all-or-nothing, its partitions listed in its metadata."""
    import pyarrow.parquet as pq

    metadata = {**(table.schema.metadata or {}), _METADATA_KEY: json.dumps({"partitions": entries})}
    table = table.replace_schema_metadata(metadata)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _batch_name(entries)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def tidy(output: Path, use_case: str, keep: dict[str, Scored]) -> dict[str, Scored]:
    """Leave in the use case's folder only the rows in `keep` (this run's predictions): a batch file that also
    holds a partition scored again since, no longer planned or failed this time is rewritten without it
    (atomically, a new file then the old one removed), or removed when nothing of it is kept. Returns where the
    kept partitions are now. A kill in the middle leaves rows the next run removes. It also removes the
    temporary files of batches a kill -9 interrupted while they were written (no worker runs while it does)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = predictions_folder(output, use_case)
    if folder.is_dir():
        for stale in folder.glob(f".{BATCH_FILE_PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)
    wanted = {(place.file, place.offset): key for key, place in keep.items()}
    moved = dict(keep)
    for path in batch_files(output, use_case):
        entries = file_partitions(path)
        if entries is None:
            path.unlink()  # a batch file without its index cannot be read by partition: it would only mislead
            continue
        kept, offset = [], 0
        for entry in entries:
            if (path, offset) in wanted:
                kept.append((entry, offset))
            offset += entry[3]
        if len(kept) == len(entries):
            continue
        if kept:
            table = pq.read_table(path)
            pieces = pa.concat_tables([table.slice(start, entry[3]) for entry, start in kept])
            written = _write_batch_file(pieces, path.parent, [entry for entry, _ in kept])
            offset = 0
            for entry, _ in kept:
                moved[entry[0]] = Scored(written, offset, entry[3], entry[1], entry[2])
                offset += entry[3]
            if written == path:
                continue
        path.unlink()
    return moved


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


_MANIFESTS: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}


def _load_model(models_dir: Path, task: BatchTask, load: bool = True) -> tuple[Any, str]:
    """The partition's model, unpickled now and not kept; and the version it was trained in."""
    if not task.models_dir:
        raise LookupError(f"no production version of model {task.model_name} (train and register it first)")
    where = (str(models_dir), task.models_dir)
    if where not in _MANIFESTS:  # one parse per worker process: a set of 10,000 is one JSON file
        folder = Path(models_dir) / task.models_dir
        _MANIFESTS[where] = (str(folder), read_manifest(folder)["models"])
    folder, models = _MANIFESTS[where]
    entry = models.get(task.key)
    if entry is None:
        what = f"partition {task.key}" if task.key else "the model"
        raise LookupError(f"no production model for {what} in {task.model_name} version {task.model_version}")
    version = str(entry.get("version") or task.model_version)
    if not load:
        return None, version
    try:
        inside = key_folder(task.key)
    except ModelKeyError as exc:
        raise ModelSetError(str(exc)) from None
    # plain strings, not pathlib: 10,000 paths built through pathlib cost more than unpickling the models
    with open(os.path.join(folder, inside, MODEL_FILE), "rb") as handle:
        return pickle.load(handle), version


def _task_path(task: BatchTask, partitions_dir: Path) -> Path:
    path = Path(task.data_file)
    return path if path.is_absolute() else Path(partitions_dir) / path


def _rows_together(
    tasks: Sequence[BatchTask], data: Sequence[bytes], config: UseCaseConfig
) -> tuple[pd.DataFrame, list[int]] | None:
    """The rows of several partitions read and checked as one frame (partition i: rows starts[i]:starts[i+1]);
    None when they cannot be (different headers, partition columns in some files only, any problem): then one by
    one, so each partition gets its own reason.

    Why: parsing and checking a 48-row file costs pandas a few milliseconds of set-up per call, more than the
    model's predict; one parse and one check of a hundred files joined costs a fraction of that per file.
    """
    header: bytes | None = None
    bodies: list[bytes] = []
    starts = [0]
    for raw in data:
        first, _, body = raw.partition(b"\n")
        if header is None:
            header = first
        elif first != header:
            return None
        if not body.strip():
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
    if len(frame) != starts[-1]:
        return None
    columns = list(config.partition_columns)
    present = [c for c in columns if c in frame.columns]
    lengths = np.diff(starts)
    expected = {}
    if columns:
        values = [parse_model_key(task.key) for task in tasks]
        expected = {c: np.repeat(np.asarray([v.get(c) for v in values], dtype=object), lengths) for c in columns}
        if present and present != columns:
            return None
        if not present:  # files named by their key: the partition columns come from the keys
            for column in columns:
                frame[column] = expected[column]
    wanted = scoring_config(config)
    if check_frame(frame, wanted):
        return None
    typed = coerce(frame, wanted)
    for column in columns:
        typed[column] = typed[column].astype(str)
        if not np.array_equal(typed[column].to_numpy(dtype=object), expected[column]):
            return None  # rows of another partition: let the one-by-one path name it
    return typed, starts


def _failure(task: BatchTask, exc: BaseException, seconds: float) -> BatchResult:
    return BatchResult(
        task.use_case,
        task.key,
        "failed",
        model_version=task.model_version,
        seconds=seconds,
        error=f"{type(exc).__name__}: {one_line(exc)}",
    )


def _read_batch(
    tasks: Sequence[BatchTask], partitions_dir: Path, config: UseCaseConfig
) -> tuple[pd.DataFrame, list[int], list[BaseException | None]]:
    """The batch's rows as one frame (partition i: rows starts[i]:starts[i+1], none when it failed) and each
    partition's reading error. Each file is read once: its bytes are hashed (against the plan) and parsed."""
    data: list[bytes] = []
    errors: list[BaseException | None] = []
    for task in tasks:
        path = _task_path(task, partitions_dir)
        try:
            raw = path.read_bytes()
            if hashlib.sha256(raw).hexdigest() != task.data_hash:
                raise ValueError(f"{path.name} changed since the plan was made")
            data.append(raw)
            errors.append(None)
        except (OSError, ValueError) as exc:
            data.append(b"")
            errors.append(exc if isinstance(exc, ValueError) else ValueError(f"{path.name}: {one_line(exc)}"))
    together = None if any(errors) else _rows_together(tasks, data, config)
    if together is not None:
        return together[0], together[1], errors
    parts, starts = [], [0]
    for index, task in enumerate(tasks):
        rows = None
        if errors[index] is None:
            try:
                rows = read_new_rows(_task_path(task, partitions_dir), config, task.key)
            except (Exception, ModelSetError) as exc:  # noqa: BLE001 - isolate each partition; reported with its key
                errors[index] = exc
        if rows is not None:
            parts.append(rows)
        starts.append(starts[-1] + (0 if rows is None else len(rows)))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame, starts, errors


def _predict_batch(
    use_case: Any,
    tasks: Sequence[BatchTask],
    frame: pd.DataFrame,
    starts: Sequence[int],
    errors: list[BaseException | None],
    models_dir: Path,
) -> list[Any]:
    """Each partition's predictions (None where it failed; `errors` gets the reason): the use case's
    `predict_many` over the batch when it has one (its models only: at most a batch in memory), else each
    model's `predict`, one model in memory at a time."""
    predicted: list[Any] = [None] * len(tasks)
    config = use_case.config
    inputs = list(config.input_columns)
    todo = [i for i, error in enumerate(errors) if error is None]
    if use_case.has("predict_many") and todo:
        models, loaded = [], []
        for i in todo:
            try:
                models.append(_load_model(models_dir, tasks[i])[0])
                loaded.append(i)
            except (Exception, ModelSetError) as exc:  # noqa: BLE001 - isolate each partition
                errors[i] = exc
        out = None
        if loaded:
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in loaded])
            own_starts = np.concatenate([[0], np.cumsum([starts[i + 1] - starts[i] for i in loaded])]).astype(int)
            stacked = frame[inputs] if len(rows) == len(frame) else frame[inputs].iloc[rows].reset_index(drop=True)
            try:
                out = use_case.implementation.predict_many(models, stacked, own_starts.tolist())
            except Exception:  # noqa: BLE001 - the batch call failed as a whole: one by one, each with its reason
                out = None
        del models
        if out is not None and len(out) == len(loaded):
            for i, one in zip(loaded, out, strict=True):
                if isinstance(one, BaseException):
                    errors[i] = one
                else:
                    predicted[i] = np.asarray(one, dtype=float).reshape(-1)
            todo = []
        else:
            todo = loaded
    for i in todo:
        try:
            model, _ = _load_model(models_dir, tasks[i])
            rows = frame.iloc[starts[i] : starts[i + 1]].reset_index(drop=True)
            predicted[i] = predictions(model, rows[inputs])
            del model  # one model in memory at a time
        except (Exception, ModelSetError) as exc:  # noqa: BLE001 - isolate each partition; reported with its key
            errors[i] = exc
    for i, values in enumerate(predicted):
        n = starts[i + 1] - starts[i]
        if values is not None and len(values) != n:
            errors[i] = ValueError(f"the model returned {len(values)} predictions for {n} rows")
            predicted[i] = None
    return predicted


def _score_use_case(
    use_case: Any, tasks: Sequence[BatchTask], partitions_dir: Path, models_dir: Path, output: Path
) -> list[BatchResult]:
    """One use case's partitions of a worker's batch: read and checked together, predicted, and the scored ones
    written as one batch file (the input rows, the prediction, model name and version per row)."""
    import pyarrow as pa

    started = time.perf_counter()
    config = use_case.config
    frame, starts, errors = _read_batch(tasks, partitions_dir, config)
    if PREDICTION_COLUMN in frame.columns:
        clash = ValueError(f"the input has a column named {PREDICTION_COLUMN!r}, which the output adds")
        errors = [error or clash for error in errors]
    predicted = _predict_batch(use_case, tasks, frame, starts, errors, models_dir)
    scored = [i for i, values in enumerate(predicted) if values is not None and errors[i] is None]
    entries, versions = [], []
    for i in list(scored):
        try:
            versions.append(_load_model(models_dir, tasks[i], load=False)[1])
        except (Exception, ModelSetError) as exc:  # noqa: BLE001 - isolate each partition
            errors[i] = exc
            scored.remove(i)
            continue
        task = tasks[i]
        entries.append((task.key, task.data_hash, task.model_version, starts[i + 1] - starts[i]))
    if scored:
        lengths = [entry[3] for entry in entries]
        if len(scored) == len(tasks) and sum(lengths) == len(frame):
            out = frame.reset_index(drop=True)
        else:
            rows = np.concatenate([np.arange(starts[i], starts[i + 1]) for i in scored])
            out = frame.iloc[rows].reset_index(drop=True)
        out[PREDICTION_COLUMN] = np.concatenate([predicted[i] for i in scored])
        served = [f"{tasks[i].model_name}/{tasks[i].key}" if tasks[i].key else tasks[i].model_name for i in scored]
        out[MODEL_NAME_COLUMN] = np.repeat(np.asarray(served, dtype=object), lengths)
        out[MODEL_VERSION_COLUMN] = np.repeat(np.asarray(versions, dtype=object), lengths)
        table = pa.Table.from_pandas(out, preserve_index=False)
        _write_batch_file(table, predictions_folder(output, config.name), entries)
    each = (time.perf_counter() - started) / max(len(tasks), 1)
    results = []
    for i, task in enumerate(tasks):
        if errors[i] is not None:
            results.append(_failure(task, errors[i], each))
        else:
            n = starts[i + 1] - starts[i]
            results.append(BatchResult(task.use_case, task.key, "scored", n, task.model_version, each))
    return results


def score_batch(
    tasks: Sequence[BatchTask], partitions_dir: Path, models_dir: Path, output: Path, root: Path
) -> list[BatchResult]:
    """Score a worker's batch of partitions: per use case one batch file of the scored ones; one partition's
    failure is recorded, never raised. Results are in the order of `tasks`."""
    results: dict[int, BatchResult] = {}
    by_use_case: dict[str, list[int]] = {}
    for index, task in enumerate(tasks):
        by_use_case.setdefault(task.use_case, []).append(index)
    for name, indices in by_use_case.items():
        try:
            use_case = load_use_case(name, root)
        except Exception as exc:  # noqa: BLE001 - e.g. a use case no longer declared: each of its partitions fails
            for index in indices:
                results[index] = _failure(tasks[index], exc, 0.0)
            continue
        own = _score_use_case(use_case, [tasks[i] for i in indices], partitions_dir, models_dir, output)
        for index, result in zip(indices, own, strict=True):
            results[index] = result
    return [results[i] for i in range(len(tasks))]


# ---------------------------------------------------------------------------------------------------- combine


def combine(keys: Sequence[str], places: dict[str, Scored], target: Path) -> int:
    """The scored partitions `keys` of a use case, in that order, as one Parquet file `target` (written
    atomically): the same file whatever batches they were scored in (a rerun after a kill, Azure ML's
    mini-batches). Each batch file is read once while its partitions come up (they are consecutive unless a
    rerun split a batch) and written in chunks of a few hundred thousand rows. Returns the rows written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    runs: list[list[Any]] = []  # [file, offset, rows]: consecutive partitions of one file as one slice
    for key in keys:
        place = places[key]
        last = runs[-1] if runs else None
        if last is not None and last[0] == place.file and last[1] + last[2] == place.offset:
            last[2] += place.rows
        else:
            runs.append([place.file, place.offset, place.rows])
    uses = Counter(run[0] for run in runs)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    rows = 0
    writer = None
    open_tables: dict[Path, Any] = {}
    pending: list[Any] = []

    def flush() -> None:
        nonlocal writer
        table = pa.concat_tables(pending)
        pending.clear()
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)

    try:
        for path, offset, length in runs:
            if path not in open_tables:
                open_tables[path] = pq.read_table(path).replace_schema_metadata(None)
            table = open_tables[path]
            uses[path] -= 1
            if not uses[path]:
                del open_tables[path]
            piece = table.slice(offset, length)
            schema = writer.schema if writer is not None else (pending[0].schema if pending else None)
            if schema is not None and piece.schema != schema:
                piece = piece.cast(schema)  # e.g. a text column all missing in one batch (null type)
            pending.append(piece)
            rows += length
            if sum(p.num_rows for p in pending) >= _COMBINE_ROWS:
                flush()
        if pending:
            flush()
        if writer is None:
            raise ValueError(f"{target.name}: no scored partition to combine")
        writer.close()
        writer = None
        os.replace(tmp, target)
    finally:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
    return rows


def results_from_files(plan: BatchPlan, output: Path) -> list[BatchResult]:
    """What an Azure ML parallel job left (it writes only the batch files): each task scored or not."""
    results = list(plan.failed)
    found: dict[str, dict[str, Scored]] = {}
    for task in plan.tasks:
        if task.use_case not in found:
            own = [t for t in plan.tasks if t.use_case == task.use_case]
            found[task.use_case] = finished(scored_partitions(output, task.use_case), own)
        place = found[task.use_case].get(task.key)
        if place is None:
            results.append(
                BatchResult(task.use_case, task.key, "failed", 0, task.model_version, error="not scored (see logs)")
            )
        else:
            results.append(BatchResult(task.use_case, task.key, "scored", place.rows, task.model_version))
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
        "results": [dict(vars(r)) for r in results],
    }


def summary_json(record: dict[str, Any]) -> bytes:
    """The summary as indented JSON with each result on one line: readable, and written by JSON's C encoder
    (the indenting one is pure Python: half a second for 10,000 partitions)."""
    rest = {key: value for key, value in record.items() if key != "results"}
    head = json.dumps(rest, indent=2, sort_keys=True, default=str)
    lines = ",\n    ".join(json.dumps(result, sort_keys=True, default=str) for result in record.get("results", []))
    return (head[: -len("\n}")] + ',\n  "results": [\n    ' + lines + "\n  ]\n}\n").encode()
