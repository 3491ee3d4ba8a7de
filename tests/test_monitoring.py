"""The monitor step on a fixture use case trained and registered in a temporary project (real MLflow store):
each registered model carries its training profile; collected requests with known shifts name exactly the
shifted models (drift), actuals show their decay, bad input is reported per model or file, and retraining only
the selected models trains only those."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ml_service.monitoring.profile import PROFILE_FILE
from ml_service.pipelines import run_train_pipeline
from ml_service.pipelines.steps import monitor
from ml_service.registry.mlops_pyfunc_model import RegisteredModel
from ml_service.util.env_variables import load_settings
from ml_service.util.files import file_sha256, read_json
from tests.conftest import REPO_ROOT, forget_loaded_code
from tests.fixtures.projects import toy_config, toy_frame

pytestmark = pytest.mark.slow

STORES = [f"s0{i}" for i in range(6)]
SHIFTED = {"s01", "s04"}


def toy_project(project, **monitoring):
    config = toy_config(monitoring={"min_rows": 40, **monitoring})
    return project({"toy": config}, {"data/toy.csv": toy_frame(rows=200)})


def train(tmp_path: Path, capsys, *extra: str) -> str:
    forget_loaded_code()
    code = run_train_pipeline.main(["--use-case", "toy", "--in-process", "--run-dir", str(tmp_path / "run"), *extra])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    forget_loaded_code()
    return printed.out


def production(tmp_path: Path) -> tuple[Path, dict]:
    """The production version's data folder, where the local registry keeps it (not a copy)."""
    from ml_service.pipelines.batch import download_models

    version, folder = download_models("toy", None, tmp_path / "models", copy=False)
    return Path(folder), read_json(Path(folder) / "manifest.json")


def write_records(folder: Path, rows_by_store: dict[str, pd.DataFrame], manifest: dict, set_version: str) -> dict:
    """What the scoring service writes for each answered request (the local JSONL format), ten rows a request,
    with the registered model's real predictions; returns {request id: (store, rows)} for the actuals."""
    hour = folder / "2026" / "12" / "01" / "10"
    hour.mkdir(parents=True, exist_ok=True)
    sent = {}
    with (hour / "host-1-0.jsonl").open("w") as handle:
        for store, rows in rows_by_store.items():
            key = f"store={store}"
            for start in range(0, len(rows), 10):
                chunk = rows.iloc[start : start + 10]
                request_id = uuid.uuid4().hex
                record = {
                    "time": "2026-12-01T10:00:00+00:00",
                    "request_id": request_id,
                    "traceparent": None,
                    "model_name": f"toy/{key}",
                    "model_version": manifest["models"][key]["version"],
                    "model_set": "toy",
                    "set_version": set_version,
                    "columns": ["colour", "x"],
                    "data": chunk[["colour", "x"]].values.tolist(),
                    "predictions": chunk["prediction"].tolist(),
                }
                handle.write(json.dumps(record) + "\n")
                sent[request_id] = chunk
    return sent


def traffic(data_folder: Path, seed: int, rows: int = 150, shifted=SHIFTED, stores=STORES) -> dict[str, pd.DataFrame]:
    """Rows drawn like the training data; the shifted stores' x moved far beyond it; predictions by the
    registered model (the loader MLflow itself uses)."""
    fresh = toy_frame(rows=rows, seed=seed)
    fresh = fresh[fresh["store"].isin(stores)].copy()
    fresh.loc[fresh["store"].isin(shifted), "x"] += 8.0
    fresh["prediction"] = RegisteredModel(data_folder).predict(fresh[["store", "colour", "x"]])
    return {store: part.reset_index(drop=True) for store, part in fresh.groupby("store")}


def run_monitor(tmp_path: Path, collected: Path, *extra: str) -> tuple[int, dict, dict]:
    forget_loaded_code()
    out = tmp_path / "monitor"
    code = monitor.main(["--use-case", "toy", "--collected", str(collected), "--output", str(out), *extra])
    if code != 0:
        return code, {}, {}
    return code, read_json(out / monitor.MONITOR_FILE), read_json(out / monitor.RETRAIN_FILE)


