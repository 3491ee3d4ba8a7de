"""The whole local flow as a user runs it: a project copy, its own registry, parameters edited by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_service.pipelines.catalog import training_pipeline
from ml_service.pipelines.definition import Binding, PipelineSpec, StepSpec
from ml_service.registry.mlflow_registry import production_model
from tests.conftest import copy_project, run_module

RUNNER = "ml_service.pipelines.run_train_pipeline"


@pytest.fixture
def project(tmp_path, monkeypatch, empty_mlflow_db) -> Path:
    monkeypatch.setenv("LOCAL_DIR", "local")
    return copy_project(tmp_path / "project", ("ml_service", "diabetes_regression"), empty_mlflow_db)


def set_alpha(project: Path, alpha: float) -> None:
    path = project / "diabetes_regression" / "parameters.json"
    params = json.loads(path.read_text())
    params["training"]["alpha"] = alpha
    path.write_text(json.dumps(params, indent=2))


def registry(project: Path) -> MlflowClient:
    uri = f"sqlite:///{project / 'local' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@pytest.mark.slow
def test_promotion_gate_across_runs(project):
    first = run_module(RUNNER, "--use-case", "diabetes_regression", cwd=project)
    assert first.returncode == 0, first.stderr
    for step in ("[1/4] prepare", "[2/4] train", "[3/4] evaluate", "[4/4] register"):
        assert step in first.stdout
    assert "diabetes_regression_model version 1 registered" in first.stdout
    client = registry(project)
    production = production_model(client, "diabetes_regression_model", "production")
    assert production.version == "1" and production.tags["git_tree"] in ("clean", "dirty", "unknown")
    assert production.tags["param.alpha"] == "0.5" and len(production.tags["data_hash"]) == 64
    assert "git_commit" not in production.tags or production.tags["git_commit"]

    set_alpha(project, 10_000)
    worse = run_module(RUNNER, "--use-case", "diabetes_regression", "--in-process", cwd=project)
    assert worse.returncode == 0, worse.stderr
    assert "not lower, keeping the production model" in worse.stdout
    assert "nothing registered" in worse.stdout
    assert len(client.search_model_versions("name='diabetes_regression_model'")) == 1

    set_alpha(project, 0.1)
    better = run_module(RUNNER, "--use-case", "diabetes_regression", "--in-process", cwd=project)
    assert better.returncode == 0, better.stderr
    assert "lower is better, promoting" in better.stdout
    assert production_model(client, "diabetes_regression_model", "production").version == "2"


@pytest.mark.slow
def test_failing_step_is_named_and_exit_is_non_zero(project):
    (project / "data" / "diabetes.csv").write_text("AGE,SEX\n1,2\n")
    result = run_module(RUNNER, "--use-case", "diabetes_regression", "--in-process", cwd=project)
    assert result.returncode == 1
    assert "error: prepare:" in result.stderr and "missing" in result.stderr
    assert "step 'prepare' failed" in result.stderr
    assert "[2/4] train" not in result.stdout


def test_run_evaluation_false_is_reported(project):
    result = run_module(RUNNER, "--use-case", "diabetes_regression", cwd=project, env={"RUN_EVALUATION": "maybe"})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: RUN_EVALUATION='maybe' is not a boolean; accepted values: true, 1, yes, on, false, 0, no, off"
    )


def test_unknown_use_case_is_one_line():
    result = run_module(RUNNER, "--use-case", "no_such_case")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: use case 'no_such_case': cannot import no_such_case"


def test_pipeline_definition_wires_outputs_to_inputs():
    spec = training_pipeline("diabetes_regression")
    assert [s.name for s in spec.steps] == ["prepare", "train", "evaluate", "register"]
    assert spec.step("register").inputs["decision"] == Binding("evaluate", "output")
    args = spec.step("train").arguments({"prepared": "${{inputs.prepared}}"}, {"output": "${{outputs.output}}"})
    assert args == [
        "--use-case",
        "diabetes_regression",
        "--prepared",
        "${{inputs.prepared}}",
        "--output",
        "${{outputs.output}}",
    ]
    with pytest.raises(ValueError, match="no such output"):
        PipelineSpec("p", "", {}, (StepSpec("a", "m", "", inputs={"x": Binding("later", "output")}),))
