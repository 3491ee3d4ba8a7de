"""Feature engineering inside the model, so the scoring service can send raw request rows.

Why in a transformer: the trained pipeline's first step turns raw input columns (``timeStamp``, ``precip``,
``temp``; or the diabetes measurements) into model features, so training and scoring can never drift apart.
Classes live here (not in the training module) so unpickling a model imports only pandas/numpy/sklearn.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

BALANCE_POINT_F = 65.0  # degrees Fahrenheit where neither heating nor cooling is needed


def _require(X: pd.DataFrame, columns: Sequence[str]) -> None:
    if not isinstance(X, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame with columns {list(columns)}, got {type(X).__name__}")
    missing = [c for c in columns if c not in X.columns]
    if missing:
        raise ValueError(f"missing input column(s) {missing}; the model needs {list(columns)}")


def _stack(features: dict[str, np.ndarray], names: Sequence[str], rows: int) -> np.ndarray:
    out = np.empty((rows, len(names)), dtype=float)
    for i, name in enumerate(names):
        out[:, i] = features[name]
    return out


class CalendarWeatherFeatures(TransformerMixin, BaseEstimator):
    """Calendar (hour, weekday, season; no holidays) and weather features from a time stamp column.

    ``one_hot`` encodes hour-of-day (split weekday/weekend) and weekday as indicators, which a linear model
    needs; trees get the plain numbers. Heating and cooling degrees (around 65 F) are added for
    ``temperature_column`` because demand responds to temperature in a U shape. Columns constant during
    fit are dropped (FLAML drops them too, and they carry no information).
    """

    def __init__(
        self,
        time_column: str = "timeStamp",
        weather_columns: Sequence[str] = ("precip", "temp"),
        temperature_column: str | None = "temp",
        one_hot: bool = False,
    ):
        self.time_column = time_column
        self.weather_columns = weather_columns
        self.temperature_column = temperature_column
        self.one_hot = one_hot

    def _all_features(self, X: pd.DataFrame) -> dict[str, np.ndarray]:
        stamps = X[self.time_column]
        times = pd.DatetimeIndex(stamps if pd.api.types.is_datetime64_any_dtype(stamps) else pd.to_datetime(stamps))
        hour = times.hour.to_numpy()
        dow = times.day_of_week.to_numpy()
        doy = times.day_of_year.to_numpy().astype(float)
        weekend = (dow >= 5).astype(float)
        out: dict[str, np.ndarray] = {}
        if self.one_hot:
            # indicator columns in the order weekday_hour_0, weekend_hour_0, weekday_hour_1, ...
            slot = (2 * hour + (dow >= 5))[:, None] == np.arange(48)
            for h in range(24):
                out[f"weekday_hour_{h}"] = slot[:, 2 * h].astype(float)
                out[f"weekend_hour_{h}"] = slot[:, 2 * h + 1].astype(float)
            days = dow[:, None] == np.arange(7)
            for d in range(7):
                out[f"dow_{d}"] = days[:, d].astype(float)
        else:
            out["hour"] = hour.astype(float)
            out["day_of_week"] = dow.astype(float)
            out["month"] = times.month.to_numpy().astype(float)
            out["day_of_year"] = doy
            out["is_weekend"] = weekend
            out["hour_sin"] = np.sin(2 * np.pi * hour / 24)
            out["hour_cos"] = np.cos(2 * np.pi * hour / 24)
        out["year_sin"] = np.sin(2 * np.pi * doy / 365.25)
        out["year_cos"] = np.cos(2 * np.pi * doy / 365.25)
        for column in self.weather_columns:
            out[column] = X[column].to_numpy(dtype=float)
        if self.temperature_column is not None:
            temp = X[self.temperature_column].to_numpy(dtype=float)
            daytime = ((hour >= 8) & (hour <= 20)).astype(float)
            out["heating_degrees"] = np.clip(BALANCE_POINT_F - temp, 0.0, None)
            out["cooling_degrees"] = np.clip(temp - BALANCE_POINT_F, 0.0, None)
            out["cooling_degrees_daytime"] = out["cooling_degrees"] * daytime
        return out

    def candidate_matrix(self, X: pd.DataFrame) -> tuple[list[str], np.ndarray]:
        """Every feature before constant ones are dropped: (names, matrix). Rows are computed independently, so
        the matrix of several partitions stacked is their matrices stacked: many partitions, one computation."""
        _require(X, [self.time_column, *self.weather_columns])
        features = self._all_features(X)
        return list(features), _stack(features, list(features), len(X))

    def fit_candidates(self, names: Sequence[str], matrix: np.ndarray) -> np.ndarray:
        """Fit on the candidate matrix of the training rows; return the indices of the columns kept."""
        finite = np.isfinite(matrix).all(axis=0)
        if not finite.all():  # a NaN would make the column look constant and drop it without a word
            bad = [name for name, ok in zip(names, finite, strict=True) if not ok]
            raise ValueError(f"missing or infinite values in feature(s) {bad}: fill or drop them before training")
        varies = np.ptp(matrix, axis=0) > 0 if len(matrix) else np.zeros(matrix.shape[1], dtype=bool)
        self.feature_names_ = [name for name, keep in zip(names, varies, strict=True) if keep]
        self.input_schema_ = {self.time_column: "datetime", **{c: "number" for c in self.weather_columns}}
        return np.flatnonzero(varies)

    def fit(self, X: pd.DataFrame, y=None):
        self.fit_transform_array(X)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(self.transform_array(X), columns=self.feature_names_, index=X.index)

    def fit_transform_array(self, X: pd.DataFrame) -> np.ndarray:
        """Fit, and the training features as one array (columns in ``feature_names_`` order), computed once:
        a closed-form fit needs only the matrix, and building a DataFrame costs more than the features."""
        names, matrix = self.candidate_matrix(X)
        return matrix[:, self.fit_candidates(names, matrix)]

    def transform_array(self, X: pd.DataFrame) -> np.ndarray:
        _require(X, list(self.input_schema_))
        return _stack(self._all_features(X), self.feature_names_, len(X))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(self.feature_names_, dtype=object)


class NumericColumns(TransformerMixin, BaseEstimator):
    """Select the model's numeric input columns in a fixed order (extra request columns are ignored)."""

    def __init__(self, columns: Sequence[str] = ()):
        self.columns = columns

    def fit(self, X: pd.DataFrame, y=None):
        _require(X, self.columns)
        self.input_schema_ = {c: "number" for c in self.columns}
        self.feature_names_ = list(self.columns)
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        _require(X, self.columns)
        return X.loc[:, list(self.columns)].astype(float)

    def fit_transform_array(self, X: pd.DataFrame) -> np.ndarray:
        return self.fit(X).transform_array(X)

    def transform_array(self, X: pd.DataFrame) -> np.ndarray:
        _require(X, self.columns)
        return X[list(self.columns)].to_numpy(dtype=float)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray(self.feature_names_, dtype=object)


def model_input_schema(model) -> dict[str, str]:
    """Raw input columns a trained ff model expects, ``{column: "datetime" | "number"}``, in order."""
    schema = getattr(model, "input_schema_", None)
    if schema is None and hasattr(model, "steps"):
        schema = getattr(model.steps[0][1], "input_schema_", None)
    if schema is None and hasattr(model, "feature_names_in_"):
        schema = {str(c): "number" for c in model.feature_names_in_}
    if schema is None:
        raise ValueError(f"cannot tell the input columns of {type(model).__name__}")
    return dict(schema)
