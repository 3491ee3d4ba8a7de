from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from diabetes_regression.parameters import load_parameters
from ml_service.util.data_checks import DataValidationError, schema_from_dict, validate_csv
from tests.conftest import REPO_ROOT, run_module

DIABETES = REPO_ROOT / "data" / "diabetes.csv"


@pytest.fixture
def schema():
    return schema_from_dict(load_parameters().schema)


@pytest.fixture
def good(tmp_path) -> pd.DataFrame:
    return pd.read_csv(DIABETES)


def write(tmp_path: Path, frame: pd.DataFrame, name: str = "bad.csv") -> Path:
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def test_shipped_data_passes(schema):
    frame = validate_csv(DIABETES, schema)
    assert frame.shape == (442, 11)


def test_shipped_data_is_reproducible_from_scikit_learn(tmp_path):
    result = run_module("data.create_diabetes_csv", "--output", str(tmp_path / "d.csv"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "d.csv").read_bytes() == DIABETES.read_bytes()


def test_missing_column(tmp_path, good, schema):
    path = write(tmp_path, good.drop(columns=["BMI"]))
    with pytest.raises(DataValidationError) as error:
        validate_csv(path, schema)
    assert str(path) in str(error.value) and "'BMI'" in str(error.value) and "missing" in str(error.value)


def test_wrong_type(tmp_path, good, schema):
    good["AGE"] = good["AGE"].astype(object)
    good.loc[3, "AGE"] = "fifty"
    path = write(tmp_path, good)
    with pytest.raises(DataValidationError, match=r"column 'AGE': expected numbers, found 1 value\(s\) like 'fifty'"):
        validate_csv(path, schema)


def test_out_of_range(tmp_path, good, schema):
    good.loc[0, "SEX"] = 7
    with pytest.raises(DataValidationError, match=r"column 'SEX': 1 value\(s\) above 2"):
        validate_csv(write(tmp_path, good), schema)


def test_missing_values(tmp_path, good, schema):
    good.loc[5, "S1"] = None
    with pytest.raises(DataValidationError, match=r"column 'S1': 1 missing value\(s\), first at row 5"):
        validate_csv(write(tmp_path, good), schema)


def test_too_few_rows(tmp_path, good, schema):
    with pytest.raises(DataValidationError, match="10 data rows, at least 100 needed"):
        validate_csv(write(tmp_path, good.head(10)), schema)


def test_empty_file(tmp_path, schema):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataValidationError, match=f"{path}: file is empty"):
        validate_csv(path, schema)


def test_header_only_file(tmp_path, good, schema):
    with pytest.raises(DataValidationError, match="0 data rows"):
        validate_csv(write(tmp_path, good.head(0)), schema)


def test_not_a_csv(tmp_path, schema):
    path = tmp_path / "image.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataValidationError, match=f"{path}: "):
        validate_csv(path, schema)


def test_schema_typos_are_refused():
    with pytest.raises(ValueError, match="unknown key"):
        schema_from_dict({"columns": {"A": {"type": "number", "maximum": 3}}})
    with pytest.raises(ValueError, match="'type' must be one of"):
        schema_from_dict({"columns": {"A": {"type": "float"}}})


def test_prepare_step_on_bad_csv_exits_with_one_line(tmp_path, good):
    bad = write(tmp_path, good.drop(columns=["Y"]))
    result = run_module(
        "ml_service.pipelines.steps.prepare",
        "--use-case",
        "diabetes_regression",
        "--raw-data",
        str(bad),
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: prepare:" in lines[0] and "'Y'" in lines[0] and str(bad) in lines[0]
    assert not (tmp_path / "out" / "prepared.csv").exists()


def test_prepare_step_writes_prepared_data_and_lineage(tmp_path):
    shutil.copy(DIABETES, tmp_path / "raw.csv")
    result = run_module(
        "ml_service.pipelines.steps.prepare",
        "--use-case",
        "diabetes_regression",
        "--raw-data",
        str(tmp_path / "raw.csv"),
        "--output",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    prepared = pd.read_csv(tmp_path / "out" / "prepared.csv")
    assert list(prepared.columns) == ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6", "Y"]
    assert "442 rows" in result.stdout
