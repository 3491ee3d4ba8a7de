"""The promotion rule for every ff model: promote when nothing is in production or the new model is strictly
better by the use case's metric and direction; equal is not better, so an unchanged retrain changes nothing."""

from __future__ import annotations


def is_better(candidate: float, incumbent: float, direction: str) -> bool:
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    return candidate < incumbent if direction == "minimize" else candidate > incumbent


def decide(
    candidate: dict[str, float] | None, incumbent: dict[str, float] | None, metric: str, direction: str
) -> tuple[bool, str]:
    """(promote, why) for one model; `candidate` is None when its training failed."""
    if candidate is None:
        return False, "training failed"
    value = candidate[metric]
    if incumbent is None or metric not in incumbent:
        return True, f"new model, {metric}={value:.6g}"
    versus = f"{metric}={value:.6g} vs production {incumbent[metric]:.6g}"
    if is_better(value, incumbent[metric], direction):
        return True, f"{versus}: better"
    return False, f"{versus}: not better"
