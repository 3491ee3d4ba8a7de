"""The promotion gate: is the candidate better than the model in production, by the configured metric?"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def is_better(candidate: float, incumbent: float, direction: str) -> bool:
    """Strictly better; equal is not better, so a retrain on the same data does not churn versions."""
    if direction == "minimize":
        return candidate < incumbent
    if direction == "maximize":
        return candidate > incumbent
    raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")


def decide_promotion(
    candidate_metrics: dict[str, float],
    production_metrics: dict[str, float] | None,
    metric: str,
    direction: str,
    production_version: str | None = None,
) -> Decision:
    if metric not in candidate_metrics:
        raise ValueError(f"the candidate has no metric {metric!r} (it has: {', '.join(sorted(candidate_metrics))})")
    candidate = candidate_metrics[metric]
    if production_metrics is None:
        return Decision(True, f"no model in production yet; candidate {metric}={candidate:.6g}")
    if metric not in production_metrics:
        return Decision(True, f"production version {production_version} has no {metric}; candidate {candidate:.6g}")
    incumbent = production_metrics[metric]
    word = "lower" if direction == "minimize" else "higher"
    versus = f"candidate {metric}={candidate:.6g} vs production (version {production_version}) {metric}={incumbent:.6g}"
    if is_better(candidate, incumbent, direction):
        return Decision(True, f"{versus}: {word} is better, promoting")
    return Decision(False, f"{versus}: not {word}, keeping the production model")
