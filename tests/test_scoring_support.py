"""Shared helpers for the scoring tests: tiny real scikit-learn models saved as registered versions (MLflow model
folders written by the platform's own writer) and registered in a tmp MLflow store."""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import mlflow
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from ml_service.registry.mlflow_model import save_mlflow_model
from ml_service.registry.mlflow_registry import connect, ensure_experiment, register_version
from ml_service.registry.model_set import (
    MODEL_FILE,
    SINGLE_KEY,
    model_key,
    partition_folder,
    write_manifest,
)
from ml_service.util.files import folder_sha256
from tests.conftest import REPO_ROOT

DIABETES_COLUMNS = ["AGE", "SEX", "BMI", "BP", "S1", "S2", "S3", "S4", "S5", "S6"]
DIABETES_TYPES = dict.fromkeys(DIABETES_COLUMNS, "number")
DIABETES_ROWS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 0], [56, 33, 11, 88, 0, 43, 6, 8, 1, 68]]
ENERGY_ROWS = [["2017-8-12 7:00", 0, 70], ["2017-8-12 19:00", 0, 50]]
ENERGY_SCHEMA = {"timeStamp": "datetime", "precip": "number", "temp": "number"}
# a model with text inputs: a category with allowed values, free text, a boolean and a number
SHOP_TYPES = {"colour": "category", "note": "string", "promo": "boolean", "x": "number"}
SHOP_ALLOWED = {"colour": ["red", "green", "blue"]}
SHOP_ROWS = [["red", "any text", True, 1.5], ["blue", "", False, 7.0]]


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


