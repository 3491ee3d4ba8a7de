"""ff training: the ridge fast path (its closed-form fit equals scikit-learn's; many partitions fitted at once equal
each fitted alone), FLAML on small data with a tiny budget, predictions from the raw input columns."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pandas as pd
import pytest

from ff.data_generator import generate_energy
from ff.tests.conftest import REPO_ROOT
from ff.train_automl import (
    fast_pipeline,
    fit_ridge_pipeline,
    predict_ridge_pipeline,
    regression_metrics,
    split_holdout,
    train_model,
)
from ml_service.pipelines.preparation import prepare_frame
from ml_service.use_case import fit_one, load_use_case

REGIONS_CASE = load_use_case("nyc_energy_regions_model", REPO_ROOT)
REGIONS = REGIONS_CASE.implementation.spec
DIABETES = load_use_case("diabetes_model", REPO_ROOT).implementation.spec
COLUMNS = list(REGIONS.input_columns)


def regions(n: int, days: int, seed: int, start: str) -> dict[str, pd.DataFrame]:
    """Prepared partitions, as the platform's prepare makes them."""
    return prepare_frame(generate_energy(n, days=days, seed=seed, start=start), REGIONS_CASE, "regions.csv")


@pytest.fixture(scope="module")
def region_part() -> pd.DataFrame:
    return regions(2, 60, 7, "2017-06-01")["region=r0001"]


@pytest.fixture(scope="module")
def diabetes() -> pd.DataFrame:
    return pd.read_csv(REPO_ROOT / "data" / "diabetes.csv")


def test_forecast_holdout_is_the_last_horizon_hours(region_part):
    train, holdout = split_holdout(region_part, REGIONS)
    assert len(holdout) == 48 and len(train) == len(region_part) - 48
    assert train.timeStamp.max() < holdout.timeStamp.min()
    shuffled, _ = split_holdout(region_part.sample(frac=1, random_state=0), REGIONS)
    pd.testing.assert_frame_equal(shuffled, train)


def test_fast_path_fits_quickly_and_predicts_from_raw_columns(region_part):
    result = train_model(region_part, REGIONS)
    assert result.fast_path and result.estimator == "ridge"
    assert set(result.metrics) == {"rmse", "mae", "mape", "r2"}
    assert result.metrics["mape"] < 0.06 and result.metrics["r2"] > 0.9
    assert list(result.holdout.columns) == ["timeStamp", "actual", "predicted"] and len(result.holdout) == 48
    assert result.input_schema == {"timeStamp": "datetime", "precip": "number", "temp": "number"}
    raw = pd.DataFrame(
        {"timeStamp": pd.to_datetime(["2017-08-12 07:00", "2017-08-12 15:00"]), "precip": 0.0, "temp": [70.0, 95.0]}
    )
    predicted = pickle.loads(pickle.dumps(result.model)).predict(raw)
    assert predicted.shape == (2,) and predicted[1] > predicted[0] > 0  # a hot afternoon needs more power
    assert result.train_seconds < 1.0


def test_fast_path_beats_a_seasonal_naive_baseline(region_part):
    result = train_model(region_part, REGIONS)
    train, holdout = split_holdout(region_part, REGIONS)
    naive = train.demand.to_numpy()[-168:][: len(holdout)]  # the same hours one week earlier
    assert result.metrics["rmse"] < regression_metrics(holdout.demand.to_numpy(), naive, with_mape=True)["rmse"]


def _fitted_attributes(estimator) -> dict:
    return {k: v for k, v in vars(estimator).items() if k.endswith("_")}


@pytest.mark.parametrize("partition", ["region=r0000", "region=r0001"])
def test_closed_form_ridge_equals_scikit_learns_fit(partition):
    """The fast path's NumPy fit gives the model scikit-learn's own fit gives: same classes, same fitted
    attributes, same predictions (on the hold-out and on weather it never saw)."""
    part = regions(2, 30, 11, "2018-01-03")[partition]
    train, holdout = split_holdout(part, REGIONS)
    X, y = train[COLUMNS], train.demand.to_numpy()
    expected = fast_pipeline(REGIONS).fit(X, y)
    actual = fit_ridge_pipeline(X, y, REGIONS)
    assert [type(s) for _, s in actual.steps] == [type(s) for _, s in expected.steps]
    assert actual.named_steps["features"].feature_names_ == expected.named_steps["features"].feature_names_
    for step in ("scale", "model"):
        want, got = _fitted_attributes(expected.named_steps[step]), _fitted_attributes(actual.named_steps[step])
        assert set(got) == set(want), step
        for name, value in want.items():
            if isinstance(value, np.ndarray) and value.dtype != object:
                np.testing.assert_allclose(got[name], value, rtol=1e-9, atol=1e-9, err_msg=f"{step}.{name}")
            elif isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-9), f"{step}.{name}"
            else:
                assert np.all(got[name] == value) and type(got[name]) is type(value), f"{step}.{name}"
    unseen = holdout[COLUMNS].assign(temp=holdout.temp + 15.0)  # a heat wave the training data never had
    for frame in (holdout[COLUMNS], unseen):
        np.testing.assert_allclose(actual.predict(frame), expected.predict(frame), rtol=1e-9)
        np.testing.assert_allclose(predict_ridge_pipeline(actual, frame), expected.predict(frame), rtol=1e-9)


