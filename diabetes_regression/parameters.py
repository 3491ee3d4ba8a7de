"""The use case's parameters (parameters.json), checked when loaded so a typo fails before any training."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARAMETERS_FILE = Path(__file__).with_name("parameters.json")
METRICS = ("mse", "rmse", "mae", "r2")
DIRECTIONS = ("minimize", "maximize")


class ParameterError(ValueError):
    """parameters.json has a missing or invalid value; the message names the key."""


@dataclass(frozen=True)
class Parameters:
    model_name: str
    raw_file: str
    label: str
    schema: dict[str, Any]
    alpha: float
    test_size: float
    random_state: int
    metric: str
    direction: str

    @property
    def feature_columns(self) -> list[str]:
        return [c for c in self.schema["columns"] if c != self.label]

    @property
    def training(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "test_size": self.test_size, "random_state": self.random_state}


def _get(raw: dict[str, Any], dotted: str, kind: type | tuple[type, ...]) -> Any:
    node: Any = raw
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            raise ParameterError(f"parameters.json: missing key {dotted!r}")
        node = node[key]
    if not isinstance(node, kind) or isinstance(node, bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ParameterError(f"parameters.json: {dotted!r} must be a {names}, got {node!r}")
    return node


def parameters_from_dict(raw: dict[str, Any]) -> Parameters:
    params = Parameters(
        model_name=_get(raw, "model_name", str),
        raw_file=_get(raw, "data.raw_file", str),
        label=_get(raw, "data.label", str),
        schema=_get(raw, "data.schema", dict),
        alpha=float(_get(raw, "training.alpha", (int, float))),
        test_size=float(_get(raw, "training.test_size", (int, float))),
        random_state=_get(raw, "training.random_state", int),
        metric=_get(raw, "evaluation.metric", str),
        direction=_get(raw, "evaluation.direction", str),
    )
    if params.alpha < 0:
        raise ParameterError(f"parameters.json: 'training.alpha' must be >= 0, got {params.alpha}")
    if not 0 < params.test_size < 1:
        raise ParameterError(f"parameters.json: 'training.test_size' must be between 0 and 1, got {params.test_size}")
    if params.metric not in METRICS:
        raise ParameterError(f"parameters.json: 'evaluation.metric' must be one of {', '.join(METRICS)}")
    if params.direction not in DIRECTIONS:
        raise ParameterError(f"parameters.json: 'evaluation.direction' must be one of {', '.join(DIRECTIONS)}")
    if params.label not in params.schema.get("columns", {}):
        raise ParameterError(f"parameters.json: label {params.label!r} is not a column of 'data.schema'")
    return params


def load_parameters(path: str | Path = PARAMETERS_FILE) -> Parameters:
    try:
        raw = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ParameterError(f"{path}: not valid JSON ({exc})") from None
    return parameters_from_dict(raw)
