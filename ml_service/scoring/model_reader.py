"""How the scoring service reads a registered model: its files, its metadata, its input columns' types.

Everything the service knows about the on-disk model format is here. A registered version is an MLflow model
(`ml_service.registry.mlflow_model`): the `MLmodel` signature gives the input columns and their types, the data
folder's manifest the models (one, or one per partition), their metrics, allowed category values and the sha256
of each file recorded at registration.

- ``read_catalogue(folder, hashes)``: the manifest, the input metadata shared by its models, and each model's
  folder, loading no model (``hashes``: the package manifest's ``{path relative to folder: sha256}``; the
  catalogue's own files are checked against them);
- ``read_model(folder, hashes)``: the model object, after checking that the bytes it unpickles have the sha256
  recorded for them (hashed and unpickled from memory, so what is checked is exactly what is loaded);
- ``input_schema(metadata)``: the typed input columns (``ml_service.scoring.inputs.Column``).
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_service.registry.mlflow_model import MLMODEL_FILE, ModelFormatError, data_path, signature_types
from ml_service.registry.model_set import MANIFEST_FILE, MODEL_FILE, ModelSetError, read_manifest
from ml_service.scoring.inputs import Schema, schema_from_metadata

MODEL_FILES = (MODEL_FILE,)  # what read_model reads (each must have a recorded sha256)
SERVED_KINDS = {"number": "number", "integer": "number", "datetime": "datetime", "string": "string"}
SERVED_KINDS["boolean"] = "boolean"


class ModelIntegrityError(RuntimeError):
    """A model's files do not match the hashes recorded for them: the model is refused, never unpickled."""


def read_metadata(folder: Path) -> dict[str, Any]:
    """A partition's own metadata: none in this format (the catalogue's defaults hold it)."""
    return {}


def read_verified(folder: Path, name: str, hashes: Mapping[str, str] | None) -> bytes:
    """The bytes of ``folder/name``, refused unless their sha256 is ``hashes[name]`` (``hashes`` None: unchecked)."""
    data = (Path(folder) / name).read_bytes()
    if hashes is None:
        return data
    expected = hashes.get(name)
    if expected is None:
        raise ModelIntegrityError(f"{Path(folder) / name}: no sha256 recorded for it")
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelIntegrityError(
            f"{Path(folder) / name}: sha256 {actual[:12]}... differs from the recorded {expected[:12]}...: "
            "the file changed after it was registered or packaged; rebuild the package (make package)"
        )
    return data


def read_model(folder: Path, hashes: Mapping[str, str] | None) -> tuple[Any, dict[str, Any]]:
    """The model, its file checked against ``hashes`` before it is unpickled; no metadata of its own."""
    return pickle.loads(read_verified(Path(folder), MODEL_FILE, hashes)), {}


def is_model_folder(folder: Path) -> bool:
    return (Path(folder) / MLMODEL_FILE).is_file()


def input_schema(metadata: Mapping[str, Any]) -> Schema:
    return schema_from_metadata(metadata)


def read_catalogue(
    folder: Path, hashes: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(manifest, input metadata shared by its models, data folder) of a registered MLflow model folder.

    Input types come from the MLflow signature (partition columns, which select the model, are left out);
    allowed values of category columns from the manifest."""
    folder = Path(folder)
    try:
        data = data_path(folder)
        relative = data.relative_to(folder).as_posix()
        if hashes is not None:
            read_verified(folder, MLMODEL_FILE, hashes)
            read_verified(folder, f"{relative}/{MANIFEST_FILE}", hashes)
        types = signature_types(folder)
        manifest = read_manifest(data)
    except (ModelFormatError, ModelSetError, FileNotFoundError) as exc:
        raise ModelFormatError(f"{folder}: not a servable registered model ({exc})") from None
    partitions = set(manifest["partition_columns"])
    allowed = manifest.get("allowed") or {}
    schema: dict[str, Any] = {}
    for column, kind in types.items():
        if column in partitions:
            continue
        if column in allowed:
            schema[column] = {"type": "category", "values": list(allowed[column])}
        else:
            schema[column] = SERVED_KINDS.get(kind, "number")
    metadata = {"input_columns": list(schema), "input_schema": schema}
    return manifest, metadata, data
