"""Train one model (one use case, or one partition of it): FLAML AutoML, or a fixed fast estimator.

Why a regression over calendar and weather features rather than FLAML's ``ts_forecast``: scoring
requests only carry ``timeStamp, precip, temp`` rows, with no recent demand, so the served model must
predict from those columns alone; lags of the label would tie every prediction to the last training hour.
The forecasting hold-out is still time-based (the last ``horizon`` steps), so metrics measure real
out-of-time error. The returned model is a scikit-learn Pipeline whose first step builds the features from
the raw input columns.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.linalg import solve as scipy_solve
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ff.features import CalendarWeatherFeatures, NumericColumns, model_input_schema
from ff.spec import Spec as UseCase

REGRESSION_TEST_SIZE = 0.2


@dataclass
class TrainResult:
    """What training produced: the fitted pipeline, hold-out metrics and predictions, and how."""

    model: Pipeline
    metrics: dict[str, float]
    holdout_columns: dict[str, np.ndarray]  # [time column,] actual, predicted
    estimator: str
    config: dict = field(default_factory=dict)  # chosen hyperparameters
    fast_path: bool = False
    train_seconds: float = 0.0
    n_train: int = 0

    @property
    def holdout(self) -> pd.DataFrame:
        """The hold-out rows with actual and predicted values (built when asked: most models never plot it)."""
        return pd.DataFrame(self.holdout_columns)

    @property
    def input_schema(self) -> dict[str, str]:
        return model_input_schema(self.model)


def _too_few_rows(use_case: UseCase, rows: int) -> ValueError:
    return ValueError(f"{use_case.model_name}: {rows} rows are too few to hold out data for evaluation")


def _holdout_start(stamps, horizon: int) -> int:
    """Where the hold-out begins in time-sorted stamps of a regular series (the platform checks that prepared
    series are regular at their frequency): the last ``horizon`` steps are held out."""
    return max(len(stamps) - horizon, 0)


def split_holdout(df: pd.DataFrame, use_case: UseCase) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train/hold-out split: the last ``horizon`` steps for forecasting, a seeded 20 % sample otherwise."""
    if use_case.task == "forecasting":
        times = df[use_case.time_column]
        if not pd.api.types.is_datetime64_any_dtype(times):
            df = df.assign(**{use_case.time_column: pd.to_datetime(times)})
        if not df[use_case.time_column].is_monotonic_increasing:
            df = df.sort_values(use_case.time_column, kind="stable")
        split = _holdout_start(df[use_case.time_column].array, use_case.horizon)
        train, holdout = df.iloc[:split], df.iloc[split:]
    else:
        train, holdout = train_test_split(df, test_size=REGRESSION_TEST_SIZE, random_state=use_case.automl.seed)
    if len(train) < 2 or len(holdout) < 1:
        raise _too_few_rows(use_case, len(df))
    return train.reset_index(drop=True), holdout.reset_index(drop=True)


def feature_step(use_case: UseCase, one_hot: bool = False):
    """The raw-columns-to-features transformer of a use case."""
    if use_case.task == "forecasting":
        weather = [c for c in use_case.input_columns if c != use_case.time_column]
        temperature = "temp" if "temp" in weather else None
        return CalendarWeatherFeatures(use_case.time_column, tuple(weather), temperature, one_hot)
    return NumericColumns(tuple(use_case.input_columns))


def regression_metrics(actual: np.ndarray, predicted: np.ndarray, with_mape: bool) -> dict[str, float]:
    """rmse, mae, r2 and (forecasting) mape as a fraction, ignoring zero actuals."""
    actual, predicted = np.asarray(actual, dtype=float), np.asarray(predicted, dtype=float)
    error = predicted - actual
    total = float(((actual - actual.mean()) ** 2).sum())
    metrics = {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": float(1.0 - (error**2).sum() / total) if total > 0 else 0.0,
    }
    if with_mape:
        nonzero = actual != 0
        metrics["mape"] = float(np.mean(np.abs(error[nonzero] / actual[nonzero]))) if nonzero.any() else 0.0
    return metrics


