"""The data folder of a registered model: one model, or a model set of many (one per partition) registered as ONE
version, so 10,000 partitions register in seconds and the production pointer moves once.

Layout (the `data/model/` folder inside the registered MLflow model, see `ml_service.registry.mlflow_model`)::

    manifest.json                 the catalogue: kind, columns and types, and one entry per model
    models/<key>/model.pkl        one folder per partition (key "region=r0001"); a single model: models/model/

Each entry records the model's version (the registry version it was trained in), metrics, data and config
hashes, the sha256 of each of its files (checked before a model is loaded) and a sample input. Readers never
list `models/`: the manifest alone is the catalogue, so a set of 10,000 models is opened by reading one file.
The partition-key codec (`model_key`, `parse_model_key`) lives in the loader shipped with every model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_service.registry.mlops_pyfunc_model import (
    MANIFEST_FILE,
    MODEL_FILE,
    MODELS_DIR,
    SINGLE_KEY,
    ModelKeyError,
    key_folder,
    model_key,
    parse_model_key,
)
from ml_service.util.files import write_atomic

__all__ = [
    "MANIFEST_FILE",
    "MODEL_FILE",
    "MODELS_DIR",
    "SINGLE_KEY",
    "ModelSetError",
    "model_key",
    "parse_model_key",
    "partition_folder",
    "read_manifest",
    "write_manifest",
]

KINDS = ("model", "model_set")
ENTRY_FIELDS = ("version", "metrics", "data_hash", "config_hash", "sample_input", "sha256", "run_id")


class ModelSetError(ValueError):
    """A model folder or manifest is not usable; the message says which entry and why."""


def partition_folder(folder: Path, key: str) -> Path:
    """Where the model of partition `key` ("" for a single model) lives inside a data folder."""
    try:
        return Path(folder) / key_folder(key)
    except ModelKeyError as exc:
        raise ModelSetError(str(exc)) from None


def write_manifest(
    folder: Path,
    *,
    model_name: str,
    use_case: str,
    input_types: Mapping[str, str],
    partition_columns: Sequence[str],
    models: Mapping[str, Mapping[str, Any]],
    allowed: Mapping[str, Sequence[str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `<folder>/manifest.json` for models already saved under `<folder>/models/`; returns the manifest.

    `models` maps each key ("" for a single model) to its entry (`ENTRY_FIELDS`). Same inputs, same bytes.
    """
    if not models:
        raise ModelSetError(f"{model_name}: no models to write")
    single = list(models) == [SINGLE_KEY]
    if not single and not partition_columns:
        raise ModelSetError(f"{model_name}: partition models need partition columns")
    entries: dict[str, dict[str, Any]] = {}
    for key, info in models.items():
        if not single:
            try:
                values = parse_model_key(key)
            except ModelKeyError as exc:
                raise ModelSetError(str(exc)) from None
            if list(values) != list(partition_columns):
                raise ModelSetError(f"model key {key!r} does not name the partition columns {list(partition_columns)}")
        unknown = set(info) - set(ENTRY_FIELDS)
        if unknown:
            raise ModelSetError(f"model {key!r}: unknown manifest fields {sorted(unknown)}; allowed: {ENTRY_FIELDS}")
        if not (partition_folder(folder, key) / MODEL_FILE).is_file():
            raise ModelSetError(f"model {key!r}: {partition_folder(folder, key) / MODEL_FILE} is missing")
        entries[key] = {"path": key_folder(key), **{k: v for k, v in info.items() if v is not None}}
    manifest: dict[str, Any] = {
        "kind": "model" if single else "model_set",
        "model_name": model_name,
        "use_case": use_case,
        "input_columns": list(input_types),
        "input_types": dict(input_types),
        "partition_columns": [] if single else list(partition_columns),
        "allowed": {k: list(v) for k, v in (allowed or {}).items()},
        "models": entries,
        **dict(extra or {}),
    }
    path = Path(folder) / MANIFEST_FILE
    write_atomic(path, (json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n").encode())
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked manifest of a data folder (each entry's `path` is relative to `folder`)."""
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelSetError(f"{path} not found: {folder} is not a registered model's data folder") from None
    except ValueError as exc:
        raise ModelSetError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") not in KINDS:
        raise ModelSetError(f"{path}: 'kind' is not one of {KINDS}")
    for field in ("model_name", "models", "input_columns", "input_types", "partition_columns"):
        if field not in manifest:
            raise ModelSetError(f"{path}: missing {field!r}")
    if not isinstance(manifest["models"], dict) or not manifest["models"]:
        raise ModelSetError(f"{path}: 'models' must be a non-empty object keyed by model key")
    for key, entry in manifest["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelSetError(f"{path}: model {key!r} needs a 'path'")
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise ModelSetError(f"{path}: model {key!r} path must stay inside the folder")
    return manifest


def served_name(model_name: str, key: str) -> str:
    """How the service addresses a model: `<model_name>` for a single one, `<model_name>/<key>` in a set."""
    return f"{model_name}/{key}" if key else model_name