def shop_model(seed: int = 0) -> Pipeline:
    """y = 2x + a colour effect + 5 when promo: one-hot colours, the free text dropped, the boolean as 0/1."""
    rng = np.random.default_rng(seed)
    n = 90
    colour = np.array(SHOP_ALLOWED["colour"] * (n // 3))
    promo = rng.random(n) < 0.5
    x = rng.uniform(0, 10, n)
    frame = pd.DataFrame({"colour": colour, "note": "text", "promo": promo, "x": x})
    y = 2 * x + pd.Series(colour).map({"red": 0.0, "green": 3.0, "blue": -2.0}).to_numpy() + 5 * promo + seed
    features = ColumnTransformer(
        [("colour", OneHotEncoder(), ["colour"]), ("note", "drop", ["note"])], remainder="passthrough"
    )
    return Pipeline([("features", features), ("model", Ridge(alpha=1e-3))]).fit(frame, y)


def save_registered(
    destination: Path,
    model_name: str,
    models: Mapping[str, tuple[Any, Mapping[str, Any]]],
    input_types: Mapping[str, str],
    partition_columns: Sequence[str] = (),
    allowed: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """A registered version's MLflow model folder at `destination`, as the register step writes it: a data folder
    (each model pickled to models/<key>/model.pkl, the manifest by `write_manifest`) made into an MLflow model by
    `save_mlflow_model`. `models`: {key ("" for a single model): (model, manifest entry)}."""
    destination = Path(destination)
    data = destination.with_name(f".{destination.name}.data")
    shutil.rmtree(data, ignore_errors=True)
    entries = {}
    for key, (model, entry) in models.items():
        folder = partition_folder(data, key)
        folder.mkdir(parents=True)
        with (folder / MODEL_FILE).open("wb") as handle:
            pickle.dump(model, handle, protocol=pickle.HIGHEST_PROTOCOL)
        entries[key] = {**entry, "sha256": folder_sha256(folder)}
    write_manifest(
        data,
        model_name=model_name,
        use_case=model_name,
        input_types=input_types,
        partition_columns=partition_columns,
        models=entries,
        allowed=allowed,
    )
    save_mlflow_model(destination, data, code_paths=[])
    shutil.rmtree(data)  # its models were moved into the MLflow model; only the manifest copy is left
    return destination


def save_single(
    model,
    folder: Path,
    sample=None,
    name: str | None = None,
    metrics: Mapping[str, float] | None = None,
    input_types: Mapping[str, str] | None = None,
    allowed: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """One model as a registered version named `name` (default: the folder's name). Input types: the given ones,
    else the energy schema for a pipeline, else all numbers (the model's feature names)."""
    if input_types is None:
        if isinstance(model, Pipeline):
            input_types = ENERGY_SCHEMA
        else:
            input_types = dict.fromkeys(getattr(model, "feature_names_in_", []), "number")
    entry = {"version": "", "metrics": dict(metrics or {}), "sample_input": sample}
    return save_registered(folder, name or Path(folder).name, {SINGLE_KEY: (model, entry)}, input_types, (), allowed)


def build_model_set(folder: Path, regions: list[str], set_name: str = "nyc_energy_regions_model") -> Path:
    """A model set: one energy model per region (different seeds, so different predictions), partition versions 1."""
    models = {}
    for i, region in enumerate(regions):
        entry = {
            "version": "1",
            "metrics": {"mape": 0.1 + i / 100},
            "data_hash": f"d{i}",
            "config_hash": "c",
            "sample_input": [["2017-08-13 06:00", 0, 50]],
        }
        models[model_key({"region": region})] = (energy_model(seed=i + 1), entry)
    return save_registered(folder, set_name, models, ENERGY_SCHEMA, ["region"])


def register_folder(settings, folder: Path, name: str) -> str:
    """Log the MLflow model folder as a run's artifact `model`, register it and put it in production."""
    client = connect(settings)
    experiment = ensure_experiment(client, "scoring-tests", settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), "model")
    registration = register_version(
        client, name, run.info.run_id, "model", {}, "production",
        metrics={}, lineage={}, data_hash="", folder=folder, force=True,
    )  # fmt: skip
    return str(registration.version)


def register_standard_models(settings, tmp_path: Path, regions=("r0001", "r0002", "r0003")) -> None:
    """diabetes_model (Ridge), nyc_energy_model (weather pipeline), nyc_energy_regions_model (a model set)."""
    diabetes = save_single(diabetes_model(), tmp_path / "diabetes_model", DIABETES_ROWS[:1], metrics={"rmse": 1.5})
    register_folder(settings, diabetes, "diabetes_model")
    register_folder(
        settings, save_single(energy_model(), tmp_path / "nyc_energy_model", ENERGY_ROWS[:1]), "nyc_energy_model"
    )
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
    return _serve(folder, env, port or free_port(), folder, extra)


def _serve(folder: Path, env: dict, port: int, cwd: Path, extra) -> tuple[subprocess.Popen, str]:
    """`serve --package folder` on 127.0.0.1:port, started from `cwd`; returns once /health answers."""
    command = ["-m", "ml_service.scoring.serve", "--package", str(folder), "--port", str(port), *extra]
    process = start_process(command, env, cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
    except BaseException:
        stop(process)
        raise
    return process, url


def test_the_helpers_write_mlflow_models_that_mlflow_loads(tmp_path):
    """The folders these tests serve are what the register step registers: MLflow's own loader predicts with them
    (a single model, and a model set routing rows by their partition column), signature typed from the manifest."""
    import mlflow.pyfunc

    from ml_service.registry.mlflow_model import signature_types

    shop = save_single(shop_model(), tmp_path / "shop", SHOP_ROWS[:1], input_types=SHOP_TYPES, allowed=SHOP_ALLOWED)
    assert signature_types(shop) == {"colour": "string", "note": "string", "promo": "boolean", "x": "number"}
    frame = pd.DataFrame(SHOP_ROWS, columns=list(SHOP_TYPES))
    assert list(mlflow.pyfunc.load_model(str(shop)).predict(frame)) == list(shop_model().predict(frame))
    regions = build_model_set(tmp_path / "set", ["r1", "r/2"])
    assert signature_types(regions) == {"region": "string", **ENERGY_SCHEMA}
    rows = pd.DataFrame([["r/2", *ENERGY_ROWS[0]], ["r1", *ENERGY_ROWS[0]]], columns=["region", *ENERGY_SCHEMA])
    rows = rows.astype({"timeStamp": "datetime64[ns]", "precip": float, "temp": float})  # MLflow checks types
    predicted = mlflow.pyfunc.load_model(str(regions)).predict(rows)
    expected = [energy_model(seed=s).predict(rows.iloc[[i]][list(ENERGY_SCHEMA)])[0] for i, s in ((0, 2), (1, 1))]
    assert list(predicted) == expected
    assert not list(tmp_path.glob(".*"))  # the data folders were consumed, nothing left beside


def test_samples_are_typed_as_the_signature_says(tmp_path):
    """Training writes 3.0 for an integer column, a request-shaped sample has 50 for a number: both register (MLflow
    checks the input example against the signature and refuses int64 for a double column)."""
    model = Ridge().fit(pd.DataFrame({"n": [1.0, 2.0, 3.0], "x": [0.5, 1.0, 2.0]}), [1.0, 2.0, 3.0])
    folder = save_single(model, tmp_path / "m", [[3.0, 50]], input_types={"n": "integer", "x": "number"})
    assert json.loads((folder / "input_example.json").read_text())["data"] == [[3.0, 50.0]]
    from ml_service.scoring.model_store import entries_for_folder

    (entry,) = entries_for_folder("m", "1", folder)
    assert list(entry.defaults["input_schema"]) == ["n", "x"]


class GateModel:
    """A model whose predict announces itself (creates ``started``) and then waits for the file ``gate``: a
    prediction that is provably in progress while a test probes the server (bounded: 60 s)."""

    def __init__(self, folder: str):
        self.folder = folder

    def predict(self, x):
        Path(self.folder, "started").touch()
        deadline = time.monotonic() + 60
        while not Path(self.folder, "gate").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return np.zeros(len(x))


def write_package(root: Path, folders: dict[str, Path]) -> Path:
    """A scoring package as ``ml_service.scoring.package`` lays it out (manifest with the sha256 of each file,
    relative to the model's folder), from registered versions (MLflow model folders), without a registry."""
    from ml_service.registry.mlflow_model import data_path
    from ml_service.registry.model_set import read_manifest

    package = root / "package"
    entries = []
    for name, folder in folders.items():
        target = package / "models" / name
        shutil.copytree(folder, target)
        kind = read_manifest(data_path(target))["kind"]
        entries.append(
            {"name": name, "version": "1", "kind": kind, "path": f"models/{name}", "files": folder_sha256(target)}
        )
    (package / "manifest.json").write_text(json.dumps({"kind": "scoring_package", "format": 1, "models": entries}))
    return root


def serve_test_package(root: Path, env: dict, *extra: str) -> tuple[subprocess.Popen, str]:
    """``serve --package root`` on 127.0.0.1 with the repository importable (test models live in tests/)."""
    return _serve(root, {**env, "PYTHONPATH": str(REPO_ROOT)}, free_port(), REPO_ROOT, extra)