def fast_pipeline(use_case: UseCase) -> Pipeline:
    """A fixed, unfitted scikit-learn pipeline (no search): ~ms to fit a 60-day hourly partition."""
    seed = use_case.automl.seed
    if use_case.automl.fast_path.estimator == "ridge":
        steps = [("features", feature_step(use_case, one_hot=True)), ("scale", StandardScaler())]
        return Pipeline([*steps, ("model", Ridge(alpha=1.0))])
    from sklearn.ensemble import HistGradientBoostingRegressor  # imported when used: the ridge path needs none

    estimator = HistGradientBoostingRegressor(max_iter=100, random_state=seed)
    return Pipeline([("features", feature_step(use_case)), ("model", estimator)])


def _constant_columns(var: np.ndarray, mean: np.ndarray, n_samples: int) -> np.ndarray:
    """Columns scikit-learn's StandardScaler treats as constant (variance within rounding of zero)."""
    eps = np.finfo(np.float64).eps
    return var <= n_samples * eps * var + (n_samples * mean * eps) ** 2


def _fit_scaler_and_ridge(model: Pipeline, matrix: np.ndarray, y: np.ndarray, use_case: UseCase) -> Pipeline:
    """Fit the scaler and ridge steps of ``model`` (its feature step already fitted) on a feature matrix."""
    features, scaler, ridge = (step for _, step in model.steps)
    n, width = matrix.shape
    if width == 0:
        raise ValueError(f"{use_case.model_name}: no input feature varies in the training data")
    if not (np.isfinite(matrix).all() and np.isfinite(y).all()):
        raise ValueError(f"{use_case.model_name}: the training data contain NaN or infinite values")
    mean = matrix.mean(axis=0)
    centred = matrix - mean
    var = np.einsum("ij,ij->j", centred, centred) / n
    scale = np.sqrt(var)
    scale[_constant_columns(var, mean, n) | (scale == 0)] = 1.0
    names = np.asarray(features.get_feature_names_out(), dtype=object)
    scaler.__dict__.update(
        feature_names_in_=names, n_features_in_=width, n_samples_seen_=np.int64(n), mean_=mean, var_=var, scale_=scale
    )
    scaled = centred / scale
    offset = scaled.mean(axis=0)  # ~0: Ridge centres its (already standardised) input again
    scaled -= offset
    y_mean = y.mean()
    gram = scaled.T @ scaled
    gram.flat[:: width + 1] += ridge.alpha
    coef = scipy_solve(gram, scaled.T @ (y - y_mean), assume_a="pos", overwrite_a=True)
    intercept = np.float64(y_mean - offset @ coef)
    ridge.__dict__.update(n_features_in_=width, coef_=coef, intercept_=intercept, n_iter_=None, solver_="cholesky")
    return model


def _ridge_fast_path(use_case: UseCase) -> Pipeline:
    model = fast_pipeline(use_case)
    if not isinstance(model.steps[-1][1], Ridge):
        raise ValueError(f"{use_case.model_name}: the closed-form fit is for the ridge fast path")
    return model


def fit_ridge_pipeline(X: pd.DataFrame, y: np.ndarray, use_case: UseCase) -> Pipeline:
    """The fast ridge pipeline (features, StandardScaler, Ridge), fitted in closed form with NumPy.

    Why: for a 500-row partition scikit-learn's fit spends ~8 ms in input checks and conversions around
    ~0.2 ms of arithmetic, which dominates thousands of small models. This solves the same problem as
    ``fast_pipeline(use_case).fit(X, y)`` (standardise, centre, Cholesky solve of (XᵀX + αI)w = Xᵀy) and sets
    the same fitted attributes on the same scikit-learn classes, so the saved model, its predictions and
    scoring are unchanged (tests compare both fits).
    """
    model = _ridge_fast_path(use_case)
    matrix = model.steps[0][1].fit_transform_array(X)
    return _fit_scaler_and_ridge(model, matrix, np.asarray(y, dtype=float), use_case)


