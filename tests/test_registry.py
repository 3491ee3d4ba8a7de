"""The MLflow registry wrapper against a real SQLite store in a temporary folder."""

from __future__ import annotations

import mlflow
import pytest

from ml_service.registry.errors import RegistryError
from ml_service.registry.mlflow_registry import (
    connect,
    download_model,
    ensure_experiment,
    production_model,
    production_models,
    register_version,
)
from ml_service.registry.model_folder import load_model_folder, save_model_folder


class Doubler:
    def predict(self, rows):
        return [2 * r[0] for r in rows]


def logged_run(client, settings, tmp_path, name="m") -> str:
    experiment = ensure_experiment(client, "tests", settings)
    folder = save_model_folder(Doubler(), tmp_path / f"model-{name}", {"input_columns": ["x"]})
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), "model")
    return run.info.run_id


def test_store_is_created_inside_the_local_folder(settings):
    connect(settings)
    assert settings.tracking_uri.endswith(f"{settings.local_path.name}/mlflow.db")
    assert (settings.local_path / "mlflow.db").parent.is_dir()


def test_register_moves_alias_and_model_downloads(settings, tmp_path):
    client = connect(settings)
    assert production_model(client, "m", "production") is None
    first = register_version(
        client, "m", logged_run(client, settings, tmp_path, "a"), "model", {"k": "v"}, "production"
    )
    second = register_version(client, "m", logged_run(client, settings, tmp_path, "b"), "model", {}, "production")
    current = production_model(client, "m", "production")
    assert (str(first.version), str(second.version), current.version) == ("1", "2", "2")
    assert client.get_model_version("m", "1").tags["k"] == "v"
    assert [m.name for m in production_models(client, "production")] == ["m"]
    model, metadata = load_model_folder(download_model(client, current, tmp_path / "download"))
    assert model.predict([[21]]) == [42] and metadata["input_columns"] == ["x"]
    # artifacts live under the project's local folder, not the current directory
    assert str(settings.artifact_root) in client.get_run(second.run_id).info.artifact_uri


def test_same_run_twice_is_refused(settings, tmp_path):
    client = connect(settings)
    run_id = logged_run(client, settings, tmp_path)
    register_version(client, "m", run_id, "model", {}, "production")
    with pytest.raises(RegistryError, match="already registered"):
        register_version(client, "m", run_id, "model", {}, "production")
    assert len(client.search_model_versions("name='m'")) == 1


def test_failure_before_alias_leaves_no_half_registered_version(settings, tmp_path, monkeypatch):
    client = connect(settings)
    register_version(client, "m", logged_run(client, settings, tmp_path, "a"), "model", {}, "production")

    def broken_alias(*args, **kwargs):
        raise ConnectionError("registry went away")

    monkeypatch.setattr(client, "set_registered_model_alias", broken_alias)
    with pytest.raises(ConnectionError):
        register_version(client, "m", logged_run(client, settings, tmp_path, "b"), "model", {}, "production")
    versions = client.search_model_versions("name='m'")
    assert [str(v.version) for v in versions] == ["1"]
    assert production_model(client, "m", "production").version == "1"
