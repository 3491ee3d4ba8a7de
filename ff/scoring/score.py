"""Azure ML scoring entry script for the ff models: ``init()`` then ``run(raw_data)`` per request.

Why this shape: it is the contract Azure ML online endpoints, ACI and ``azmlinfsrv`` call. ``init`` loads
every ``**/model.joblib`` under ``AZUREML_MODEL_DIR`` keyed by its folder relative to that directory
(``nyc_energy_model``, ``nyc_energy_regions_model/region=r0001``; a ``model.joblib`` at the root is
``default``). A request names its model and sends raw rows in the model's input column order:

    {"model_name": "nyc_energy_model", "data": [["2017-08-12 07:00:00", 0.0, 70.1], ...]}

and gets ``{"model_name": ..., "predictions": [...]}``. Bad requests raise ``ValueError`` with a message
meant for the caller.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

if __package__ in (None, ""):  # run as a plain entry script: make ``ff`` importable for unpickling
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ff.features import model_input_schema  # noqa: E402

MODEL_FILE = "model.joblib"
ROOT_MODEL_NAME = "default"

_MODELS: dict[str, Any] = {}
_SCHEMAS: dict[str, dict[str, str]] = {}


def rows_to_frame(input_columns: Mapping[str, str] | Sequence[str], rows: Any) -> pd.DataFrame:
    """Validate raw request rows and build the model's input frame.

    ``input_columns`` is the model's input schema ``{column: "datetime" | "number"}`` (a plain list of names
    means all numbers). Each row is a list with one value per column, in order. Raises ``ValueError``
    naming the row and column for a wrong width, an unparseable time stamp, a non-number or a missing value.
    """
    schema = dict(input_columns) if isinstance(input_columns, Mapping) else dict.fromkeys(input_columns, "number")
    names = list(schema)
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"'data' must be a non-empty list of rows, each [{', '.join(names)}]")
    columns: dict[str, list] = {name: [] for name in names}
    for i, row in enumerate(rows):
        if not isinstance(row, list | tuple) or len(row) != len(names):
            width = len(row) if isinstance(row, list | tuple) else type(row).__name__
            raise ValueError(f"row {i}: expected {len(names)} values [{', '.join(names)}], got {width}")
        for name, value in zip(names, row, strict=True):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise ValueError(f"row {i}, column {name!r}: missing value")
            if schema[name] == "number":
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"row {i}, column {name!r}: expected a number, got {value!r}")
                if math.isinf(value):
                    raise ValueError(f"row {i}, column {name!r}: expected a finite number, got {value!r}")
            elif not isinstance(value, str):
                raise ValueError(f"row {i}, column {name!r}: expected a date/time string, got {value!r}")
            columns[name].append(value)
    frame = {}
    for name, values in columns.items():
        if schema[name] == "datetime":
            parsed = pd.to_datetime(pd.Series(values), format="mixed", errors="coerce")
            if parsed.isna().any():
                i = int(parsed.isna().to_numpy().argmax())
                raise ValueError(f"row {i}, column {name!r}: not a date/time: {values[i]!r}")
            frame[name] = parsed.astype("datetime64[ns]")
        else:
            frame[name] = pd.Series(values, dtype="float64")
    return pd.DataFrame(frame)


def load_models(model_dir: str | Path) -> dict[str, Any]:
    """Every ``**/model.joblib`` under ``model_dir`` keyed by its relative folder (POSIX separators)."""
    model_dir = Path(model_dir)
    models = {}
    for path in sorted(model_dir.rglob(MODEL_FILE)):
        name = path.parent.relative_to(model_dir).as_posix()
        models[ROOT_MODEL_NAME if name == "." else name] = joblib.load(path)
    return models


def init() -> None:
    """Load all models once per worker from ``AZUREML_MODEL_DIR``."""
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("AZUREML_MODEL_DIR is not set: it must point at the folder holding the models")
    models = load_models(model_dir)
    if not models:
        raise RuntimeError(f"no {MODEL_FILE} found under {model_dir}")
    _MODELS.clear()
    _MODELS.update(models)
    _SCHEMAS.clear()
    _SCHEMAS.update({name: model_input_schema(model) for name, model in models.items()})


def run(raw_data: str | bytes | Mapping) -> dict[str, Any]:
    """Predict for one request; ``model_name`` may be omitted when exactly one model is loaded."""
    if not _MODELS:
        raise RuntimeError("no models loaded: call init() first")
    if isinstance(raw_data, str | bytes):
        try:
            request = json.loads(raw_data)
        except json.JSONDecodeError as exc:
            raise ValueError(f"request is not valid JSON: {exc.msg}") from None
    else:
        request = raw_data
    if not isinstance(request, Mapping):
        raise ValueError('request must be a JSON object {"model_name": ..., "data": [[...], ...]}')
    name = request.get("model_name")
    if name is None and len(_MODELS) == 1:
        name = next(iter(_MODELS))
    if not isinstance(name, str) or name not in _MODELS:
        shown = ", ".join(sorted(_MODELS)[:10]) + (" ..." if len(_MODELS) > 10 else "")
        raise ValueError(f"unknown model_name {name!r}; loaded: {shown}")
    frame = rows_to_frame(_SCHEMAS[name], request.get("data"))
    predictions = _MODELS[name].predict(frame)
    return {"model_name": name, "predictions": [float(p) for p in predictions]}
