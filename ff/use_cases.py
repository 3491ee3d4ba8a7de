"""The ff use cases behind the platform's contract: energy-demand forecasting (one series, or one model per
region) and regression, searched with FLAML, or fitted by a fixed fast estimator for thousands of partitions.

Pure data science: pandas, scikit-learn, FLAML; nothing of the platform, MLflow or Azure. The platform builds
`AutoMLUseCase(config, params)` from each configuration (`ff/*.json`) and calls the methods below.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ff import train_automl
from ff.series import regularise, series_frequency
from ff.spec import Params, Spec


class AutoMLUseCase:
    """One class for the three ff use cases; `model.task` chooses forecasting or regression."""

    Params = Params
    # FLAML's models (lightgbm, xgboost) need their packages where the model is loaded
    requirements = ("flaml", "lightgbm", "xgboost")

    def __init__(self, config: Any, params: Params):
        self.spec = Spec.of(config, params)
        self.partition_columns = tuple(config.partition_columns)

    def generate(self, options: dict[str, Any], destination: Path) -> None:
        """Synthetic hourly demand with weather (`ff.data_generator`), seeded: same options, same file."""
        from ff.data_generator import generate_energy, write_csv  # scipy is imported only when generating

        known = {"partitions", "days", "seed", "start"}
        unknown = set(options) - known - {"generator"}
        if unknown:
            raise ValueError(f"data.generate: unknown option(s) {sorted(unknown)} (known: {sorted(known)})")
        frame = generate_energy(
            int(options.get("partitions", 0)),
            int(options.get("days", 365)),
            int(options.get("seed", 42)),
            str(options.get("start", "2016-08-01")),
        )
        write_csv(frame, destination)

    def batch_input(self, options: dict[str, Any], destination: Path) -> None:
        """New rows to forecast: the `horizon` hours after the training data end, with weather (from the same
        generator, as a weather forecast would come), one file per region; no demand (that is what is scored).
        Regression use cases have no future to forecast: None of this, the platform's default applies."""
        from ff.data_generator import generate_energy, write_csv

        spec = self.spec
        if spec.task != "forecasting":
            raise NotImplementedError("regression: the platform scores the hold-out rows")
        time_column, horizon = spec.time_column, int(spec.horizon or 48)
        training = pd.read_csv(options["training_data"], usecols=[time_column, *self.partition_columns])
        end = pd.to_datetime(training[time_column]).max()
        regions = sorted(training[self.partition_columns[0]].astype(str).unique()) if self.partition_columns else []
        days = math.ceil(horizon / 24)
        seed = int(options.get("seed", 42)) + 1  # not the training data's weather draws
        frame = generate_energy(len(regions), days, seed, str(end + pd.Timedelta(hours=1)))
        frame = frame.drop(columns=[spec.label])
        destination.mkdir(parents=True, exist_ok=True)
        if not regions:
            write_csv(frame.iloc[:horizon], destination / "data.csv")
            return
        column = self.partition_columns[0]
        frame[column] = frame[column].astype(str)
        generated = sorted(frame[column].unique())
        for region, name in zip(generated, regions, strict=True):  # the generator names regions as training did
            rows = frame[frame[column] == region].iloc[:horizon].assign(**{column: name})
            write_csv(rows, destination / f"{name}.csv")

    def prepare(self, frame: pd.DataFrame) -> pd.DataFrame:
        spec = self.spec
        if spec.task != "forecasting":
            return frame.dropna().reset_index(drop=True)
        frequency = series_frequency(frame[spec.time_column], spec.frequency)
        return regularise(frame, spec.time_column, spec.label, frequency)

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return train_automl.split_holdout(frame, self.spec)

    def fit(self, train: pd.DataFrame) -> Any:
        model, estimator, _ = train_automl.fit_model(train, self.spec)
        model.estimator_name_ = estimator
        return model

    def metrics(self, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        return train_automl.regression_metrics(actual, predicted, with_mape=self.spec.task == "forecasting")

    def describe(self, model: Any) -> str:
        return getattr(model, "estimator_name_", type(model).__name__)

    def fit_many(self, frame: pd.DataFrame, starts: list[int]) -> list[Any] | None:
        """The ridge fast path over many partitions at once (one feature computation for all); each result
        equals split → fit → predict on the partition alone. Anything else: None (one by one)."""
        if not train_automl.batch_trainable(self.spec, self.spec.automl.fast_path.enabled):
            return None
        out: list[Any] = []
        times = frame[self.spec.time_column].to_numpy()
        for first, end, result in zip(
            starts[:-1], starts[1:], train_automl.train_ridge_partitions(frame, starts, self.spec), strict=True
        ):
            if isinstance(result, Exception):
                out.append(result)
                continue
            result.model.estimator_name_ = result.estimator
            # the hold-out rows the predictions are for: the last ones in time (an unsorted partition was sorted
            # by its split, so its hold-out is not the last rows of the stack)
            stamps = times[first:end]
            if (stamps[1:] >= stamps[:-1]).all():
                holdout = frame.iloc[first + result.n_train : end]
            else:
                holdout = self.split(frame.iloc[first:end])[1]
            out.append((result.model, holdout, result.holdout_columns["predicted"]))
        return out

    def predict_many(self, models: list[Any], frame: pd.DataFrame, starts: list[int]) -> list[Any] | None:
        """Batch scoring of many ridge fast-path partitions stacked in one frame: the calendar and weather
        features computed once for all, each partition's prediction equal to its `model.predict` on its rows.
        Anything else: None (one by one)."""
        if not models or not all(train_automl.is_ridge_fast_path(m) for m in models):
            return None
        names, candidates = models[0].steps[0][1].candidate_matrix(frame[list(self.spec.input_columns)])
        position = {name: i for i, name in enumerate(names)}
        out: list[Any] = []
        for model, first, end in zip(models, starts[:-1], starts[1:], strict=True):
            try:
                kept = [position[name] for name in model.steps[0][1].feature_names_]
                out.append(train_automl.predict_ridge_matrix(model, candidates[first:end, kept]))
            except Exception as exc:  # noqa: BLE001 - one partition's failure is its own
                out.append(exc)
        return out

    def automl_job(self) -> dict[str, Any]:
        """The same search as an Azure ML AutoML job (cloud mode), in the platform's plain description."""
        automl = self.spec.automl
        algorithms = list(dict.fromkeys(AUTOML_ALGORITHMS[e] for e in automl.estimators))
        return {
            "task": self.spec.task,
            "primary_metric": AUTOML_PRIMARY_METRIC[automl.metric],
            "allowed_algorithms": algorithms,
            # Azure AutoML needs minutes, not seconds: below 15 a forecasting search rarely finishes one model
            "timeout_minutes": max(15, math.ceil(automl.time_budget_s / 60)),
        }


# FLAML metric -> AutoML primary metric. MAPE has no AutoML counterpart as a primary metric; the normalized mean
# absolute error is the closest scale-free one (AutoML still reports MAPE among the run's metrics).
AUTOML_PRIMARY_METRIC = {
    "rmse": "NormalizedRootMeanSquaredError",
    "mae": "NormalizedMeanAbsoluteError",
    "mape": "NormalizedMeanAbsoluteError",
    "r2": "R2Score",
}
# FLAML estimator -> AutoML algorithm (same family; AutoML has no separate histogram GBM or depth-limited XGB).
AUTOML_ALGORITHMS = {
    "lgbm": "LightGBM",
    "rf": "RandomForest",
    "extra_tree": "ExtremeRandomTrees",
    "xgboost": "XGBoostRegressor",
    "xgb_limitdepth": "XGBoostRegressor",
    "histgb": "GradientBoosting",
    "kneighbor": "KNN",
    "enet": "ElasticNet",
}
