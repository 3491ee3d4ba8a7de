"""The registry, registry_check and the scoring packager on Azure ML's MLflow surface, offline: a real
`mlflow server` of the locked version behind a proxy that answers as Azure ML documents (tests/azure_ml_surface.py:
no aliases, only MLflow-format versions, no search by tag). Only Azure's network edge is replaced. The same test
runs on the local SQLite store, through the same code."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import mlflow.pyfunc
import pytest
from mlflow.exceptions import MlflowException

from ml_service.pipelines.azureml import registry_check
from ml_service.registry import mlflow_registry as reg
from ml_service.scoring import package
from ml_service.util.env_variables import load_settings
from ml_service.util.files import FILE_MAP
from tests.azure_ml_surface import azure_ml_proxy, mlflow_server
from tests.conftest import seed_store
from tests.test_scoring_support import DIABETES_ROWS, build_model_set, diabetes_model, save_single

pytestmark = pytest.mark.slow  # real processes and servers

LABEL = "production"


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: list[list[float]], params=None) -> list[list[float]]:
        return model_input


@pytest.fixture(scope="module")
def azure(tmp_path_factory, empty_mlflow_db):
    with mlflow_server(tmp_path_factory.mktemp("mlflow-server"), empty_mlflow_db) as url:
        with azure_ml_proxy(url) as (proxy, calls):
            yield proxy, calls


@pytest.fixture(scope="module")
def mlflow_format(tmp_path_factory) -> Path:
    """An MLflow-format model folder (MLmodel, environment files), made once and copied for each version."""
    folder = tmp_path_factory.mktemp("pyfunc") / "model"
    mlflow.pyfunc.save_model(str(folder), python_model=Echo(), pip_requirements=["scikit-learn"])
    return folder


def mlflow_model_folder(template: Path, folder: Path, seed: int, name: str) -> Path:
    """A registered version as the register step writes it (an MLflow model, what the scoring service loads)."""
    return save_single(diabetes_model(seed), folder, DIABETES_ROWS[:1], name=name)


def log_run(client, settings, folder: Path) -> str:
    run = client.create_run(reg.ensure_experiment(client, "surface", settings))
    client.log_artifacts(run.info.run_id, str(folder), "model")
    return run.info.run_id


def register(client, settings, folder: Path, name: str, mse: float | None, **rule):
    rule = rule or {"metric": "mse", "direction": "minimize"}
    return reg.register_version(
        client, name, log_run(client, settings, folder), "model", {}, LABEL,
        metrics={"mse": mse} if mse is not None else {"mean_mape": 0.1}, lineage={"git_tree": "dirty"},
        data_hash="h", folder=folder, **rule,
    )  # fmt: skip


def test_the_proxy_answers_as_azure_ml_documents(azure, tmp_path, monkeypatch):
    proxy, _ = azure
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy)
    settings = load_settings()
    client = reg.connect(settings)
    with pytest.raises(MlflowException) as alias:
        client.get_model_version_by_alias("refusals", "production")
    assert alias.value.error_code == "ENDPOINT_NOT_FOUND"
    with pytest.raises(MlflowException, match="search by tag is not supported"):
        client.search_model_versions("tags.production = '1'")
    plain = tmp_path / "plain"  # a pickle and no MLmodel: not MLflow format
    plain.mkdir()
    (plain / "model.pkl").write_bytes(pickle.dumps(diabetes_model()))
    with pytest.raises(MlflowException, match="is not an MLflow model"):
        register(client, settings, plain, "refusals", 1.0)
    assert reg.model_versions(client, "refusals") == []  # nothing half-registered


@pytest.mark.parametrize("store", ["azure-ml-proxy", "local-sqlite"])
def test_registry_check_registry_and_package_work_on_both_stores(
    store, azure, mlflow_format, tmp_path, monkeypatch, isolated_settings, empty_mlflow_db
):
    proxy, calls = azure
    if store == "azure-ml-proxy":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy)
    else:
        seed_store(isolated_settings, empty_mlflow_db)
    settings = load_settings()
    client = reg.connect(settings)
    name, set_name = f"diabetes-{store}", f"regions-{store}"
    first_call = len(calls)
    before = registry_check.snapshot(client, [name, set_name], LABEL)
    assert before == dict.fromkeys([name, set_name], registry_check.ModelState(None, None))

    folders = [mlflow_model_folder(mlflow_format, tmp_path / f"v{i}", seed=i, name=name) for i in range(3)]
    first = register(client, settings, folders[0], name, 10.0)
    worse = register(client, settings, folders[1], name, 20.0)
    better = register(client, settings, folders[2], name, 5.0)
    assert (first.promoted, worse.version, better.promoted) == (True, None, True)
    assert worse.reason.endswith("not lower, keeping production")

    # a killed registration's pending version (its owner is dead) is cleaned up through the same calls
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run_id = log_run(client, settings, folders[0])
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    tags = {reg.STATE_TAG: reg.PENDING, reg.OWNER_TAG: reg.owner_id(int(dead.stdout))}
    pending = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    assert reg.remove_interrupted_versions(client, name) == [str(pending.version)]

    # a model set: an MLflow-format folder holding the set's manifest and models
    set_folder = build_model_set(tmp_path / "set", ["r1", "r2"], set_name=set_name)
    model_set = register(client, settings, set_folder, set_name, None, base_version="")
    assert model_set.promoted

    after = registry_check.snapshot(client, [name, set_name], LABEL)
    assert (
        after[name] == registry_check.ModelState(int(better.version), better.version)
        and after[set_name].production_version == "1"
    )
    assert registry_check.registered(before, after) == [name, set_name]
    served = {m.name: m for m in reg.production_models(client, LABEL) if m.name in (name, set_name)}
    assert served[name].version == better.version and served[name].metrics == {"mse": 5.0}
    assert served[name].tags["git_tree"] == "dirty" and served[name].tags["registration"] == "complete"

    # the packager downloads every production version and checks each file against the registered file map
    manifest = package.build(settings, tmp_path / "package")
    packaged = {m["name"]: m for m in manifest["models"]}
    assert packaged[name]["version"] == better.version and packaged[set_name]["kind"] == "model_set"
    folder = tmp_path / "package" / package.PACKAGE_DIR / "models" / name
    files = json.loads((folder / FILE_MAP).read_text())
    assert {"MLmodel", "data/model/models/model/model.pkl"} <= set(files) and packaged[name]["files"] == files

    if store == "azure-ml-proxy":
        used = calls[first_call:]
        assert used and not [c for c in used if "alias" in c or "logged-models" in c], used
        assert not [c for c in used if "search" in c and "tags." in c]


def test_a_tampered_model_file_stops_the_packager(mlflow_format, tmp_path, settings):
    client = reg.connect(settings)
    folder = mlflow_model_folder(mlflow_format, tmp_path / "v", seed=1, name="tampered")
    registration = register(client, settings, folder, "tampered", 1.0)
    stored = Path(client.get_model_version("tampered", registration.version).source.removeprefix("file://"))
    (stored / "MLmodel").write_text("{}")
    with pytest.raises(RuntimeError, match=r"tampered version 1: files differ from the registered ones: MLmodel"):
        package.build(settings, tmp_path / "package")


def test_the_training_pipeline_and_packaging_work_through_azure_mls_surface(azure, project, tmp_path, monkeypatch):
    """prepare → train → evaluate → register (a partitioned fixture use case, so a model set) and then the
    packager, with the tracking URI pointing at the proxy that answers as Azure ML documents: every call they make
    is one Azure ML's MLflow surface supports (no alias, no logged model, no search by tag, MLflow-format versions
    only), and a second run of better data moves production compare-and-set."""
    from ml_service.pipelines import run_train_pipeline
    from tests.conftest import forget_loaded_code
    from tests.fixtures.projects import toy_config, toy_frame

    proxy, calls = azure
    root = project({"toy": toy_config()}, {"data/toy.csv": toy_frame()})
    shutil.copy(Path(__file__).resolve().parents[1] / "requirements.lock", root / "requirements.lock")  # pins
    monkeypatch.setenv("MLFLOW_TRACKING_URI", proxy)
    first_call = len(calls)
    run = ["--use-case", "toy", "--in-process", "--run-dir", str(tmp_path / "run")]
    assert run_train_pipeline.main(run) == 0
    forget_loaded_code()
    settings = load_settings()
    client = reg.connect(settings)
    production = reg.production_model(client, "toy", LABEL)
    assert production is not None and production.version == "1" and production.tags["kind"] == "model_set"
    assert production.tags["registration"] == "complete" and "files.sha256" in production.tags

    # the same data again: nothing is better, nothing registered, production unchanged
    assert run_train_pipeline.main(run) == 0
    forget_loaded_code()
    assert reg.production_model(client, "toy", LABEL).version == "1"

    manifest = package.build(settings, tmp_path / "package", root)
    (entry,) = [m for m in manifest["models"] if m["name"] == "toy"]
    assert entry["kind"] == "model_set" and entry["partitions"] == 6 and "MLmodel" in entry["files"]
    used = calls[first_call:]
    assert used and not [c for c in used if "alias" in c or "logged-models" in c], used
    assert not [c for c in used if "search" in c and "tags." in c], used
