"""Did a job register a model? Compare the registry before and after: a new version or moved production.

The registry is the workspace's MLflow registry (its `mlflow_tracking_uri`), read through the same
`ml_service.registry` code as locally, with only what Azure ML's MLflow surface offers: one search of versions
by name gives both the latest version and production (a version tag; the workspace has no aliases).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelState:
    latest_version: int | None
    production_version: str | None


def snapshot(client, names: Iterable[str], label: str) -> dict[str, ModelState]:
    from ml_service.registry.mlflow_registry import model_versions, resolve_production

    states = {}
    for name in names:
        versions = model_versions(client, name)
        current = resolve_production(versions, label)
        latest = max((int(v.version) for v in versions), default=None)
        states[name] = ModelState(latest, str(current.version) if current is not None else None)
    return states


def registered(before: Mapping[str, ModelState], after: Mapping[str, ModelState]) -> list[str]:
    """Names whose latest version or production version changed between the two snapshots."""
    changed = []
    for name, now in after.items():
        was = before.get(name, ModelState(None, None))
        new_version = now.latest_version is not None and (
            was.latest_version is None or now.latest_version > was.latest_version
        )
        if new_version or now.production_version != was.production_version:
            changed.append(name)
    return changed
