"""The MLflow registry wrapper against a real SQLite store in a temporary folder (one process; the races between
processes are in test_registry_concurrency.py, Azure ML's surface in test_registry_azure_surface.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities.model_registry import ModelVersion, ModelVersionTag

from ml_service.registry import mlflow_registry as reg
from ml_service.registry.errors import RegistryError
from ml_service.registry.mlflow_model import data_path
from ml_service.registry.mlflow_registry import (
    connect,
    download_model,
    ensure_experiment,
    production_model,
    production_models,
    promote,
    register_version,
    resolve_production,
)
from ml_service.registry.mlops_pyfunc_model import RegisteredModel
from ml_service.util.files import FILE_MAP, file_map_digest, folder_sha256, verify_folder
from ml_service.util.lineage import lineage_tags

LINEAGE = {"git_commit": "abc123", "git_tree": "dirty", "build_id": "42", "build_uri": "https://ci/42"}
RULE = {"metric": "mse", "direction": "minimize"}


class Doubler:
    def predict(self, rows):
        return 2 * np.asarray(rows, dtype=float)[:, 0]


def logged_run(client, settings, tmp_path, name="m"):
    experiment = ensure_experiment(client, "tests", settings)
    from tests.test_scoring_support import save_single

    folder = save_single(Doubler(), tmp_path / f"model-{name}", [[21.0]], name="m", input_types={"x": "number"})
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), "model")
    return run.info.run_id, folder


def register(client, settings, tmp_path, tag, mse, name="m", **kwargs):
    run_id, folder = logged_run(client, settings, tmp_path, tag)
    options = {"metric": "mse", "direction": "minimize", **kwargs}
    return register_version(
        client,
        name,
        run_id,
        "model",
        {"k": tag},
        "production",
        metrics={"mse": mse},
        lineage=LINEAGE,
        data_hash="d" * 64,
        folder=folder,
        **options,
    )


def test_store_is_created_inside_the_local_folder(settings):
    connect(settings)
    assert settings.tracking_uri.endswith(f"{settings.local_path.name}/mlflow.db")
    assert (settings.local_path / "mlflow.db").parent.is_dir()


def test_better_model_takes_production_and_every_version_records_its_lineage(settings, tmp_path):
    client = connect(settings)
    assert production_model(client, "m", "production") is None
    first = register(client, settings, tmp_path, "a", 10.0)
    second = register(client, settings, tmp_path, "b", 5.0)
    assert (first.version, first.promoted, second.version, second.promoted) == ("1", True, "2", True)
    assert "lower is better" in second.reason and second.production_version == "2"
    current = production_model(client, "m", "production")
    assert current.version == "2" and current.metrics == {"mse": 5.0}
    tags = client.get_model_version("m", "1").tags
    assert {k: tags[k] for k in LINEAGE} == LINEAGE and tags["data_hash"] == "d" * 64 and tags["k"] == "a"
    assert tags["registration"] == "complete" and tags["production"] == "1"
    assert [m.name for m in production_models(client, "production")] == ["m"]
    folder = download_model(client, current, tmp_path / "download")
    model = RegisteredModel(data_path(folder))  # the loader every registered MLflow model ships
    assert list(model.predict(pd.DataFrame({"x": [21.0]}))) == [42.0] and model.input_columns == ["x"]
    # the file map logged at registration pins every file, and its digest is a version tag
    files = json.loads((folder / FILE_MAP).read_text())
    assert files == folder_sha256(folder) and {"MLmodel", "data/model/models/model/model.pkl"} <= set(files)
    assert current.tags["files.sha256"] == file_map_digest(files) and verify_folder(folder, files) == []
    (folder / "MLmodel").write_text("{}")
    assert verify_folder(folder, files) == ["MLmodel: sha256 differs"]
    # artifacts live under the project's local folder, not the current directory
    assert str(settings.artifact_root) in client.get_run(current.run_id).info.artifact_uri


def test_a_candidate_no_better_than_production_registers_nothing_and_says_why(settings, tmp_path):
    client = connect(settings)
    register(client, settings, tmp_path, "a", 5.0)
    worse = register(client, settings, tmp_path, "b", 7.0)
    assert (worse.version, worse.promoted, worse.production_version) == (None, False, "1")
    assert worse.reason == "candidate mse=7 vs production (version 1) mse=5: not lower, keeping production"
    assert len(client.search_model_versions("name='m'")) == 1


def test_same_run_twice_is_refused(settings, tmp_path):
    client = connect(settings)
    run_id, _ = logged_run(client, settings, tmp_path)
    args = dict(metrics={"mse": 1.0}, lineage={}, data_hash="h", force=True)
    register_version(client, "m", run_id, "model", {}, "production", **args)
    with pytest.raises(RegistryError, match="already registered"):
        register_version(client, "m", run_id, "model", {}, "production", **args)
    assert len(client.search_model_versions("name='m'")) == 1


def test_failure_before_the_version_is_complete_leaves_nothing(settings, tmp_path, monkeypatch):
    client = connect(settings)
    register(client, settings, tmp_path, "a", 10.0)
    real = client.set_model_version_tag

    def broken(name, version, key, value):
        if key == "registration":
            raise ConnectionError("registry went away")
        return real(name, version, key, value)

    monkeypatch.setattr(client, "set_model_version_tag", broken)
    with pytest.raises(ConnectionError):
        register(client, settings, tmp_path, "b", 1.0)
    assert [str(v.version) for v in client.search_model_versions("name='m'")] == ["1"]
    assert production_model(client, "m", "production").version == "1"


def test_forced_promotion_and_rollback_open_a_new_epoch(settings, tmp_path):
    client = connect(settings)
    register(client, settings, tmp_path, "a", 5.0)
    forced = register(client, settings, tmp_path, "b", 50.0, force=True)  # evaluation disabled
    assert forced.promoted and production_model(client, "m", "production").version == "2"
    # the rule applies again from the forced version on
    assert register(client, settings, tmp_path, "c", 20.0).promoted
    assert production_model(client, "m", "production").version == "3"
    back = promote(client, "m", "1", "production", force=True)  # an operator's rollback
    assert back.promoted and production_model(client, "m", "production").version == "1"
    assert promote(client, "m", "1", "production", **RULE).reason == "already in production"


def test_a_model_set_takes_production_only_if_it_was_built_on_the_production_of_that_moment(settings, tmp_path):
    client = connect(settings)
    first = register(client, settings, tmp_path, "a", 5.0, metric=None, direction=None, base_version="")
    assert first.promoted and first.reason == "nothing in production"
    assert register(client, settings, tmp_path, "b", 6.0, metric=None, direction=None, base_version="1").promoted
    stale = register(client, settings, tmp_path, "c", 1.0, metric=None, direction=None, base_version="1")
    assert (stale.version, stale.promoted) == (None, False)
    assert stale.reason.startswith("production moved to version 2 while this one was built on version 1")
    with pytest.raises(ValueError, match="needs metric and direction"):
        register(client, settings, tmp_path, "d", 1.0, metric=None, direction=None)


def version(number: int, epoch: str | None, mse: float | None, complete: bool = True, rule: bool = True):
    tags = {"registration": "complete" if complete else "pending"}
    if epoch is not None:
        tags["production"] = epoch
    if mse is not None:
        tags["metric.mse"] = repr(mse)
    if rule:
        tags |= {"production.metric": "mse", "production.direction": "minimize"}
    return ModelVersion("m", str(number), 0, status="READY", tags=[ModelVersionTag(k, v) for k, v in tags.items()])


def resolved(*versions: ModelVersion) -> str | None:
    found = resolve_production(list(versions), "production")
    return str(found.version) if found is not None else None


def test_production_is_resolved_from_claims_alone():
    assert resolved(version(1, None, 1.0)) is None  # registered, never promoted
    assert resolved(version(1, "1", 3.0), version(2, "1", 2.0), version(3, "1", 9.0)) == "2"  # best of the epoch
    assert resolved(version(1, "1", 2.0), version(2, "1", 2.0)) == "1"  # a tie goes to the first registered
    assert resolved(version(1, "1", 1.0), version(2, "2", 9.0, rule=False)) == "2"  # a newer epoch wins
    assert resolved(version(1, "1", 9.0), version(2, "1", 1.0, complete=False)) == "1"  # never an incomplete one
    assert resolved(version(1, "1", 9.0), version(2, "lost", 1.0)) == "1"  # a withdrawn claim counts for nothing
    assert resolved(version(1, "2", 9.0, rule=False), version(2, "2", 1.0)) == "1"  # mixed rules: by version


def pending_version(client, tmp_path, settings, owner: str, heartbeat: float) -> str:
    run_id, _ = logged_run(client, settings, tmp_path, f"p{heartbeat}")
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    tags = {"registration": "pending", "registration.owner": owner, "registration.heartbeat": repr(heartbeat)}
    try:
        client.create_registered_model("m")
    except Exception:
        pass
    return str(client.create_model_version("m", source=source, run_id=run_id, tags=tags).version)


def test_cleanup_removes_only_pending_versions_whose_owner_is_dead_or_stale(settings, tmp_path):
    client = connect(settings)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = reg.owner_id(int(finished.stdout))
    old = time.time() - reg.STALE_AFTER_S - 60
    kept = {
        pending_version(client, tmp_path, settings, reg.owner_id(), old),  # alive here, though silent (paused)
        pending_version(client, tmp_path, settings, "elsewhere|1|1", time.time()),  # another host, recent beat
    }
    removed = {
        pending_version(client, tmp_path, settings, dead, time.time()),  # died here
        pending_version(client, tmp_path, settings, "elsewhere|1|1", old),  # another host, silent for too long
    }
    assert set(reg.remove_interrupted_versions(client, "m")) == removed
    assert {str(v.version) for v in client.search_model_versions("name='m'")} == kept


def test_lineage_tags_say_whether_the_tree_was_dirty(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    assert lineage_tags("7", "u", cwd=str(tmp_path))["git_tree"] == "unknown"
    git("init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git("add", "a.py")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    clean = lineage_tags("7", "u", cwd=str(tmp_path))
    assert clean["git_tree"] == "clean" and len(clean["git_commit"]) == 40 and clean["build_id"] == "7"
    (tmp_path / "a.py").write_text("x = 2\n")
    assert lineage_tags(cwd=str(tmp_path))["git_tree"] == "dirty"
