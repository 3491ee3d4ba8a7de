"""The ff data: the generator (determinism, shape, realism), and preparing a series (`ff.series`) alone and
through the platform's prepare: regular at its frequency, gaps interpolated, unlabelled ends dropped, a daily
series kept daily."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ff.data_generator import generate_energy, main, write_csv
from ff.series import drop_unlabelled_ends, regularise, series_frequency
from ff.tests.conftest import REPO_ROOT
from ml_service.config import config_from_mapping
from ml_service.data_checks import read_csv
from ml_service.pipelines.preparation import prepare_frame
from ml_service.use_case import build_use_case, fit_one, load_use_case

# --- the generator ------------------------------------------------------------------------------------------


def test_same_seed_gives_byte_identical_csv(tmp_path):
    assert main(["--output", str(tmp_path / "a.csv"), "--partitions", "3", "--days", "5", "--seed", "3"]) == 0
    assert main(["--output", str(tmp_path / "b.csv"), "--partitions", "3", "--days", "5", "--seed", "3"]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    write_csv(generate_energy(3, days=5, seed=4), tmp_path / "c.csv")
    assert (tmp_path / "a.csv").read_bytes() != (tmp_path / "c.csv").read_bytes()
    lines = (tmp_path / "a.csv").read_text().splitlines()
    assert lines[0] == "timeStamp,region,demand,precip,temp"
    assert lines[1].startswith("2016-08-01 00:00:00,r0000,")
    assert len(lines) == 1 + 3 * 5 * 24


def test_the_use_case_generates_what_its_configuration_says(tmp_path):
    use_case = load_use_case("nyc_energy_regions_model", REPO_ROOT)
    options = use_case.config.data.generate
    use_case.implementation.generate(options, tmp_path / "regions.csv")
    expected = write_csv(
        generate_energy(options["partitions"], options["days"], options["seed"], options["start"]),
        tmp_path / "expected.csv",
    )
    assert (tmp_path / "regions.csv").read_bytes() == expected.read_bytes()
    frame = pd.read_csv(tmp_path / "regions.csv")
    assert frame.region.nunique() == 8 and len(frame) == 8 * options["days"] * 24


def test_bad_generator_arguments_are_refused(capsys):
    with pytest.raises(ValueError, match="partitions must be >= 0"):
        generate_energy(-1)
    with pytest.raises(SystemExit):
        main(["--output", "unused.csv", "--days", "0"])
    assert "days must be > 0" in capsys.readouterr().err


def test_single_series_is_nyc_like():
    df = generate_energy()
    assert list(df.columns) == ["timeStamp", "demand", "precip", "temp"]
    assert len(df) == 365 * 24 and df.notna().all().all()
    assert 5000 < df.demand.mean() < 7000 and 2500 < df.demand.min() and df.demand.max() < 12000
    assert df.demand.quantile(0.05) > 3000 and df.demand.quantile(0.95) < 9500
    assert 45 < df.temp.mean() < 65 and -5 < df.temp.min() and df.temp.max() < 105
    assert 0.05 < (df.precip > 0).mean() < 0.2 and df.precip.min() == 0 and df.precip.max() < 3
    hourly = df.groupby(df.timeStamp.dt.hour).demand.mean()
    assert hourly.idxmin() in range(2, 7) and hourly.idxmax() in range(12, 20)
    weekly = df.groupby(df.timeStamp.dt.day_of_week).demand.mean()
    assert weekly[[5, 6]].max() < weekly[[0, 1, 2, 3, 4]].min()
    by_temp = df.groupby(pd.cut(df.temp, [-50, 30, 60, 85, 150]), observed=False).demand.mean().to_numpy()
    assert by_temp[1] < by_temp[0] and by_temp[1] < by_temp[2] < by_temp[3]  # U shape, cooling steeper


def test_many_partitions_vectorised():
    df = generate_energy(10_000, days=2, seed=1)
    assert len(df) == 10_000 * 48 and df.region.nunique() == 10_000
    assert df.region.iloc[0] == "r0000" and df.region.iloc[-1] == "r9999"
    scales = df.groupby("region", observed=True).demand.mean()
    assert scales.std() > 0.1 * scales.mean()  # regions differ


# --- one series ----------------------------------------------------------------------------------------------


def test_frequency_is_the_declared_one_or_the_series_own():
    hours = pd.Series(pd.date_range("2017-01-01", periods=50, freq="h"))
    days = pd.Series(pd.date_range("2017-01-01", periods=50, freq="D"))
    assert series_frequency(hours, "") == "h" and series_frequency(hours, "15min") == "15min"
    assert series_frequency(days.drop(index=[3, 4, 9]), "") == "D"  # gaps do not change it
    assert series_frequency(days[::7], "") == "7D"
    assert series_frequency(days.sample(frac=1, random_state=0), "") == "D"  # nor does the order
    with pytest.raises(ValueError, match="declare time.frequency"):
        series_frequency(days.head(1), "")
    months = pd.Series(pd.date_range("2017-01-01", periods=24, freq="MS"))
    with pytest.raises(ValueError, match=r"calendar frequency .* declare time.frequency \(e.g. 'MS'\)"):
        series_frequency(months, "")


def test_unlabelled_ends_are_dropped_and_inner_gaps_kept():
    frame = pd.DataFrame({"y": [None, None, 1.0, None, 3.0, None]})
    assert drop_unlabelled_ends(frame, "y").index.tolist() == [2, 3, 4]
    assert drop_unlabelled_ends(frame.assign(y=None), "y").empty


def _energy(days: int = 30) -> pd.DataFrame:
    return generate_energy(days=days)


def test_regularise_fills_gaps_in_time_and_drops_the_unlabelled_tail():
    original = _energy()
    frame = original.drop(index=[10, 11, 400]).copy()  # three missing hours
    frame.loc[frame.index[-5:], "demand"] = None  # future hours without a label yet
    frame.loc[frame.index[-5:-2], "temp"] = None
    frame.loc[50, "precip"] = None  # one gap inside a feature
    frame = frame.sample(frac=1, random_state=0)  # unsorted
    out = regularise(frame, "timeStamp", "demand", "h")
    assert list(out.columns) == list(original.columns)
    assert len(out) == 30 * 24 - 5
    assert (out.timeStamp.diff().dropna() == pd.Timedelta(hours=1)).all()
    assert out.notna().all().all()
    # interpolated in time: hour 10 is a third of the way from hour 9 to hour 12
    assert out.demand.iloc[10] == pytest.approx((original.demand.iloc[9] * 2 + original.demand.iloc[12]) / 3)
    assert out.precip.iloc[50] == pytest.approx((original.precip.iloc[49] + original.precip.iloc[51]) / 2)
    untouched = out.index.difference([10, 11, 50, 400])
    pd.testing.assert_frame_equal(out.loc[untouched], original.loc[untouched])


def test_a_regular_series_is_returned_as_it_is():
    original = _energy(10)
    pd.testing.assert_frame_equal(regularise(original, "timeStamp", "demand", "h"), original)


def test_a_daily_series_stays_daily():
    days = pd.date_range("2024-01-01", periods=60, freq="D")
    frame = pd.DataFrame({"day": days, "sales": np.arange(60.0) + 100, "promo": [0.0, 1.0] * 30, "shop": "s1"})
    frame = frame.drop(index=[20, 21])
    frame.loc[frame.index[:2], "sales"] = None
    out = regularise(frame, "day", "sales", series_frequency(frame.day, ""))
    assert len(out) == 58 and out.day.iloc[0] == days[2] and out.day.iloc[-1] == days[-1]
    assert (out.day.diff().dropna() == pd.Timedelta(days=1)).all()
    assert out.sales.tolist() == (np.arange(2.0, 60.0) + 100).tolist()
    assert set(out.shop) == {"s1"} and list(out.columns) == ["day", "sales", "promo", "shop"]


# --- through the platform's prepare ---------------------------------------------------------------------------


def test_the_public_csv_layout_prepares_unchanged(tmp_path):
    """The public nyc_energy.csv layout: missing hours, and rows without any value at the end."""
    use_case = load_use_case("nyc_energy_model", REPO_ROOT)
    frame = _energy(20)
    frame["timeStamp"] = frame.timeStamp.dt.strftime("%Y-%m-%d %H:%M:%S")
    frame = frame.drop(index=[100, 200]).reset_index(drop=True)
    frame.loc[len(frame) - 20 :, ["demand", "precip", "temp"]] = None
    path = tmp_path / "nyc_energy.csv"
    frame.to_csv(path, index=False)
    parts = prepare_frame(read_csv(path, use_case.config), use_case, str(path))
    assert list(parts) == [""]
    prepared = parts[""]
    assert len(prepared) == 20 * 24 - 20 and prepared.notna().all().all()
    assert (prepared.timeStamp.diff().dropna() == pd.Timedelta(hours=1)).all()


def test_partitions_are_prepared_one_series_each():
    use_case = load_use_case("nyc_energy_regions_model", REPO_ROOT)
    raw = generate_energy(4, days=10, seed=5).sample(frac=1, random_state=1)
    parts = prepare_frame(raw, use_case, "regions.csv")
    assert list(parts) == ["region=r0000", "region=r0001", "region=r0002", "region=r0003"]
    for key, part in parts.items():
        assert len(part) == 240 and (part.region.astype(str) == key.removeprefix("region=")).all()
        assert part.timeStamp.is_monotonic_increasing


def test_a_daily_use_case_is_prepared_and_held_out_in_days(tmp_path):
    """A daily series with no declared frequency: detected as daily, never resampled to hours; the hold-out is the
    last `horizon` days."""
    raw = {
        "code": "ff.use_cases:AutoMLUseCase",
        "data": {"path": "sales.csv"},
        "columns": {
            "day": {"type": "datetime"},
            "promo": {"type": "number", "min": 0, "max": 1},
            "temp": {"type": "number"},
            "sales": {"type": "number", "min": 0, "max_missing": 0.1},
        },
        "label": "sales",
        "time": {"column": "day", "horizon": 7},
        "checks": {"min_rows": 60},
        "evaluation": {"metric": "mape", "direction": "minimize"},
        "model": {
            "task": "forecasting",
            "automl": {"time_budget_s": 1, "metric": "mape", "estimators": ["lgbm"], "fast_path": {"enabled": True}},
        },
    }
    use_case = build_use_case(config_from_mapping("daily_sales", raw, "daily_sales.json", tmp_path), tmp_path)
    rng = np.random.default_rng(0)
    days = pd.date_range("2023-01-01", periods=120, freq="D")
    promo = (rng.random(120) < 0.3).astype(float)
    temp = 50 + 20 * np.sin(np.arange(120) / 20)
    sales = 200 + 80 * promo + 2 * temp + 30 * (days.day_of_week >= 5) + rng.normal(0, 5, 120)
    frame = pd.DataFrame({"day": days.strftime("%Y-%m-%d"), "promo": promo, "temp": temp, "sales": sales})
    frame = frame.drop(index=[30, 31, 77]).reset_index(drop=True)
    frame.loc[len(frame) - 3 :, "sales"] = None  # days not measured yet
    path = tmp_path / "sales.csv"
    frame.to_csv(path, index=False)
    prepared = prepare_frame(read_csv(path, use_case.config), use_case, str(path))[""]
    assert len(prepared) == 117 and (prepared.day.diff().dropna() == pd.Timedelta(days=1)).all()
    assert prepared.promo.between(0, 1).all() and prepared.notna().all().all()
    model, holdout, predicted = fit_one(use_case, prepared)
    assert holdout.day.tolist() == prepared.day.iloc[-7:].tolist()
    assert use_case.implementation.metrics(holdout.sales.to_numpy(), predicted)["mape"] < 0.05
