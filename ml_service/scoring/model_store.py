"""The scoring service's models: a catalogue of every servable model, loaded lazily into a bounded LRU cache.

The catalogue (served name → version, metrics, folder) is built without loading any model: a single model
contributes one entry (its ``model.json`` is read), a model set contributes one entry per partition, read from
its manifest only — so 10,000 partition models are ready in well under a second. A model is unpickled the
first time it is asked for and stays while it is among the ``cache_size`` most recently used ones.

Served names: a single model by its registered name (``churn``); a partition model as
``<model_name>/<model key>`` (``sales/store=s01``, see ``ml_service.registry.model_set``).

Sources: ``from_package(dir)`` reads a build context written by ``ml_service.scoring.package``;
``from_registry(settings)`` downloads the production versions (MLflow is imported only there).
"""

from __future__ import annotations

import bisect
import json
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_service.registry.mlflow_model import data_path, signature_types
from ml_service.registry.model_set import MODEL_FILE, read_manifest, served_name
from ml_service.scoring.inputs import accepts_arrays, schema_from_metadata

PACKAGE_MANIFEST = "manifest.json"
PACKAGE_DIR = "package"
SINGLE = "model"
PARTITION = "partition"


class UnknownModel(KeyError):
    pass


class CatalogueError(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelEntry:
    """One servable model; ``model_set``/``set_version`` are set for partition models."""

    name: str
    version: str
    folder: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    model_set: str | None = None
    set_version: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # set-wide input_columns/schema/sample_input

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "metrics": self.metrics}
        out["kind"] = PARTITION if self.model_set else SINGLE
        if self.model_set:
            out["model_set"] = self.model_set
            out["set_version"] = self.set_version
        return out

    def metadata(self) -> dict[str, Any]:
        """``model.json`` of this model, over the set-wide defaults (reads one small file, loads no model)."""
        return dict(self.defaults)


@dataclass(frozen=True)
class LoadedModel:
    entry: ModelEntry
    model: Any
    schema: tuple[tuple[str, str], ...]
    array_input: bool = False  # predictions from NumPy arrays equal those from DataFrames (see accepts_arrays)


def load_model_folder(folder: Path) -> tuple[Any, dict[str, Any]]:
    """One model of a registered version's data folder: its pickle (the entry's metadata is the catalogue's)."""
    with (Path(folder) / MODEL_FILE).open("rb") as handle:
        return pickle.load(handle), {}


def entries_for_folder(name: str, version: str, folder: Path, metrics: dict | None = None) -> list[ModelEntry]:
    """Catalogue entries of one registered version (an MLflow model: a single model or a model set).

    Input types come from the MLflow signature (partition columns, which select the model, are left out);
    allowed values of category columns from the manifest.
    """
    folder = Path(folder)
    data = data_path(folder)
    manifest = read_manifest(data)
    if manifest["model_name"] != name:
        raise CatalogueError(f"{folder}: manifest names model {manifest['model_name']!r}, registered as {name!r}")
    types = signature_types(folder)
    partitions = set(manifest["partition_columns"])
    schema = {c: t for c, t in types.items() if c not in partitions}
    defaults = {
        "input_columns": list(schema),
        "input_schema": schema,
        "allowed": manifest.get("allowed") or {},
    }
    is_set = manifest["kind"] == "model_set"
    out = []
    for key, item in manifest["models"].items():
        extra = {"sample_input": item["sample_input"]} if item.get("sample_input") else {}
        out.append(
            ModelEntry(
                name=served_name(name, key),
                version=str(item.get("version") or version),
                folder=data / item["path"],
                metrics=dict(item.get("metrics") or metrics or {}),
                model_set=name if is_set else None,
                set_version=str(version) if is_set else None,
                defaults={**defaults, **extra, "sha256": item.get("sha256") or {}},
            )
        )
    return out