def test_closed_form_ridge_on_numeric_columns_equals_scikit_learns_fit(diabetes):
    train, _ = split_holdout(diabetes, DIABETES)
    X, y = train[list(DIABETES.input_columns)], train.Y.to_numpy(dtype=float)
    expected = fast_pipeline(DIABETES).fit(X, y)
    actual = fit_ridge_pipeline(X, y, DIABETES)
    np.testing.assert_allclose(actual.predict(X), expected.predict(X), rtol=1e-9)
    np.testing.assert_allclose(actual.named_steps["model"].coef_, expected.named_steps["model"].coef_, rtol=1e-9)


def test_closed_form_ridge_refuses_constant_training_data(region_part):
    flat = region_part.head(200).assign(timeStamp=region_part.timeStamp.iloc[0], precip=0.0, temp=70.0)
    with pytest.raises(ValueError, match="no input feature varies"):
        fit_ridge_pipeline(flat[COLUMNS], flat.demand.to_numpy(), REGIONS)


def test_too_little_data_is_refused(region_part):
    with pytest.raises(ValueError, match="too few"):
        train_model(region_part.head(40), REGIONS)


# --- many partitions at once ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def partitions() -> list[pd.DataFrame]:
    parts = regions(5, 21, 3, "2017-12-20")
    return [parts[key] for key in sorted(parts)]


def _stack(frames: list[pd.DataFrame]) -> tuple[pd.DataFrame, list[int]]:
    return pd.concat(frames, ignore_index=True), np.cumsum([0, *(len(f) for f in frames)]).tolist()


def test_fit_many_equals_fitting_each_partition_alone(partitions):
    """The use case's `fit_many` (the contract's batch path) against the platform's one-partition path (split,
    fit, predict) for every partition: same hold-out rows, same predictions, same model; a partition that cannot
    be trained fails alone."""
    shuffled = partitions[2].sample(frac=1.0, random_state=0)  # not in time order
    short = partitions[3].head(40)  # too few rows to hold out
    frames = [partitions[0], partitions[1], shuffled, short, partitions[4]]
    together = REGIONS_CASE.implementation.fit_many(*_stack(frames))
    assert len(together) == len(frames)
    assert isinstance(together[3], ValueError) and "too few" in str(together[3])
    for index, (frame, result) in enumerate(zip(frames, together, strict=True)):
        if frame is short:
            with pytest.raises(ValueError, match="too few"):
                fit_one(REGIONS_CASE, frame)
            continue
        model, holdout, predicted = result
        alone_model, alone_holdout, alone_predicted = fit_one(REGIONS_CASE, frame)
        assert REGIONS_CASE.implementation.describe(model) == "ridge", index
        pd.testing.assert_frame_equal(holdout.reset_index(drop=True), alone_holdout.reset_index(drop=True))
        np.testing.assert_allclose(predicted, alone_predicted, rtol=1e-9, err_msg=str(index))
        sample = frame[COLUMNS].head(24)
        np.testing.assert_allclose(model.predict(sample), alone_model.predict(sample), rtol=1e-9)
        train, _ = split_holdout(frame, REGIONS)
        reference = fast_pipeline(REGIONS).fit(train[COLUMNS], train.demand.to_numpy())
        np.testing.assert_allclose(model.predict(sample), reference.predict(sample), rtol=1e-9)


def test_a_partition_with_missing_values_fails_alone(partitions):
    broken = partitions[1].copy()
    broken.loc[broken.index[10], "temp"] = np.nan
    together = REGIONS_CASE.implementation.fit_many(*_stack([partitions[0], broken]))
    assert not isinstance(together[0], Exception)
    assert isinstance(together[1], ValueError) and "missing or infinite values" in str(together[1])


def test_fit_many_declines_a_search(partitions):
    """Only the ridge fast path is batched: a FLAML search returns None, and the platform fits one by one."""
    energy = load_use_case("nyc_energy_model", REPO_ROOT)
    assert energy.implementation.fit_many(*_stack(partitions[:2])) is None


# --- FLAML, with a tiny budget ---------------------------------------------------------------------------------


def test_automl_forecasting(region_part):
    result = train_model(region_part, REGIONS, fast=False, time_budget_s=1.5)
    assert not result.fast_path and result.estimator in REGIONS.automl.estimators
    assert result.metrics["mape"] < 0.1
    frame = region_part[COLUMNS].tail(48)
    np.testing.assert_allclose(result.model.predict(frame), result.holdout.predicted.to_numpy())


def test_automl_regression_diabetes(diabetes):
    result = train_model(diabetes, DIABETES, time_budget_s=1.5)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert len(result.holdout) == math.ceil(0.2 * len(diabetes))
    assert list(result.holdout.columns) == ["actual", "predicted"]
    assert result.metrics["r2"] > 0.2 and result.metrics["rmse"] < 70
    assert list(result.input_schema) == list(DIABETES.input_columns)
    again = train_model(diabetes, DIABETES, fast=True)  # same seeded split, fixed ridge
    np.testing.assert_allclose(again.holdout.actual, result.holdout.actual)


def test_predict_many_equals_each_models_own_predict(partitions):
    """Batch scoring's stacked path: features once for every partition, each prediction that partition's
    `model.predict`; anything but the ridge fast path is declined (None: the platform predicts one by one)."""
    models = [fit_one(REGIONS_CASE, frame)[0] for frame in partitions]
    new_rows = [frame[COLUMNS].tail(48).reset_index(drop=True) for frame in partitions]
    stacked, starts = _stack(new_rows)
    together = REGIONS_CASE.implementation.predict_many(models, stacked, starts)
    for model, rows, predicted in zip(models, new_rows, together, strict=True):
        np.testing.assert_allclose(predicted, model.predict(rows), rtol=1e-12)
    assert REGIONS_CASE.implementation.predict_many([object()], stacked.head(1), [0, 1]) is None
