"""Training: fast path and FLAML on small data, predictions from raw columns, metrics, plots."""

import math
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_diabetes
from sklearn.exceptions import ConvergenceWarning

from ff.config import load_pipeline_config
from ff.data_generator import generate_energy
from ff.plots import plot_holdout
from ff.prepare import TIME_FORMAT, prepare_frame, read_prepared, read_prepared_batch
from ff.train_automl import (
    fast_pipeline,
    fit_ridge_pipeline,
    predict_ridge_pipeline,
    regression_metrics,
    save_model,
    split_holdout,
    train_model,
    train_ridge_partitions,
)

CONFIG = load_pipeline_config()
REGIONS = CONFIG.get("nyc_energy_regions_model")
DIABETES = CONFIG.get("diabetes_model")


@pytest.fixture(scope="module")
def region_part():
    return prepare_frame(generate_energy(2, days=60, seed=7, start="2017-06-01"), REGIONS)["region=r0001"]


@pytest.fixture(scope="module")
def diabetes():
    data = load_diabetes(as_frame=True, scaled=False).frame
    return data.rename(columns={c: c.upper() for c in data.columns}).rename(columns={"TARGET": "Y"})


def test_forecast_holdout_is_the_last_horizon_hours(region_part):
    train, holdout = split_holdout(region_part, REGIONS)
    assert len(holdout) == 48 and len(train) == len(region_part) - 48
    assert train.timeStamp.max() < holdout.timeStamp.min()


def test_fast_path_fits_quickly_and_predicts_from_raw_columns(region_part):
    result = train_model(region_part, REGIONS)
    assert result.fast_path and result.estimator == "ridge"
    assert set(result.metrics) == {"rmse", "mae", "mape", "r2"}
    assert result.metrics["mape"] < 0.06 and result.metrics["r2"] > 0.9
    assert list(result.holdout.columns) == ["timeStamp", "actual", "predicted"] and len(result.holdout) == 48
    assert result.input_schema == {"timeStamp": "datetime", "precip": "number", "temp": "number"}
    raw = pd.DataFrame(
        {
            "timeStamp": ["2017-08-12 07:00:00", "2017-08-12 15:00:00"],
            "precip": [0.0, 0.0],
            "temp": [70.0, 95.0],
        }
    )
    raw["timeStamp"] = pd.to_datetime(raw.timeStamp)
    predicted = pickle.loads(pickle.dumps(result.model)).predict(raw)
    assert predicted.shape == (2,) and predicted[1] > predicted[0] > 0
    assert result.train_seconds < 1.0


def _fitted_attributes(estimator) -> dict:
    return {k: v for k, v in vars(estimator).items() if k.endswith("_")}


@pytest.mark.parametrize("partition", ["region=r0000", "region=r0001"])
def test_closed_form_ridge_equals_scikit_learns_fit(partition):
    """The fast path's NumPy fit must give the model scikit-learn's own fit gives: same classes, same fitted
    attributes, same predictions (on the hold-out and on rows it never saw)."""
    part = prepare_frame(generate_energy(2, days=30, seed=11, start="2018-01-03"), REGIONS)[partition]
    train, holdout = split_holdout(part, REGIONS)
    columns = list(REGIONS.input_columns)
    X, y = train[columns], train.demand.to_numpy()
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
    unseen = holdout[columns].assign(temp=holdout.temp + 15.0)  # a heat wave the training data never had
    for frame in (holdout[columns], unseen):
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
        fit_ridge_pipeline(flat[list(REGIONS.input_columns)], flat.demand.to_numpy(), REGIONS)


def test_saved_model_loads_with_joblib_and_pickle(region_part, tmp_path):
    import joblib

    result = train_model(region_part, REGIONS)
    path = save_model(result, tmp_path / "m")
    raw = region_part[list(REGIONS.input_columns)].tail(5)
    for loaded in (joblib.load(path), pickle.loads(path.read_bytes())):
        np.testing.assert_allclose(loaded.predict(raw), result.model.predict(raw))


def test_fast_path_beats_a_seasonal_naive_baseline(region_part):
    result = train_model(region_part, REGIONS)
    train, holdout = split_holdout(region_part, REGIONS)
    naive = train.demand.to_numpy()[-168:][: len(holdout)]  # same hours one week earlier
    baseline = regression_metrics(holdout.demand.to_numpy(), naive, with_mape=True)
    assert result.metrics["rmse"] < baseline["rmse"]


def test_automl_forecasting(region_part):
    result = train_model(region_part, REGIONS, fast=False, time_budget_s=1.5)
    assert not result.fast_path and result.estimator in REGIONS.automl.estimators
    assert result.metrics["mape"] < 0.1
    frame = region_part[["timeStamp", "precip", "temp"]].tail(48)
    np.testing.assert_allclose(result.model.predict(frame), result.holdout.predicted.to_numpy())


