"""score.py contract: init() loads every model.joblib under AZUREML_MODEL_DIR, run() validates rows."""

import json

import pandas as pd
import pytest

from ff.config import load_pipeline_config
from ff.data_generator import generate_energy
from ff.prepare import prepare_frame
from ff.scoring import score
from ff.train_automl import save_model, train_model

REGIONS = load_pipeline_config().get("nyc_energy_regions_model")
SCHEMA = {"timeStamp": "datetime", "precip": "number", "temp": "number"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    parts = prepare_frame(generate_energy(2, days=30, seed=3), REGIONS)
    for key, part in parts.items():
        save_model(train_model(part, REGIONS), folder / REGIONS.model_name / key)
    return folder


@pytest.fixture
def loaded(model_dir, monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    score.init()
    return model_dir


def test_rows_to_frame_parses_and_validates():
    frame = score.rows_to_frame(SCHEMA, [["2017-8-12 7:00", 0, 70], ["2017-08-12 08:00:00", 0.01, 71.5]])
    assert list(frame.columns) == ["timeStamp", "precip", "temp"]
    assert frame.timeStamp.iloc[0] == pd.Timestamp("2017-08-12 07:00") and frame.temp.dtype == "float64"
    bad = [
        ([["2017-8-12 7:00", 0]], "row 0: expected 3 values"),
        ([["2017-8-12 7:00", 0, 70], ["not a date", 0, 70]], "row 1, column 'timeStamp': not a date/time"),
        ([["2017-8-12 7:00", "0", 70]], "row 0, column 'precip': expected a number"),
        ([["2017-8-12 7:00", 0, None]], "row 0, column 'temp': missing value"),
        ([["2017-8-12 7:00", 0, float("nan")]], "row 0, column 'temp': missing value"),
        ([[20170812, 0, 70]], "expected a date/time string"),
        ([], "non-empty list"),
        ("rows", "non-empty list"),
    ]
    for rows, message in bad:
        with pytest.raises(ValueError, match=message):
            score.rows_to_frame(SCHEMA, rows)
    assert list(score.rows_to_frame(["AGE", "BMI"], [[50, 30.1]]).columns) == ["AGE", "BMI"]


def test_init_loads_every_model_by_relative_folder(loaded):
    assert sorted(score._MODELS) == [
        "nyc_energy_regions_model/region=r0000",
        "nyc_energy_regions_model/region=r0001",
    ]


def test_run_predicts(loaded):
    request = {
        "model_name": "nyc_energy_regions_model/region=r0001",
        "data": [["2016-08-31 07:00:00", 0.0, 70.0], ["2016-08-31 15:00:00", 0.0, 92.0]],
    }
    answer = score.run(json.dumps(request))
    assert answer["model_name"] == request["model_name"]
    assert len(answer["predictions"]) == 2 and all(isinstance(p, float) for p in answer["predictions"])
    assert answer["predictions"][1] > answer["predictions"][0] > 0
    assert score.run(request) == answer  # a dict works too


def test_run_rejects_bad_requests(loaded):
    with pytest.raises(ValueError, match="unknown model_name 'nope'"):
        score.run({"model_name": "nope", "data": [["2016-08-31 07:00:00", 0.0, 70.0]]})
    with pytest.raises(ValueError, match="not valid JSON"):
        score.run("{")
    with pytest.raises(ValueError, match="row 0: expected 3 values"):
        score.run({"model_name": "nyc_energy_regions_model/region=r0000", "data": [[1, 2]]})


def test_single_model_at_root_needs_no_name(model_dir, tmp_path, monkeypatch):
    source = model_dir / REGIONS.model_name / "region=r0000" / "model.joblib"
    (tmp_path / "model.joblib").write_bytes(source.read_bytes())
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    score.init()
    answer = score.run({"data": [["2016-08-31 07:00:00", 0.0, 70.0]]})
    assert answer["model_name"] == "default" and len(answer["predictions"]) == 1


def test_init_without_models_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="no model.joblib"):
        score.init()
