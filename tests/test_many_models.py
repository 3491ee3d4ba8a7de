"""The many-models task runner: resume after a kill -9, and the same results from a Dask cluster as from the
local process pool."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ml_service.pipelines.many_models import RESULT_FILE, model_folder, read_plan, run_tasks, train_batch, train_one
from ml_service.pipelines.steps import ff_prepare, ff_train
from ml_service.util.files import read_json
from tests.conftest import REPO_ROOT

BASE_CONFIG = REPO_ROOT / "tests" / "data" / "ff_partitioned.json"
NAME = "regions_model"


def write_config(folder: Path) -> Path:
    path = folder / "config.json"
    path.write_text(BASE_CONFIG.read_text())
    return path


def prepare(config: Path, prepared: Path, partitions: int | None = None) -> list:
    extra = ["--partitions", str(partitions)] if partitions else []
    assert ff_prepare.main(["--config", str(config), "--output", str(prepared), *extra]) == 0
    return read_plan(prepared)


def finished(trained: Path) -> set[str]:
    """Partition keys whose model folder is in place (staging folders start with a dot)."""
    folder = trained / "models" / NAME
    if not folder.is_dir():
        return set()
    return {p.name for p in folder.iterdir() if not p.name.startswith(".") and (p / RESULT_FILE).is_file()}


@pytest.mark.slow
def test_rerun_after_kill_9_trains_only_what_is_missing(settings, tmp_path, monkeypatch, capsys):
    config, prepared, trained = write_config(tmp_path), tmp_path / "prepared", tmp_path / "trained"
    tasks = prepare(config, prepared, partitions=300)
    assert len(tasks) == 300

    env = {**os.environ, "MAX_WORKERS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "ml_service.pipelines.steps.ff_train", "--config", str(config)]
    command += ["--prepared", str(prepared), "--output", str(trained)]
    step = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(finished(trained)) < 10 and step.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(step.pid, signal.SIGKILL)
    finally:
        _, stderr = step.communicate(timeout=30)
    assert step.returncode == -signal.SIGKILL, f"the step ended before the kill: {stderr.decode()[-2000:]}"
    done_before = finished(trained)
    assert 10 <= len(done_before) < 300
    assert not (trained / "train_summary.json").exists()

    # what a kill between writing a staging folder and renaming it leaves: a complete-looking folder, dot-named
    missing = sorted({t.key for t in tasks} - done_before)[-1]
    stale = trained / "models" / NAME / f".{missing}.999999.tmp"
    stale.mkdir()
    (stale / RESULT_FILE).write_text((trained / "models" / NAME / min(done_before) / RESULT_FILE).read_text())

    monkeypatch.setenv("MAX_WORKERS", "2")
    assert ff_train.main(["--config", str(config), "--prepared", str(prepared), "--output", str(trained)]) == 0
    out = capsys.readouterr().out
    assert f"ff_train: {300 - len(done_before)} trained, {len(done_before)} unchanged (skipped), 0 failed" in out
    results = read_json(trained / "train_summary.json")["results"]
    assert [r["model_id"] for r in results] == [t.model_id for t in tasks]
    skipped = {r["key"] for r in results if r["status"] == "skipped"}
    assert skipped == done_before
    assert {r["status"] for r in results if r["key"] not in done_before} == {"trained"}
    for task in tasks:
        folder = model_folder(trained, task.model_id)
        assert {"model.joblib", "model.json", RESULT_FILE} <= {p.name for p in folder.iterdir()}, folder
        saved = read_json(folder / RESULT_FILE)
        assert saved["status"] == "trained" and saved["data_hash"] == task.data_hash
        assert json.loads((folder / "model.json").read_text())["model_id"] == task.model_id
    # a staging folder the kill left behind is never a result, and the rerun cleared it
    assert all(not r["model_id"].split("/")[-1].startswith(".") for r in results)
    assert sorted(p.name for p in (trained / "models" / NAME).iterdir()) == sorted(t.key for t in tasks)


@pytest.mark.slow
def test_dask_cluster_gives_the_same_metrics_as_the_process_pool(settings, tmp_path):
    from dask.distributed import LocalCluster

    config, prepared = write_config(tmp_path), tmp_path / "prepared"
    tasks = prepare(config, prepared)
    pool = run_tasks(tasks, prepared, tmp_path / "pool", config, workers=2)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = run_tasks(
            tasks, prepared, tmp_path / "dask", config, workers=1, dask_scheduler_address=cluster.scheduler_address
        )
    assert [r.model_id for r in on_dask] == [r.model_id for r in pool] == [t.model_id for t in tasks]
    assert {r.status for r in pool + on_dask} == {"trained"}
    for a, b in zip(pool, on_dask, strict=True):
        assert a.metrics == pytest.approx(b.metrics, rel=1e-9), a.model_id
        assert a.estimator == b.estimator == "ridge"
        assert (model_folder(tmp_path / "dask", b.model_id) / "model.joblib").is_file()


def test_partitions_trained_together_match_one_by_one_and_fail_alone(settings, tmp_path):
    config, prepared = write_config(tmp_path), tmp_path / "prepared"
    tasks = prepare(config, prepared)
    short = prepared / tasks[2].data_file  # same header, too few rows to hold out: fails, and only it
    short.write_text("".join(short.read_text().splitlines(keepends=True)[:41]))
    together = train_batch(tasks, prepared, tmp_path / "together", config)
    assert [r.model_id for r in together] == [t.model_id for t in tasks]
    assert [r.status for r in together] == ["trained", "trained", "failed", "trained"]
    assert together[2].error.startswith("ValueError") and "too few" in together[2].error
    for task, result in zip(tasks, together, strict=True):
        if result.status == "failed":
            assert not model_folder(tmp_path / "together", task.model_id).exists()
            continue
        alone = train_one(task, prepared, tmp_path / "alone", config)
        assert result.metrics == pytest.approx(alone.metrics, rel=1e-9)
        saved = [read_json(model_folder(tmp_path / run, task.model_id) / "model.json") for run in ("together", "alone")]
        assert saved[0]["sample_input"] == saved[1]["sample_input"] and len(saved[0]["sample_input"]) == 2
        assert saved[0]["input_schema"] == saved[1]["input_schema"]
    rerun = train_batch(tasks, prepared, tmp_path / "together", config)
    assert [r.status for r in rerun] == ["skipped", "skipped", "failed", "skipped"]


def test_what_runs_meanwhile_fails_the_run_and_stops_the_pool(settings, tmp_path):
    config, prepared = write_config(tmp_path), tmp_path / "prepared"
    tasks = prepare(config, prepared)

    def unreachable_registry() -> None:
        raise RuntimeError("registry unreachable")

    with pytest.raises(RuntimeError, match="registry unreachable"):
        run_tasks(tasks, prepared, tmp_path / "trained", config, workers=2, meanwhile=unreachable_registry)


def test_azure_parallel_job_entry_trains_a_mini_batch_like_the_local_step(settings, tmp_path):
    """What Azure ML's parallel job calls (`init()`, then `run(mini_batch)` with file paths), run here on local
    files: planned files are trained with the local batch function, other files acknowledged, failures left out
    of the result (Azure ML counts them against the job's error threshold)."""
    from ml_service.pipelines.azureml import parallel_entry

    config, prepared, trained = write_config(tmp_path), tmp_path / "prepared", tmp_path / "trained"
    tasks = prepare(config, prepared)
    broken = prepared / tasks[1].data_file
    broken.write_text("".join(broken.read_text().splitlines(keepends=True)[:30]))
    # The parallel driver passes its own --output on the same command line: the entry script's is --mlops-output.
    driver = ["--output", str(tmp_path / "driver"), "--mini_batch_size", "10"]
    parallel_entry.init([*driver, "--prepared", str(prepared), "--mlops-output", str(trained), "--config", str(config)])
    files = [str(prepared / "prepared.json"), *(str(prepared / t.data_file) for t in tasks)]
    lines = [json.loads(line) for line in parallel_entry.run(files)]
    assert lines[0] == {"file": "prepared.json", "status": "not a planned model"}
    assert [line["model_id"] for line in lines[1:]] == [t.model_id for i, t in enumerate(tasks) if i != 1]
    assert {line["status"] for line in lines[1:]} == {"trained"}
    alone = train_one(tasks[0], prepared, tmp_path / "alone", config)
    assert lines[1]["metrics"] == pytest.approx(alone.metrics, rel=1e-9)
    assert not model_folder(trained, tasks[1].model_id).exists()
    assert not (tmp_path / "driver").exists()
