"""The diabetes_regression use case behind the platform's contract: one Ridge model on the diabetes data.

Pure data science (pandas, scikit-learn); the platform builds `DiabetesRidge(config, params)` from
`parameters.json` and calls these methods. The training functions themselves are in `training/train.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from diabetes_regression.training import train as training

COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6", "Y"]


class Params(BaseModel):
    """The `model` section of parameters.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(0.5, ge=0)
    test_size: float = Field(0.2, gt=0, lt=1)
    random_state: int = 42


def diabetes_frame() -> pd.DataFrame:
    """scikit-learn's bundled raw diabetes data (no network), with the columns of Azure's "Sample: Diabetes"."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes(scaled=False, as_frame=True)
    frame = bunch.frame.rename(columns=str.upper).rename(columns={"TARGET": "Y"})
    return frame[COLUMNS]


class DiabetesRidge:
    Params = Params

    def __init__(self, config: Any, params: Params):
        self.params = params
        self.label = config.label
        self.features = list(config.input_columns)

    def generate(self, options: dict[str, Any], destination: Path) -> None:
        """Write the data file from scikit-learn's copy when it is missing (a project without the CSV)."""
        destination.parent.mkdir(parents=True, exist_ok=True)
        diabetes_frame().to_csv(destination, index=False)

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        return training.split_rows(frame, self.params.test_size, self.params.random_state)

    def fit(self, train: pd.DataFrame) -> Any:
        return training.train_model(train[self.features], train[self.label], self.params.alpha)

    def metrics(self, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        return training.regression_metrics(actual, predicted)
