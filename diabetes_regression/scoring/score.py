"""Azure ML scoring entry script for the diabetes model: ``init()`` once, then ``run(raw_data)`` per request.

The contract Azure ML online endpoints, ACI and ``azmlinfsrv`` call. ``init`` loads ``model.joblib`` and
``model.json`` from ``AZUREML_MODEL_DIR`` (the model folder itself, or a folder containing it, as Azure ML
mounts ``<dir>/<model name>/<version>/...``). A request is ``{"data": [[AGE, SEX, BMI, BP, S1, ..., S6], ...]}``
and gets ``{"predictions": [...]}``; a bad request gets ``{"error": "..."}`` naming the row and column.
Only joblib, json and pandas: no platform code.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import joblib
import pandas as pd

MODEL_FILE = "model.joblib"
METADATA_FILE = "model.json"

model: Any = None
columns: list[str] = []


def find_model_folder(model_dir: str | Path) -> Path:
    """``model_dir`` if it holds model.joblib, else the only folder below it that does."""
    root = Path(model_dir)
    if (root / MODEL_FILE).is_file():
        return root
    found = sorted(p.parent for p in root.rglob(MODEL_FILE))
    if len(found) != 1:
        raise RuntimeError(f"expected one {MODEL_FILE} under {root}, found {len(found)}")
    return found[0]


def init() -> None:
    global model, columns
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("AZUREML_MODEL_DIR is not set: it must point at the model folder")
    folder = find_model_folder(model_dir)
    model = joblib.load(folder / MODEL_FILE)
    metadata_path = folder / METADATA_FILE
    metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
    columns = list(metadata.get("input_columns") or getattr(model, "feature_names_in_", []))


def to_frame(rows: Any) -> pd.DataFrame:
    """Check the rows (width, finite numbers) and build the model's input frame; ValueError names the field."""
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"'data' must be a non-empty list of rows, each [{', '.join(columns)}]")
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != len(columns):
            raise ValueError(f"data[{i}]: expected {len(columns)} numbers [{', '.join(columns)}]")
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"data[{i}][{j}] ({columns[j]}): expected a finite number, got {value!r}")
    return pd.DataFrame(rows, columns=columns, dtype=float)


def run(raw_data: str | bytes | dict) -> dict[str, Any]:
    if model is None:
        return {"error": "model not loaded: init() was not called"}
    try:
        request = json.loads(raw_data) if isinstance(raw_data, str | bytes) else raw_data
        if not isinstance(request, dict):
            raise ValueError('send a JSON object {"data": [[...], ...]}')
        predictions = model.predict(to_frame(request.get("data")))
    except ValueError as exc:  # includes json.JSONDecodeError
        return {"error": str(exc)}
    return {"predictions": [float(p) for p in predictions]}