def predict_ridge_pipeline(model: Pipeline, X: pd.DataFrame) -> np.ndarray:
    """``model.predict(X)`` for a fitted ridge fast-path pipeline, without scikit-learn's per-call checks."""
    return _predict_ridge_matrix(model, model.steps[0][1].transform_array(X))


def _predict_ridge_matrix(model: Pipeline, matrix: np.ndarray) -> np.ndarray:
    _, scaler, ridge = (step for _, step in model.steps)
    return (matrix - scaler.mean_) / scaler.scale_ @ ridge.coef_ + ridge.intercept_


predict_ridge_matrix = _predict_ridge_matrix


def is_ridge_fast_path(model: object) -> bool:
    """A fitted ridge fast-path pipeline (features with a candidate matrix, StandardScaler, Ridge)."""
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list) or len(steps) != 3:
        return False
    features, scaler, ridge = (step for _, step in steps)
    return (
        hasattr(features, "candidate_matrix")
        and hasattr(features, "feature_names_")
        and isinstance(scaler, StandardScaler)
        and isinstance(ridge, Ridge)
    )


def batch_trainable(use_case: UseCase, fast: bool) -> bool:
    """Whether ``train_ridge_partitions`` can train this use case's partitions together."""
    return fast and use_case.task == "forecasting" and use_case.automl.fast_path.estimator == "ridge"


def train_ridge_partitions(
    frame: pd.DataFrame, starts: Sequence[int], use_case: UseCase
) -> list[TrainResult | Exception]:
    """Train the ridge fast path on many partitions stacked in one frame (partition i is the rows
    ``starts[i]:starts[i + 1]``): each result equals ``train_model(partition, use_case, fast=True)``.

    Why: with thousands of small partitions, pandas' per-call overhead outweighs the arithmetic; computing the
    (row-wise) features once for the whole stack and fitting each partition on its slice of one matrix makes a
    model cost about a tenth of a separate ``train_model`` call. A partition that cannot be trained gets its
    exception in its place in the list; the others are unaffected.
    """
    if not batch_trainable(use_case, True):
        raise ValueError(f"{use_case.model_name}: only the ridge fast path of a forecasting use case is batched")
    columns = list(use_case.input_columns)
    names, candidates = feature_step(use_case, one_hot=True).candidate_matrix(frame[columns])
    times = frame[use_case.time_column].to_numpy()
    labels = frame[use_case.label].to_numpy(dtype=float)
    results: list[TrainResult | Exception] = []
    for first, end in zip(starts[:-1], starts[1:], strict=True):
        started = time.perf_counter()
        try:
            stamps = times[first:end]
            if len(stamps) > 1 and not (stamps[1:] >= stamps[:-1]).all():  # unsorted: the one-partition path
                results.append(train_model(frame.iloc[first:end], use_case, fast=True))
                continue
            split = _holdout_start(stamps, use_case.horizon)
            if split < 2 or split == len(stamps):
                raise _too_few_rows(use_case, len(stamps))
            model = _ridge_fast_path(use_case)
            train_rows = candidates[first : first + split]
            kept = model.steps[0][1].fit_candidates(names, train_rows)
            _fit_scaler_and_ridge(model, train_rows[:, kept], labels[first : first + split], use_case)
            actual = labels[first + split : end]
            predicted = _predict_ridge_matrix(model, candidates[first + split : end, kept])
            holdout = {use_case.time_column: stamps[split:], "actual": actual, "predicted": predicted}
            results.append(
                TrainResult(
                    model=model,
                    metrics=regression_metrics(actual, predicted, with_mape=True),
                    holdout_columns=holdout,
                    estimator="ridge",
                    fast_path=True,
                    train_seconds=time.perf_counter() - started,
                    n_train=split,
                )
            )
        except Exception as exc:  # noqa: BLE001 - one partition's error is its result, not the batch's
            results.append(exc)
    return results


