"""The your_use_case use case: one scikit-learn regression per partition (many models) behind the platform's
use-case contract.

Pure data science (pandas, scikit-learn, pydantic): nothing here imports the platform, MLflow or Azure. The
platform reads `config.json` (declared in pyproject.toml), checks the data against its columns, splits the rows
into one frame per value of the partition column (`"partition_columns"`), builds `YourUseCase(config, params)`
and calls `split`, `fit` and `metrics` for every partition, fanned out over processes (or Dask, or an Azure ML
parallel job). Each partition becomes the model `<model_name>/<partition column>=<value>`. See
ml_service/use_case.py for the contract and the optional methods (`prepare`, `generate`, `fit_many`, ...).

Replace the model, the features and the metrics with yours; keep the three methods.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder


class Params(BaseModel):
    """The `model` section of config.json: validated here, never read by the platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alpha: float = Field(1.0, ge=0, description="ridge regularisation strength")
    test_size: float = Field(0.25, gt=0, lt=1)
    random_state: int = 42


class YourUseCase:
    Params = Params

    def __init__(self, config: Any, params: Params):
        self.params = params
        self.label = config.label
        # The input columns exclude the label and the partition columns (one model per partition).
        self.features = list(config.input_columns)
        self.categorical = [c for c in self.features if config.columns[c].type in ("category", "string")]
        self.numeric = [c for c in self.features if c not in self.categorical]

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """One partition's rows: a seeded random split into training and hold-out rows."""
        train, holdout = train_test_split(frame, test_size=self.params.test_size, random_state=self.params.random_state)
        return train, holdout

    def fit(self, train: pd.DataFrame) -> Pipeline:
        """A fitted model for one partition: anything picklable with `predict(frame of the input columns)`."""
        columns = ColumnTransformer(
            [
                ("categories", OneHotEncoder(handle_unknown="ignore"), self.categorical),
                ("numbers", "passthrough", self.numeric),
            ]
        )
        model = Pipeline([("columns", columns), ("regressor", Ridge(alpha=self.params.alpha))])
        return model.fit(train[self.features], train[self.label])

    def metrics(self, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        """Must include the evaluation metric of config.json (it decides promotion, partition by partition)."""
        mse = float(mean_squared_error(actual, predicted))
        return {"rmse": math.sqrt(mse), "mae": float(mean_absolute_error(actual, predicted))}
