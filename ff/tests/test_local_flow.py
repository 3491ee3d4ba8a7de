"""The ff group through the whole local flow, as a user runs it: train (prepare → train → evaluate → register), then
package, then serve on 127.0.0.1 and send the seed requests; and a training killed with SIGKILL that, run again,
trains only what is missing.

Real parts throughout: the platform's steps on a throw-away project holding the ff use cases, an MLflow SQLite
registry in tmp, the scoring service as its own process serving the package's own copy of the code."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ff.tests.conftest import ff_declaration, module_command, process_env
from ml_service.pipelines import run_train_pipeline
from ml_service.pipelines.steps import prepare, train
from ml_service.pipelines.training import RESULT_FILE, SUMMARY_FILE, model_folder, read_plan
from ml_service.scoring import package
from ml_service.util.files import read_json
from ml_service.util.serve_and_smoke_test import stop_service

ENERGY_ROWS = [["2017-8-12 7:00", 0, 70], ["2017-8-12 19:00", 0, 50]]
DIABETES_ROWS = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 0], [56, 33, 11, 88, 0, 43, 6, 8, 1, 68]]
PARTITION = "nyc_energy_regions_model/region=r0001"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(client: httpx.Client, server: subprocess.Popen, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "the scoring service exited before it was ready"
        try:
            health = client.get("/health", timeout=5)
            if health.status_code == 200 and health.json().get("ready"):
                return health.json()
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"the scoring service was not ready within {timeout} s")


@pytest.fixture
def serving(project, tmp_path):
    """Train the ff group, package the production models, serve the package on 127.0.0.1: an HTTP client."""
    assert run_train_pipeline.main(["--use-case", "ff", "--in-process"]) == 0
    built = tmp_path / "package"
    assert package.main(["--output", str(built)]) == 0
    port = free_port()
    # the service runs from the package alone (its copy of ml_service and of ff), as the image does
    env = {**os.environ, "PYTHONPATH": str(built)}
    command = module_command("ml_service.scoring.serve", "--package", str(built), "--port", str(port))
    server = subprocess.Popen(command, cwd=built, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            yield client, wait_ready(client, server)
    finally:
        stop_service(server)


def score(client: httpx.Client, model_name: str, rows: list) -> dict:
    answer = client.get("/score", params={"model_name": model_name, "data": json.dumps(rows)})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.slow
def test_the_seed_requests_answer(serving):
    serving, health = serving
    assert health["models"] == 2 + 8  # two single models, and the regions' model set of eight

    energy = score(serving, "nyc_energy_model", ENERGY_ROWS)
    assert energy["model_name"] == "nyc_energy_model" and energy["model_version"] == "1"
    assert len(energy["predictions"]) == 2 and all(1000 < p < 20000 for p in energy["predictions"])

    diabetes = score(serving, "diabetes_model", DIABETES_ROWS)
    assert diabetes["model_name"] == "diabetes_model" and len(diabetes["predictions"]) == 2
    assert all(0 < p < 400 for p in diabetes["predictions"])

    # the POST body form gives the same answers
    for name, rows, expected in (
        ("nyc_energy_model", ENERGY_ROWS, energy),
        ("diabetes_model", DIABETES_ROWS, diabetes),
    ):
        posted = serving.post("/score", json={"model_name": name, "data": rows})
        assert posted.status_code == 200, posted.text
        assert posted.json()["predictions"] == expected["predictions"]

    # a partition's model by its name <model_name>/<partition key>, from the one registered model set
    region = score(serving, PARTITION, ENERGY_ROWS)
    assert region["model_name"] == PARTITION and region["model_set"] == "nyc_energy_regions_model"
    assert len(region["predictions"]) == 2 and all(p > 0 for p in region["predictions"])
    posted = serving.post("/score", json={"model_name": PARTITION, "data": ENERGY_ROWS})
    assert posted.json()["predictions"] == region["predictions"]

    unknown = serving.get("/score", params={"model_name": "nyc_energy_regions_model/region=r9999", "data": "[[1]]"})
    assert unknown.status_code == 404 and "region=r9999" in unknown.text
    short = serving.get("/score", params={"model_name": "diabetes_model", "data": "[[1, 2, 3]]"})
    assert short.status_code == 422


def set_budget(project: Path, name: str, seconds: float) -> None:
    path = project / ff_declaration()[0][name]
    raw = json.loads(path.read_text())
    raw["model"]["automl"]["time_budget_s"] = seconds
    path.write_text(json.dumps(raw, indent=1))


def finished(trained: Path, model_ids: list[str]) -> set[str]:
    """Models whose result folder is in place (a model is renamed into place only when complete)."""
    return {m for m in model_ids if (model_folder(trained, m) / RESULT_FILE).is_file()}


@pytest.mark.slow
def test_a_training_killed_with_sigkill_resumes_with_only_what_is_missing(tmp_path, monkeypatch, project):
    # the diabetes search, trained second, gets a few seconds: the window in which the kill lands
    set_budget(project, "diabetes_model", 6.0)
    prepared, trained = tmp_path / "prepared", tmp_path / "trained"
    assert prepare.main(["--use-case", "ff", "--output", str(prepared)]) == 0
    tasks = read_plan(prepared)
    ids = [t.model_id for t in tasks]
    assert ids[:2] == ["nyc_energy_model", "diabetes_model"] and len(ids) == 10

    command = module_command("ml_service.pipelines.steps.train", "--prepared", str(prepared), "--output", str(trained))
    step = subprocess.Popen(
        command, cwd=project, env=process_env(project), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 180
        while not finished(trained, ids) and step.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(step.pid, signal.SIGKILL)
    finally:
        _, stderr = step.communicate(timeout=30)
    assert step.returncode == -signal.SIGKILL, f"the step ended before the kill: {stderr.decode()[-2000:]}"
    done_before = finished(trained, ids)
    assert "nyc_energy_model" in done_before and len(done_before) < len(ids)
    assert not (trained / SUMMARY_FILE).exists()
    kept = {m: (model_folder(trained, m) / RESULT_FILE).read_bytes() for m in done_before}

    assert train.main(["--prepared", str(prepared), "--output", str(trained)]) == 0
    results = read_json(trained / SUMMARY_FILE)["results"]
    assert [r["model_id"] for r in results] == ids
    assert {r["model_id"] for r in results if r["status"] == "skipped"} == done_before
    assert {r["status"] for r in results if r["model_id"] not in done_before} == {"trained"}
    for model_id, before in kept.items():  # what had finished was not trained again
        assert (model_folder(trained, model_id) / RESULT_FILE).read_bytes() == before
    leftovers = [p.name for p in (trained / "models").rglob(".*") if p.is_dir()]
    assert leftovers == []  # no staging folder of the killed run is left behind

    # a third run has nothing to do
    assert train.main(["--prepared", str(prepared), "--output", str(trained)]) == 0
    assert {r["status"] for r in read_json(trained / SUMMARY_FILE)["results"]} == {"skipped"}
