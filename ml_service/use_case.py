"""The use-case contract: what a team's use case provides, and how the platform finds and builds it.

A use case is a class in the team's own package (importing nothing from `ml_service`, MLflow or Azure), named in
its configuration (`"code": "churn.model:ChurnModel"`). The platform builds it with the checked configuration
(`UseCaseConfig`: columns, label, partition and time columns, and `params`, the use case's own `model` section
validated by the class's `Params` model) and calls:

- `split(frame) -> (train, holdout)`: one partition's prepared rows into training and hold-out rows;
- `fit(train) -> model`: a fitted model, any picklable object with `predict(DataFrame of input columns)`;
- `metrics(actual, predicted) -> {name: float}`: must include the configured evaluation metric.

Optionally:

- `Params`: a pydantic model for the `model` section (validated once; errors name file, use case and key);
- `generate(options, destination)`: writes the raw data file when it is missing (sample or synthetic data);
- `batch_input(options, destination)`: writes new rows to score (CSV files, partition columns included, no
  label) into the folder `destination`; `options` are `data.generate`'s plus `training_data`, the raw file the
  models were trained on. Default (or when it raises NotImplementedError): the prepared hold-out rows;
- `prepare(frame) -> frame`: one partition's checked rows before splitting (sorting, regularising a series);
- `fit_many(frame, starts) -> [(model, holdout, predicted) | Exception]`: many partitions stacked in one frame
  (partition i is rows `starts[i]:starts[i+1]`) fitted at once, each result equal to `split`, `fit` and
  `predict` on that partition alone; `None` from it means "not for this configuration, fit one by one";
- `predict_many(models, frame, starts) -> [predictions | Exception]`: batch scoring of many partitions stacked
  in one frame (model i for rows `starts[i]:starts[i+1]`), each equal to that model's `predict`; `None`
  means "predict one by one";
- `model_code`: files or folders (relative to the project root) whose content decides the model: hashed for
  resume and shipped with every registered model. Default: the use case's whole top-level package.
- `automl_job()`: a plain description of the same search as an Azure ML AutoML job (cloud mode).

The platform supplies the rest: reading and checking data, partitioning, fan-out, resume, evaluation against
production, registration as MLflow models, packaging and serving.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from pydantic import BaseModel, ValidationError

from ml_service.config import ConfigError, UseCaseConfig, load_config


@runtime_checkable
class UseCase(Protocol):
    """The methods every use case has; see the module documentation for the optional ones."""

    def split(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]: ...

    def fit(self, train: pd.DataFrame) -> Any: ...

    def metrics(self, actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]: ...


@dataclass(frozen=True)
class LoadedUseCase:
    """A declared use case: its checked configuration, its own parameters and the built implementation."""

    config: UseCaseConfig
    params: Any
    implementation: Any
    root: Path

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def model_name(self) -> str:
        return self.config.model_name

    def has(self, method: str) -> bool:
        return callable(getattr(self.implementation, method, None))

    def model_code(self) -> list[Path]:
        """The files and folders whose content decides the model (default: the use case's top-level package)."""
        declared = getattr(self.implementation, "model_code", None)
        if declared:
            paths = [self.root / p for p in declared]
        else:
            paths = [self.root / self.config.code.split(":")[0].split(".")[0]]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ConfigError(f"{self.config.path}: use case {self.name}: model code {', '.join(missing)} not found")
        return paths


def _build(config: UseCaseConfig, root: Path) -> LoadedUseCase:
    module_name, _, attribute = config.code.partition(":")
    where = f"{config.path}: use case {config.name}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f'{where}: "code": cannot import {exc.name} (from {config.code!r})') from None
    factory = getattr(module, attribute, None)
    if factory is None:
        raise ConfigError(f'{where}: "code": {module_name} has no {attribute!r}')
    params_model = getattr(factory, "Params", None)
    params: Any = dict(config.model)
    if isinstance(params_model, type) and issubclass(params_model, BaseModel):
        try:
            params = params_model.model_validate(config.model)
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in ("model", *first["loc"]))
            raise ConfigError(f'{where}: "{key}": {first["msg"].removeprefix("Value error, ")}') from None
    try:
        implementation = factory(config, params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {' '.join(str(exc).split())}") from None
    missing = [m for m in ("split", "fit", "metrics") if not callable(getattr(implementation, m, None))]
    if missing:
        raise ConfigError(f"{where}: {config.code} lacks {', '.join(missing)} (see ml_service/use_case.py)")
    return LoadedUseCase(config, params, implementation, root)


_CACHE: dict[tuple[str, str], LoadedUseCase] = {}


def load_use_case(name: str, root: Path) -> LoadedUseCase:
    """The declared use case `name`, built once per process (pool workers call this for every batch)."""
    key = (str(root.resolve()), name)
    if key not in _CACHE:
        _CACHE[key] = _build(load_config(name, root), root)
    return _CACHE[key]


def build_use_case(config: UseCaseConfig, root: Path) -> LoadedUseCase:
    """A use case from a configuration that is not declared (tests, notebooks)."""
    return _build(config, root)


def predictions(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict(frame), dtype=float).reshape(-1)


def check_metrics(use_case: LoadedUseCase, metrics: dict[str, float]) -> dict[str, float]:
    """The use case's metrics as floats; the evaluation metric must be among them and finite."""
    out = {str(k): float(v) for k, v in metrics.items()}
    metric = use_case.config.evaluation.metric
    if metric not in out:
        raise ValueError(f"{use_case.name}: metrics() gave no {metric!r} (gave: {', '.join(sorted(out)) or 'none'})")
    if not np.isfinite(out[metric]):
        raise ValueError(f"{use_case.name}: {metric} is {out[metric]}")
    return out


def fit_one(use_case: LoadedUseCase, frame: pd.DataFrame) -> tuple[Any, pd.DataFrame, np.ndarray]:
    """split → fit → predict the hold-out, for one partition."""
    impl = use_case.implementation
    train, holdout = impl.split(frame)
    if len(train) == 0 or len(holdout) == 0:
        raise ValueError(f"{len(frame)} rows are too few to hold out data for evaluation")
    model = impl.fit(train)
    return model, holdout, predictions(model, holdout[list(use_case.config.input_columns)])


def fit_many(
    use_case: LoadedUseCase, frame: pd.DataFrame, starts: Sequence[int]
) -> list[tuple[Any, pd.DataFrame, np.ndarray] | Exception] | None:
    """The use case's `fit_many`, when it has one and takes this configuration (else None)."""
    if not use_case.has("fit_many"):
        return None
    return use_case.implementation.fit_many(frame, list(starts))
