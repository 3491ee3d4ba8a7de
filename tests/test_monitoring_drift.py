"""Drift and decay statistics on small in-memory inputs: the numbers are the textbook ones, a sample from the
training distribution is not called drifted, a shifted one is, and what cannot be measured says why."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from ml_service.config import Monitoring
from ml_service.monitoring.decay import join, model_decay
from ml_service.monitoring.drift import feature_drift, model_drift, psi
from ml_service.monitoring.profile import OTHER, TOP_VALUES, profile_column, profile_frame

TYPES = {"x": "number", "colour": "category", "day": "datetime"}


def training(rows: int = 2000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(10, 2, rows),
            "colour": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
            "day": pd.date_range("2024-01-01", periods=rows, freq="h"),
        }
    )


def test_psi_is_the_textbook_formula():
    expected, actual = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    by_hand = (0.25 - 0.5) * np.log(0.25 / 0.5) + (0.75 - 0.5) * np.log(0.75 / 0.5)
    assert psi(expected, actual) == pytest.approx(by_hand)
    assert psi(expected, expected) == 0.0
    assert np.isfinite(psi(np.array([1.0, 0.0]), np.array([0.0, 1.0])))  # an empty bin does not give infinity


def test_the_profile_summarises_each_kind_and_keeps_no_rows():
    profile = profile_frame(training(), TYPES, predictions=np.arange(50.0))
    x = profile["features"]["x"]
    assert x["kind"] == "number" and x["rows"] == 2000 and len(x["quantiles"]) == 101
    assert sum(x["shares"]) == pytest.approx(1.0) and len(x["shares"]) == len(x["edges"]) + 1 == 10
    assert x["mean"] == pytest.approx(10, abs=0.2)
    assert profile["features"]["colour"]["shares"]["red"] == pytest.approx(0.5, abs=0.03)
    day = profile["features"]["day"]
    assert day == {"kind": "datetime", "rows": 2000, "first": "2024-01-01T00:00:00", "last": "2024-03-24T07:00:00"}
    assert profile["prediction"]["rows"] == 50
    many = profile_column(np.array([f"v{i}" for i in range(TOP_VALUES + 10)]), "category")["shares"]
    assert len(many) == TOP_VALUES + 1 and many[OTHER] == pytest.approx(10 / (TOP_VALUES + 10))


def test_a_sample_of_the_training_distribution_is_not_drift_and_a_shifted_one_is():
    profile = profile_frame(training(), TYPES)
    fresh = training(300, seed=1)
    same = model_drift(profile, {c: fresh[c].to_numpy() for c in TYPES}, None, "psi", 0.2)
    assert same.drifted_features == []
    assert same.features["x"].psi < 0.1 and same.features["colour"].psi < 0.1
    assert same.features["day"].reason == "datetime columns are not compared"

    moved = fresh.assign(x=fresh["x"] + 4.0, colour=np.where(fresh["colour"] == "red", "purple", fresh["colour"]))
    drift = model_drift(profile, {c: moved[c].to_numpy() for c in TYPES}, None, "psi", 0.2)
    assert set(drift.drifted_features) == {"x", "colour"}
    assert drift.features["x"].ks > 0.5 and drift.features["x"].ks_pvalue < 1e-6
    assert drift.features["colour"].ks is None  # categories have no KS: judged by PSI
    assert drift.as_dict()["worst_feature"] in {"x", "colour"}
    bins = drift.features["x"].bins
    assert len(bins["labels"]) == len(bins["training"]) == len(bins["production"]) == 10


def test_ks_from_the_profile_matches_scipy_on_the_raw_samples():
    train = training(5000)["x"].to_numpy()
    for shift in (0.0, 0.5, 2.0):
        sample = np.random.default_rng(7).normal(10 + shift, 2, 400)
        ours = feature_drift(profile_column(train, "number"), sample)
        exact = ks_2samp(train, sample)
        assert ours.ks == pytest.approx(exact.statistic, abs=0.015)


def test_each_statistic_decides_with_its_own_default_threshold():
    assert Monitoring().drift_threshold == 0.2
    assert Monitoring(statistic="js").drift_threshold == 0.15
    assert Monitoring(statistic="ks", threshold=0.3).drift_threshold == 0.3
    profile = profile_frame(training(), TYPES)
    moved = {"x": training(300, seed=2)["x"].to_numpy() + 1.5}
    for statistic in ("psi", "js", "ks"):
        drift = model_drift(profile, moved, None, statistic, Monitoring(statistic=statistic).drift_threshold)
        assert drift.drifted_features == ["x"], statistic


def test_what_cannot_be_compared_says_why():
    profile = profile_frame(training(), TYPES)
    drift = model_drift(profile, {"x": np.array(["a", None, "b"], dtype=object)}, None, "psi", 0.2)
    assert drift.features["x"].reason == "no numbers among the collected values"
    assert drift.features["colour"].reason == "not in the collected data"
    assert drift.drifted_features == [] and drift.worst is None
    empty = profile_column(np.array([np.nan, np.nan]), "number")
    assert feature_drift(empty, np.array([1.0])).reason == "no numbers in the training data"


def test_decay_joins_actuals_on_time_and_compares_with_the_promoted_metric():
    collected = pd.DataFrame(
        {"day": ["2024-01-01 00:00", "2024-01-01T01:00:00", "2024-01-01 02:00"], "prediction": [1.0, 2.0, 3.0]}
    )
    actuals = pd.DataFrame({"day": ["2024-01-01 00:00:00", "2024-01-01 01:00:00", "2024-01-02"], "y": [1, 4, 9]})
    joined = join(collected, actuals, "y", ["day"], "day")
    assert joined["actual"].tolist() == [1.0, 4.0]  # two time stamps written differently still meet

    def mae(actual, predicted):
        return {"mae": float(np.mean(np.abs(actual - predicted)))}

    worse = model_decay(joined, mae, "mae", "minimize", promised=0.5, tolerance=0.25, min_rows=2)
    assert worse.realised == 1.0 and worse.decayed
    fine = model_decay(joined, mae, "mae", "minimize", promised=0.9, tolerance=0.25, min_rows=2)
    assert not fine.decayed
    few = model_decay(joined, mae, "mae", "minimize", promised=0.9, tolerance=0.25, min_rows=3)
    assert few.realised is None and not few.decayed and "2 rows with actuals, 3 needed" in few.reason

    def r2(actual, predicted):
        return {"r2": 0.5}

    assert model_decay(joined, r2, "r2", "maximize", promised=0.8, tolerance=0.25, min_rows=2).decayed
    assert not model_decay(joined, r2, "r2", "maximize", promised=0.6, tolerance=0.25, min_rows=2).decayed
