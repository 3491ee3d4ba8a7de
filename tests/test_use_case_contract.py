"""The use-case contract: how the platform finds, checks and builds a team's use case, and what it asks of it."""

from __future__ import annotations

import numpy as np
import pytest

from ml_service.config import ConfigError
from ml_service.use_case import UseCase, check_metrics, fit_many, fit_one, load_use_case
from tests.fixtures.projects import toy_config, toy_frame

HALF = """
class Half:
    def __init__(self, config, params):
        pass

    def split(self, frame):
        return frame, frame
"""


def error(root, name: str = "toy") -> str:
    with pytest.raises(ConfigError) as caught:
        load_use_case(name, root)
    assert "\n" not in str(caught.value)
    return str(caught.value)


def test_a_use_case_is_built_with_its_config_and_validated_params(project):
    root = project()
    use_case = load_use_case("toy", root)
    assert isinstance(use_case.implementation, UseCase)
    assert use_case.params.holdout == 4 and use_case.params.fail == ()  # the use case's Params, defaults filled
    assert use_case.model_name == "toy" and use_case.has("describe") and not use_case.has("fit_many")
    assert use_case.model_code() == [root / "toyuc"]  # default: the whole top-level package
    assert load_use_case("toy", root) is use_case  # built once per process


def test_missing_methods_are_named(project):
    root = project({"toy": toy_config(code="halfuc.model:Half")})
    (root / "halfuc").mkdir()
    (root / "halfuc" / "__init__.py").write_text("")
    (root / "halfuc" / "model.py").write_text(HALF)
    assert (
        error(root)
        == "configs/toy.json: use case toy: halfuc.model:Half lacks fit, metrics (see ml_service/use_case.py)"
    )


def test_code_that_cannot_be_imported_or_found(project):
    root = project({"toy": toy_config(code="nowhere.model:X"), "other": toy_config(code="toyuc.model:Nothing")})
    assert error(root) == "configs/toy.json: use case toy: \"code\": cannot import nowhere (from 'nowhere.model:X')"
    assert error(root, "other") == "configs/other.json: use case other: \"code\": toyuc.model has no 'Nothing'"


def test_params_errors_name_the_model_key(project):
    root = project({"toy": toy_config(model={"holdout": 0}), "other": toy_config(model={"holdot": 3})})
    assert error(root) == (
        'configs/toy.json: use case toy: "model.holdout": Input should be greater than or equal to 1'
    )
    assert error(root, "other") == 'configs/other.json: use case other: "model.holdot": Extra inputs are not permitted'


def test_the_use_case_refusing_its_config_is_one_line(project):
    config = toy_config()
    del config["columns"]["colour"]["allowed"]
    root = project({"toy": config})
    assert error(root) == "configs/toy.json: use case toy: category column(s) colour need declared allowed values"


def test_declared_model_code_must_exist(project):
    root = project()
    use_case = load_use_case("toy", root)
    object.__setattr__(use_case.implementation, "model_code", ["toyuc/model.py", "toyuc/gone.py"])
    with pytest.raises(ConfigError, match="model code .*toyuc/gone.py not found"):
        use_case.model_code()


def test_fit_one_splits_fits_and_predicts_the_holdout(project):
    root = project()
    use_case = load_use_case("toy", root)
    part = toy_frame(partitions=1, rows=12)
    model, holdout, predicted = fit_one(use_case, part)
    assert len(holdout) == 4 and holdout.index.tolist() == [8, 9, 10, 11]
    assert predicted == pytest.approx(model.predict(holdout), rel=1e-12)
    assert np.abs(predicted - holdout["y"].to_numpy()).max() < 1  # the fit is good: y = 2x + effect + noise
    with pytest.raises(ValueError, match="4 rows are too few to hold out data"):
        fit_one(use_case, part.iloc[:4])


def test_fit_many_only_when_the_use_case_has_it(project):
    root = project({"toy": toy_config(), "many": toy_config(code="toyuc.model:LeastSquaresMany")})
    frame = toy_frame(partitions=2, rows=10)
    assert fit_many(load_use_case("toy", root), frame, [0, 10, 20]) is None
    results = fit_many(load_use_case("many", root), frame, [0, 10, 20])
    assert len(results) == 2 and all(len(holdout) == 4 for _, holdout, _ in results)


def test_metrics_must_include_the_evaluation_metric_and_be_finite(project):
    root = project({"toy": toy_config(evaluation={"metric": "mape", "direction": "minimize"})})
    use_case = load_use_case("toy", root)
    with pytest.raises(ValueError, match="metrics\\(\\) gave no 'mape' \\(gave: mae, rmse\\)"):
        check_metrics(use_case, {"mae": 1.0, "rmse": 2.0})
    with pytest.raises(ValueError, match="mape is nan"):
        check_metrics(use_case, {"mape": float("nan")})
    assert check_metrics(use_case, {"mape": np.float32(0.5), "n": 3}) == {"mape": 0.5, "n": 3.0}


def test_a_use_case_imports_nothing_of_the_platform():
    from tests.fixtures.projects import PACKAGE

    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        for forbidden in ("ml_service", "mlflow", "azure"):
            assert f"import {forbidden}" not in text and f"from {forbidden}" not in text, path
