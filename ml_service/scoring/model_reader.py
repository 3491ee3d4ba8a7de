"""How the scoring service reads one model folder: its files, its metadata, its input columns' types.

Everything the service knows about the on-disk model format is here, so a new format (an MLflow model: an
``MLmodel`` file whose signature gives the input columns and their types) is a change to this module only:

- ``read_metadata(folder)``: the folder's metadata (input columns, input schema, sample input, metrics), loading
  no model;
- ``read_model(folder, hashes)``: the model object and its metadata, after checking that every file it reads has
  the sha256 recorded for it (``hashes``: ``{path relative to folder: sha256}``, from the package manifest). The
  bytes are hashed and unpickled from memory, so what is checked is exactly what is loaded;
- ``input_schema(metadata)``: the typed input columns (``ml_service.scoring.inputs.Column``).

Today's format (``ml_service.registry.model_folder``): ``model.joblib`` (any object with ``predict``) and
``model.json`` (``input_columns``, optional ``input_schema``, ``sample_input``, ``metrics``).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib

from ml_service.registry.model_folder import METADATA_FILE, MODEL_FILE
from ml_service.scoring.inputs import Schema, schema_from_metadata

MODEL_FILES = (MODEL_FILE, METADATA_FILE)  # what read_model reads (each must be hashed in the manifest)


class ModelIntegrityError(RuntimeError):
    """A model's files do not match the hashes recorded for them: the model is refused, never unpickled."""


def read_metadata(folder: Path) -> dict[str, Any]:
    """The folder's metadata, or ``{}`` when it has none (a model set's partition inherits the set's)."""
    path = Path(folder) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def read_verified(folder: Path, name: str, hashes: Mapping[str, str] | None) -> bytes:
    """The bytes of ``folder/name``, refused unless their sha256 is ``hashes[name]`` (``hashes`` None: unchecked)."""
    data = (Path(folder) / name).read_bytes()
    if hashes is None:
        return data
    expected = hashes.get(name)
    if expected is None:
        raise ModelIntegrityError(f"{Path(folder) / name}: no sha256 recorded for it in the package manifest")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelIntegrityError(
            f"{Path(folder) / name}: sha256 {actual[:12]}... differs from the manifest's {expected[:12]}...: "
            "the file changed after packaging; rebuild the package (make package)"
        )
    return data


def read_model(folder: Path, hashes: Mapping[str, str] | None) -> tuple[Any, dict[str, Any]]:
    """The model and its own metadata, each file checked against ``hashes`` before it is parsed or unpickled."""
    folder = Path(folder)
    model_bytes = read_verified(folder, MODEL_FILE, hashes)
    metadata: dict[str, Any] = {}
    if (folder / METADATA_FILE).is_file() or (hashes is not None and METADATA_FILE in hashes):
        metadata = json.loads(read_verified(folder, METADATA_FILE, hashes))
    return joblib.load(io.BytesIO(model_bytes)), metadata


def is_model_folder(folder: Path) -> bool:
    return (Path(folder) / MODEL_FILE).is_file()


def input_schema(metadata: Mapping[str, Any]) -> Schema:
    return schema_from_metadata(metadata)
