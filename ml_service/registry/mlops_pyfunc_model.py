"""The MLflow `python_function` loader of every model this platform registers, and the one partition-key codec.

This file is shipped inside each registered model (MLflow copies it to the model's `code/` folder), so it
imports only the standard library, NumPy and pandas: `mlflow.pyfunc.load_model(uri).predict(frame)` works
wherever MLflow runs, with no `ml_service` installed. The model's own code (the use case's package) is shipped
beside it.

A registered model's data folder holds `manifest.json` and one folder per model (`models/<key>/model.pkl`).
A single model has one entry (key ""); a model set one per partition, and `predict` routes each row to the
model of its partition (the partition columns are then part of the input, before the model's own columns).
"""

from __future__ import annotations

import json
import pickle
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd

MANIFEST_FILE = "manifest.json"
MODELS_DIR = "models"
MODEL_FILE = "model.pkl"
SINGLE_KEY = ""
SINGLE_FOLDER = "model"


class ModelKeyError(ValueError):
    """A partition key that the codec cannot write or read."""


def _encode(text: str) -> str:
    # every character but letters, digits and "-_.~" is %-escaped: any value (a "/", a "," or a space in a
    # store name) makes a key that is one folder name and one URL path segment, and decodes back exactly
    return quote(text, safe="")


def model_key(partition_values: Mapping[str, Any]) -> str:
    """The one partition-key codec: `{"region": "r0001"}` -> `"region=r0001"`; several columns are joined with
    `,` in the mapping's order; reserved characters are %-escaped (`"a/b"` -> `"a%2Fb"`)."""
    if not partition_values:
        raise ModelKeyError("a model key needs at least one partition value")
    parts = []
    for column, value in partition_values.items():
        if str(column) == "" or str(value) == "":
            raise ModelKeyError(f"partition {column!r}={value!r}: column and value must not be empty")
        parts.append(f"{_encode(str(column))}={_encode(str(value))}")
    return ",".join(parts)


def parse_model_key(key: str) -> dict[str, str]:
    """The inverse of `model_key`: `"region=r0001"` -> `{"region": "r0001"}`."""
    values: dict[str, str] = {}
    for part in key.split(","):
        column, sep, value = part.partition("=")
        if not sep or not column or not value or _encode(unquote(column)) != column or _encode(unquote(value)) != value:
            raise ModelKeyError(f"model key {key!r}: {part!r} is not column=value as model_key writes it")
        values[unquote(column)] = unquote(value)
    return values


def key_folder(key: str) -> str:
    """A model's folder inside the data folder, relative: `models/<key>` (`models/model` for a single model),
    with the key's "%" written as "!": MLflow URL-decodes artifact paths when it downloads them (repeatedly, so
    "%2F" or "%252F" in a folder name becomes "/"), and "!" never appears in a key (the codec escapes it)."""
    if key != SINGLE_KEY:
        parse_model_key(key)
    return f"{MODELS_DIR}/{key.replace('%', '!') or SINGLE_FOLDER}"


class RegisteredModel:
    """A single model or a model set, loaded lazily: a partition's model is unpickled when a row needs it."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.manifest = json.loads((self.folder / MANIFEST_FILE).read_text())
        self.partition_columns = list(self.manifest.get("partition_columns") or [])
        self.input_columns = list(self.manifest["input_columns"])
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def model(self, key: str) -> Any:
        if key not in self._models:
            entry = self.manifest["models"].get(key)
            if entry is None:
                raise KeyError(f"{self.manifest['model_name']}: no model for partition {key!r}")
            with (self.folder / entry["path"] / MODEL_FILE).open("rb") as handle:
                model = pickle.load(handle)
            with self._lock:
                self._models.setdefault(key, model)
        return self._models[key]

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> np.ndarray:
        frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
        if not self.partition_columns:
            return np.asarray(self.model(SINGLE_KEY).predict(frame[self.input_columns]), dtype=float).reshape(-1)
        keys = [
            model_key(dict(zip(self.partition_columns, row, strict=True)))
            for row in frame[self.partition_columns].astype(str).itertuples(index=False, name=None)
        ]
        out = np.empty(len(frame), dtype=float)
        positions: dict[str, list[int]] = {}
        for position, key in enumerate(keys):
            positions.setdefault(key, []).append(position)
        for key, rows in positions.items():
            part = frame.iloc[rows][self.input_columns]
            out[rows] = np.asarray(self.model(key).predict(part), dtype=float).reshape(-1)
        return out


def _load_pyfunc(data_path: str) -> RegisteredModel:
    """MLflow's entry point for a `loader_module` model: the data folder in, an object with `predict` out."""
    return RegisteredModel(Path(data_path))
