"""The scoring service's models: a catalogue of every servable model, loaded lazily into a bounded LRU cache.

The catalogue (served name → version, metrics, folder) is built without loading any model: each registered
version's manifest is read (one entry for a single model, one per partition for a model set) — so 10,000
partition models are ready in well under a second. A model is unpickled the
first time it is asked for and stays while it is among the ``cache_size`` most recently used ones.

Served names: a single model by its registered name (``churn``); a partition model as
``<model_name>/<model key>`` (``sales/store=s01``, see ``ml_service.registry.model_set``).

Sources: ``from_package(dir)`` reads a build context written by ``ml_service.scoring.package``; every model file
is loaded only if its sha256 is the one the package manifest records (computed at packaging from the files the
registry holds), so a file swapped or corrupted after packaging is refused, never unpickled.
``from_registry(settings)`` downloads the production versions (MLflow is imported only there) and checks each
model file against the sha256 recorded at registration.

A model that fails to load (truncated or swapped file, deleted folder) is remembered as unavailable: every later
request for it gets ``ModelUnavailable`` with the same one-line reason at once (no retry storm of tracebacks), and
``unavailable`` lists them for ``/health`` and ``/models``. How a folder is read is ``ml_service.scoring.model_reader``.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_service.registry.mlflow_model import ModelFormatError
from ml_service.registry.model_set import served_name
from ml_service.scoring import model_reader
from ml_service.scoring.fast_predict import verified_fast_predict
from ml_service.scoring.inputs import Schema, accepts_arrays

log = logging.getLogger(__name__)

PACKAGE_MANIFEST = "manifest.json"
PACKAGE_DIR = "package"
SINGLE = "model"
PARTITION = "partition"


class UnknownModel(KeyError):
    pass


class CatalogueError(RuntimeError):
    pass


class ModelUnavailable(RuntimeError):
    """The model is catalogued but cannot be loaded; ``reason`` is one line meant for the caller and the log."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"model {name!r} cannot be loaded: {reason}")
        self.name, self.reason = name, reason


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
    # sha256 of each file, relative to ``folder``, from the package manifest; None: not recorded (registry source)
    hashes: dict[str, str] | None = field(default=None, compare=False, hash=False, repr=False)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "version": self.version, "metrics": self.metrics}
        out["kind"] = PARTITION if self.model_set else SINGLE
        if self.model_set:
            out["model_set"] = self.model_set
            out["set_version"] = self.set_version
        return out

    def metadata(self) -> dict[str, Any]:
        """This model's metadata over the set-wide defaults (reads one small file, loads no model)."""
        return {**self.defaults, **model_reader.read_metadata(self.folder)}


@dataclass(frozen=True)
class LoadedModel:
    entry: ModelEntry
    model: Any
    schema: Schema
    array_input: bool = False  # predictions from NumPy arrays equal those from DataFrames (see accepts_arrays)
    batch_invariant: bool = False  # rows predict alike alone and in batches (see batching.batch_invariant)
    # exactly model.predict, with less per-call overhead (see fast_predict); None: the model's own predict
    fast: Callable[[Any], Any] | None = field(default=None, compare=False, repr=False)


def _under(hashes: dict[str, str] | None, prefix: str) -> dict[str, str] | None:
    """The hashes of the files below ``prefix/``, relative to it (None stays None: nothing recorded)."""
    if hashes is None:
        return None
    prefix = prefix.rstrip("/") + "/"
    return {k[len(prefix) :]: v for k, v in hashes.items() if k.startswith(prefix)}


def entries_for_folder(
    name: str, version: str, folder: Path, metrics: dict | None = None, hashes: dict[str, str] | None = None
) -> list[ModelEntry]:
    """Catalogue entries of one registered version's folder (an MLflow model: a single model or a model set).

    ``hashes`` (the package manifest's ``{path relative to folder: sha256}``) are checked for the catalogue's files
    here and for each model's files when it is loaded; without them, the sha256 recorded at registration is."""
    folder = Path(folder)
    try:
        manifest, defaults, data = model_reader.read_catalogue(folder, hashes)
    except (ModelFormatError, model_reader.ModelIntegrityError) as exc:
        raise CatalogueError(str(exc)) from None
    if manifest["model_name"] != name:
        raise CatalogueError(f"{folder}: manifest names model {manifest['model_name']!r}, registered as {name!r}")
    data_rel = data.relative_to(folder).as_posix()
    is_set = manifest["kind"] == "model_set"
    out = []
    for key, item in manifest["models"].items():
        extra = {"sample_input": item["sample_input"]} if item.get("sample_input") else {}
        own = _under(hashes, f"{data_rel}/{item['path']}") if hashes is not None else item.get("sha256")
        out.append(
            ModelEntry(
                name=served_name(name, key),
                version=str(item.get("version") or version),
                folder=data / item["path"],
                metrics=dict(item.get("metrics") or metrics or {}),
                model_set=name if is_set else None,
                set_version=str(version) if is_set else None,
                defaults={**defaults, **extra},
                hashes=dict(own) if own is not None else None,
            )
        )
    return out


