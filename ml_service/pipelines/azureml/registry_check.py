"""Did a job register a model? Compare the registry before and after: a new version or a moved production alias.

The registry is the workspace's MLflow registry (its `mlflow_tracking_uri`), read through the same
`ml_service.registry` code as locally.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelState:
    latest_version: int | None
    production_version: str | None


def snapshot(client, names: Iterable[str], alias: str) -> dict[str, ModelState]:
    from ml_service.registry.mlflow_registry import production_model

    states = {}
    for name in names:
        versions = [int(v.version) for v in client.search_model_versions(f"name='{name}'")]
        current = production_model(client, name, alias)
        states[name] = ModelState(max(versions) if versions else None, current.version if current else None)
    return states


def registered(before: Mapping[str, ModelState], after: Mapping[str, ModelState]) -> list[str]:
    """Names whose latest version or production alias changed between the two snapshots."""
    changed = []
    for name, now in after.items():
        was = before.get(name, ModelState(None, None))
        new_version = now.latest_version is not None and (
            was.latest_version is None or now.latest_version > was.latest_version
        )
        if new_version or now.production_version != was.production_version:
            changed.append(name)
    return changed