def test_automl_regression_diabetes(diabetes, tmp_path):
    with warnings.catch_warnings():  # FLAML's enet trials may not converge within its tiny budget
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = train_model(diabetes, DIABETES, time_budget_s=1.5)
    assert set(result.metrics) == {"rmse", "mae", "r2"}
    assert len(result.holdout) == math.ceil(0.2 * len(diabetes)) and list(result.holdout.columns) == [
        "actual",
        "predicted",
    ]
    assert result.metrics["r2"] > 0.2 and result.metrics["rmse"] < 70
    assert list(result.input_schema) == list(DIABETES.input_columns)
    again = train_model(diabetes, DIABETES, fast=True)  # same seeded split, fixed ridge
    np.testing.assert_allclose(again.holdout.actual, result.holdout.actual)
    path = save_model(result, tmp_path / "diabetes_model", {"config_hash": "abc"})
    assert path.name == "model.joblib" and (tmp_path / "diabetes_model" / "model.json").is_file()
    png = plot_holdout(result.holdout, DIABETES, tmp_path / "diabetes.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_forecast_plot(region_part, tmp_path):
    result = train_model(region_part, REGIONS)
    png = plot_holdout(result.holdout, REGIONS, tmp_path / "plots" / "energy.png")
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"


def test_too_little_data_is_refused(region_part):
    with pytest.raises(ValueError, match="too few"):
        train_model(region_part.head(40), REGIONS)


@pytest.fixture(scope="module")
def partitions():
    parts = prepare_frame(generate_energy(5, days=21, seed=3, start="2017-12-20"), REGIONS)
    return [parts[key] for key in sorted(parts)]


def test_partitions_trained_together_equal_each_trained_alone(partitions):
    shuffled = partitions[2].sample(frac=1.0, random_state=0)  # not in time order: trained on its own path
    short = partitions[3].head(40)  # too few rows to hold out: this partition fails, alone
    frames = [partitions[0], partitions[1], shuffled, short, partitions[4]]
    stacked = pd.concat(frames, ignore_index=True)
    starts = np.cumsum([0, *(len(f) for f in frames)]).tolist()
    together = train_ridge_partitions(stacked, starts, REGIONS)
    assert len(together) == len(frames)
    assert isinstance(together[3], ValueError) and "too few" in str(together[3])
    columns = list(REGIONS.input_columns)
    for frame, result in zip(frames, together, strict=True):
        if frame is short:
            continue
        alone = train_model(frame, REGIONS, fast=True)
        assert result.estimator == "ridge" and result.fast_path and result.n_train == alone.n_train
        assert result.metrics == pytest.approx(alone.metrics, rel=1e-9)
        pd.testing.assert_frame_equal(result.holdout, alone.holdout, rtol=1e-9)
        sample = frame[columns].head(24)
        np.testing.assert_allclose(result.model.predict(sample), alone.model.predict(sample), rtol=1e-9)
        reference = fast_pipeline(REGIONS).fit(*_training_part(frame))
        np.testing.assert_allclose(result.model.predict(sample), reference.predict(sample), rtol=1e-9)


def _training_part(frame):
    train, _ = split_holdout(frame, REGIONS)
    return train[list(REGIONS.input_columns)], train.demand.to_numpy()


def test_a_partition_with_missing_values_fails_alone(partitions):
    broken = partitions[1].copy()
    broken.loc[broken.index[10], "temp"] = np.nan
    frames = [partitions[0], broken]
    starts = [0, len(frames[0]), len(frames[0]) + len(broken)]
    together = train_ridge_partitions(pd.concat(frames, ignore_index=True), starts, REGIONS)
    assert not isinstance(together[0], Exception)
    assert isinstance(together[1], ValueError) and "missing or infinite values" in str(together[1])
    with pytest.raises(ValueError, match="missing or infinite values"):
        fast_pipeline(REGIONS).fit(*_training_part(broken))


def test_prepared_files_read_together_equal_each_read_alone(partitions, tmp_path):
    paths = []
    for index, frame in enumerate(partitions[:3]):
        paths.append(tmp_path / f"p{index}.csv")
        frame.to_csv(paths[-1], index=False, date_format=TIME_FORMAT, lineterminator="\n")
    frame, starts = read_prepared_batch(paths, REGIONS)
    assert starts == np.cumsum([0, *(len(p) for p in partitions[:3])]).tolist()
    for path, first, end in zip(paths, starts[:-1], starts[1:], strict=True):
        alone = read_prepared(path, REGIONS)
        pd.testing.assert_frame_equal(frame.iloc[first:end].reset_index(drop=True), alone)
    partitions[3].drop(columns=["precip"]).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="header differs"):
        read_prepared_batch([*paths, tmp_path / "other.csv"], REGIONS)
    (tmp_path / "blank.csv").write_text(paths[0].read_text() + "\n")
    with pytest.raises(ValueError, match="rows parsed"):
        read_prepared_batch([paths[1], tmp_path / "blank.csv"], REGIONS)
