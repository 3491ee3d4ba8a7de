"""The Azure ML entry script for every model: ``init()`` once per worker, then ``run(raw_data)`` per request.

Point an Azure ML online deployment, ACI or ``azmlinfsrv --entry_script`` at this file. ``AZUREML_MODEL_DIR`` is:

- a scoring package (``ml_service.scoring.package`` output: ``DIR/package/manifest.json`` or ``DIR/manifest.json``),
  served with its partition models and its file hashes checked, as the scoring service serves it; or
- one registered model version as Azure ML mounts it (``<dir>/<name>/<version>/...``): a model folder or a model
  set (its partitions named ``<name>/<model key>``).

A request is the scoring service's ``POST /score`` body, ``{"model_name": NAME, "data": [[...], ...]}``
(``model_name`` may be left out when one model is served), and gets ``{"model_name", "model_version",
"predictions"}``. An unknown model is a 404, bad rows a 422 naming the field (``data[i][j]``), malformed JSON a
400, a model that cannot be loaded a 503; each a JSON body ``{"detail", "status"[, "field"]}``, never a 500.
Same validation and prediction code as the service (``ml_service.scoring.batching.predict_batch``, one request).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a plain entry script: make ml_service and the use cases importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ml_service.scoring import model_reader  # noqa: E402
from ml_service.scoring.batching import ModelRejected, predict_batch  # noqa: E402
from ml_service.scoring.inputs import InputError  # noqa: E402
from ml_service.scoring.model_store import (  # noqa: E402
    PACKAGE_MANIFEST,
    CatalogueError,
    ModelStore,
    ModelUnavailable,
    entries_for_folder,
    package_root,
)

MAX_NAME = 256
CACHE_SIZE = int(os.environ.get("SCORING_CACHE_SIZE", "256") or 256)
_STORE: list[ModelStore] = []


def _is_package(folder: Path) -> bool:
    try:
        package_root(folder)
    except CatalogueError:
        return False
    return True


def open_store(model_dir: Path) -> ModelStore:
    """The models under ``model_dir`` (see the module docstring for the layouts accepted)."""
    model_dir = Path(model_dir)
    candidates = [model_dir, *sorted(p.parent for p in model_dir.rglob(PACKAGE_MANIFEST))]
    for folder in candidates:
        if _is_package(folder):
            return ModelStore.from_package(package_root(folder), CACHE_SIZE)
    folders = [model_dir] if model_reader.is_model_folder(model_dir) else []
    folders = folders or sorted({p.parent for p in model_dir.rglob("MLmodel")})
    if len(folders) != 1:
        raise CatalogueError(f"{model_dir}: expected a scoring package or one registered model, found {len(folders)}")
    name, version = _name_version(model_dir, folders[0])
    manifest, _, _ = model_reader.read_catalogue(folders[0])
    return ModelStore(entries_for_folder(manifest["model_name"], version, folders[0]), CACHE_SIZE)


def _name_version(root: Path, folder: Path) -> tuple[str, str]:
    """Azure ML mounts a registered version at ``<root>/<name>/<version>``; elsewhere the folder's own name."""
    parts = folder.relative_to(root).parts
    if len(parts) >= 2:
        return parts[0], parts[1]
    return (parts[0] if parts else folder.name), "1"


def init() -> None:
    model_dir = os.environ.get("AZUREML_MODEL_DIR")
    if not model_dir:
        raise RuntimeError("AZUREML_MODEL_DIR is not set: it must point at the scoring package or the model folder")
    _STORE[:] = [open_store(Path(model_dir))]


def _answer(body: dict[str, Any], status: int) -> Any:
    """A JSON answer with ``status``: azmlinfsrv's AMLResponse when it serves us, else the plain dict."""
    try:
        from azureml_inference_server_http.api.aml_response import AMLResponse
    except ImportError:  # called in-process, outside the inference server
        return body
    return AMLResponse(body, status, json_str=True)


def _error(status: int, detail: str, field: str | None = None) -> Any:
    body: dict[str, Any] = {"detail": detail, "status": status}
    if field:
        body["field"] = field
    return _answer(body, status)


def run(raw_data: str | bytes | dict) -> Any:
    if not _STORE:
        return _error(503, "no models loaded: init() was not called")
    store = _STORE[0]
    if isinstance(raw_data, str | bytes):
        try:
            request = json.loads(raw_data)
        except RecursionError:
            return _error(400, "not valid JSON: nested too deeply", "body")
        except ValueError as exc:
            return _error(400, f"not valid JSON: {str(exc)[:200]}", "body")
    else:
        request = raw_data
    if not isinstance(request, dict):
        return _error(422, 'body must be a JSON object {"model_name": ..., "data": [[...]]}', "body")
    name = request.get("model_name")
    if name is None and len(store) == 1:
        name = store.names()[0]
    if not isinstance(name, str) or not name:
        return _error(422, "model_name must be a non-empty string", "model_name")
    if len(name) > MAX_NAME:
        return _error(422, f"model_name has {len(name)} characters; at most {MAX_NAME}", "model_name")
    if store.entry(name) is None:
        shown = ", ".join(store.names()[:10]) + (" ..." if len(store) > 10 else "")
        return _error(404, f"unknown model {name!r}; served: {shown}", "model_name")
    if "data" not in request:
        return _error(422, "data is required: a list of rows", "data")
    try:
        loaded = store.get(name)
    except ModelUnavailable as exc:
        return _error(503, str(exc), "model_name")
    (outcome,) = predict_batch(loaded, [request["data"]])
    if isinstance(outcome, InputError):
        return _error(422, str(outcome), outcome.field)
    if isinstance(outcome, ModelRejected):
        return _error(422, f"model {name!r} rejected the data: {str(outcome)[:300]}", "data")
    if isinstance(outcome, Exception):
        raise outcome
    body: dict[str, Any] = {"model_name": name, "model_version": loaded.entry.version, "predictions": outcome}
    if loaded.entry.model_set:
        body["model_set"], body["set_version"] = loaded.entry.model_set, loaded.entry.set_version
    return body