def _fit_automl(features: pd.DataFrame, y: pd.Series, use_case: UseCase, budget: float):
    from flaml import AutoML  # imported here: FLAML takes seconds to import and scoring never needs it

    automl = AutoML()
    settings = use_case.automl
    with warnings.catch_warnings():
        # a trial of the search (enet on unscaled inputs, cut short by the budget) may not converge: that trial
        # scores worse and is not chosen; dozens of such warnings per search would bury the ones that matter
        warnings.simplefilter("ignore", ConvergenceWarning)
        automl.fit(
            X_train=features,
            y_train=y,
            task="regression",
            time_budget=budget,
            metric=settings.metric,
            estimator_list=list(settings.estimators),
            seed=settings.seed,
            n_jobs=1,
            verbose=0,
            split_type="time" if use_case.task == "forecasting" else "uniform",
            log_file_name="",
        )
    if automl.model is None:
        raise RuntimeError(f"{use_case.model_name}: FLAML found no model within {budget} s")
    return automl


def fit_model(
    train: pd.DataFrame, use_case: UseCase, *, fast: bool | None = None, time_budget_s: float | None = None
) -> tuple[Pipeline, str, dict]:
    """Fit one model on training rows: (pipeline, estimator name, chosen hyperparameters).

    ``fast`` None follows ``use_case.automl.fast_path.enabled``; ``time_budget_s`` overrides the configured
    FLAML budget (tests, smoke runs).
    """
    fast = use_case.automl.fast_path.enabled if fast is None else fast
    X_train, y_train = train[list(use_case.input_columns)], train[use_case.label].to_numpy(dtype=float)
    if fast and use_case.automl.fast_path.estimator == "ridge":
        return fit_ridge_pipeline(X_train, y_train, use_case), "ridge", {}
    if fast:
        return fast_pipeline(use_case).fit(X_train, y_train), use_case.automl.fast_path.estimator, {}
    features = feature_step(use_case).fit(X_train)
    budget = time_budget_s if time_budget_s is not None else use_case.automl.time_budget_s
    automl = _fit_automl(features.transform(X_train), pd.Series(y_train), use_case, budget)
    model = Pipeline([("features", features), ("model", automl.model.estimator)])
    config = {k: v.item() if hasattr(v, "item") else v for k, v in (automl.best_config or {}).items()}
    return model, str(automl.best_estimator), config


def train_model(
    df: pd.DataFrame, use_case: UseCase, *, fast: bool | None = None, time_budget_s: float | None = None
) -> TrainResult:
    """Fit one model on a prepared frame (one partition) and evaluate it on the hold-out.

    The model is fitted on the training part only, so the metrics describe exactly the model returned.
    """
    started = time.perf_counter()
    fast = use_case.automl.fast_path.enabled if fast is None else fast
    train, holdout = split_holdout(df, use_case)
    model, estimator, config = fit_model(train, use_case, fast=fast, time_budget_s=time_budget_s)
    X_hold, y_hold = holdout[list(use_case.input_columns)], holdout[use_case.label].to_numpy(dtype=float)
    closed_form = fast and use_case.automl.fast_path.estimator == "ridge"
    predicted = predict_ridge_pipeline(model, X_hold) if closed_form else model.predict(X_hold)
    out = {"actual": y_hold, "predicted": np.asarray(predicted, dtype=float)}
    if use_case.task == "forecasting":
        out = {use_case.time_column: holdout[use_case.time_column].to_numpy(), **out}  # datetime since the split
    metrics = regression_metrics(y_hold, predicted, with_mape=use_case.task == "forecasting")
    return TrainResult(
        model=model,
        metrics=metrics,
        holdout_columns=out,
        estimator=estimator,
        config=config,
        fast_path=fast,
        train_seconds=time.perf_counter() - started,
        n_train=len(train),
    )
