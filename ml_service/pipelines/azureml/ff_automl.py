"""ff use cases as Azure ML AutoML jobs (cloud mode): forecasting or regression, from the use case's config.

Locally (and in the parallel job) ff trains with FLAML; this is the alternative where Azure ML's AutoML
service searches the models. Mapping from the use case in its pipeline config:

| config | AutoML job |
| --- | --- |
| `task` forecasting / regression | `automl.forecasting(...)` / `automl.regression(...)` |
| `label` | `target_column_name` |
| `time_column`, `horizon` (hours) | `forecasting_settings.time_column_name`, `forecast_horizon`, `frequency: h` |
| `partition_columns` | `time_series_id_column_names` (one job, one series per partition) |
| `automl.metric` | `primary_metric` (see `PRIMARY_METRIC`; AutoML has no MAPE primary metric) |
| `automl.time_budget_s` | `limits.timeout_minutes` (rounded up, at least `MIN_TIMEOUT_MINUTES`) |
| `automl.estimators` | `training.allowed_training_algorithms` (see `ALGORITHMS`) |

The training data is an MLTable folder (`MLTable` + `data.csv`, the configured columns of the raw data),
written next to the job YAML and uploaded by the SDK on submission.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# FLAML metric -> AutoML primary metric. MAPE has no AutoML counterpart as a primary metric; the normalized
# mean absolute error is the closest scale-free one (AutoML still reports MAPE among the run's metrics).
PRIMARY_METRIC = {
    "rmse": "NormalizedRootMeanSquaredError",
    "mae": "NormalizedMeanAbsoluteError",
    "mape": "NormalizedMeanAbsoluteError",
    "r2": "R2Score",
}
# FLAML estimator -> AutoML algorithm (same family; AutoML has no separate histogram GBM or depth-limited XGB).
ALGORITHMS = {
    "lgbm": "LightGBM",
    "rf": "RandomForest",
    "extra_tree": "ExtremeRandomTrees",
    "xgboost": "XGBoostRegressor",
    "xgb_limitdepth": "XGBoostRegressor",
    "histgb": "GradientBoosting",
    "kneighbor": "KNN",
    "enet": "ElasticNet",
}
# Azure AutoML needs minutes, not seconds; below 15 minutes a forecasting search rarely finishes one model.
MIN_TIMEOUT_MINUTES = 15
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


def allowed_algorithms(estimators: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for estimator in estimators:
        algorithm = ALGORITHMS[estimator]
        if algorithm not in out:
            out.append(algorithm)
    return out


def timeout_minutes(time_budget_s: float) -> int:
    return max(MIN_TIMEOUT_MINUTES, math.ceil(time_budget_s / 60))


def write_training_data(use_case: Any, folder: Path, datastore: Path) -> Path:
    """The use case's raw data (copied or generated, as ff's own prepare does) as an MLTable folder."""
    import pandas as pd

    from ff.copy_data import materialize_raw_data

    raw = materialize_raw_data(use_case, datastore)
    frame = pd.read_csv(raw)
    missing = [c for c in use_case.columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{use_case.model_name}: raw data {raw} lacks column(s) {', '.join(missing)}")
    folder.mkdir(parents=True, exist_ok=True)
    frame[list(use_case.columns)].to_csv(folder / DATA_FILE, index=False)
    (folder / "MLTable").write_text(MLTABLE, encoding="utf-8")
    return folder


def build_automl_job(use_case: Any, training_data: Path, compute: str, experiment_name: str, tags=None):
    """The AutoML job of one ff use case; `training_data` is an MLTable folder."""
    from azure.ai.ml import Input, automl

    common = dict(
        training_data=Input(type="mltable", path=str(training_data)),
        target_column_name=use_case.label,
        primary_metric=PRIMARY_METRIC[use_case.automl.metric],
        compute=compute,
        experiment_name=experiment_name,
        tags={"model_name": use_case.model_name, **(tags or {})},
    )
    if use_case.task == "forecasting":
        job = automl.forecasting(**common, n_cross_validations="auto")
        job.set_forecast_settings(
            time_column_name=use_case.time_column,
            forecast_horizon=use_case.horizon,
            time_series_id_column_names=list(use_case.partition_columns) or None,
            frequency="h",
        )
    elif use_case.task == "regression":
        job = automl.regression(**common, n_cross_validations=5)
    else:
        raise ValueError(f"{use_case.model_name}: task {use_case.task!r} has no AutoML job")
    job.display_name = f"{use_case.model_name}-automl"
    job.set_training(allowed_training_algorithms=allowed_algorithms(use_case.automl.estimators))
    job.set_limits(timeout_minutes=timeout_minutes(use_case.automl.time_budget_s), enable_early_termination=True)
    return job


def automl_validation_errors(job: Any) -> dict[str, str]:
    """AutoML jobs have no `_validate()`: the SDK validates them as the one node of a pipeline job."""
    from azure.ai.ml.entities import PipelineJob

    result = PipelineJob(jobs={"automl": job}, compute=job.compute)._validate()
    return {} if result.passed else dict(result.error_messages)