def package_root(path: Path) -> Path:
    """The folder holding the package manifest: ``DIR`` itself or ``DIR/package`` (a build context)."""
    path = Path(path)
    if (path / PACKAGE_MANIFEST).is_file() and json.loads((path / PACKAGE_MANIFEST).read_text()).get(
        "kind"
    ) != "model_set":
        return path
    if (path / PACKAGE_DIR / PACKAGE_MANIFEST).is_file():
        return path / PACKAGE_DIR
    raise CatalogueError(f"{path}: no {PACKAGE_MANIFEST} (nor {PACKAGE_DIR}/{PACKAGE_MANIFEST}): not a scoring package")


class ModelStore:
    """Thread-safe catalogue + LRU cache. ``get`` loads on a miss; concurrent misses on one model load it once."""

    def __init__(
        self,
        entries: Iterable[ModelEntry],
        cache_size: int,
        loader: Callable[[Path], tuple[Any, dict[str, Any]]] = load_model_folder,
    ):
        if cache_size < 1:
            raise ValueError("cache_size must be at least 1")
        self._entries: dict[str, ModelEntry] = {}
        for entry in entries:
            if entry.name in self._entries:
                raise CatalogueError(f"model {entry.name!r} appears twice in the catalogue")
            self._entries[entry.name] = entry
        self._names = sorted(self._entries)
        self.cache_size = cache_size
        self._loader = loader
        self._cache: OrderedDict[str, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0
        self.evictions = 0

    # catalogue -----------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> ModelEntry | None:
        return self._entries.get(name)

    def names(self, prefix: str = "") -> list[str]:
        """Served names starting with ``prefix``, sorted (a binary search: cheap for large catalogues)."""
        if not prefix:
            return self._names
        start = bisect.bisect_left(self._names, prefix)
        end = bisect.bisect_left(self._names, prefix + "\U0010ffff")
        return self._names[start:end]

    # cache ---------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def cached(self, name: str) -> LoadedModel | None:
        """The loaded model if it is in the cache (marking it recently used), else None; never loads."""
        with self._lock:
            loaded = self._cache.get(name)
            if loaded is not None:
                self._cache.move_to_end(name)
            return loaded

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it on a miss; raises ``UnknownModel`` for a name not in the catalogue."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownModel(name)
        loaded = self.cached(name)
        if loaded is not None:
            return loaded
        with self._lock:
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            loaded = self.cached(name)
            if loaded is not None:
                return loaded
            model, own = self._loader(entry.folder)
            metadata = {**entry.defaults, **own}
            schema = schema_from_metadata(metadata)
            loaded = LoadedModel(entry, model, schema, accepts_arrays(model, schema, metadata.get("sample_input")))
            with self._lock:
                self._cache[name] = loaded
                self.loads += 1
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                    self.evictions += 1
                self._loading.pop(name, None)
        return loaded

    # sources -------------------------------------------------------------------------------------------
    @classmethod
    def from_package(cls, path: Path, cache_size: int) -> ModelStore:
        root = package_root(path)
        manifest = json.loads((root / PACKAGE_MANIFEST).read_text())
        entries: list[ModelEntry] = []
        for item in manifest["models"]:
            entries += entries_for_folder(item["name"], item["version"], root / item["path"], item.get("metrics"))
        return cls(entries, cache_size)

    @classmethod
    def from_registry(cls, settings: Any, destination: Path | None = None) -> ModelStore:
        """Download every production version (skipping ones already downloaded) and catalogue them."""
        from ml_service.registry.mlflow_registry import connect, download_model, production_models

        client = connect(settings)
        destination = Path(destination or settings.local_path / "scoring-models")
        entries: list[ModelEntry] = []
        for model in production_models(client, settings.production_alias):
            target = destination / model.name / model.version
            done = target / ".complete"
            if done.is_file():
                folder = target / done.read_text().strip()
            else:
                folder = download_model(client, model, target)
                done.write_text(folder.relative_to(target).as_posix())
            entries += entries_for_folder(model.name, model.version, folder)
        return cls(entries, settings.scoring_cache_size)
