"""Training many models through the contract, on fixture use cases: resume (after kill -9, and by data, config
and model-code hash), the error threshold, `fit_many`, the process pool, Dask and the Azure ML parallel entry."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ml_service.pipelines.steps import prepare, train
from ml_service.pipelines.training import (
    RESULT_FILE,
    SUMMARY_FILE,
    ModelResult,
    check_error_threshold,
    model_folder,
    read_plan,
    read_result,
    train_batch,
)
from ml_service.util.files import read_json
from tests.conftest import REPO_ROOT, forget_loaded_code
from tests.fixtures.projects import toy_config, toy_frame


def run_prepare(root: Path, use_cases: str = "toy") -> Path:
    forget_loaded_code()  # each step is a new process in a real run
    out = root.parent / "run" / "prepare"
    assert prepare.main(["--use-case", use_cases, "--output", str(out)]) == 0
    return out


def run_train(prepared: Path, *extra: str) -> int:
    forget_loaded_code()
    return train.main(["--prepared", str(prepared), "--output", str(prepared.parent / "train"), *extra])


def statuses(prepared: Path) -> dict[str, str]:
    return {r["model_id"]: r["status"] for r in read_json(prepared.parent / "train" / SUMMARY_FILE)["results"]}


def counts(prepared: Path) -> tuple[int, int, int]:
    values = list(statuses(prepared).values())
    return values.count("trained"), values.count("skipped"), values.count("failed")


def finished(trained: Path) -> set[str]:
    """Partition keys whose model folder is in place (staging folders start with a dot)."""
    folder = trained / "models" / "toy"
    return {p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / RESULT_FILE).is_file()}


def test_a_rerun_trains_nothing_and_changed_data_config_or_model_code_retrains(project):
    root = project()
    prepared = run_prepare(root)
    assert run_train(prepared) == 0 and counts(prepared) == (6, 0, 0)
    assert run_train(run_prepare(root)) == 0 and counts(prepared) == (0, 6, 0)

    config = json.loads((root / "configs" / "toy.json").read_text())
    config["description"] = "words do not change a model"
    config["parallel"] = {"retries": 1}  # nor how training fans out
    (root / "configs" / "toy.json").write_text(json.dumps(config))
    assert run_train(run_prepare(root)) == 0 and counts(prepared) == (0, 6, 0)

    frame = toy_frame()
    frame.loc[frame["store"] == "s02", "y"] += 1.0
    frame.to_csv(root / "data" / "toy.csv", index=False)
    assert run_train(run_prepare(root)) == 0
    assert [m for m, s in statuses(prepared).items() if s == "trained"] == ["toy/store=s02"]

    with (root / "toyuc" / "model.py").open("a") as handle:
        handle.write("\n# a changed line of model code\n")
    assert run_train(run_prepare(root)) == 0 and counts(prepared) == (6, 0, 0)

    (root / "toyuc" / "features.py").write_text("SCALE = 2\n")  # model code in a new file counts too
    assert run_train(run_prepare(root)) == 0 and counts(prepared) == (6, 0, 0)

    config["model"] = {"holdout": 3}  # the use case's own parameters
    (root / "configs" / "toy.json").write_text(json.dumps(config))
    assert run_train(run_prepare(root)) == 0 and counts(prepared) == (6, 0, 0)
    assert run_train(run_prepare(root)) == 0 and counts(prepared) == (0, 6, 0)


@pytest.mark.slow
def test_rerun_after_kill_9_trains_only_what_is_missing(project, monkeypatch, capsys):
    root = project(data={"data/toy.csv": toy_frame(partitions=40, rows=12)})
    prepared = run_prepare(root)
    tasks = read_plan(prepared)
    trained = prepared.parent / "train"
    env = {**os.environ, "TOYUC_KILL_AT": "s25", "PYTHONPATH": os.pathsep.join([str(root), str(REPO_ROOT)])}
    command = [sys.executable, "-m", "ml_service.pipelines.steps.train", "--prepared", str(prepared)]
    killed = subprocess.run([*command, "--output", str(trained)], cwd=root, env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = finished(trained)
    assert before == {f"store=s{i:02d}" for i in range(25)}  # every model finished before the kill is whole
    assert not (trained / SUMMARY_FILE).exists()

    # what a kill between writing a staging folder and renaming it leaves: a complete-looking, dot-named folder
    stale = trained / "models" / "toy" / ".store=s30.999999.tmp"
    stale.mkdir()
    (stale / RESULT_FILE).write_text((trained / "models" / "toy" / "store=s00" / RESULT_FILE).read_text())

    monkeypatch.setenv("MAX_WORKERS", "2")  # the rest in a process pool
    capsys.readouterr()
    assert run_train(prepared) == 0
    assert "train: toy: 15 trained, 25 unchanged (skipped), 0 failed" in capsys.readouterr().out
    results = read_json(trained / SUMMARY_FILE)["results"]
    assert [r["model_id"] for r in results] == [t.model_id for t in tasks]
    assert {r["key"] for r in results if r["status"] == "skipped"} == before
    assert sorted(p.name for p in (trained / "models" / "toy").iterdir()) == sorted(t.key for t in tasks)
    for task in tasks:
        saved = read_result(trained, task.model_id)
        assert saved["status"] == "trained" and saved["data_hash"] == task.data_hash
        assert (model_folder(trained, task.model_id) / "model.pkl").is_file()


def test_the_error_threshold_fails_the_step_naming_the_models(project, capsys):
    root = project({"toy": toy_config(model={"holdout": 4, "fail": ["s01", "s03"]}, parallel={"error_threshold": 1})})
    prepared = run_prepare(root)
    capsys.readouterr()
    assert run_train(prepared) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "train: FAILED toy/store=s01: ValueError: asked to fail for s01" in err
    assert err[-1] == (
        "error: train: 2 of 6 models failed, error threshold 1: toy/store=s01: ValueError: asked to fail for s01; "
        "toy/store=s03: ValueError: asked to fail for s03"
    )
    assert counts(prepared) == (4, 0, 2)  # the summary is written before the threshold is checked
    assert not model_folder(prepared.parent / "train", "toy/store=s01").exists()
    assert run_train(prepared, "--error-threshold", "2") == 0  # the command line overrides the config
    assert counts(prepared) == (0, 4, 2)  # failures are retried on a rerun, successes kept


def test_check_error_threshold():
    def result(status: str) -> ModelResult:
        return ModelResult("u", f"u/{status}", "u", "", status, "d", "c", error="E: x")

    results = [result("trained"), result("failed"), result("failed")]
    check_error_threshold(results, 2)
    check_error_threshold(results, -1)  # any number tolerated
    with pytest.raises(RuntimeError, match="2 of 3 models failed, error threshold 0"):
        check_error_threshold(results, 0)


def test_fit_many_is_used_when_present_and_equals_one_by_one(project):
    many = toy_config(code="toyuc.model:LeastSquaresMany", model={"holdout": 4, "fail": ["s02"]})
    root = project({"toy": toy_config(), "many": many})
    prepared = run_prepare(root, "toy,many")
    assert run_train(prepared) == 0
    trained = prepared.parent / "train"
    results = {r["model_id"]: r for r in read_json(trained / SUMMARY_FILE)["results"]}
    assert results["many/store=s02"]["status"] == "failed"  # one partition's failure inside fit_many is its own
    assert results["many/store=s02"]["error"] == "ValueError: asked to fail for s02"
    for i in (0, 1, 3, 4, 5):
        alone, together = results[f"toy/store=s{i:02d}"], results[f"many/store=s{i:02d}"]
        assert (alone["estimator"], together["estimator"]) == ("lstsq-one", "lstsq-many")
        assert together["metrics"] == pytest.approx(alone["metrics"], rel=1e-9)
        one, all_at_once = read_result(trained, alone["model_id"]), read_result(trained, together["model_id"])
        assert one["sample_input"] == all_at_once["sample_input"] and len(one["sample_input"]) == 2
        assert one["holdout"]["actual"] == all_at_once["holdout"]["actual"]
        assert one["holdout"]["predicted"] == pytest.approx(all_at_once["holdout"]["predicted"], rel=1e-9)


def test_a_model_of_a_use_case_no_longer_declared_fails_alone(project, tmp_path):
    root = project({"toy": toy_config(), "other": toy_config()})
    prepared = run_prepare(root, "toy,other")
    tasks = read_plan(prepared)
    (root / "pyproject.toml").write_text('[tool.mlops.use-cases]\ntoy = "configs/toy.json"\n')
    forget_loaded_code()
    results = train_batch(tasks, prepared, tmp_path / "trained", root)
    assert {r.status for r in results if r.use_case == "toy"} == {"trained"}
    gone = [r for r in results if r.use_case == "other"]
    assert {r.status for r in gone} == {"failed"} and "unknown use case 'other'" in gone[0].error


@pytest.mark.slow
def test_a_dask_cluster_trains_the_same_models_as_the_process_pool(project, monkeypatch):
    from dask.distributed import LocalCluster

    root = project()
    prepared = run_prepare(root)
    monkeypatch.setenv("MAX_WORKERS", "2")
    assert run_train(prepared) == 0
    pool = read_json(prepared.parent / "train" / SUMMARY_FILE)["results"]
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
        forget_loaded_code()
        out = prepared.parent / "dask"
        assert train.main(["--prepared", str(prepared), "--output", str(out)]) == 0
    on_dask = read_json(out / SUMMARY_FILE)["results"]
    assert [r["model_id"] for r in on_dask] == [r["model_id"] for r in pool]
    assert {r["status"] for r in on_dask + pool} == {"trained"}
    for a, b in zip(pool, on_dask, strict=True):
        assert a["metrics"] == pytest.approx(b["metrics"], rel=1e-12), a["model_id"]


def test_azure_parallel_job_entry_trains_a_mini_batch_like_the_local_step(project, tmp_path):
    """What Azure ML's parallel job calls (`init()`, then `run(mini_batch)` with file paths), run on local
    files: planned files are trained by the local batch function, other files acknowledged, failures left out
    of the result (Azure ML counts them against the job's error threshold)."""
    from ml_service.pipelines.azureml import parallel_entry

    root = project({"toy": toy_config(model={"holdout": 4, "fail": ["s01"]})})
    prepared = run_prepare(root)
    tasks = read_plan(prepared)
    trained = tmp_path / "trained"
    # The parallel driver passes its own --output on the same command line: the entry script's is --mlops-output.
    driver = ["--output", str(tmp_path / "driver"), "--mini_batch_size", "10"]
    parallel_entry.init([*driver, "--prepared", str(prepared), "--mlops-output", str(trained), "--azureml-extra", "1"])
    assert not (tmp_path / "driver").exists()
    parallel_entry._state["root"] = root  # the code snapshot's root is the project (here a temporary one)
    files = [str(prepared / "prepared.json"), *(str(prepared / t.data_file) for t in tasks)]
    lines = [json.loads(line) for line in parallel_entry.run(files)]
    assert lines[0] == {"file": "prepared.json", "status": "not a planned model"}
    assert [line["model_id"] for line in lines[1:]] == [t.model_id for t in tasks if t.key != "store=s01"]
    assert {line["status"] for line in lines[1:]} == {"trained"}
    alone = train_batch(tasks[:1], prepared, tmp_path / "alone", root)[0]
    assert lines[1]["metrics"] == pytest.approx(alone.metrics, rel=1e-12)
    assert not model_folder(trained, "toy/store=s01").exists()
