"""The one data-check engine: declared types, ranges, allowed values, missing-value limits, minimum rows per
partition and a time series' frequency, on fixture use cases; every problem named, all at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_service.config import config_from_mapping
from ml_service.data_checks import (
    DataValidationError,
    check_frame,
    check_frequency,
    coerce,
    detect_frequency,
    read_csv,
    validate,
)
from ml_service.pipelines.preparation import prepare_frame
from ml_service.pipelines.training import read_result, train_batch
from ml_service.use_case import build_use_case
from tests.fixtures.projects import toy_config, toy_frame


def config_of(**overrides):
    return config_from_mapping("toy", toy_config(**overrides))


@pytest.fixture
def config():
    return config_of()


def test_good_data_passes_and_is_coerced_to_the_declared_types(config):
    frame = toy_frame(partitions=2, rows=10).astype({"x": str})  # numbers as text (as read from a file) too
    assert check_frame(frame, config) == []
    typed = coerce(frame, config)
    assert list(typed.columns) == ["store", "colour", "x", "y"]
    assert typed["x"].dtype == np.float64 and typed["colour"].dtype == object
    assert typed["x"].tolist() == pytest.approx(toy_frame(partitions=2, rows=10)["x"].tolist())


def test_types(config):
    frame = toy_frame(partitions=1, rows=10)
    frame["x"] = frame["x"].astype(object)
    frame.loc[[2, 5], "x"] = ["abc", "1,5"]
    assert check_frame(frame, config) == ["column 'x': 2 values are not numbers (e.g. 'abc', '1,5')"]
    dated = config_of(time_frequency="D")
    frame = toy_frame(partitions=1, rows=10, frequency="D").astype({"day": str})
    frame.loc[3, "day"] = "yesterday"
    assert check_frame(frame, dated) == ["column 'day': 1 values are not date/times (e.g. 'yesterday')"]


def test_integer_and_boolean_columns():
    columns = {"n": {"type": "integer"}, "flag": {"type": "boolean"}, "y": {"type": "number"}}
    config = config_from_mapping("b", {**toy_config(partitioned=False), "columns": columns})
    frame = pd.DataFrame({"n": [1, 2.5, 3], "flag": ["yes", "no", "maybe"], "y": [1, 2, 3]})
    problems = check_frame(frame, config)
    assert "column 'flag': 1 values are not booleans (e.g. 'maybe')" in problems
    assert "column 'n': values are not whole numbers (e.g. 2.5)" in problems
    good = coerce(pd.DataFrame({"n": [1, 2, 3], "flag": ["True", "0", "yes"], "y": [1, 2, 3]}), config)
    assert good["flag"].tolist() == [True, False, True]


def test_ranges(config):
    frame = toy_frame(partitions=1, rows=10)
    frame.loc[[0, 1], "x"] = [-1.0, 10.5]
    assert check_frame(frame, config) == ["column 'x': 2 values outside [0.0, 10.0] (e.g. -1.0, 10.5)"]


def test_allowed_values(config):
    frame = toy_frame(partitions=1, rows=10)
    frame.loc[[4, 6, 7], "colour"] = ["purple", "purple", "Red"]
    assert check_frame(frame, config) == ["column 'colour': 3 values not allowed (e.g. 'purple', 'Red')"]


def test_missing_value_limits():
    frame = toy_frame(partitions=1, rows=10)
    frame.loc[[1, 2], "x"] = np.nan
    assert check_frame(frame, config_of()) == ["column 'x': 2 of 10 values missing (none allowed)"]
    tolerant = toy_config()
    tolerant["columns"]["x"]["max_missing"] = 0.1
    assert check_frame(frame, config_from_mapping("toy", tolerant)) == [
        "column 'x': 2 of 10 values missing (more than 10% allowed)"
    ]
    tolerant["columns"]["x"]["max_missing"] = 0.2
    assert check_frame(frame, config_from_mapping("toy", tolerant)) == []


def test_every_problem_at_once_naming_the_source(config):
    frame = toy_frame(partitions=1, rows=10)
    frame.loc[0, "x"] = 99
    frame.loc[1, "colour"] = "purple"
    frame.loc[2, "y"] = np.nan
    with pytest.raises(DataValidationError) as caught:
        validate(frame, config, "data/toy.csv")
    assert len(caught.value.problems) == 3
    assert str(caught.value).startswith("data/toy.csv: column 'colour': 1 values not allowed")


def test_missing_columns_name_what_is_there(config):
    assert check_frame(toy_frame(partitions=1).drop(columns=["x"]), config) == [
        "column 'x': missing (have: store, colour, y)"
    ]
    assert check_frame(toy_frame(partitions=1).iloc[:0], config) == ["no rows"]


def test_unreadable_files(tmp_path, config):
    with pytest.raises(DataValidationError, match="file not found"):
        read_csv(tmp_path / "none.csv", config)
    (tmp_path / "empty.csv").write_text("  \n")
    with pytest.raises(DataValidationError, match="file is empty"):
        read_csv(tmp_path / "empty.csv", config)
    (tmp_path / "binary.csv").write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(DataValidationError, match="not a CSV file \\(binary content\\)"):
        read_csv(tmp_path / "binary.csv", config)


def test_text_columns_are_read_as_text(tmp_path):
    # a category of digits ("007") must stay the text it is, not become the number 7
    config = config_of()
    toy_frame(partitions=2, rows=10, stores=["007", "7"]).to_csv(tmp_path / "d.csv", index=False)
    assert sorted(read_csv(tmp_path / "d.csv", config)["store"].unique()) == ["007", "7"]


# --- per partition -------------------------------------------------------------------------------------


def test_min_rows_per_partition_names_the_partition(project):
    root = project()
    use_case = build_use_case(config_of(checks={"min_rows": 12}), root)
    frame = pd.concat([toy_frame(partitions=3, rows=16), toy_frame(rows=11, stores=["short"])], ignore_index=True)
    with pytest.raises(DataValidationError) as caught:
        prepare_frame(frame, use_case, "data/toy.csv")
    assert str(caught.value) == (
        "data/toy.csv: 1 partition(s) unusable: data/toy.csv: partition store=short: "
        "only 11 usable rows, need at least 12"
    )
    parts = prepare_frame(toy_frame(partitions=3, rows=16), use_case, "data/toy.csv")
    assert list(parts) == ["store=s00", "store=s01", "store=s02"] and {len(p) for p in parts.values()} == {16}


def test_frequency_declared_and_detected():
    daily = toy_frame(partitions=1, rows=10, frequency="D")
    assert detect_frequency(daily["day"]) == "D"
    assert detect_frequency(toy_frame(partitions=1, rows=10, frequency="h")["day"]) == "h"
    assert check_frequency(daily, config_of(time_frequency="D"), "p") == "D"
    assert check_frequency(daily, config_of(time_frequency=""), "p") == "D"  # none declared: detected
    with pytest.raises(DataValidationError) as caught:
        check_frequency(daily, config_of(time_frequency="h"), "data/toy.csv: partition store=s00")
    assert str(caught.value) == (
        "data/toy.csv: partition store=s00: column 'day': 9 step(s) are not the declared frequency 'h' "
        "(detected: D); regularise the series in the use case's prepare()"
    )
    gappy = daily.drop(index=[4]).reset_index(drop=True)
    with pytest.raises(DataValidationError, match="no single regular frequency; declare time.frequency"):
        check_frequency(gappy, config_of(time_frequency=""), "p")
    with pytest.raises(DataValidationError, match="1 step\\(s\\) are not the declared frequency 'D' \\(detected: irr"):
        check_frequency(gappy, config_of(time_frequency="D"), "p")
    monthly = pd.DataFrame({"day": pd.date_range("2024-01-31", periods=6, freq="ME")})
    assert check_frequency(monthly, config_of(time_frequency="ME"), "p") == "ME"  # calendar steps of unequal length


def test_daily_data_stays_daily(project, tmp_path):
    """Neither resampled to hours nor interpolated: the rows in are the rows trained on, and the hold-out is the
    last `holdout` days."""
    root = project({"toy": toy_config(time_frequency="")})
    use_case = build_use_case(config_of(time_frequency=""), root)
    frame = toy_frame(partitions=2, rows=20, frequency="D")
    shuffled = frame.sample(frac=1, random_state=3)  # prepare puts each partition in time order
    parts = prepare_frame(shuffled, use_case, "data/toy.csv")
    for key, part in parts.items():
        original = frame[frame["store"] == key.split("=")[1]].reset_index(drop=True)
        assert len(part) == 20
        pd.testing.assert_series_equal(part["day"], original["day"].astype("datetime64[ns]"))
        assert part["y"].tolist() == original["y"].tolist()

    from ml_service.pipelines.training import ModelTask, partition_path, write_csv

    prepared = tmp_path / "prepared"
    tasks = []
    for key, part in parts.items():
        path = write_csv(part, partition_path(prepared / "toy", key))
        tasks.append(ModelTask("toy", f"toy/{key}", "toy", key, path.relative_to(prepared).as_posix(), "d", "c"))
    results = train_batch(tasks, prepared, tmp_path / "trained", root)
    assert [r.status for r in results] == ["trained", "trained"]
    held = read_result(tmp_path / "trained", "toy/store=s00")["holdout"]["time"]
    assert held == ["2024-01-17 00:00:00", "2024-01-18 00:00:00", "2024-01-19 00:00:00", "2024-01-20 00:00:00"]