def test_registered_models_carry_their_training_profile(project, tmp_path, capsys):
    toy_project(project)
    train(tmp_path, capsys)
    folder, manifest = production(tmp_path)
    for entry in manifest["models"].values():
        path = folder / entry["path"] / PROFILE_FILE
        assert entry["sha256"][PROFILE_FILE] == file_sha256(path)
        profile = json.loads(path.read_text())
        assert set(profile["features"]) == {"colour", "x"}  # inputs only: not the label, not the partition column
        assert profile["rows"] == 200 and profile["features"]["x"]["kind"] == "number"
        assert profile["prediction"]["rows"] == 4  # the hold-out's predictions


def test_known_shifts_are_named_and_the_others_are_not(project, tmp_path, capsys):
    toy_project(project)
    train(tmp_path, capsys)
    folder, manifest = production(tmp_path)
    set_version = load_production_version()
    collected = tmp_path / "collected"
    sent = write_records(collected, traffic(folder, seed=11), manifest, set_version)

    code, outcome, retrain = run_monitor(tmp_path, collected)
    assert code == 0, capsys.readouterr().err
    result = outcome["use_cases"]["toy"]
    drifted = {r["key"] for r in result["results"] if r["status"] in ("drift", "drift and decay")}
    assert drifted == {f"store={s}" for s in SHIFTED}
    assert retrain == {"toy": sorted(f"store={s}" for s in SHIFTED)}
    for r in result["results"]:
        assert r["rows"] == 150
        if r["key"] in drifted:
            assert r["drift"]["drifted_features"] == ["x"] and r["drift"]["worst_feature"] == "x"
        else:
            assert r["status"] == "ok" and r["drift"]["worst_value"] < 0.2
    page = (tmp_path / "monitor" / monitor.REPORT_FILE).read_text()
    assert "toy/store=s01" in page and "<svg" in page and "training" in page

    # actuals arrive: the shifted stores' predictions were wrong (x moved, the outcome did not), so they decayed
    actuals = tmp_path / "actuals"
    actuals.mkdir()
    expected = [
        pd.DataFrame({"request_id": request_id, "row": np.arange(len(chunk)), "y": chunk["y"].to_numpy()})
        for request_id, chunk in sent.items()
    ]
    pd.concat(expected).to_csv(actuals / "toy.csv", index=False)
    code, outcome, retrain = run_monitor(tmp_path, collected, "--actuals", str(actuals))
    assert code == 0
    result = outcome["use_cases"]["toy"]
    decayed = {r["key"] for r in result["results"] if r["decay"]["decayed"]}
    assert decayed == {f"store={s}" for s in SHIFTED}
    for r in result["results"]:
        assert r["decay"]["rows"] == 150 and r["decay"]["metric"] == "mae"
        assert r["decay"]["promised"] == manifest["models"][r["key"]]["metrics"]["mae"]
    assert result["decayed"] == 2 and result["drifted"] == 2


def load_production_version() -> str:
    from ml_service.registry.mlflow_registry import connect, production_model

    settings = load_settings()
    return str(production_model(connect(settings), "toy", settings.production_alias).version)


def test_bad_input_is_reported_per_model_or_file_and_the_rest_is_measured(project, tmp_path, capsys):
    toy_project(project)
    train(tmp_path, capsys)
    folder, manifest = production(tmp_path)
    collected = tmp_path / "collected"
    rows = traffic(folder, seed=3, stores=["s00", "s02", "s03"])
    rows["s02"] = rows["s02"].iloc[:20]  # too few rows for a statistic
    write_records(collected, rows, manifest, load_production_version())
    (collected / "empty.jsonl").write_text("")
    (collected / "garbage.jsonl").write_text("this is not json\n")
    (folder / manifest["models"]["store=s03"]["path"] / PROFILE_FILE).unlink()  # registered before profiles

    code, outcome, retrain = run_monitor(tmp_path, collected)
    assert code == 0, capsys.readouterr().err
    result = outcome["use_cases"]["toy"]
    status = {r["key"]: (r["status"], r.get("reason", "")) for r in result["results"]}
    assert status["store=s00"][0] == "ok"
    assert status["store=s02"] == ("too few rows", "20 collected rows, 40 needed (monitoring.min_rows)")
    assert status["store=s03"][0] == "no training profile" and "registered before profiles" in status["store=s03"][1]
    assert sorted(result["no_data"]) == ["store=s01", "store=s04", "store=s05"]
    problems = " ".join(outcome["problems"])
    assert "empty.jsonl: empty file" in problems and "garbage.jsonl" in problems
    assert retrain == {}
    assert "Not measured" in (tmp_path / "monitor" / monitor.REPORT_FILE).read_text()


