"""The your_use_case use case: one scikit-learn classifier behind the platform's use-case contract.

Pure data science (pandas, scikit-learn, pydantic): nothing here imports the platform, MLflow or Azure. The
platform reads `config.json` (declared in pyproject.toml), checks the data against its columns, builds
`YourUseCase(config, params)` and calls `split`, `fit` and `metrics`; see ml_service/use_case.py for the
contract and the optional methods (`prepare`, `generate`, `fit_many`, ...).

Replace the model, the features and the metrics with yours; keep the three methods.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class Params(BaseModel):
    """The `model` section of config.json: validated here, never read by the platform."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    c: float = Field(1.0, gt=0, description="inverse regularisation strength of the logistic regression")
    test_size: float = Field(0.25, gt=0, lt=1)
    random_state: int = 42


class YourUseCase:
    Params = Params

    def __init__(self, config: Any, params: Params):
        self.params = params
        self.label = config.label
        self.features = list(config.input_columns)
        # Text columns are one-hot encoded, numbers scaled: the types come from config.json's "columns".
        self.categorical = [c for c in self.features if config.columns[c].type in ("category", "string")]
        self.numeric = [c for c in self.features if c not in self.categorical]

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """A seeded, stratified split of whole rows into training and hold-out rows."""
        train, holdout = train_test_split(
            frame,
            test_size=self.params.test_size,
            random_state=self.params.random_state,
            stratify=frame[self.label],
        )
        return train, holdout

    def fit(self, train: pd.DataFrame) -> Pipeline:
        """A fitted model: anything picklable with `predict(frame of the input columns)`."""
        columns = ColumnTransformer(
            [
                ("categories", OneHotEncoder(handle_unknown="ignore"), self.categorical),
                ("numbers", StandardScaler(), self.numeric),
            ]
        )
        model = Pipeline([("columns", columns), ("classifier", LogisticRegression(C=self.params.c, max_iter=1000))])
        return model.fit(train[self.features], train[self.label])

    def metrics(self, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
        """Must include the evaluation metric of config.json (it decides promotion)."""
        return {
            "accuracy": float(accuracy_score(actual, predicted)),
            "f1": float(f1_score(actual, predicted, zero_division=0)),
        }
