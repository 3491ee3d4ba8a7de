"""The diabetes_regression use case through the platform's contract: its configuration, its data, its split, fit
and metrics (no registry, no tracking)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from diabetes_regression.tests.conftest import CONFIG, NAME, REPO_ROOT
from ml_service.config import ConfigError, config_from_mapping
from ml_service.data_checks import read_csv
from ml_service.pipelines.preparation import prepare_frame
from ml_service.use_case import build_use_case, fit_one, load_use_case

COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]


@pytest.fixture(scope="module")
def use_case():
    return load_use_case(NAME, REPO_ROOT)


@pytest.fixture(scope="module")
def frame(use_case) -> pd.DataFrame:
    path = REPO_ROOT / use_case.config.data.path
    return prepare_frame(read_csv(path, use_case.config), use_case, str(path))[""]


def with_model(**model) -> object:
    """The use case built from parameters.json with its `model` section changed."""
    raw = json.loads((REPO_ROOT / CONFIG).read_text())
    raw["model"].update(model)
    return build_use_case(config_from_mapping(NAME, raw, CONFIG, REPO_ROOT), REPO_ROOT)


def test_configuration_loads(use_case):
    config = use_case.config
    assert config.model_name == "diabetes_regression_model" and config.label == "Y"
    assert list(config.input_columns) == COLUMNS and not config.partition_columns
    assert (config.evaluation.metric, config.evaluation.direction) == ("mse", "minimize")
    assert use_case.params.alpha == 0.5 and use_case.params.test_size == 0.2


def test_shipped_data_passes_the_declared_checks(frame):
    assert len(frame) == 442 and list(frame.columns) == [*COLUMNS, "Y"]


@pytest.mark.parametrize(
    "model,key",
    [
        ({"alpha": -1}, '"model.alpha": Input should be greater than or equal to 0'),
        ({"alpha": "big"}, '"model.alpha": Input should be a valid number'),
        ({"test_size": 1.5}, '"model.test_size": Input should be less than 1'),
        ({"alpah": 1}, '"model.alpah": Extra inputs are not permitted'),
    ],
    ids=["negative", "text", "test-size", "typo"],
)
def test_a_bad_parameter_names_file_use_case_and_key(model, key):
    with pytest.raises(ConfigError) as info:
        with_model(**model)
    assert str(info.value).startswith(f"{CONFIG}: use case {NAME}: {key}")


def test_split_is_seeded_and_sized(use_case, frame):
    train, holdout = use_case.implementation.split(frame)
    again = use_case.implementation.split(frame)[1]
    assert len(train) == 353 and len(holdout) == 89
    pd.testing.assert_frame_equal(holdout, again)
    assert not set(train.index) & set(holdout.index)
    other = with_model(random_state=7).implementation.split(frame)[1]
    assert not other.index.equals(holdout.index)


def test_the_model_trains_and_its_metrics_are_consistent(use_case, frame):
    model, holdout, predicted = fit_one(use_case, frame)
    metrics = use_case.implementation.metrics(holdout.Y.to_numpy(), predicted)
    assert set(metrics) == {"mse", "rmse", "mae", "r2"}
    assert math.isclose(metrics["rmse"], math.sqrt(metrics["mse"]))
    assert 0.3 < metrics["r2"] < 0.7 and 30 < metrics["mae"] < 60
    assert list(model.feature_names_in_) == COLUMNS  # it predicts from the request's columns, by name
    np.testing.assert_allclose(model.predict(holdout[COLUMNS]), predicted)


def test_alpha_controls_regularisation(frame):
    weak, strong = with_model(alpha=0.1), with_model(alpha=10_000)
    weak_model, holdout, weak_predicted = fit_one(weak, frame)
    strong_model, _, strong_predicted = fit_one(strong, frame)
    assert abs(strong_model.coef_).sum() < abs(weak_model.coef_).sum()
    actual = holdout.Y.to_numpy()
    assert (
        strong.implementation.metrics(actual, strong_predicted)["mse"]
        > weak.implementation.metrics(actual, weak_predicted)["mse"]
    )


def test_the_data_file_regenerates_byte_for_byte_from_scikit_learn(use_case, tmp_path):
    """data/diabetes.csv is scikit-learn's bundled copy; a project without the file gets the same bytes."""
    target = tmp_path / "data" / "diabetes.csv"
    use_case.implementation.generate(use_case.config.data.generate, target)
    assert target.read_bytes() == (REPO_ROOT / use_case.config.data.path).read_bytes()
