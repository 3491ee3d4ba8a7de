"""The model registry: MLflow, in a local SQLite store by default or an Azure ML workspace by URI.

A model version holds an MLflow model written by ml_service.registry.mlflow_model (a single model or a model set). "In
production" is an alias on one version; moving the alias is always the last write of a registration.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ml_service.registry.errors import RegistryError
from ml_service.registry.model_set import MANIFEST_FILE
from ml_service.util.env_variables import Settings
from ml_service.util.tracking_uri import check_tracking_uri

DATA_FOLDER = "data/model"  # where an MLflow model written by ml_service.registry.mlflow_model keeps its data

STATE_TAG = "registration"


@dataclass(frozen=True)
class ProductionModel:
    name: str
    version: str
    source: str
    tags: dict[str, str]
    run_id: str


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured store (creating the local folder on first use) and return a client."""
    uri = settings.tracking_uri
    check_tracking_uri(settings)  # an unreachable server fails in seconds, not after MLflow's 4 minutes of retries
    # progress bars per artifact download flood the logs of pipelines that read model sets
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str, settings: Settings) -> str:
    """The experiment's id, creating it with artifacts under the project (not the current directory)."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if settings.tracking_uri.startswith("sqlite:"):
        location = (settings.artifact_root / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:
        experiment = client.get_experiment_by_name(name)  # created concurrently by another process
        if experiment is None:
            raise
        return experiment.experiment_id


def production_model(client: MlflowClient, name: str, alias: str) -> ProductionModel | None:
    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise
    return _as_production(version)


def _as_production(version: ModelVersion) -> ProductionModel:
    return ProductionModel(version.name, str(version.version), version.source, dict(version.tags), version.run_id)


def production_models(client: MlflowClient, alias: str) -> list[ProductionModel]:
    """Every registered model that has a version under `alias`, sorted by name."""
    found = []
    for registered in client.search_registered_models(max_results=1000):
        if alias in (registered.aliases or {}):
            found.append(_as_production(client.get_model_version(registered.name, registered.aliases[alias])))
    return sorted(found, key=lambda m: m.name)


def _versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of `name` (none when the name is not registered yet)."""
    try:
        return list(client.search_model_versions(f"name='{name}'"))
    except MlflowException:
        return []


def _complete_run_ids(versions: list[ModelVersion]) -> list[str]:
    return [v.run_id for v in versions if v.tags.get(STATE_TAG) != "pending"]


def registered_run_ids(client: MlflowClient, name: str) -> list[str]:
    return _complete_run_ids(_versions(client, name))


def register_version(
    client: MlflowClient,
    name: str,
    run_id: str,
    artifact_path: str,
    tags: Mapping[str, str],
    alias: str | None,
    timeout_s: float = 300.0,
) -> ModelVersion:
    """Register the run's artifact folder as a new version, tag it, then (last) move `alias` onto it.

    If anything fails before the alias moves, the new version is deleted again: no half-registered version
    stays behind, and the alias still points at the previous one. A version is created marked pending and
    marked complete just before the alias moves, so one left pending by a killed process is removed by the
    next registration of that model.
    """
    versions = _versions(client, name)  # one search for both checks (a remote call on a workspace)
    _remove_pending(client, name, versions)
    if run_id in _complete_run_ids(versions):
        raise RegistryError(f"run {run_id} is already registered as a version of {name!r}")
    try:
        client.get_registered_model(name)
    except MlflowException:
        try:
            client.create_registered_model(name)
        except MlflowException:
            client.get_registered_model(name)  # created concurrently; anything else propagates
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(name, source=source, run_id=run_id, tags={**tags, STATE_TAG: "pending"})
    try:
        _wait_until_ready(client, name, version.version, timeout_s)
        client.set_model_version_tag(name, version.version, STATE_TAG, "complete")
        if alias:
            client.set_registered_model_alias(name, alias, version.version)
    except BaseException:
        _delete_quietly(client, name, version.version)
        raise
    return client.get_model_version(name, version.version)


def remove_interrupted_versions(client: MlflowClient, name: str) -> list[str]:
    """Delete versions a killed registration left pending (never one that carries an alias)."""
    return _remove_pending(client, name, _versions(client, name))


def _remove_pending(client: MlflowClient, name: str, versions: list[ModelVersion]) -> list[str]:
    removed = []
    for version in versions:
        if version.tags.get(STATE_TAG) == "pending" and not version.aliases:
            client.delete_model_version(name, version.version)
            removed.append(str(version.version))
    return removed


def _wait_until_ready(client: MlflowClient, name: str, version: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get_model_version(name, version).status
        if status == "READY":
            return
        if status == "FAILED_REGISTRATION":
            raise RegistryError(f"{name} version {version}: registration failed in the registry")
        if time.monotonic() > deadline:
            raise RegistryError(f"{name} version {version}: not ready after {timeout_s:.0f} s")
        time.sleep(0.5)


def _delete_quietly(client: MlflowClient, name: str, version: str) -> None:
    """Best-effort rollback; the original error is what the caller needs to see."""
    try:
        client.delete_model_version(name, version)
    except MlflowException as exc:
        print(f"warning: could not delete half-registered {name} version {version}: {exc}")


def download_model(client: MlflowClient, model: ProductionModel, destination: Path) -> Path:
    """Copy a version's model folder to `destination` (a local folder) and return it."""
    destination.mkdir(parents=True, exist_ok=True)
    uri = client.get_model_version_download_uri(model.name, model.version)
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination)))


def production_manifest(client: MlflowClient, model: ProductionModel, destination: Path) -> dict:
    """The manifest of a registered version (its data folder's catalogue), downloading only that one file."""
    uri = f"{model.source.rstrip('/')}/{DATA_FOLDER}/{MANIFEST_FILE}"
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(destination))
    except (MlflowException, OSError) as exc:
        raise RegistryError(
            f"{model.name} version {model.version} has no {DATA_FOLDER}/{MANIFEST_FILE}: not a model this platform "
            f"registered ({' '.join(str(exc).split())[:200]})"
        ) from None
    return json.loads(Path(local).read_text())


def download_data(client: MlflowClient, model: ProductionModel, destination: Path) -> Path:
    """The data folder (manifest and models) of a registered version, downloaded to `destination`."""
    return download_model(client, model, destination) / DATA_FOLDER


def _artifact_path(model: ProductionModel) -> str:
    """The version's folder relative to its run's artifact root (source: '<run artifact uri>/<path>')."""
    marker = f"/{model.run_id}/artifacts/"
    return model.source.split(marker, 1)[1] if marker in model.source else model.source.rsplit("/", 1)[-1]
