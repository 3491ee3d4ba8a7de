"""Azure ML's inference server (azureml-inference-server-http) on 127.0.0.1 with a registered model, real HTTP.

The use cases' own entry scripts are gone (a registered version is an MLflow model); what stays checked here is
the platform's launcher `ml_service.scoring.inference_server`: it runs azmlinfsrv bound to the loopback only, and
an entry script loading a registered version with MLflow's own loader answers through it.
"""

from __future__ import annotations

import os

import httpx
import pandas as pd
import pytest

from tests.test_scoring_support import (
    DIABETES_ROWS,
    REPO_ROOT,
    diabetes_model,
    free_port,
    save_single,
    start_process,
    stop,
    wait_ready,
)

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