def test_wrong_arguments_fail_with_one_line(project, tmp_path, capsys):
    toy_project(project)
    code = monitor.main(["--use-case", "toy", "--collected", str(tmp_path / "nothing"), "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no such folder" in err and "make traffic" in err
    (tmp_path / "c").mkdir()
    code, outcome, _ = run_monitor(tmp_path, tmp_path / "c")  # nothing registered yet: said, not a crash
    assert code == 0
    assert outcome["use_cases"]["toy"]["error"].startswith("no production model")


def test_retraining_only_the_selected_models_trains_only_those(project, tmp_path, capsys):
    root = toy_project(project)
    train(tmp_path, capsys)
    (tmp_path / "retrain.json").write_text(json.dumps({"toy": ["store=s01", "store=s04"]}))
    # new data arrived for every store; only the selected ones are retrained, the others stay as in production
    toy_frame(rows=200, seed=5).to_csv(root / "data" / "toy.csv", index=False)
    printed = train(tmp_path / "again", capsys, "--retrain-from", str(tmp_path / "retrain.json"))
    assert "prepare: toy: 2 model(s)" in printed
    _, manifest = production(tmp_path)
    assert len(manifest["models"]) == 6  # the set stays whole

    (tmp_path / "none.json").write_text(json.dumps({"toy": []}))
    forget_loaded_code()
    code = run_train_pipeline.main(["--retrain-from", str(tmp_path / "none.json"), "--in-process"])
    assert code == 2 and "nothing to retrain" in capsys.readouterr().err


def test_the_loop_through_the_real_service_names_the_shifted_models(project, tmp_path, capsys, monkeypatch):
    """What `make run` + `make traffic` + `make monitor` do, on the fixture use case: the package served on
    127.0.0.1 with collection on, traffic drawn from the use case's data with two models shifted, the collected
    files the service wrote, then the monitor step."""
    from ml_service.monitoring import traffic as traffic_cli
    from ml_service.scoring.package import main as package_main

    root = toy_project(project)
    shutil.copy(REPO_ROOT / "requirements.lock", root / "requirements.lock")  # the image's pins come from it
    train(tmp_path, capsys)
    assert package_main(["--output", str(tmp_path / "package")]) == 0
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(root), str(REPO_ROOT)]))
    out = tmp_path / "monitoring"
    shifted = ["toy/store=s01", "toy/store=s04"]
    args = ["--use-case", "toy", "--package", str(tmp_path / "package"), "--output", str(out), "--rows", "150"]
    assert traffic_cli.main([*args, *(a for m in shifted for a in ("--shift", m))]) == 0, capsys.readouterr().err
    sent = read_json(out / "traffic.json")
    assert sent["shifted"] == shifted and sent["failed"] == 0 and sent["rows"] == 6 * 150
    assert list((out / "collected").rglob("*.jsonl"))  # written by the service, not by this test

    code, outcome, retrain = run_monitor(tmp_path, out / "collected", "--actuals", str(out / "actuals"))
    assert code == 0, capsys.readouterr().err
    result = outcome["use_cases"]["toy"]
    assert {r["model"] for r in result["results"]} == {f"toy/store={s}" for s in STORES}
    assert all(r["rows"] == 150 for r in result["results"])
    assert retrain == {"toy": ["store=s01", "store=s04"]}
    assert {r["model"] for r in result["results"] if r["status"] == "drift and decay"} == set(shifted)
    assert {r["model"] for r in result["results"] if r["status"] == "ok"} == {f"toy/store={s}" for s in STORES} - set(
        shifted
    )
