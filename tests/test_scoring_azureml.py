"""The Azure ML contract: the use cases' score.py under azureml-inference-server-http on 127.0.0.1, real HTTP."""

from __future__ import annotations

import importlib
import json
import os

import httpx
import pandas as pd
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from ml_service.registry.model_folder import save_model_folder
from tests.test_scoring_support import (
    DIABETES_COLUMNS,
    DIABETES_ROWS,
    ENERGY_ROWS,
    REPO_ROOT,
    diabetes_model,
    free_port,
    save_single,
    start_process,
    stop,
    wait_ready,
)

DIABETES_SCRIPT = REPO_ROOT / "diabetes_regression" / "scoring" / "score.py"
FF_SCRIPT = REPO_ROOT / "ff" / "scoring" / "score.py"


def test_diabetes_score_in_process(tmp_path, monkeypatch):
    save_model_folder(diabetes_model(), tmp_path / "diabetes_model" / "1", {"input_columns": DIABETES_COLUMNS})
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))  # contains the model folder, as Azure ML mounts it
    score = importlib.import_module("diabetes_regression.scoring.score")
    score.init()
    result = score.run(json.dumps({"data": DIABETES_ROWS}))
    assert len(result["predictions"]) == 2
    assert "data[0][9]" in score.run(json.dumps({"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, "x"]]}))["error"]
    assert "data[0]" in score.run('{"data": [[1, 2]]}')["error"]
    assert "error" in score.run("{not json") and "error" in score.run('{"data": []}')


def serve_azureml(script, model_dir):
    port = free_port()
    env = {**os.environ, "AZUREML_MODEL_DIR": str(model_dir), "PYTHONPATH": str(REPO_ROOT)}
    args = ["-m", "ml_service.scoring.inference_server", "--entry_script", str(script), "--port", str(port)]
    process = start_process(args, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process, path="/")
    except BaseException:
        stop(process)
        raise
    return process, url


@pytest.mark.slow
def test_score_scripts_under_azureml_inference_server(tmp_path):
    save_single(diabetes_model(), tmp_path / "diabetes")
    process, url = serve_azureml(DIABETES_SCRIPT, tmp_path / "diabetes")
    try:
        response = httpx.post(f"{url}/score", json={"data": DIABETES_ROWS}, timeout=10)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        assert "error" in httpx.post(f"{url}/score", json={"data": [[1]]}, timeout=10).json()
    finally:
        log = stop(process)
    assert "127.0.0.1" in log and "0.0.0.0" not in log.replace("0.0.0.0/0", "")


@pytest.mark.slow
def test_ff_score_script_under_azureml_inference_server(tmp_path):
    from ff.features import CalendarWeatherFeatures  # the ff sample's own features (bootstrap --drop-ff drops this)

    frame = pd.DataFrame(
        {"timeStamp": pd.date_range("2017-06-01", periods=24 * 14, freq="h"), "precip": 0.0, "temp": 60.0}
    )
    target = 5000 + 100 * frame["timeStamp"].dt.hour.to_numpy()
    model = Pipeline([("features", CalendarWeatherFeatures()), ("model", Ridge())]).fit(frame, target)
    save_single(model, tmp_path / "ff" / "nyc_energy_model")
    process, url = serve_azureml(FF_SCRIPT, tmp_path / "ff")
    try:
        payload = {"model_name": "nyc_energy_model", "data": ENERGY_ROWS}
        response = httpx.post(f"{url}/score", json=payload, timeout=10)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2
    finally:
        stop(process)


GENERIC_SCRIPT = REPO_ROOT / "ml_service" / "scoring" / "azureml_score.py"


@pytest.mark.slow
def test_generic_entry_script_serves_the_package_with_partitions_and_4xx_errors(tmp_path):
    from tests.test_scoring_support import build_model_set, write_package

    root = write_package(
        tmp_path / "ctx",
        {
            "diabetes_model": save_single(diabetes_model(), tmp_path / "d"),
            "nyc_energy_regions_model": build_model_set(tmp_path / "set", ["r0001", "r0002"]),
        },
    )
    process, url = serve_azureml(GENERIC_SCRIPT, root)
    try:
        partition = {"model_name": "nyc_energy_regions_model/region=r0002", "data": ENERGY_ROWS}
        response = httpx.post(f"{url}/score", json=partition, timeout=10)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 2 and response.json()["set_version"] == "1"
        single = httpx.post(f"{url}/score", json={"model_name": "diabetes_model", "data": DIABETES_ROWS}, timeout=10)
        assert single.status_code == 200 and len(single.json()["predictions"]) == 2
        unknown = httpx.post(f"{url}/score", json={"model_name": "nope", "data": DIABETES_ROWS}, timeout=10)
        assert unknown.status_code == 404 and unknown.json()["field"] == "model_name"
        bad = httpx.post(f"{url}/score", json={"model_name": "diabetes_model", "data": [[1, 2]]}, timeout=10)
        assert bad.status_code == 422 and bad.json()["field"] == "data[0]"
        bad_time = {"model_name": "nyc_energy_regions_model/region=r0001", "data": [["soon", 0, 1]]}
        assert httpx.post(f"{url}/score", json=bad_time, timeout=10).json()["field"] == "data[0][0]"
    finally:
        stop(process)
