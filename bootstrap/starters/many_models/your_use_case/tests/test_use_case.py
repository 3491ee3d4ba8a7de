"""The your_use_case use case's own tests (they go with its folder): its declaration and configuration load, its
sample data passes the declared checks and splits into one frame per partition, a bad value is refused naming
the column, and every partition's model beats predicting the mean. Replace them with your model's when you
replace the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_service.data_checks import DataValidationError, read_csv
from ml_service.pipelines.preparation import prepare_frame
from ml_service.use_case import fit_one, load_use_case

ROOT = Path(__file__).resolve().parents[2]
NAME = "your_use_case"


@pytest.fixture(scope="module")
def use_case():
    return load_use_case(NAME, ROOT)


@pytest.fixture(scope="module")
def raw(use_case) -> pd.DataFrame:
    return read_csv(ROOT / use_case.config.data.path, use_case.config)


def test_declared_with_its_config(use_case) -> None:
    assert use_case.model_name == NAME
    assert len(use_case.config.partition_columns) == 1


def test_one_frame_per_partition(use_case, raw: pd.DataFrame) -> None:
    (column,) = use_case.config.partition_columns
    parts = prepare_frame(raw, use_case, "sample")
    assert len(parts) == raw[column].nunique()
    assert sum(len(part) for part in parts.values()) == len(raw)
    for key, part in parts.items():
        assert part[column].nunique() == 1 and str(part[column].iloc[0]) in key


def test_a_value_outside_the_allowed_ones_is_refused(use_case, raw: pd.DataFrame) -> None:
    column = next(c for c, spec in use_case.config.columns.items() if spec.allowed)
    bad = raw.copy()
    bad.loc[0, column] = "not-a-known-value"
    with pytest.raises(DataValidationError, match=column):
        prepare_frame(bad, use_case, "sample")


def test_every_partition_beats_the_mean(use_case, raw: pd.DataFrame) -> None:
    label = use_case.config.label
    for key, frame in prepare_frame(raw, use_case, "sample").items():
        model, holdout, predicted = fit_one(use_case, frame)
        actual = holdout[label].to_numpy()
        baseline = float(np.sqrt(np.mean((actual - frame[label].mean()) ** 2)))
        assert use_case.implementation.metrics(actual, predicted)["rmse"] < baseline, key
