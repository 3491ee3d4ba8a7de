"""The your_use_case use case's own tests (they go with its folder): its declaration and configuration load, its
sample data passes the declared checks, a bad value is refused naming the column, and the model beats the
majority class on the hold-out rows. Replace them with your model's when you replace the model."""

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
    assert use_case.config.label in use_case.config.columns
    assert not use_case.config.partition_columns  # one model


def test_sample_data_passes_the_checks(use_case, raw: pd.DataFrame) -> None:
    parts = prepare_frame(raw, use_case, "sample")
    assert list(parts) == [""] and len(parts[""]) == len(raw)


def test_a_value_outside_the_allowed_ones_is_refused(use_case, raw: pd.DataFrame) -> None:
    column = next(c for c, spec in use_case.config.columns.items() if spec.allowed)
    bad = raw.copy()
    bad.loc[0, column] = "not-a-known-value"
    with pytest.raises(DataValidationError, match=column):
        prepare_frame(bad, use_case, "sample")


def test_model_beats_the_majority_class(use_case, raw: pd.DataFrame) -> None:
    frame = prepare_frame(raw, use_case, "sample")[""]
    model, holdout, predicted = fit_one(use_case, frame)
    actual = holdout[use_case.config.label].to_numpy()
    metrics = use_case.implementation.metrics(actual, predicted)
    majority = max(np.mean(actual == value) for value in np.unique(actual))
    assert metrics["accuracy"] > majority
    assert set(np.unique(predicted)) <= set(np.unique(frame[use_case.config.label]))
