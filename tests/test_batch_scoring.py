"""Batch scoring on a fixture use case trained and registered in a temporary project: predictions equal the
registered model's own, bad partitions are reported while the rest are scored, a rerun after a real kill -9
completes with the same output, and the Azure ML batch pipeline validates offline and its parallel entry script
writes what the local step writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from azure.ai.ml import load_batch_endpoint
from azure.ai.ml.entities import PipelineComponentBatchDeployment

from ml_service.pipelines import run_train_pipeline
from ml_service.pipelines.azureml import batch_endpoint, batch_parallel_entry, builder, environment
from ml_service.pipelines.batch import (
    PLAN_FILE,
    SUMMARY_FILE,
    BatchPlan,
    batch_files,
    read_partition,
    scored_partitions,
)
from ml_service.pipelines.definition import batch_scoring_pipeline
from ml_service.pipelines.steps import batch_input, batch_score
from ml_service.registry.mlops_pyfunc_model import RegisteredModel
from ml_service.util.env_variables import load_settings
from ml_service.util.files import read_json
from tests.conftest import REPO_ROOT, forget_loaded_code
from tests.fixtures.projects import toy_config, toy_frame
from tests.test_azureml_jobs import cloud_project, env  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


def train(root: Path, tmp_path: Path, capsys, use_cases: str = "toy") -> None:
    forget_loaded_code()
    code = run_train_pipeline.main(["--use-case", use_cases, "--in-process", "--run-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    forget_loaded_code()


def score(*args: str) -> int:
    return batch_score.main(["--use-case", "toy", *args])


def production_folder(tmp_path: Path, name: str = "toy") -> Path:
    from ml_service.registry.mlflow_registry import connect, download_data, production_model

    client = connect(load_settings())
    return download_data(client, production_model(client, name, "production"), tmp_path / "expected-model")


def held(out: Path, name: str = "toy") -> dict[str, int]:
    """The partitions the batch files of `out/<name>/` hold: key -> rows (each key once)."""
    found = scored_partitions(out, name)
    assert all(len(places) == 1 for places in found.values()), found
    return {key: places[0].rows for key, places in found.items()}


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


def test_predictions_are_the_registered_models_own_from_a_folder_or_one_file(project, tmp_path, capsys):
    root = project()
    train(root, tmp_path, capsys)
    new_rows = tmp_path / "new"
    assert batch_input.main(["--use-case", "toy", "--output", str(new_rows)]) == 0
    assert sorted(p.name for p in (new_rows / "toy").iterdir()) == [f"store=s0{i}.csv" for i in range(6)]
    assert "y" not in pd.read_csv(new_rows / "toy" / "store=s00.csv").columns  # the label is what is scored

    out = tmp_path / "out"
    assert score("--input", str(new_rows), "--output", str(out)) == 0
    printed = capsys.readouterr().out
    assert "batch-score: toy: 6 scored, 0 already scored (skipped), 0 failed, 24 rows" in printed
    assert held(out) == {f"store=s0{i}": 4 for i in range(6)}
    combined = pd.read_parquet(out / "toy.parquet")
    assert list(combined.columns) == ["store", "colour", "x", "prediction", "model_name", "model_version"]
    expected = RegisteredModel(production_folder(tmp_path)).predict(combined[["store", "colour", "x"]])
    np.testing.assert_allclose(combined["prediction"].to_numpy(), expected, rtol=1e-12)
    assert set(combined["model_name"]) == {f"toy/store=s0{i}" for i in range(6)}
    assert set(combined["model_version"]) == {"1"}
    page = (out / "batch_report.html").read_text()  # the picture: 4 partitions' predictions and the spread
    assert page.count("<svg") == 5 and "toy/store=s03: prediction" in page and "mean prediction per partition" in page
    # one partition's predictions: by the batch files' index, or as a Parquet dataset filtered on its key
    one = read_partition(out, "toy", "store=s03")
    assert len(one) == 4 and set(one["store"]) == {"s03"} and list(one.columns) == list(combined.columns)
    pd.testing.assert_frame_equal(one, combined[combined.store == "s03"].reset_index(drop=True))
    filtered = pd.read_parquet(out / "toy", filters=[("store", "==", "s03")])
    pd.testing.assert_frame_equal(filtered, one)

    # the same rows as one file holding the partition column: split per partition, same predictions
    single = tmp_path / "all.csv"
    pd.concat(pd.read_csv(p) for p in sorted((new_rows / "toy").glob("*.csv"))).sample(frac=1, random_state=1).to_csv(
        single, index=False
    )
    out2 = tmp_path / "out2"
    assert score("--input", str(single), "--output", str(out2)) == 0
    again = pd.read_parquet(out2 / "toy.parquet").sort_values(["store", "x"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, combined.sort_values(["store", "x"]).reset_index(drop=True))
    summary = read_json(out2 / SUMMARY_FILE)
    assert summary["use_cases"]["toy"] == {"scored": 6, "skipped": 0, "failed": 0, "rows": 24}


def test_bad_partitions_are_reported_one_line_each_and_the_rest_are_scored(project, tmp_path, capsys):
    root = project()
    train(root, tmp_path, capsys)
    rows = toy_frame().drop(columns=["y"])
    new_rows = tmp_path / "new"
    new_rows.mkdir()
    rows[rows.store == "s00"].to_csv(new_rows / "s00.csv", index=False)  # holds its partition column
    rows[rows.store == "s01"].drop(columns=["store"]).to_csv(new_rows / "store=s01.csv", index=False)  # named by key
    rows[rows.store == "s00"].assign(store="s99").to_csv(new_rows / "s99.csv", index=False)  # no model for s99
    rows[rows.store == "s02"].drop(columns=["x"]).to_csv(new_rows / "s02.csv", index=False)  # a column missing
    rows[rows.store == "s03"].assign(x="abc").to_csv(new_rows / "s03.csv", index=False)  # a wrong type
    (new_rows / "empty.csv").write_text("")
    out = tmp_path / "out"
    capsys.readouterr()

    assert score("--input", str(new_rows), "--output", str(out)) == 0  # 4 failures, error threshold 5
    captured = capsys.readouterr()
    assert "batch-score: toy: 2 scored, 0 already scored (skipped), 4 failed, 32 rows" in captured.out
    failures = [line for line in captured.err.splitlines() if line.startswith("batch-score: FAILED")]
    assert len(failures) == 4, captured.err
    reasons = {line.split()[3].rstrip(":"): line for line in failures}
    assert "no production model for partition store=s99 in toy version 1" in reasons["store=s99"]
    assert "column 'x': missing" in reasons["store=s02"]
    assert "column 'x': 16 values are not numbers" in reasons["store=s03"]
    assert "file is empty" in reasons["empty"]
    assert held(out) == {"store=s00": 16, "store=s01": 16}
    assert set(pd.read_parquet(out / "toy.parquet")["store"]) == {"s00", "s01"}
    assert not leftovers(out)
    assert "no production model for partition store=s99" in (out / "batch_report.html").read_text()
    assert {f["key"] for f in read_json(out / SUMMARY_FILE)["failed"]} == {
        "store=s99",
        "store=s02",
        "store=s03",
        "empty",
    }

    # over the error threshold: the step fails naming the use case, and writes no combined file for it
    strict = tmp_path / "strict"
    assert score("--input", str(new_rows), "--output", str(strict), "--error-threshold", "1") == 2
    err = capsys.readouterr().err
    assert "error: batch-score: toy: 4 of 6 partitions failed, error threshold 1" in err.splitlines()[-1]
    assert not (strict / "toy.parquet").exists()
    # the same over the first run's output: its combined file goes too (it would not match the folder any more)
    assert (out / "toy.parquet").exists()
    assert score("--input", str(new_rows), "--output", str(out), "--error-threshold", "1") == 2
    assert not (out / "toy.parquet").exists() and held(out) == {"store=s00": 16, "store=s01": 16}


def test_a_use_case_predicting_many_partitions_at_once_gives_each_models_own_predictions(project, tmp_path, capsys):
    many = {"code": "toyuc.model:LeastSquaresMany", "model": {"holdout": 4, "fail_predict": ["s02"]}}
    root = project({"toy": toy_config(), "many": toy_config(**many)})
    train(root, tmp_path, capsys, "toy,many")
    new_rows = tmp_path / "new"
    new_rows.mkdir()
    toy_frame().drop(columns=["y"]).to_csv(new_rows / "rows.csv", index=False)
    assert score("--input", str(new_rows), "--output", str(tmp_path / "one")) == 0
    ours = batch_score.main(["--use-case", "many", "--input", str(new_rows), "--output", str(tmp_path / "many")])
    assert ours == 0
    captured = capsys.readouterr()
    assert "batch-score: many: 5 scored, 0 already scored (skipped), 1 failed, 80 rows" in captured.out
    assert "FAILED many store=s02: ValueError: asked to fail the prediction of s02" in captured.err
    one = pd.read_parquet(tmp_path / "one" / "toy.parquet")
    together = pd.read_parquet(tmp_path / "many" / "many.parquet")
    assert set(together["model_name"]) == {f"many/store=s0{i}" for i in (0, 1, 3, 4, 5)}
    expected = one[one.store != "s02"].reset_index(drop=True)
    np.testing.assert_allclose(together["prediction"].to_numpy(), expected["prediction"].to_numpy(), rtol=1e-12)
    pd.testing.assert_frame_equal(together[["store", "colour", "x"]], expected[["store", "colour", "x"]])

    # predict_many failing as a whole: every partition predicted one by one instead
    config = toy_config(code="toyuc.model:LeastSquaresMany", model={"holdout": 4, "fail_predict": ["all"]})
    (root / "configs" / "many.json").write_text(json.dumps(config))
    forget_loaded_code()
    ours = batch_score.main(["--use-case", "many", "--input", str(new_rows), "--output", str(tmp_path / "again")])
    assert ours == 0, capsys.readouterr().err
    again = pd.read_parquet(tmp_path / "again" / "many.parquet")
    np.testing.assert_allclose(again["prediction"].to_numpy(), one["prediction"].to_numpy(), rtol=1e-12)


def test_a_rerun_after_kill_9_scores_only_the_rest_and_gives_the_same_output(project, tmp_path, capsys, monkeypatch):
    root = project(data={"data/toy.csv": toy_frame(partitions=30, rows=12)})
    train(root, tmp_path, capsys)
    new_rows = tmp_path / "new"
    assert batch_input.main(["--use-case", "toy", "--output", str(new_rows)]) == 0
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ml_service.pipelines.steps.batch_score", "--use-case", "toy"]
    variables = {
        **os.environ,
        "TOYUC_KILL_AFTER_PREDICTS": "12",  # the process SIGKILLs itself at its 13th partition
        "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)]),
    }
    killed = subprocess.run(
        [*command, "--input", str(new_rows), "--output", str(out)],
        cwd=root,
        env=variables,
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # every batch finished before the kill is whole (3 batches of 4 partitions), the 4th left nothing
    assert held(out) == {key: 4 for key in held(out)} and len(held(out)) == 12
    assert len(batch_files(out, "toy")) == 3
    assert not (out / "toy.parquet").exists() and not (out / SUMMARY_FILE).exists()

    # what a kill in the middle of writing a batch file leaves: a temporary file, removed by the next run
    (out / "toy" / ".batch-0123.parquet.999.tmp").write_bytes(b"half a Parquet file")
    monkeypatch.setenv("MAX_WORKERS", "2")  # the rest in a process pool
    capsys.readouterr()
    assert score("--input", str(new_rows), "--output", str(out)) == 0
    assert "toy: 18 scored, 12 already scored (skipped), 0 failed, 120 rows" in capsys.readouterr().out
    clean = tmp_path / "clean"
    assert score("--input", str(new_rows), "--output", str(clean)) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(out / "toy.parquet"), pd.read_parquet(clean / "toy.parquet"))
    assert not leftovers(out)

    # new rows for a partition: only it is scored again
    changed = new_rows / "toy" / "store=s05.csv"
    changed.write_text(changed.read_text().replace("red", "blue"))
    assert score("--input", str(new_rows), "--output", str(out)) == 0
    assert "toy: 1 scored, 29 already scored (skipped), 0 failed, 120 rows" in capsys.readouterr().out
    # its old rows are gone from the folder: read as a dataset, it is the combined file, each partition once
    assert len(held(out)) == 30
    dataset = pd.read_parquet(out / "toy").sort_values(["store", "x"]).reset_index(drop=True)
    combined = pd.read_parquet(out / "toy.parquet")
    pd.testing.assert_frame_equal(dataset, combined.sort_values(["store", "x"]).reset_index(drop=True))
    colours = set(combined.loc[combined.store == "s05", "colour"])
    assert "blue" in colours and "red" not in colours
    assert not leftovers(out)


def test_no_production_model_fails_every_partition_with_the_reason(project, tmp_path, capsys):
    project()
    new_rows = tmp_path / "new.csv"
    toy_frame().drop(columns=["y"]).to_csv(new_rows, index=False)
    assert score("--input", str(new_rows), "--output", str(tmp_path / "out"), "--error-threshold", "-1") == 0
    err = capsys.readouterr().err
    assert "batch-score: toy: no production model (train it first)" in err
    assert err.count("no production version of model toy") == 6


def test_the_azure_ml_batch_job_validates_offline_and_its_entry_script_scores_like_the_step(
    cloud_project,  # noqa: F811
    env,  # noqa: F811
    tmp_path,
    capsys,
):
    train(cloud_project, tmp_path, capsys)
    new_rows = tmp_path / "new"
    assert batch_input.main(["--use-case", "toy", "--output", str(new_rows)]) == 0
    spec = batch_scoring_pipeline(["toy"])
    job = builder.build_pipeline_job(
        spec,
        code=environment.stage_code(cloud_project, tmp_path / "code"),
        environment=env,
        inputs={"new_data": new_rows},
        compute="cpu-cluster",
        experiment_name="t",
        parallel_environment=environment.build_parallel_environment(cloud_project, "env"),
    )
    assert builder.validation_errors(job) == {}
    assert list(job.jobs) == ["plan", "score", "combine"]
    score_node = job.jobs["score"]
    assert score_node.task.entry_script == "ml_service/pipelines/azureml/batch_parallel_entry.py"
    assert score_node.input_data == "${{inputs.partitions}}"  # split by partition file

    # published for reuse: a batch endpoint with a pipeline-component deployment, loaded back by the SDK
    written = batch_endpoint.write_batch_endpoint(job, tmp_path / "endpoint", "toy", "cpu-cluster")
    text = yaml.safe_load(written[2].read_text())
    deployment = PipelineComponentBatchDeployment._load(data=text, yaml_path=written[2])
    assert deployment.endpoint_name == "toy-batch" == load_batch_endpoint(written[1]).name
    assert set(deployment.component.jobs) == {"plan", "score", "combine"}

    # the cloud's three commands, placeholders replaced by local folders
    partitions, models, scored, final = (tmp_path / n for n in ("partitions", "models", "scored", "final"))
    plan_args = builder.step_arguments(spec.step("plan"))
    values = {
        "${{inputs.input}}": str(new_rows),
        "${{outputs.partitions}}": str(partitions),
        "${{outputs.models}}": str(models),
    }
    assert batch_score.main([values.get(a, a) for a in plan_args]) == 0
    plan = BatchPlan.read(partitions)
    assert len(plan.tasks) == 6 and all(not Path(t.data_file).is_absolute() for t in plan.tasks)
    arguments = builder.parallel_arguments(spec.step("score"))
    local = {"${{inputs.partitions}}": str(partitions), "${{inputs.models}}": str(models)}
    batch_parallel_entry.init([local.get(a, str(scored) if a == "${{outputs.output}}" else a) for a in arguments])
    batch_parallel_entry._state["root"] = cloud_project  # the code snapshot's root is the project (a temporary one)
    files = sorted(str(p) for p in partitions.rglob("*") if p.is_file())
    assert any(f.endswith(PLAN_FILE) for f in files)
    done = batch_parallel_entry.run(files)
    assert len(done) == 7  # 6 partitions and the plan (acknowledged, not a partition)
    combine_args = builder.step_arguments(spec.step("combine"))
    final_values = {
        "${{inputs.partitions}}": str(partitions),
        "${{inputs.scored}}": str(scored),
        "${{outputs.output}}": str(final),
    }
    assert batch_score.main([final_values.get(a, a) for a in combine_args]) == 0

    assert batch_score.main(["--use-case", "toy", "--input", str(new_rows), "--output", str(tmp_path / "local")]) == 0
    pd.testing.assert_frame_equal(
        pd.read_parquet(final / "toy.parquet"), pd.read_parquet(tmp_path / "local" / "toy.parquet")
    )


def test_the_step_names_what_is_missing(project, tmp_path, capsys):
    root = project({"toy": toy_config()})
    assert batch_score.main(["--use-case", "toy", "--output", str(tmp_path / "o")]) == 2
    assert "error: batch-score: --input is required" in capsys.readouterr().err
    assert batch_score.main(["--use-case", "toy", "--input", str(tmp_path / "nope"), "--output", str(tmp_path)]) == 2
    assert "batch input" in capsys.readouterr().err
    new_rows = tmp_path / "new.csv"
    toy_frame().drop(columns=["y"]).to_csv(new_rows, index=False)
    assert score("--input", str(new_rows), "--output", str(tmp_path / "o"), "--model-version", "7") == 2
    assert "error: batch-score: toy has no registered version 7 (--model-version)" in capsys.readouterr().err
    # the same from a fresh process, where the registry lookup runs in a forked process beside the plan
    fresh = subprocess.run(
        [sys.executable, "-m", "ml_service.pipelines.steps.batch_score", "--use-case", "toy", "--input", str(new_rows)]
        + ["--output", str(tmp_path / "o"), "--model-version", "7"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)])},
        capture_output=True,
        text=True,
    )
    assert fresh.returncode == 2, fresh.stderr[-2000:]
    assert (
        fresh.stderr.strip().splitlines()[-1] == "error: batch-score: toy has no registered version 7 (--model-version)"
    )
