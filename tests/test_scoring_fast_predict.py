"""The forests' fast path gives exactly scikit-learn's own predictions, and is refused wherever it could not.

Compared bit for bit (``np.array_equal``, same dtype) with the model's own ``predict`` on random inputs of several
sizes, with missing values, for every kind the fast path accepts; the kinds it must leave alone return None.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from ml_service.scoring.fast_predict import fast_predict, verified_fast_predict

COLUMNS = ["a", "b", "c", "d"]


def data(rows: int, seed: int, missing: bool = False) -> pd.DataFrame:
    x = np.random.default_rng(seed).normal(size=(rows, len(COLUMNS)))
    if missing:
        x[::7, 1] = np.nan
    return pd.DataFrame(x, columns=COLUMNS)


def target(x: pd.DataFrame, outputs: int = 1) -> np.ndarray:
    base = np.nan_to_num(x.to_numpy()) @ np.array([1.0, -2.0, 0.5, 3.0])
    return base if outputs == 1 else np.column_stack([base * (k + 1) for k in range(outputs)])


def fitted() -> dict[str, tuple[object, bool]]:
    """name -> (fitted model, whether it was trained with missing values)."""
    x, xm = data(300, 0), data(300, 1, missing=True)
    labels = np.where(target(x) > 0, "up", "down")
    return {
        "random forest": (RandomForestRegressor(n_estimators=30, random_state=0).fit(x, target(x)), False),
        "extra trees": (
            ExtraTreesRegressor(n_estimators=40, max_features=0.5, random_state=1).fit(x, target(x)),
            False,
        ),
        "extra trees, 3 outputs": (ExtraTreesRegressor(n_estimators=10, random_state=2).fit(x, target(x, 3)), False),
        "random forest, missing values": (
            RandomForestRegressor(n_estimators=20, random_state=3).fit(xm, target(xm)),
            True,
        ),
        "random forest classifier": (RandomForestClassifier(n_estimators=25, random_state=4).fit(x, labels), False),
        "extra trees classifier": (ExtraTreesClassifier(n_estimators=25, random_state=5).fit(x, labels), False),
        "pipeline: scaler, passthrough, extra trees": (
            Pipeline(
                [
                    ("scale", StandardScaler()),
                    ("nothing", "passthrough"),
                    ("square", FunctionTransformer(np.square)),
                    ("model", ExtraTreesRegressor(n_estimators=15, random_state=6)),
                ]
            ).fit(x, target(x)),
            False,
        ),
    }


MODELS = fitted()


@pytest.mark.parametrize("kind", list(MODELS))
def test_the_fast_path_equals_the_models_own_predict_bit_for_bit(kind):
    model, missing = MODELS[kind]
    fast = fast_predict(model)
    assert fast is not None
    for rows, seed in ((1, 10), (2, 11), (17, 12), (256, 13)):
        x = data(rows, seed, missing=missing)
        expected, actual = model.predict(x), fast(x)
        assert actual.dtype == expected.dtype and actual.shape == expected.shape
        assert np.array_equal(actual, expected), kind
    x = data(5, 14).to_numpy()  # arrays too (no feature names)
    with pytest.warns(UserWarning, match="feature names"):
        expected = model.predict(x)
    with pytest.warns(UserWarning, match="feature names"):  # the same input check runs, with its warning
        assert np.array_equal(fast(x), expected)


def test_the_same_input_errors_as_the_model():
    model, _ = MODELS["extra trees"]
    fast = fast_predict(model)
    for bad in (data(3, 0).iloc[:, :3], data(3, 0).assign(b=np.inf)):
        with pytest.raises(ValueError) as own:
            model.predict(bad)
        with pytest.raises(ValueError) as ours:
            fast(bad)
        assert str(ours.value) == str(own.value)


def test_models_it_cannot_reproduce_keep_their_own_predict():
    x = data(100, 0)
    parallel = RandomForestRegressor(n_estimators=8, n_jobs=2, random_state=0).fit(x, target(x))

    class MyForest(ExtraTreesRegressor):  # a subclass may predict differently
        pass

    assert fast_predict(parallel) is None  # several threads sum the trees in the order they finish
    assert fast_predict(MyForest(n_estimators=3).fit(x, target(x))) is None
    assert fast_predict(ExtraTreesRegressor(n_estimators=3)) is None  # not fitted
    assert fast_predict(GradientBoostingRegressor(n_estimators=3).fit(x, target(x))) is None
    assert fast_predict(Pipeline([("s", StandardScaler()), ("m", Ridge())]).fit(x, target(x))) is None
    multi = RandomForestClassifier(n_estimators=3).fit(x, np.column_stack([target(x) > 0, target(x) > 1]))
    assert fast_predict(multi) is None


def test_the_service_uses_it_only_once_verified_on_the_sample_rows():
    x = data(50, 0)
    model = ExtraTreesRegressor(n_estimators=5, random_state=0).fit(x, target(x))
    batches = [data(1, 20), data(8, 21)]
    assert verified_fast_predict(model, batches) is not None
    assert verified_fast_predict(model, []) is None  # nothing to check it on
    own = model.predict
    model.predict = lambda rows: own(rows) + 1e-12  # stands for a release whose forests predict otherwise
    assert fast_predict(model) is not None  # the fast path would apply ...
    assert verified_fast_predict(model, batches) is None  # ... but gives other bits than the model: refused
    model.predict = lambda rows: own(rows).astype(np.float32)  # same values, another dtype: refused too
    assert verified_fast_predict(model, batches) is None


def test_xgboost_on_a_frame_of_floats_equals_its_own_predict_and_anything_else_goes_to_it():
    from xgboost import XGBRegressor

    x = data(300, 0, missing=True)
    model = XGBRegressor(n_estimators=40, max_depth=3, n_jobs=1, random_state=0).fit(x, target(x))
    early = XGBRegressor(n_estimators=200, early_stopping_rounds=3, n_jobs=1).fit(
        x[:200], target(x[:200]), eval_set=[(x[200:], target(x[200:]))], verbose=False
    )
    assert early.best_iteration < 199  # stopped early: predictions use best_iteration trees
    for fitted_model in (model, early, Pipeline([("scale", StandardScaler()), ("m", model)]).fit(x, target(x))):
        fast = fast_predict(fitted_model)
        assert fast is not None
        for rows, seed in ((1, 30), (9, 31), (128, 32)):
            frame = data(rows, seed, missing=True)
            expected, actual = fitted_model.predict(frame), fast(frame)
            assert actual.dtype == expected.dtype and np.array_equal(actual, expected, equal_nan=True)
    whole = data(6, 33).assign(d=np.arange(6))  # an integer column: the model's own predict, same answer
    assert np.array_equal(fast_predict(model)(whole), model.predict(whole))
    shuffled = data(3, 34)[COLUMNS[::-1]]  # columns in another order: whatever the model's own predict does
    assert np.array_equal(fast_predict(model)(shuffled), model.predict(shuffled))
    assert np.array_equal(fast_predict(model)(x.to_numpy()[:4]), model.predict(x.to_numpy()[:4]))  # an array
    assert fast_predict(XGBRegressor(booster="gblinear", n_estimators=3).fit(x, target(x))) is None
