"""The promotion gate as a user meets it: edit `model.alpha` in parameters.json and train again. A worse model
(alpha 10000) is not promoted; a better one (alpha 0.1) is. Each run is the real runner in its own process, on a
project holding only this use case, with its own MLflow SQLite registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from diabetes_regression.tests.conftest import CONFIG, NAME, REPO_ROOT
from ml_service.registry.mlflow_registry import production_model

MODEL = "diabetes_regression_model"


def train(project: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project), str(REPO_ROOT)])}
    command = [sys.executable, "-m", "ml_service.pipelines.run_train_pipeline", "--use-case", NAME, "--in-process"]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def set_alpha(project: Path, alpha: float) -> None:
    path = project / CONFIG
    raw = json.loads(path.read_text())
    raw["model"]["alpha"] = alpha
    path.write_text(json.dumps(raw, indent=2))


def production(client: MlflowClient) -> tuple[str, float]:
    version = production_model(client, MODEL, "production")
    return version.version, float(version.tags["metric.mse"])


@pytest.mark.slow
def test_a_worse_model_is_kept_out_and_a_better_one_promoted(project, isolated_settings):
    first = train(project)
    for step in ("[1/4] prepare", "[2/4] train", "[3/4] evaluate", "[4/4] register"):
        assert step in first.stdout
    assert f"register: {MODEL} version 1: model, now in production" in first.stdout
    uri = f"sqlite:///{isolated_settings / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version, baseline = production(client)
    assert version == "1"
    assert client.get_model_version(MODEL, "1").tags["use_case"] == NAME

    set_alpha(project, 10_000)
    worse = train(project)
    assert "train: diabetes_regression: 1 trained" in worse.stdout  # the edited parameters retrain it
    assert "not lower, keeping production" in worse.stdout
    assert f"register: {MODEL}: nothing registered" in worse.stdout
    assert len(client.search_model_versions(f"name='{MODEL}'")) == 1 and production(client) == ("1", baseline)

    set_alpha(project, 0.1)
    better = train(project)
    assert "lower is better, promoting" in better.stdout
    assert f"register: {MODEL} version 2: model, now in production" in better.stdout
    version, mse = production(client)
    assert version == "2" and mse < baseline
