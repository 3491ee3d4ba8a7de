"""Shared helpers for the scoring tests: tiny real scikit-learn models registered in a tmp MLflow store."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline

from ml_service.registry.mlflow_registry import connect, ensure_experiment, register_version
from ml_service.registry.model_folder import save_model_folder
from ml_service.registry.model_set import model_key, partition_folder, write_model_set
from tests.conftest import REPO_ROOT

DIABETES_COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]
DIABETES_ROWS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 0], [56, 33, 11, 88, 0, 43, 6, 8, 1, 68]]
ENERGY_ROWS = [["2017-8-12 7:00", 0, 70], ["2017-8-12 19:00", 0, 50]]
ENERGY_SCHEMA = {"timeStamp": "datetime", "precip": "number", "temp": "number"}


def diabetes_model(seed: int = 0) -> Ridge:
    rng = np.random.default_rng(seed)
    x = pd.DataFrame(rng.normal(50, 20, size=(60, 10)), columns=DIABETES_COLUMNS)
    y = x.to_numpy() @ rng.normal(size=10) + 100
    return Ridge(alpha=0.5).fit(x, y)


def energy_model(seed: int = 0) -> Pipeline:
    rng = np.random.default_rng(seed)
    times = pd.date_range("2017-06-01", periods=24 * 14, freq="h")
    x = pd.DataFrame(
        {"timeStamp": times, "precip": rng.uniform(0, 1, len(times)), "temp": rng.uniform(40, 90, len(times))}
    )
    y = 5000 + 30 * x["temp"].to_numpy() + 100 * x["precip"].to_numpy() + seed * 10
    # scikit-learn parts only, so the tests need no use-case package: the time stamp is part of the input (and of
    # the schema the service checks) but not of the features
    weather = ColumnTransformer([("time", "drop", ["timeStamp"])], remainder="passthrough")
    return Pipeline([("features", weather), ("model", Ridge())]).fit(x, y)


def save_single(model, folder: Path, sample=None) -> Path:
    metadata = {"input_columns": list(getattr(model, "feature_names_in_", []))}
    if isinstance(model, Pipeline):
        metadata = {"input_columns": list(ENERGY_SCHEMA), "input_schema": ENERGY_SCHEMA}
    if sample is not None:
        metadata["sample_input"] = sample
    return save_model_folder(model, folder, metadata)


def build_model_set(folder: Path, regions: list[str], set_name: str = "nyc_energy_regions_model") -> Path:
    models = {}
    for i, region in enumerate(regions):
        key = model_key({"region": region})
        model = energy_model(seed=i + 1)
        save_single(model, partition_folder(folder, key))
        models[key] = {"version": "1", "metrics": {"mape": 0.1 + i / 100}, "data_hash": f"d{i}", "config_hash": "c"}
    schema = ENERGY_SCHEMA
    write_model_set(
        folder,
        model_name=set_name,
        input_columns=list(schema),
        partition_columns=["region"],
        models=models,
        input_schema=schema,
        sample_input=[["2017-08-13 06:00", 0, 50]],
    )
    return folder


def register_folder(settings, folder: Path, name: str, metrics: dict | None = None) -> str:
    client = connect(settings)
    experiment = ensure_experiment(client, "scoring-tests", settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        if metrics:
            mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(folder), "model")
    registration = register_version(
        client, name, run.info.run_id, "model", {}, "production",
        metrics=metrics or {}, lineage={}, data_hash="", folder=folder, force=True,
    )  # fmt: skip
    return str(registration.version)


def register_standard_models(settings, tmp_path: Path, regions=("r0001", "r0002", "r0003")) -> None:
    """diabetes_model (Ridge), nyc_energy_model (calendar pipeline), nyc_energy_regions_model (a model set)."""
    register_folder(
        settings,
        save_single(diabetes_model(), tmp_path / "diabetes", DIABETES_ROWS[:1]),
        "diabetes_model",
        {"rmse": 1.5},
    )
    register_folder(settings, save_single(energy_model(), tmp_path / "energy", ENERGY_ROWS[:1]), "nyc_energy_model")
    register_folder(settings, build_model_set(tmp_path / "set", list(regions)), "nyc_energy_regions_model")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_process(args: list[str], env: dict, cwd: Path = REPO_ROOT) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def wait_ready(url: str, process: subprocess.Popen, timeout: float = 45.0, path: str = "/health") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(url + path, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready within {timeout} s")


def stop(process: subprocess.Popen) -> str:
    process.terminate()
    try:
        out, _ = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
    return out or ""


def serve_package(folder: Path, env: dict, port: int | None = None, *extra: str) -> tuple[subprocess.Popen, str]:
    """The packaged service as its container runs it: only the package folder on the path, on 127.0.0.1."""
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    port = port or free_port()
    process = start_process(
        ["-m", "ml_service.scoring.serve", "--package", str(folder), "--port", str(port), *extra], env, folder
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
    except BaseException:
        stop(process)
        raise
    return process, url
