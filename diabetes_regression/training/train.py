"""Training for the diabetes sample: pure functions; data checks, tracking and registry are the platform's."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split


def split_rows(frame: pd.DataFrame, test_size: float, random_state: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A seeded random split of whole rows into training and hold-out rows."""
    train, holdout = train_test_split(frame, test_size=test_size, random_state=random_state)
    return train, holdout


def train_model(x_train: pd.DataFrame, y_train: pd.Series, alpha: float) -> Ridge:
    return Ridge(alpha=alpha).fit(x_train, y_train)


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    mse = float(mean_squared_error(actual, predicted))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(actual, predicted)),
        "r2": float(r2_score(actual, predicted)),
    }
