"""Prepare through the use-case contract: raw data into the datastore, checked, partitioned, one file a model.

Order, and why: the declared checks run on the raw rows first (bad data fails before anything is written,
naming the file, the column and the problem); then rows are grouped by the partition columns (vectorised: one
sort for 10,000 partitions); then each partition goes through the use case's own `prepare` (sorting,
regularising a series); then a time series must be regular at its declared (or detected) frequency and every
partition must have its minimum rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_service.data_checks import DataValidationError, check_frequency, read_csv, validate
from ml_service.pipelines.training import ModelTask, config_hash, model_id, partition_path, write_csv
from ml_service.registry.model_set import model_key
from ml_service.use_case import LoadedUseCase
from ml_service.util.files import file_sha256


def raw_data(use_case: LoadedUseCase, datastore: Path, options: dict[str, Any] | None = None) -> Path:
    """The use case's raw file in the datastore: copied from the project, or written by its `generate`."""
    source = use_case.root / use_case.config.data.path
    target = datastore / use_case.name / source.name
    target.parent.mkdir(parents=True, exist_ok=True)
    generate = use_case.config.data.generate
    if generate is not None and (options or not source.is_file()):
        if not use_case.has("generate"):
            raise ValueError(f"{use_case.name}: data.generate is set but {use_case.config.code} has no generate()")
        staging = target.with_name(f".{target.name}.tmp")
        use_case.implementation.generate({**generate, **(options or {})}, staging)
        staging.replace(target)
        return target
    if not source.is_file():
        raise FileNotFoundError(f"{use_case.name}: raw data {source} not found (data.path in {use_case.config.path})")
    shutil.copyfile(source, target)
    return target


def trained_raw_data(use_case: LoadedUseCase, datastore: Path) -> Path:
    """The raw data the models were trained on when the datastore has it (a run with --data-option trained on
    other data than the project's default), else the project's own (`raw_data`)."""
    trained_on = datastore / use_case.name / Path(use_case.config.data.path).name
    return trained_on if trained_on.is_file() else raw_data(use_case, datastore)


def _groups(frame: pd.DataFrame, columns: list[str]) -> tuple[pd.DataFrame, list[str], np.ndarray, np.ndarray]:
    """Frame sorted by partition (stable), each partition's key, start and end row."""
    group = np.zeros(len(frame), dtype=np.int64)
    for column in columns:  # combined sorted codes, column by column
        codes, uniques = pd.factorize(frame[column], sort=True)
        group = group * max(len(uniques), 1) + codes
    order = np.arange(len(frame)) if bool((group[1:] >= group[:-1]).all()) else np.argsort(group, kind="stable")
    ordered = frame.take(order).reset_index(drop=True)
    group = group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    ends = np.r_[starts[1:], len(ordered)]
    firsts = ordered[columns].iloc[starts].astype(str).itertuples(index=False, name=None)
    keys = [model_key(dict(zip(columns, values, strict=True))) for values in firsts]
    return ordered, keys, starts, ends


def prepare_frame(frame: pd.DataFrame, use_case: LoadedUseCase, source: str) -> dict[str, pd.DataFrame]:
    """The prepare step in memory: `{partition key: prepared rows}` (key "" when not partitioned)."""
    config = use_case.config
    frame = validate(frame, config, source)
    if config.partition_columns:
        ordered, keys, starts, ends = _groups(frame, list(config.partition_columns))
    else:
        ordered, keys, starts, ends = frame.reset_index(drop=True), [""], np.array([0]), np.array([len(frame)])
    own_prepare = use_case.implementation.prepare if use_case.has("prepare") else None
    time_column = config.time.column if config.time else None
    prepared = {}
    problems = []
    for key, begin, end in zip(keys, starts.tolist(), ends.tolist(), strict=True):
        where = f"{source}: partition {key}" if key else source
        part = ordered.iloc[begin:end].reset_index(drop=True)
        try:
            if time_column and not part[time_column].is_monotonic_increasing:
                part = part.sort_values(time_column, kind="stable").reset_index(drop=True)
            if own_prepare is not None:
                part = own_prepare(part)
            if time_column:
                check_frequency(part, config, where)
            if len(part) < config.checks.min_rows:
                raise DataValidationError(
                    where, [f"only {len(part)} usable rows, need at least {config.checks.min_rows}"]
                )
        except DataValidationError as exc:
            problems.append(str(exc))
            continue
        prepared[key] = part
    if problems:
        raise DataValidationError(source, [f"{len(problems)} partition(s) unusable: {problems[0]}"] + problems[1:3])
    return dict(sorted(prepared.items()))


def prepare_use_case(
    use_case: LoadedUseCase,
    datastore: Path,
    prepared_dir: Path,
    options: dict[str, Any] | None = None,
    only: set[str] | None = None,
) -> tuple[list[ModelTask], Path]:
    """Materialise, check and partition one use case's data into `prepared_dir/<use case>/`; plan its models
    (`only`: just these partition keys, e.g. the ones monitoring selected for retraining)."""
    raw = raw_data(use_case, datastore, options)
    parts = prepare_frame(read_csv(raw, use_case.config), use_case, str(raw))
    if only is not None:
        unknown = sorted(only - set(parts))
        if unknown:
            raise ValueError(f"{use_case.name}: no data for partition(s) {', '.join(unknown[:5])} asked to retrain")
        parts = {key: part for key, part in parts.items() if key in only}
    folder = prepared_dir / use_case.name
    if folder.exists():
        shutil.rmtree(folder)
    digest = config_hash(use_case)
    tasks = []
    for key, part in parts.items():
        path = write_csv(part, partition_path(folder, key))
        tasks.append(
            ModelTask(
                use_case=use_case.name,
                model_id=model_id(use_case.model_name, key),
                model_name=use_case.model_name,
                key=key,
                data_file=path.relative_to(prepared_dir).as_posix(),
                data_hash=file_sha256(path),
                config_hash=digest,
            )
        )
    return tasks, raw
