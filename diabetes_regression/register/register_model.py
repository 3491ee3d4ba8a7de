"""What a registered model version records about its origin (the platform writes it to the registry)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class AlreadyRegisteredError(ValueError):
    """The run's model is already a registered version; registering it again would duplicate lineage."""


def registration_tags(
    run_id: str,
    metrics: Mapping[str, float],
    parameters: Mapping[str, Any],
    data_hash: str,
    git_commit: str = "",
    build_id: str = "",
    build_uri: str = "",
) -> dict[str, str]:
    tags = {"run_id": run_id, "data_hash": data_hash}
    if git_commit:
        tags["git_commit"] = git_commit
    if build_id:
        tags["build_id"] = build_id
    if build_uri:
        tags["build_uri"] = build_uri
    tags.update({f"metric.{k}": repr(float(v)) for k, v in metrics.items()})
    tags.update({f"param.{k}": str(v) for k, v in parameters.items()})
    return tags


def check_not_registered(run_id: str, registered_run_ids: Iterable[str], model_name: str) -> None:
    if run_id in set(registered_run_ids):
        raise AlreadyRegisteredError(f"run {run_id} is already registered as a version of {model_name!r}")


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    """Metrics recorded by registration_tags, read back from a version's tags."""
    return {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
