"""The one promotion rule: a candidate takes production only when it is strictly better by the use case's
metric and direction. Equal is not better, so retraining on unchanged data never churns versions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Direction = Literal["minimize", "maximize"]
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize")


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def is_better(candidate: float, incumbent: float, direction: str) -> bool:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    return candidate < incumbent if direction == "minimize" else candidate > incumbent


def decide(
    candidate: Mapping[str, float] | None,
    incumbent: Mapping[str, float] | None,
    metric: str,
    direction: str,
    incumbent_version: str | None = None,
) -> Decision:
    """Promote or keep, and why, for one model. `candidate` is None when its training failed; `incumbent` is None
    when nothing is in production."""
    if candidate is None:
        return Decision(False, "training failed")
    if metric not in candidate:
        raise ValueError(f"the candidate has no metric {metric!r} (it has: {', '.join(sorted(candidate))})")
    value = float(candidate[metric])
    if incumbent is None:
        return Decision(True, f"nothing in production; candidate {metric}={value:.6g}")
    where = f"production (version {incumbent_version})" if incumbent_version else "production"
    if metric not in incumbent:
        return Decision(True, f"{where} has no {metric}; candidate {metric}={value:.6g}")
    versus = f"candidate {metric}={value:.6g} vs {where} {metric}={float(incumbent[metric]):.6g}"
    word = "lower" if direction == "minimize" else "higher"
    if is_better(value, float(incumbent[metric]), direction):
        return Decision(True, f"{versus}: {word} is better, promoting")
    return Decision(False, f"{versus}: not {word}, keeping production")
