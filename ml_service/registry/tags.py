"""The one codec between metrics and registry tags: ``metric.<name>`` holds ``repr(float)``, so a value read
back is exactly the value written (Azure ML's MLflow surface supports version tags, not version metrics)."""

from __future__ import annotations

from collections.abc import Mapping

METRIC_PREFIX = "metric."


def metrics_to_tags(metrics: Mapping[str, float]) -> dict[str, str]:
    return {f"{METRIC_PREFIX}{name}": repr(float(value)) for name, value in metrics.items()}


def metrics_from_tags(tags: Mapping[str, str]) -> dict[str, float]:
    return {k.removeprefix(METRIC_PREFIX): float(v) for k, v in tags.items() if k.startswith(METRIC_PREFIX)}
