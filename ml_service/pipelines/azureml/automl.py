"""A use case as an Azure ML AutoML job (cloud mode): Azure ML's AutoML service searches the models instead of
the use case's own `fit`.

The use case describes the search in plain data (`automl_job()`, see `ml_service/use_case.py`); this module
only turns that description into `azure.ai.ml.automl` objects. The description::

    {"task": "forecasting" | "regression" | "classification",
     "primary_metric": "NormalizedMeanAbsoluteError",       # an AutoML primary metric
     "allowed_algorithms": ["LightGBM", "RandomForest"],     # AutoML algorithm names
     "timeout_minutes": 15,
     "n_cross_validations": 5 | "auto"}

The platform adds what it knows from the configuration: the label, and for a time series its time column,
horizon, frequency and partition columns (time-series ids). The training data is an MLTable folder (`MLTable`
+ `data.csv` of the configured columns of the raw data), written next to the job YAML and uploaded on submission.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ml_service.config import ConfigError
from ml_service.data_checks import read_csv
from ml_service.pipelines.preparation import raw_data
from ml_service.use_case import LoadedUseCase

MLTABLE = """\
# Training data of an Azure ML AutoML job: one CSV with a header row.
paths:
  - file: ./data.csv
transformations:
  - read_delimited:
      delimiter: ","
      encoding: utf8
      header: all_files_same_headers
"""
DATA_FILE = "data.csv"
TASKS = ("forecasting", "regression", "classification")


def description(use_case: LoadedUseCase) -> dict[str, Any]:
    if not use_case.has("automl_job"):
        raise ConfigError(f"use case {use_case.name}: {use_case.config.code} has no automl_job(): no AutoML job")
    spec = dict(use_case.implementation.automl_job())
    if spec.get("task") not in TASKS:
        raise ConfigError(
            f"use case {use_case.name}: automl_job() task must be one of {TASKS}, got {spec.get('task')!r}"
        )
    if spec["task"] == "forecasting" and use_case.config.time is None:
        raise ConfigError(f"use case {use_case.name}: an AutoML forecasting job needs the configuration's 'time'")
    return spec


def write_training_data(use_case: LoadedUseCase, folder: Path, datastore: Path) -> Path:
    """The use case's raw data (copied or generated, as prepare does) as an MLTable folder."""
    frame = read_csv(raw_data(use_case, datastore), use_case.config)
    missing = [c for c in use_case.config.columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{use_case.name}: raw data lacks column(s) {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    frame[list(use_case.config.columns)].to_csv(folder / DATA_FILE, index=False)
    (folder / "MLTable").write_text(MLTABLE, encoding="utf-8")
    return folder


def build_automl_job(use_case: LoadedUseCase, training_data: Path, compute: str, experiment_name: str, tags=None):
    """The AutoML job of one use case; `training_data` is an MLTable folder."""
    from azure.ai.ml import Input, automl

    spec = description(use_case)
    config = use_case.config
    common = dict(
        training_data=Input(type="mltable", path=str(training_data)),
        target_column_name=config.label,
        primary_metric=spec["primary_metric"],
        compute=compute,
        experiment_name=experiment_name,
        tags={"model_name": config.model_name, **(tags or {})},
    )
    folds = spec.get("n_cross_validations", "auto" if spec["task"] == "forecasting" else 5)
    if spec["task"] == "forecasting":
        assert config.time is not None
        job = automl.forecasting(**common, n_cross_validations=folds)
        job.set_forecast_settings(
            time_column_name=config.time.column,
            forecast_horizon=config.time.horizon,
            time_series_id_column_names=list(config.partition_columns) or None,
            frequency=config.time.frequency or None,
        )
    elif spec["task"] == "regression":
        job = automl.regression(**common, n_cross_validations=folds)
    else:
        job = automl.classification(**common, n_cross_validations=folds)
    job.display_name = f"{config.model_name}-automl"
    if spec.get("allowed_algorithms"):
        job.set_training(allowed_training_algorithms=list(spec["allowed_algorithms"]))
    job.set_limits(timeout_minutes=int(spec.get("timeout_minutes", 15)), enable_early_termination=True)
    return job


def automl_validation_errors(job: Any) -> dict[str, str]:
    """AutoML jobs have no `_validate()`: the SDK validates them as the one node of a pipeline job."""
    from azure.ai.ml.entities import PipelineJob

    result = PipelineJob(jobs={"automl": job}, compute=job.compute)._validate()
    return {} if result.passed else dict(result.error_messages)
