"""The registry: every registered version is an MLflow model (signature with string columns, input example, the use
case's code shipped) that `mlflow.pyfunc` loads and predicts with; and the MLflow wrapper against a real SQLite
store in a temporary folder."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from ml_service.pipelines import run_train_pipeline
from ml_service.registry.mlflow_model import data_path, signature_types
from ml_service.registry.mlflow_registry import (
    connect,
    download_model,
    ensure_experiment,
    production_model,
)
from ml_service.registry.model_set import parse_model_key
from ml_service.registry.tags import metrics_from_tags, metrics_to_tags
from ml_service.util.env_variables import load_settings
from tests.conftest import forget_loaded_code
from tests.fixtures.projects import toy_config, toy_frame

AWKWARD_STORES = ["a/b", "c,d", "e=f", "g h", "üñï 東京", "plain"]


def train_and_download(project, tmp_path: Path, use_cases: dict, frame: pd.DataFrame, name: str) -> Path:
    project(use_cases, {"data/toy.csv": frame})
    assert run_train_pipeline.main(["--use-case", name, "--in-process", "--run-dir", str(tmp_path / "run")]) == 0
    client = connect(load_settings())
    return download_model(client, production_model(client, name, "production"), tmp_path / "download")


def only_the_shipped_code(monkeypatch, tmp_path: Path) -> None:
    """Forget the project: the fixture package can then only come from the model's own code/ folder."""
    root = str(Path.cwd())
    forget_loaded_code()
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in (root, "", ".")])
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
def test_a_model_set_is_an_mlflow_model_that_pyfunc_predicts_with(project, tmp_path, monkeypatch):
    frame = toy_frame(stores=AWKWARD_STORES)
    model = train_and_download(project, tmp_path, {"toy": toy_config()}, frame, "toy")

    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    inputs = json.loads(mlmodel["signature"]["inputs"])
    assert [(c["name"], c["type"]) for c in inputs] == [("store", "string"), ("colour", "string"), ("x", "double")]
    assert signature_types(model) == {"store": "string", "colour": "string", "x": "number"}
    assert mlmodel["metadata"]["mlops"] == {"kind": "model_set", "model_name": "toy"}
    assert (model / mlmodel["saved_input_example_info"]["artifact_path"]).is_file()
    assert (model / "code" / "toyuc" / "model.py").is_file() and (model / "code" / "mlops_pyfunc_model.py").is_file()
    assert any(line.startswith("pandas==") for line in (model / "requirements.txt").read_text().splitlines())

    manifest = json.loads((data_path(model) / "manifest.json").read_text())
    assert sorted(parse_model_key(key)["store"] for key in manifest["models"]) == sorted(AWKWARD_STORES)
    assert manifest["allowed"] == {"colour": ["red", "green", "blue"]}

    rows = frame.groupby("store").tail(3).reset_index(drop=True)
    expected = np.empty(len(rows))
    for key, entry in manifest["models"].items():
        with (data_path(model) / entry["path"] / "model.pkl").open("rb") as handle:
            one = pickle.load(handle)
        mine = (rows["store"] == parse_model_key(key)["store"]).to_numpy()
        expected[mine] = one.predict(rows[mine])

    only_the_shipped_code(monkeypatch, tmp_path)
    loaded = mlflow.pyfunc.load_model(str(model))
    predicted = loaded.predict(rows[["store", "colour", "x"]])
    assert np.asarray(predicted) == pytest.approx(expected, rel=1e-12)
    assert np.abs(np.asarray(predicted) - rows["y"].to_numpy()).max() < 1


@pytest.mark.slow
def test_a_single_model_is_an_mlflow_model_too(project, tmp_path, monkeypatch):
    frame = toy_frame(partitions=1, rows=30)
    model = train_and_download(project, tmp_path, {"single": toy_config(partitioned=False)}, frame, "single")
    assert signature_types(model) == {"colour": "string", "x": "number"}
    only_the_shipped_code(monkeypatch, tmp_path)
    predicted = np.asarray(mlflow.pyfunc.load_model(str(model)).predict(frame[["colour", "x"]].head(5)))
    assert predicted.shape == (5,) and np.abs(predicted - frame["y"].head(5).to_numpy()).max() < 1
    assert "store" not in frame[["colour", "x"]]  # no partition columns in a single model's input


def test_version_tags_carry_metrics_exactly(project, tmp_path):
    project()
    assert run_train_pipeline.main(["--use-case", "toy", "--in-process", "--run-dir", str(tmp_path / "run")]) == 0
    client = connect(load_settings())
    tags = production_model(client, "toy", "production").tags
    assert tags["use_case"] == "toy" and tags["kind"] == "model_set" and tags["models"] == "6"
    assert set(metrics_from_tags(tags)) == {"mae", "rmse"} and len(tags["data_hash"]) == 64
    value = 0.1 + 0.2
    assert metrics_from_tags(metrics_to_tags({"mae": value})) == {"mae": value}  # exactly the float written


# --- the MLflow wrapper ----------------------------------------------------------------------------------


def logged_run(client, settings, tmp_path: Path, name: str = "m") -> str:
    folder = tmp_path / f"artifact-{name}"
    folder.mkdir()
    (folder / "weights.txt").write_text(name)
    with mlflow.start_run(experiment_id=ensure_experiment(client, "tests", settings)) as run:
        mlflow.log_artifacts(str(folder), "model")
    return run.info.run_id
