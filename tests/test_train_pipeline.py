"""The training pipeline as a user runs it (prepare → train → evaluate → register) on a fixture use case, and the one
promotion rule: strictly better promotes, equal keeps production."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ml_service.pipelines import run_train_pipeline
from ml_service.pipelines.definition import Binding, PipelineSpec, StepSpec, training_pipeline
from ml_service.registry.mlflow_registry import production_model
from ml_service.registry.promotion import decide, is_better
from ml_service.util.env_variables import load_settings
from ml_service.util.files import read_json
from tests.conftest import forget_loaded_code
from tests.fixtures.projects import toy_config, toy_frame


def run(run_dir: Path, capsys, use_cases: str = "toy") -> tuple[int, str, str]:
    forget_loaded_code()
    code = run_train_pipeline.main(["--use-case", use_cases, "--in-process", "--run-dir", str(run_dir)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def registry() -> MlflowClient:
    uri = load_settings().tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def production_manifest(tmp_path: Path, name: str) -> dict:
    from ml_service.registry.mlflow_registry import connect, download_data, production_model

    client = connect(load_settings())
    current = production_model(client, name, "production")
    return read_json(download_data(client, current, tmp_path / f"download-{current.version}") / "manifest.json")


@pytest.mark.slow
def test_promotion_across_runs_per_partition(project, tmp_path, capsys):
    root = project()
    run_dir = tmp_path / "runs" / "toy" / "current"
    code, out, err = run(run_dir, capsys)
    assert code == 0, err
    for step in ("[1/4] prepare", "[2/4] train", "[3/4] evaluate", "[4/4] register"):
        assert step in out
    assert "register: toy version 1: model set of 6 (6 promoted), now in production" in out
    first = production_manifest(tmp_path, "toy")
    assert {e["version"] for e in first["models"].values()} == {"1"}

    # same data, same code: every candidate equals production, and equal is not better
    code, out, err = run(run_dir, capsys)
    assert code == 0, err
    assert "evaluate: toy: 0 of 6 promoted (production version 1)" in out
    assert "register: toy: nothing registered" in out
    decisions = read_json(run_dir / "evaluate" / "output" / "decisions.json")["toy"]["models"]
    assert "not lower, keeping production" in decisions["toy/store=s00"]["reason"]
    assert len(registry().search_model_versions("name='toy'")) == 1

    # one store's data becomes easier to fit (no noise), another's harder: only the better one is promoted
    frame = toy_frame()
    clean = frame["store"] == "s00"
    frame.loc[clean, "y"] = 2 * frame.loc[clean, "x"] + frame.loc[clean, "colour"].map(
        {"red": 0, "green": 3, "blue": -2}
    )
    frame.loc[frame["store"] == "s01", "y"] += [(-1) ** i * 5 for i in range(16)]
    frame.to_csv(root / "data" / "toy.csv", index=False)
    code, out, err = run(run_dir, capsys)
    assert code == 0, err
    assert "evaluate: toy: 1 of 6 promoted (production version 1)" in out
    decisions = read_json(run_dir / "evaluate" / "output" / "decisions.json")["toy"]["models"]
    assert "lower is better, promoting" in decisions["toy/store=s00"]["reason"]
    assert decisions["toy/store=s01"]["promote"] is False
    second = production_manifest(tmp_path, "toy")
    assert second["models"]["store=s00"]["version"] == "2"
    assert {k: e["version"] for k, e in second["models"].items() if k != "store=s00"} == dict.fromkeys(
        [f"store=s0{i}" for i in range(1, 6)], "1"
    )  # the kept partitions are production's, unchanged
    assert second["models"]["store=s01"]["sha256"] == first["models"]["store=s01"]["sha256"]
    assert production_model(registry(), "toy", "production").version == "2"

    # every run's report is kept, newest first
    history = run_dir.parent / "history"
    assert len(list(history.glob("2*.html"))) == 3
    assert (history / "index.html").read_text().count("<li>") == 3


def test_a_single_model_use_case_is_one_partition(project, tmp_path, capsys):
    project({"single": toy_config(partitioned=False)}, {"data/toy.csv": toy_frame(partitions=1, rows=30)})
    code, out, err = run(tmp_path / "run", capsys, "single")
    assert code == 0, err
    assert "evaluate: single: nothing in production; candidate mae=" in out
    assert "register: single version 1: model, now in production" in out
    manifest = production_manifest(tmp_path, "single")
    assert manifest["kind"] == "model" and list(manifest["models"]) == [""]
    assert manifest["input_columns"] == ["colour", "x"] and manifest["partition_columns"] == []


def test_a_failing_step_is_named_and_nothing_after_it_runs(project, tmp_path, capsys):
    root = project()
    frame = toy_frame()
    frame.loc[3, "colour"] = "purple"
    frame.to_csv(root / "data" / "toy.csv", index=False)
    code, out, err = run(tmp_path / "run", capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert (
        lines[0].startswith("error: prepare: ") and "column 'colour': 1 values not allowed (e.g. 'purple')" in lines[0]
    )
    assert lines[-1] == "error: pipeline toy-training: step 'prepare' failed with exit code 2"
    assert "[2/4] train" not in out


def test_bad_settings_and_unknown_use_cases_are_one_line(project, monkeypatch, capsys):
    project()
    assert run_train_pipeline.main(["--use-case", "toys"]) == 2
    assert capsys.readouterr().err == "error: unknown use case 'toys'; declared use cases: toy\n"
    monkeypatch.setenv("RUN_EVALUATION", "maybe")
    assert run_train_pipeline.main(["--use-case", "toy"]) == 2
    assert capsys.readouterr().err == (
        "error: RUN_EVALUATION='maybe' is not a boolean; accepted values: true, 1, yes, on, false, 0, no, off\n"
    )


def test_the_pipeline_definition_wires_outputs_to_inputs():
    spec = training_pipeline(["a", "b"], "both")
    assert spec.name == "both-training" and [s.name for s in spec.steps] == ["prepare", "train", "evaluate", "register"]
    assert spec.step("register").inputs == {
        "trained": Binding("train", "output"),
        "decisions": Binding("evaluate", "output"),
    }
    assert spec.step("train").kind == "parallel"
    assert spec.step("prepare").arguments({}, {"output": "OUT"}) == ["--use-case", "a,b", "--output", "OUT"]
    assert spec.step("train").arguments({"prepared": "${{inputs.prepared}}"}, {"output": "O"}) == [
        "--prepared",
        "${{inputs.prepared}}",
        "--output",
        "O",
    ]
    with pytest.raises(ValueError, match="no such output"):
        PipelineSpec("p", "", {}, (StepSpec("a", "m", "", inputs={"x": Binding("later", "output")}),))


# --- the promotion rule ----------------------------------------------------------------------------------


def test_strictly_better_promotes_equal_keeps():
    assert decide({"mae": 1.0}, {"mae": 1.5}, "mae", "minimize", "3").promote
    assert decide({"mae": 1.0}, {"mae": 1.5}, "mae", "minimize", "3").reason == (
        "candidate mae=1 vs production (version 3) mae=1.5: lower is better, promoting"
    )
    equal = decide({"mae": 1.0}, {"mae": 1.0}, "mae", "minimize")
    assert not equal.promote and equal.reason.endswith("not lower, keeping production")
    assert not decide({"mae": 2.0}, {"mae": 1.0}, "mae", "minimize").promote
    assert decide({"r2": 0.9}, {"r2": 0.8}, "r2", "maximize").promote
    assert not decide({"r2": 0.8}, {"r2": 0.8}, "r2", "maximize").promote
    assert not decide({"r2": 0.7}, {"r2": 0.8}, "r2", "maximize").promote


def test_promotion_without_production_or_candidate():
    assert decide({"mae": 5.0}, None, "mae", "minimize").reason == "nothing in production; candidate mae=5"
    assert decide({"mae": 5.0}, {"rmse": 1.0}, "mae", "minimize").promote  # production lacks the metric
    failed = decide(None, {"mae": 1.0}, "mae", "minimize")
    assert not failed.promote and failed.reason == "training failed"
    with pytest.raises(ValueError, match="the candidate has no metric 'mae'"):
        decide({"rmse": 1.0}, None, "mae", "minimize")
    with pytest.raises(ValueError, match="direction must be"):
        is_better(1.0, 2.0, "lower")
