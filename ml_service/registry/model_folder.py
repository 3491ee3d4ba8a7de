"""The on-disk form of one model: model.joblib (any object with predict) and model.json (what it expects).

The scoring service reads only this, so any framework works as long as the object pickles and predicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib

MODEL_FILE = "model.joblib"
METADATA_FILE = "model.json"


def save_model_folder(model: Any, folder: Path, metadata: dict[str, Any]) -> Path:
    """Write the model and its metadata; `metadata` must say `input_columns` so callers can send raw rows."""
    if "input_columns" not in metadata:
        raise ValueError("model metadata needs 'input_columns'")
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, folder / MODEL_FILE)
    (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True, default=str) + "\n")
    return folder


def load_model_folder(folder: Path) -> tuple[Any, dict[str, Any]]:
    return joblib.load(folder / MODEL_FILE), json.loads((folder / METADATA_FILE).read_text())
