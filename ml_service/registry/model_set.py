"""A model set: many models (e.g. one per partition) registered as ONE model version.

Layout of a model-set folder (what is logged as the version's artifact folder)::

    manifest.json
    models/<model key>/model.joblib     one model folder per partition (ml_service.registry.model_folder
    models/<model key>/model.json       format: any object with predict(DataFrame) + its metadata)

A model key names the partition: ``model_key({"region": "r0001"}) == "region=r0001"`` (several partition
columns are joined with ``,`` in the order given). The scoring service addresses a partition model as
``<model_name>/<model key>``, e.g. ``nyc_energy_regions_model/region=r0001``.

How a writer (the many-models orchestrator) uses this module::

    folder = Path("out/model_set")
    for values, model in trained.items():                     # values: {"region": "r0001"}
        key = model_key(values)
        save_model_folder(model, partition_folder(folder, key), {"input_columns": [...], ...})
    write_model_set(
        folder,
        model_name="nyc_energy_regions_model",
        input_columns=["timeStamp", "precip", "temp"],
        partition_columns=["region"],
        models={key: {"version": "3", "metrics": {...}, "data_hash": "...", "config_hash": "..."}},
        set_version="",                                       # the registry version, when known
        sample_input=[["2017-08-13 06:00", 0, 50]],           # optional: one row the smoke test sends
    )

``write_model_set`` writes only ``manifest.json`` (atomically, keys sorted: same inputs, same bytes); the model
folders must already exist. ``read_manifest`` reads and checks it. Readers never list the ``models/`` folder:
the manifest alone is the catalogue, so a set of 10,000 models is opened by reading one file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ml_service.util.files import write_atomic

MANIFEST_FILE = "manifest.json"
MODELS_DIR = "models"
KIND = "model_set"
ENTRY_FIELDS = ("version", "metrics", "data_hash", "config_hash", "sample_input")
_FORBIDDEN = set('/\\=,\n\r\t"')


class ModelSetError(ValueError):
    """A model set folder or manifest is not usable; the message says which entry and why."""


def _check_part(what: str, text: str) -> str:
    if not text or text in (".", "..") or any(c in _FORBIDDEN for c in text) or text.strip() != text:
        raise ModelSetError(f"{what} {text!r} cannot be part of a model key (no '/', '\\', '=', ',', spaces at ends)")
    return text


def model_key(partition_values: Mapping[str, Any]) -> str:
    """``{"region": "r0001"}`` → ``"region=r0001"``; several columns → ``"a=1,b=x"`` (in the mapping's order)."""
    if not partition_values:
        raise ModelSetError("a model key needs at least one partition value")
    return ",".join(
        f"{_check_part('partition column', str(k))}={_check_part('partition value', str(v))}"
        for k, v in partition_values.items()
    )


def parse_model_key(key: str) -> dict[str, str]:
    """The inverse of ``model_key``: ``"region=r0001"`` → ``{"region": "r0001"}``."""
    values: dict[str, str] = {}
    for part in key.split(","):
        column, sep, value = part.partition("=")
        if not sep:
            raise ModelSetError(f"model key {key!r}: {part!r} is not column=value")
        values[_check_part("partition column", column)] = _check_part("partition value", value)
    return values


def partition_folder(folder: Path, key: str) -> Path:
    """Where the model of partition ``key`` lives inside a model-set folder."""
    parse_model_key(key)
    return Path(folder) / MODELS_DIR / key


def is_model_set(folder: Path) -> bool:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("kind") == KIND
    except (ValueError, AttributeError):
        return False


def write_model_set(
    folder: Path,
    *,
    model_name: str,
    input_columns: Sequence[str],
    partition_columns: Sequence[str],
    models: Mapping[str, Mapping[str, Any]],
    set_version: str = "",
    input_schema: Mapping[str, str] | None = None,
    sample_input: list[list[Any]] | None = None,
    check_files: bool = True,
) -> Path:
    """Write ``<folder>/manifest.json`` for partition models already saved under ``<folder>/models/<key>/``.

    ``models`` maps each model key to its entry: ``version`` (registry version in which it was trained; empty
    means "this set's version"), ``metrics`` (dict of floats), ``data_hash``, ``config_hash`` and optionally
    ``sample_input`` (rows for a smoke test). ``input_schema`` is ``{column: "datetime" | "number"}`` when
    known. ``check_files`` refuses keys whose ``model.joblib`` is missing. Returns the manifest's path.
    """
    if not models:
        raise ModelSetError(f"model set {model_name!r} has no models")
    entries: dict[str, dict[str, Any]] = {}
    for key, info in models.items():
        values = parse_model_key(key)
        if list(values) != list(partition_columns):
            raise ModelSetError(f"model key {key!r} does not name the partition columns {list(partition_columns)}")
        unknown = set(info) - set(ENTRY_FIELDS)
        if unknown:
            raise ModelSetError(f"model {key!r}: unknown manifest fields {sorted(unknown)}; allowed: {ENTRY_FIELDS}")
        if check_files and not (partition_folder(folder, key) / "model.joblib").is_file():
            raise ModelSetError(f"model {key!r}: {partition_folder(folder, key) / 'model.joblib'} is missing")
        entries[key] = {
            "path": f"{MODELS_DIR}/{key}",
            "version": str(info.get("version", "")),
            "metrics": dict(info.get("metrics") or {}),
            "data_hash": str(info.get("data_hash", "")),
            "config_hash": str(info.get("config_hash", "")),
            **({"sample_input": info["sample_input"]} if info.get("sample_input") is not None else {}),
        }
    manifest: dict[str, Any] = {
        "kind": KIND,
        "model_name": model_name,
        "set_version": str(set_version),
        "input_columns": list(input_columns),
        "partition_columns": list(partition_columns),
        "models": entries,
    }
    if input_schema is not None:
        manifest["input_schema"] = dict(input_schema)
    if sample_input is not None:
        manifest["sample_input"] = sample_input
    path = Path(folder) / MANIFEST_FILE
    write_atomic(path, (json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n").encode())
    return path


def read_manifest(folder: Path) -> dict[str, Any]:
    """The checked manifest of a model-set folder (each entry's ``path`` is relative to ``folder``)."""
    path = Path(folder) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelSetError(f"{path} not found: {folder} is not a model set") from None
    except ValueError as exc:
        raise ModelSetError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND:
        raise ModelSetError(f"{path}: 'kind' is not {KIND!r}")
    for field in ("model_name", "models", "input_columns", "partition_columns"):
        if field not in manifest:
            raise ModelSetError(f"{path}: missing {field!r}")
    if not isinstance(manifest["models"], dict):
        raise ModelSetError(f"{path}: 'models' must be an object keyed by model key")
    for key, entry in manifest["models"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
            raise ModelSetError(f"{path}: model {key!r} needs a 'path'")
        if Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts:
            raise ModelSetError(f"{path}: model {key!r} path must stay inside the set folder")
    return manifest