def package_root(path: Path) -> Path:
    """The folder holding the package manifest: ``DIR`` itself or ``DIR/package`` (a build context)."""
    path = Path(path)
    manifest = path / PACKAGE_MANIFEST
    if manifest.is_file() and json.loads(manifest.read_text()).get("kind") == "scoring_package":
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
        loader: Callable[[Path, dict[str, str] | None], tuple[Any, dict[str, Any]]] = model_reader.read_model,
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
        self._failed: dict[str, str] = {}
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

    @property
    def unavailable(self) -> dict[str, str]:
        """Models whose load failed, with the reason (they stay refused until the service restarts)."""
        with self._lock:
            return dict(self._failed)

    def cached(self, name: str) -> LoadedModel | None:
        """The loaded model if it is in the cache (marking it recently used), else None; never loads."""
        with self._lock:
            loaded = self._cache.get(name)
            if loaded is not None:
                self._cache.move_to_end(name)
            return loaded

    def get(self, name: str) -> LoadedModel:
        """The loaded model, loading it on a miss; raises ``UnknownModel`` for a name not in the catalogue and
        ``ModelUnavailable`` (at once, after the first failure) for one that cannot be loaded."""
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownModel(name)
        loaded = self.cached(name)
        if loaded is not None:
            return loaded
        with self._lock:
            if name in self._failed:
                raise ModelUnavailable(name, self._failed[name])
            gate = self._loading.setdefault(name, threading.Lock())
        with gate:
            loaded = self.cached(name)
            if loaded is not None:
                return loaded
            with self._lock:
                if name in self._failed:
                    raise ModelUnavailable(name, self._failed[name])
            try:
                loaded = self._load(entry)
            except Exception as exc:
                reason = _reason(exc)
                log.error("model %s cannot be loaded (refused until restart): %s", name, reason, exc_info=True)
                with self._lock:
                    self._failed[name] = reason
                    self._loading.pop(name, None)
                raise ModelUnavailable(name, reason) from None
            with self._lock:
                self._cache[name] = loaded
                self.loads += 1
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
                    self.evictions += 1
                self._loading.pop(name, None)
        return loaded

    def _load(self, entry: ModelEntry) -> LoadedModel:
        model, own = self._loader(entry.folder, entry.hashes)
        metadata = {**entry.defaults, **own}
        schema = model_reader.input_schema(metadata)
        sample = metadata.get("sample_input")
        arrays = accepts_arrays(model, schema, sample)
        from ml_service.scoring.batching import batch_invariant, probe_inputs  # batching imports this module

        fast = verified_fast_predict(model, probe_inputs(schema, sample, arrays))
        invariant = batch_invariant(model, schema, sample, arrays, fast)
        return LoadedModel(entry, model, schema, arrays, invariant, fast)

    # sources -------------------------------------------------------------------------------------------
    @classmethod
    def from_package(cls, path: Path, cache_size: int) -> ModelStore:
        root = package_root(path)
        manifest = json.loads((root / PACKAGE_MANIFEST).read_text())
        entries: list[ModelEntry] = []
        for item in manifest["models"]:
            hashes = item.get("files")
            if not isinstance(hashes, dict) or not hashes:
                raise CatalogueError(
                    f"{root / PACKAGE_MANIFEST}: model {item.get('name')!r} has no file hashes ('files'): "
                    "rebuild the package with make package"
                )
            folder = root / item["path"]
            entries += entries_for_folder(item["name"], item["version"], folder, item.get("metrics"), hashes)
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


def _reason(exc: BaseException) -> str:
    """One line saying why a load failed, without the traceback (that is logged once)."""
    if isinstance(exc, model_reader.ModelIntegrityError):
        return str(exc)
    if isinstance(exc, FileNotFoundError):
        return f"file missing: {exc.filename or exc}"
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
