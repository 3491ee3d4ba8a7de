"""Every registered version is an MLflow model: `MLmodel` with a signature and an input example, the loader
(`mlops_pyfunc_model.py`) and the use case's model code under `code/`, the models under `data/model/`.

So MLflow tools load it (`mlflow.pyfunc.load_model(...).predict(frame)`), Azure ML registers it through its
MLflow surface (which takes MLflow-format models only), and the scoring service reads its input types from the
signature. A model set is one MLflow model too: its input is the partition columns then the model's columns.

Why it stays fast for 10,000 partitions: MLflow writes the model with a data folder holding only the manifest
and the first partition (whose rows are the input example MLflow validates), then the other partitions are
moved in. Requirements are pinned from the installed versions, never inferred (inference costs seconds a model).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ml_service.registry import mlops_pyfunc_model
from ml_service.registry.model_set import MANIFEST_FILE, MODELS_DIR, read_manifest

MLMODEL_FILE = "MLmodel"
DATA_NAME = "model"  # the data folder's name: data/model/ in the MLflow model
LOADER_MODULE = mlops_pyfunc_model.__name__.rsplit(".", 1)[-1]
BASE_REQUIREMENTS = ("numpy", "pandas", "scikit-learn")
# An integer column is a double in the signature: prepare gives models floats (an integer column may have missing
# values), so the example and every frame a model sees hold float64; callers may still send whole numbers.
SIGNATURE_TYPES = {
    "number": "double",
    "integer": "double",
    "string": "string",
    "category": "string",
    "boolean": "boolean",
    "datetime": "datetime",
}
INPUT_TYPES = {"double": "number", "float": "number", "long": "integer", "integer": "integer"}
INPUT_TYPES.update({"string": "string", "boolean": "boolean", "datetime": "datetime"})


class ModelFormatError(ValueError):
    """A folder is not an MLflow model written by this platform; the message says what is missing."""


def pinned(names: Sequence[str]) -> list[str]:
    out = []
    for name in dict.fromkeys([*BASE_REQUIREMENTS, *names]):
        try:
            out.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(name)
    return out


def _signature(manifest: Mapping[str, Any]):
    """Partition columns (text), then the model's input columns in request order (the manifest's
    `input_columns`: its `input_types` object is written with sorted keys)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    types = manifest["input_types"]
    columns = [ColSpec("string", c) for c in manifest["partition_columns"]]
    columns += [ColSpec(SIGNATURE_TYPES[types[name]], name) for name in manifest["input_columns"]]
    return ModelSignature(inputs=Schema(columns), outputs=Schema([ColSpec("double")]))


def _example(manifest: Mapping[str, Any], key: str):
    import pandas as pd

    rows = manifest["models"][key].get("sample_input") or []
    if not rows:
        return None
    columns = list(manifest["input_columns"])
    frame = pd.DataFrame(rows, columns=columns)
    for column, kind in manifest["input_types"].items():
        if kind == "datetime":
            frame[column] = pd.to_datetime(frame[column])
        elif kind in ("number", "integer"):  # JSON gives 50 for 50.0: MLflow refuses int64 for a double column
            frame[column] = frame[column].astype("float64")
        elif kind == "boolean" and not frame[column].isna().any():
            frame[column] = frame[column].astype(bool)
    if manifest["partition_columns"]:
        values = mlops_pyfunc_model.parse_model_key(key)
        for position, column in enumerate(manifest["partition_columns"]):
            frame.insert(position, column, values[column])
    return frame


def save_mlflow_model(
    destination: Path,
    data_folder: Path,
    *,
    code_paths: Sequence[Path],
    requirements: Sequence[str] = (),
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write the MLflow model at `destination` from a finished data folder (manifest + models), which is moved
    into it (so it must be on the same file system; it is consumed)."""
    import logging

    import mlflow.pyfunc

    # MLflow logs "Validating input example against model signature" at INFO for every model saved
    logging.getLogger("mlflow.pyfunc").setLevel(logging.WARNING)
    manifest = read_manifest(data_folder)
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    first = next(iter(manifest["models"]))
    seed = data_folder.with_name(f".{data_folder.name}.seed") / DATA_NAME
    shutil.rmtree(seed.parent, ignore_errors=True)
    (seed / MODELS_DIR).mkdir(parents=True)
    shutil.copy2(data_folder / MANIFEST_FILE, seed / MANIFEST_FILE)
    first_path = manifest["models"][first]["path"]
    os.replace(data_folder / first_path, seed / first_path)
    code = [str(Path(mlops_pyfunc_model.__file__)), *(str(p) for p in code_paths)]
    try:
        mlflow.pyfunc.save_model(
            str(destination),
            loader_module=LOADER_MODULE,
            data_path=str(seed),
            code_paths=code,
            signature=_signature(manifest),
            input_example=_example(manifest, first),
            pip_requirements=pinned(requirements),
            metadata={"mlops": {"kind": manifest["kind"], "model_name": manifest["model_name"], **(metadata or {})}},
        )
    finally:
        os.replace(seed / first_path, data_folder / first_path)  # back, so the data folder is whole again
        shutil.rmtree(seed.parent, ignore_errors=True)
    target = data_path(destination)
    for key, entry in manifest["models"].items():
        if key == first:  # MLflow copied it with the seed
            continue
        (target / entry["path"]).parent.mkdir(parents=True, exist_ok=True)
        os.replace(data_folder / entry["path"], target / entry["path"])
    return destination


def read_mlmodel(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MLMODEL_FILE
    if not path.is_file():
        raise ModelFormatError(f"{folder}: no {MLMODEL_FILE} file: not an MLflow model")
    return yaml.safe_load(path.read_text())


def data_path(folder: Path) -> Path:
    """The data folder (manifest and models) of an MLflow model written by `save_mlflow_model`."""
    folder = Path(folder)
    mlmodel = read_mlmodel(folder) if (folder / MLMODEL_FILE).is_file() else None
    if mlmodel is None:
        return folder / "data" / DATA_NAME
    flavor = (mlmodel.get("flavors") or {}).get("python_function") or {}
    if flavor.get("loader_module") != LOADER_MODULE or not flavor.get("data"):
        raise ModelFormatError(f"{folder}: an MLflow model, but not one this platform wrote (loader {LOADER_MODULE})")
    return folder / flavor["data"]


def signature_types(folder: Path) -> dict[str, str]:
    """{column: platform type} from the MLflow model's input signature (partition columns included)."""
    mlmodel = read_mlmodel(folder)
    inputs = (mlmodel.get("signature") or {}).get("inputs")
    if not inputs:
        raise ModelFormatError(f"{folder}: the MLflow model has no input signature")
    out = {}
    for spec in json.loads(inputs):
        kind = INPUT_TYPES.get(spec.get("type"))
        if kind is None:
            raise ModelFormatError(f"{folder}: input {spec.get('name')!r} has type {spec.get('type')!r}, not served")
        out[spec["name"]] = kind
    return out
