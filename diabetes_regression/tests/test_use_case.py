"""Unit tests of the use case's pure functions (no registry, no tracking)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from diabetes_regression.evaluate.evaluate_model import decide_promotion, is_better
from diabetes_regression.parameters import (
    PARAMETERS_FILE,
    ParameterError,
    load_parameters,
    parameters_from_dict,
)
from diabetes_regression.register.register_model import (
    AlreadyRegisteredError,
    check_not_registered,
    metrics_from_tags,
    registration_tags,
)
from diabetes_regression.training.train import get_model_metrics, prepare_data, split_data, train_model
from tests.conftest import REPO_ROOT


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.read_csv(REPO_ROOT / "data" / "diabetes.csv")


def test_parameters_file_loads():
    params = load_parameters()
    assert params.label == "Y" and params.metric == "mse" and params.direction == "minimize"
    assert "Y" not in params.feature_columns and len(params.feature_columns) == 10


@pytest.mark.parametrize(
    "path,value,message",
    [
        (("training", "alpha"), "big", "'training.alpha' must be a int or float"),
        (("training", "alpha"), -1, "'training.alpha' must be >= 0"),
        (("evaluation", "direction"), "down", "'evaluation.direction' must be one of minimize, maximize"),
        (("evaluation", "metric"), "accuracy", "'evaluation.metric' must be one of"),
        (("training", "test_size"), 1.5, "'training.test_size' must be between 0 and 1"),
    ],
)
def test_parameter_errors_name_the_key(path, value, message):
    raw = json.loads(PARAMETERS_FILE.read_text())
    raw[path[0]][path[1]] = value
    with pytest.raises(ParameterError, match=message):
        parameters_from_dict(raw)


def test_missing_parameter_is_named():
    raw = json.loads(PARAMETERS_FILE.read_text())
    del raw["training"]["alpha"]
    with pytest.raises(ParameterError, match="missing key 'training.alpha'"):
        parameters_from_dict(raw)


def test_prepare_keeps_only_configured_columns(frame):
    frame["extra"] = "x"
    prepared = prepare_data(frame, ["AGE", "Y"])
    assert list(prepared.columns) == ["AGE", "Y"]


def test_split_is_seeded_and_sized(frame):
    a = split_data(frame, "Y", 0.2, 42)
    b = split_data(frame, "Y", 0.2, 42)
    assert len(a[0]) == 353 and len(a[1]) == 89
    assert "Y" not in a[0].columns
    pd.testing.assert_frame_equal(a[1], b[1])
    assert not a[1].index.equals(split_data(frame, "Y", 0.2, 7)[1].index)


def test_alpha_controls_regularisation_and_metrics_are_consistent(frame):
    x_train, x_test, y_train, y_test = split_data(frame, "Y", 0.2, 42)
    weak = train_model(x_train, y_train, alpha=0.1)
    strong = train_model(x_train, y_train, alpha=10_000)
    assert abs(strong.coef_).sum() < abs(weak.coef_).sum()
    metrics = get_model_metrics(weak, x_test, y_test)
    assert set(metrics) == {"mse", "rmse", "mae", "r2"}
    assert math.isclose(metrics["rmse"], math.sqrt(metrics["mse"]))
    assert 0.3 < metrics["r2"] < 0.7
    assert get_model_metrics(strong, x_test, y_test)["mse"] > metrics["mse"]


def test_first_model_is_promoted():
    decision = decide_promotion({"mse": 10.0}, None, "mse", "minimize")
    assert decision.promote and "no model in production" in decision.reason


def test_equal_is_not_promoted_and_reason_gives_both_values():
    decision = decide_promotion({"mse": 10.0}, {"mse": 10.0}, "mse", "minimize", "3")
    assert not decision.promote
    assert "mse=10" in decision.reason and "version 3" in decision.reason


@pytest.mark.parametrize(
    "candidate,production,direction,promote",
    [
        (9.0, 10.0, "minimize", True),
        (11.0, 10.0, "minimize", False),
        (0.8, 0.7, "maximize", True),
        (0.6, 0.7, "maximize", False),
    ],
)
def test_direction_is_respected(candidate, production, direction, promote):
    assert decide_promotion({"m": candidate}, {"m": production}, "m", direction, "1").promote is promote


def test_unknown_direction_and_missing_metric():
    with pytest.raises(ValueError, match="direction"):
        is_better(1, 2, "sideways")
    with pytest.raises(ValueError, match="no metric 'r2'"):
        decide_promotion({"mse": 1.0}, None, "r2", "maximize")


def test_registration_tags_carry_lineage_and_round_trip_metrics():
    tags = registration_tags("run1", {"mse": 2.5, "r2": 0.4}, {"alpha": 0.5}, "abc", "deadbeef", "42", "https://ci/42")
    assert tags["run_id"] == "run1" and tags["data_hash"] == "abc" and tags["git_commit"] == "deadbeef"
    assert tags["build_id"] == "42" and tags["build_uri"] == "https://ci/42" and tags["param.alpha"] == "0.5"
    assert metrics_from_tags(tags) == {"mse": 2.5, "r2": 0.4}
    assert "build_id" not in registration_tags("run1", {}, {}, "abc")


def test_same_run_is_refused():
    check_not_registered("new", ["a", "b"], "m")
    with pytest.raises(AlreadyRegisteredError, match="run a is already registered as a version of 'm'"):
        check_not_registered("a", ["a", "b"], "m")
