"""The ff many-models pipeline end to end on a small config: failures isolated, the error threshold, promotion
per partition model, no half-written registry entry, the run report, and the local runner's output.

Steps run in this process (the same `main(argv)` the runner's `--in-process` mode calls) unless a test is about
what a real process does (exit codes, stderr, the runner); the registry is a real SQLite MLflow store in tmp.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ml_service.pipelines.many_models import model_folder
from ml_service.pipelines.steps import ff_evaluate, ff_prepare, ff_register, ff_train
from ml_service.registry.mlflow_registry import OWNER_TAG, STATE_TAG, download_model, owner_id, production_model
from ml_service.registry.model_set import partition_folder, read_manifest
from ml_service.util.files import read_json
from tests.conftest import REPO_ROOT, copy_project, run_module

BASE_CONFIG = REPO_ROOT / "tests" / "data" / "ff_partitioned.json"
MIXED_CONFIG = REPO_ROOT / "tests" / "data" / "ff_mixed.json"
NAME = "regions_model"
KEYS = [f"region=r000{i}" for i in range(4)]
BROKEN = f"{NAME}/region=r0001"


def write_config(folder: Path, seed: int = 7, error_threshold: int = -1, name: str = "config.json") -> Path:
    config = json.loads(BASE_CONFIG.read_text())
    config["use_cases"][0]["data"]["seed"] = seed
    config["parallel"]["error_threshold"] = error_threshold
    path = folder / name
    path.write_text(json.dumps(config, indent=1))
    return path


def prepare(config: Path, run: Path) -> Path:
    assert ff_prepare.main(["--config", str(config), "--output", str(run / "prepared")]) == 0
    return run / "prepared"


def train(config: Path, run: Path, *extra: str) -> int:
    return ff_train.main(
        ["--config", str(config), "--prepared", str(run / "prepared"), "--output", str(run / "trained"), *extra]
    )


def evaluate_and_register(config: Path, run: Path) -> None:
    c = ["--config", str(config)]
    assert ff_evaluate.main([*c, "--trained", str(run / "trained"), "--output", str(run / "evaluate")]) == 0
    register = ["--trained", str(run / "trained"), "--decisions", str(run / "evaluate")]
    assert ff_register.main([*c, *register, "--output", str(run / "register")]) == 0


def run_pipeline(config: Path, run: Path) -> None:
    prepare(config, run)
    assert train(config, run) == 0
    evaluate_and_register(config, run)


def break_partition(prepared: Path, key: str = "region=r0001") -> None:
    """The label column removed from one prepared partition file, after prepare checked it."""
    path = prepared / NAME / f"{key}.csv"
    pd.read_csv(path).drop(columns=["demand"]).to_csv(path, index=False)


def client_for(settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def versions(client: MlflowClient) -> dict[str, dict[str, str]]:
    return {str(v.version): dict(v.tags) for v in client.search_model_versions(f"name='{NAME}'")}


@pytest.fixture
def one_worker(monkeypatch):
    monkeypatch.setenv("MAX_WORKERS", "1")  # in-process runs: no pool forked from the test process


@pytest.mark.slow
def test_a_failing_partition_is_reported_and_the_others_are_registered(settings, tmp_path, one_worker, capsys):
    config, run = write_config(tmp_path), tmp_path / "run"
    break_partition(prepare(config, run))
    assert train(config, run) == 0  # threshold -1 in this config: any number of failures tolerated
    captured = capsys.readouterr()
    assert "3 trained, 0 unchanged (skipped), 1 failed" in captured.out
    assert f"ff_train: FAILED {BROKEN}: KeyError" in captured.err

    results = {r["model_id"]: r for r in read_json(run / "trained" / "train_summary.json")["results"]}
    assert {m: r["status"] for m, r in results.items()} == {
        f"{NAME}/{k}": "failed" if k == "region=r0001" else "trained" for k in KEYS
    }
    assert results[BROKEN]["error"].startswith("KeyError") and "demand" in results[BROKEN]["error"]
    assert not model_folder(run / "trained", BROKEN).exists()
    metrics_csv = (run / "trained" / "metrics.csv").read_text()
    assert BROKEN in metrics_csv and "KeyError" in metrics_csv

    evaluate_and_register(config, run)
    decisions = read_json(run / "evaluate" / "decisions.json")[NAME]["models"]
    assert decisions[BROKEN] == {"promote": False, "reason": "training failed", "key": "region=r0001"}
    client = client_for(settings)
    production = production_model(client, NAME, "production")
    assert production is not None and production.version == "1"
    manifest = read_manifest(download_model(client, production, tmp_path / "download"))
    assert sorted(manifest["models"]) == [k for k in KEYS if k != "region=r0001"]

    page = (run / "register" / "report.html").read_text()
    assert "<h3>Failures</h3>" in page and BROKEN in page and "KeyError" in page


@pytest.mark.slow
def test_error_threshold_fails_the_step_with_one_line_naming_the_model(settings, tmp_path, one_worker):
    strict, run = write_config(tmp_path, error_threshold=0, name="strict.json"), tmp_path / "run"
    break_partition(prepare(strict, run))
    args = ["--config", str(strict), "--prepared", str(run / "prepared"), "--output", str(run / "trained")]
    step = run_module("ml_service.pipelines.steps.ff_train", *args)
    assert step.returncode != 0, step.stdout
    errors = [line for line in step.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, step.stderr
    assert errors[0].startswith("error: ff_train: 1 of 4 models failed, error threshold 0: ")
    assert BROKEN in errors[0] and "KeyError" in errors[0]
    assert "Traceback" not in step.stderr

    # the same failure tolerated: -1 (any number) and 1 (up to one) pass; the trained three are not redone
    assert train(strict, run, "--error-threshold", "-1") == 0
    assert train(strict, run, "--error-threshold", "1") == 0
    statuses = [r["status"] for r in read_json(run / "trained" / "train_summary.json")["results"]]
    assert sorted(statuses) == ["failed", "skipped", "skipped", "skipped"]


@pytest.mark.slow
def test_promotion_per_model_and_no_half_written_registry_entry(settings, tmp_path, one_worker):
    client = client_for(settings)
    first, later = tmp_path / "run1", tmp_path / "current"
    run_pipeline(write_config(tmp_path, seed=7), first)
    production = production_model(client, NAME, "production")
    assert production is not None and production.version == "1"
    v1 = read_manifest(download_model(client, production, tmp_path / "v1"))
    assert {k: e["version"] for k, e in v1["models"].items()} == dict.fromkeys(KEYS, "1")

    # a registration killed after create_model_version leaves a pending version whose owner is dead
    def interrupted_registration() -> str:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        tags = {STATE_TAG: "pending", OWNER_TAG: owner_id(int(dead.stdout))}
        version = client.create_model_version(NAME, source=production.source, run_id=production.run_id, tags=tags)
        return str(version.version)

    pending = interrupted_registration()
    assert pending == "2" and versions(client)[pending][STATE_TAG] == "pending"

    # new data (another generator seed): every partition retrains; each is promoted only if strictly better
    changed = write_config(tmp_path, seed=11)
    run_pipeline(changed, later)
    assert pending not in versions(client)
    production = production_model(client, NAME, "production")
    assert production is not None and production.version == "3"
    assert versions(client)["3"][STATE_TAG] == "complete"
    assert {v: t[STATE_TAG] for v, t in versions(client).items()} == {"1": "complete", "3": "complete"}
    v3_folder = download_model(client, production, tmp_path / "v3")
    v3 = read_manifest(v3_folder)
    decisions = read_json(later / "evaluate" / "decisions.json")[NAME]["models"]
    results = {r["key"]: r for r in read_json(later / "trained" / "train_summary.json")["results"]}
    promoted = {d["key"] for d in decisions.values() if d["promote"]}
    assert promoted and promoted != set(KEYS), "seed 11 is chosen to give both outcomes; pick another seed"
    assert sorted(v3["models"]) == KEYS
    for key in KEYS:
        entry = v3["models"][key]
        model_file = (partition_folder(v3_folder, key) / "model.joblib").read_bytes()
        if key in promoted:
            assert entry["version"] == "2" and entry["metrics"] == results[key]["metrics"]
            assert entry["data_hash"] == results[key]["data_hash"]
            source = model_folder(later / "trained", f"{NAME}/{key}")
        else:
            assert entry == v1["models"][key]
            source = model_folder(first / "trained", f"{NAME}/{key}")
        assert model_file == (source / "model.joblib").read_bytes(), key
    registered = read_json(later / "register" / "registered.json")[NAME]
    assert registered == {"registered": True, "version": "3", "models": 4}
    page = (later / "register" / "report.html").read_text()
    assert f"<td>{len(promoted)}</td><td>{4 - len(promoted)}</td><td>registered version 3</td>" in page

    # nothing changed: everything is skipped, equal metrics are not better, nothing new is registered,
    # and a pending version left by another killed registration is cleaned up all the same
    pending = interrupted_registration()
    run_pipeline(changed, later)
    statuses = {r["status"] for r in read_json(later / "trained" / "train_summary.json")["results"]}
    assert statuses == {"skipped"}
    decisions = read_json(later / "evaluate" / "decisions.json")[NAME]["models"]
    assert not any(d["promote"] for d in decisions.values())
    assert all(d["reason"].endswith("not better") for d in decisions.values())
    assert read_json(later / "register" / "registered.json")[NAME]["registered"] is False
    assert sorted(versions(client)) == ["1", "3"]
    assert production_model(client, NAME, "production").version == "3"


@pytest.fixture
def project(tmp_path, monkeypatch, empty_mlflow_db) -> Path:
    """A copy of the code with the mixed test config as ff/pipeline_config.json (the runner's fixed config)."""
    root = copy_project(tmp_path / "project", ("ml_service", "ff"), empty_mlflow_db)
    shutil.copy(MIXED_CONFIG, root / "ff" / "pipeline_config.json")
    monkeypatch.setenv("LOCAL_DIR", "local")
    return root


@pytest.mark.slow
def test_runner_prints_the_report_path_and_the_report_covers_every_use_case(project):
    done = run_module("ml_service.pipelines.run_train_pipeline", "--use-case", "ff", cwd=project)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = project / "local" / "runs" / "ff" / "current"
    report = (run_dir / "register" / "output" / "report.html").resolve()
    assert f"report written to {report}" in done.stdout
    page = report.read_text()
    config = json.loads(MIXED_CONFIG.read_text())
    for use_case in config["use_cases"]:
        assert f"<h2>{use_case['model_name']}</h2>" in page
    assert page.count("registered version 1") == len(config["use_cases"])
    assert "<th>promoted</th><th>kept</th>" in page and "Promotion decisions" in page
    assert page.count("<svg") == len(config["use_cases"]) - 1  # the metric histograms (one-model cases: a number)
    assert page.count("data:image/png;base64,") >= 2  # hold-out plots, inlined
