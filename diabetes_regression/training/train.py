"""Training for the diabetes sample: pure functions; tracking and registry are the platform's job."""

from __future__ import annotations

import math

import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split


def prepare_data(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Keep the modelled columns, in a fixed order, so training never sees stray columns."""
    return frame[columns].astype(float)


def split_data(
    frame: pd.DataFrame, label: str, test_size: float, random_state: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    features = frame.drop(columns=[label])
    x_train, x_test, y_train, y_test = train_test_split(
        features, frame[label], test_size=test_size, random_state=random_state
    )
    return x_train, x_test, y_train, y_test


def train_model(x_train: pd.DataFrame, y_train: pd.Series, alpha: float) -> Ridge:
    return Ridge(alpha=alpha).fit(x_train, y_train)


def get_model_metrics(model: Ridge, x_test: pd.DataFrame, y_test: pd.Series) -> dict[str, float]:
    predictions = model.predict(x_test)
    mse = float(mean_squared_error(y_test, predictions))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(y_test, predictions)),
        "r2": float(r2_score(y_test, predictions)),
    }
