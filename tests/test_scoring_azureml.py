"""Azure ML's inference server (azureml-inference-server-http) on 127.0.0.1 with a registered model, real HTTP.

The use cases' own entry scripts are gone (a registered version is an MLflow model); what stays checked here is
the platform's launcher `ml_service.scoring.inference_server`: it runs azmlinfsrv bound to the loopback only, and
an entry script loading a registered version with MLflow's own loader answers through it; and the platform's
generic entry script `ml_service/scoring/azureml_score.py` serves a scoring package (partition models included) or
one registered version, with the scoring service's validation and 4xx errors.
"""

from __future__ import annotations

import json
import os
import pickle

import httpx
import pandas as pd
import pytest

from tests.test_scoring_support import (
    DIABETES_ROWS,
    ENERGY_ROWS,
    ENERGY_SCHEMA,
    REPO_ROOT,
    SHOP_ALLOWED,
    SHOP_ROWS,
    SHOP_TYPES,
    build_model_set,
    diabetes_model,
    energy_model,
    free_port,
    save_single,
    shop_model,
    start_process,
    stop,
    wait_ready,
    write_package,
)

SET = "nyc_energy_regions_model"

# A minimal Azure ML entry script (init/run), as a team could write one: the model folder Azure ML mounts at
# AZUREML_MODEL_DIR, loaded as the MLflow model it is; columns from its signature.
ENTRY_SCRIPT = """\
import json
import os

import mlflow.pyfunc
import pandas as pd

model = None


def init():
    global model
    model = mlflow.pyfunc.load_model(os.environ["AZUREML_MODEL_DIR"])


def run(raw):
    try:
        rows = json.loads(raw)["data"]
        names = model.metadata.get_input_schema().input_names()
        return {"predictions": model.predict(pd.DataFrame(rows, columns=names).astype(float)).tolist()}
    except (ValueError, KeyError, TypeError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
"""


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
def test_registered_model_under_azureml_inference_server_on_loopback(tmp_path):
    folder = save_single(diabetes_model(), tmp_path / "diabetes_model", DIABETES_ROWS[:1])
    script = tmp_path / "score.py"
    script.write_text(ENTRY_SCRIPT)
    process, url = serve_azureml(script, folder)
    try:
        response = httpx.post(f"{url}/score", json={"data": DIABETES_ROWS}, timeout=30)
        assert response.status_code == 200, response.text
        expected = diabetes_model().predict(pd.DataFrame(DIABETES_ROWS, columns=diabetes_model().feature_names_in_))
        assert response.json()["predictions"] == pytest.approx(list(expected))
        assert "error" in httpx.post(f"{url}/score", json={"data": [[1]]}, timeout=10).json()
    finally:
        log = stop(process)
    assert "127.0.0.1" in log and "0.0.0.0" not in log.replace("0.0.0.0/0", "")


GENERIC_SCRIPT = REPO_ROOT / "ml_service" / "scoring" / "azureml_score.py"


@pytest.mark.slow
def test_generic_entry_script_serves_the_package_with_partitions_and_4xx_errors(tmp_path):
    root = write_package(
        tmp_path / "ctx",
        {
            "diabetes_model": save_single(diabetes_model(), tmp_path / "diabetes_model"),
            SET: build_model_set(tmp_path / "set", ["r0001", "r0002"]),
            "shop_model": save_single(
                shop_model(), tmp_path / "shop_model", SHOP_ROWS[:1], input_types=SHOP_TYPES, allowed=SHOP_ALLOWED
            ),
        },
    )
    process, url = serve_azureml(GENERIC_SCRIPT, root)
    try:
        partition = {"model_name": f"{SET}/region=r0002", "data": ENERGY_ROWS}
        response = httpx.post(f"{url}/score", json=partition, timeout=10)
        assert response.status_code == 200, response.text
        assert response.json()["set_version"] == "1" and response.json()["model_version"] == "1"
        frame = pd.DataFrame(ENERGY_ROWS, columns=list(ENERGY_SCHEMA)).astype({"timeStamp": "datetime64[ns]"})
        assert response.json()["predictions"] == pytest.approx(list(energy_model(seed=2).predict(frame)))
        single = httpx.post(f"{url}/score", json={"model_name": "diabetes_model", "data": DIABETES_ROWS}, timeout=10)
        assert single.status_code == 200 and len(single.json()["predictions"]) == 2
        shop = httpx.post(f"{url}/score", json={"model_name": "shop_model", "data": SHOP_ROWS}, timeout=10)
        expected = shop_model().predict(pd.DataFrame(SHOP_ROWS, columns=list(SHOP_TYPES)))
        assert shop.status_code == 200 and shop.json()["predictions"] == pytest.approx(list(expected))
        unknown = httpx.post(f"{url}/score", json={"model_name": "nope", "data": DIABETES_ROWS}, timeout=10)
        assert unknown.status_code == 404 and unknown.json()["field"] == "model_name"
        bad = httpx.post(f"{url}/score", json={"model_name": "diabetes_model", "data": [[1, 2]]}, timeout=10)
        assert bad.status_code == 422 and bad.json()["field"] == "data[0]"
        bad_time = {"model_name": f"{SET}/region=r0001", "data": [["soon", 0, 1]]}
        response = httpx.post(f"{url}/score", json=bad_time, timeout=10)
        assert response.status_code == 422 and response.json()["field"] == "data[0][0]"
        bad_colour = {"model_name": "shop_model", "data": [["purple", "t", True, 1.0]]}
        response = httpx.post(f"{url}/score", json=bad_colour, timeout=10)
        assert response.status_code == 422 and response.json()["field"] == "data[0][0]"
        assert "must be one of [red, green, blue]" in response.json()["detail"]
        malformed = httpx.post(
            f"{url}/score", content=b'{"data": [[1', headers={"content-type": "application/json"}, timeout=10
        )
        assert malformed.status_code == 400 and malformed.json()["field"] == "body"
    finally:
        stop(process)


def test_generic_entry_script_serves_one_registered_version_as_azure_ml_mounts_it(tmp_path, monkeypatch):
    """In process: AZUREML_MODEL_DIR holding <name>/<version>/ (the MLflow model folder), a model set's partitions
    named <name>/<model key>, the file hashes recorded at registration checked before a model is unpickled."""
    from ml_service.scoring import azureml_score

    build_model_set(tmp_path / SET / "7", ["r0001", "r0002"])
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(tmp_path))
    monkeypatch.setattr(azureml_score, "_STORE", [])
    azureml_score.init()
    body = azureml_score.run(json.dumps({"model_name": f"{SET}/region=r0001", "data": ENERGY_ROWS}))
    assert (body["model_set"], body["set_version"], body["model_version"]) == (SET, "7", "1")
    frame = pd.DataFrame(ENERGY_ROWS, columns=list(ENERGY_SCHEMA)).astype({"timeStamp": "datetime64[ns]"})
    assert body["predictions"] == pytest.approx(list(energy_model(seed=1).predict(frame)))
    missing = azureml_score.run(json.dumps({"data": ENERGY_ROWS}))  # two models served: the name is required
    assert (missing.status_code, missing.get_json()["field"]) == (422, "model_name")
    (pickled,) = (tmp_path / SET / "7").rglob("region=r0002/model.pkl")
    pickled.write_bytes(pickle.dumps(diabetes_model()))  # swapped after registration
    swapped = azureml_score.run(json.dumps({"model_name": f"{SET}/region=r0002", "data": ENERGY_ROWS}))
    assert swapped.status_code == 503 and "sha256" in swapped.get_json()["detail"]
