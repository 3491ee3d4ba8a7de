"""Typed, validated view of ``ff/pipeline_config.json``: the list of use cases to train.

Validation happens at load time so a typo fails in one line naming the use case and the key, before any
data is read or any model is trained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = Path(__file__).with_name("pipeline_config.json")

TASKS = ("forecasting", "regression")
METRICS = ("rmse", "mae", "mape", "r2")
METRIC_DIRECTION = {"rmse": "minimize", "mae": "minimize", "mape": "minimize", "r2": "maximize"}
# FLAML estimator names usable for regression with the packages in requirements.lock.
AUTOML_ESTIMATORS = ("lgbm", "rf", "extra_tree", "xgboost", "xgb_limitdepth", "histgb", "kneighbor", "enet")
FAST_ESTIMATORS = ("ridge", "hist_gradient_boosting")
GENERATORS = ("energy",)


class ConfigError(ValueError):
    """A pipeline configuration problem; the message is one line naming the file, use case and key."""


@dataclass(frozen=True)
class GeneratorSpec:
    """Synthetic data instead of a CSV: ``partitions`` 0 means one series without a partition column."""

    generator: str = "energy"
    partitions: int = 0
    days: int = 365
    seed: int = 42
    start: str = "2016-08-01"


@dataclass(frozen=True)
class DataSource:
    """Exactly one of ``path`` (a CSV relative to the repository root) or ``generator``."""

    path: str | None = None
    generator: GeneratorSpec | None = None


@dataclass(frozen=True)
class FastPath:
    """A fixed scikit-learn estimator instead of AutoML, used from ``min_partitions`` partitions on."""

    enabled: bool = False
    estimator: str = "ridge"
    min_partitions: int = 0


@dataclass(frozen=True)
class AutoMLSettings:
    time_budget_s: float
    metric: str
    estimators: tuple[str, ...]
    fast_path: FastPath = field(default_factory=FastPath)
    seed: int = 42


@dataclass(frozen=True)
class Evaluation:
    metric: str
    direction: str


@dataclass(frozen=True)
class Checks:
    """Data sanity checks used by prepare: minimum row count and inclusive value ranges per column."""

    min_rows: int = 20
    ranges: tuple[tuple[str, float | None, float | None], ...] = ()


@dataclass(frozen=True)
class UseCase:
    model_name: str
    task: str
    data: DataSource
    columns: tuple[str, ...]
    label: str
    automl: AutoMLSettings
    evaluation: Evaluation
    time_column: str | None = None
    horizon: int | None = None
    partition_columns: tuple[str, ...] = ()
    checks: Checks = field(default_factory=Checks)

    @property
    def input_columns(self) -> tuple[str, ...]:
        """Columns a scoring request sends: everything kept except the label and the partition columns."""
        return tuple(c for c in self.columns if c != self.label and c not in self.partition_columns)

    @property
    def is_partitioned(self) -> bool:
        return bool(self.partition_columns)


@dataclass(frozen=True)
class ParallelSettings:
    """How many-model training fans out: used by the local runner and by the Azure ML parallel job alike.

    ``error_threshold`` is the number of failed models tolerated before the step fails (-1: any number), as in
    Azure ML parallel jobs; the rest size the cloud job.
    """

    error_threshold: int = 5
    mini_batch_size: int = 10
    instance_count: int = 2
    max_concurrency_per_instance: int = 2
    retries: int = 2
    timeout_s: int = 600


@dataclass(frozen=True)
class PipelineConfig:
    use_cases: tuple[UseCase, ...]
    path: str = ""
    parallel: ParallelSettings = ParallelSettings()

    def get(self, model_name: str) -> UseCase:
        for use_case in self.use_cases:
            if use_case.model_name == model_name:
                return use_case
        names = ", ".join(u.model_name for u in self.use_cases)
        raise KeyError(f"no use case named {model_name!r} in {self.path or 'the config'} (have: {names})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(u.model_name for u in self.use_cases)


class _Reader:
    """Checks one JSON object: every read is typed, and leftover keys are reported as unknown."""

    def __init__(self, obj: Any, where: str):
        self.where = where
        if not isinstance(obj, dict):
            raise ConfigError(f"{where}: must be an object, got {_kind(obj)}")
        self.obj = obj
        self.seen: set[str] = set()

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f'{self.where}: "{key}" {problem}')

    def get(self, key: str, types: type | tuple[type, ...], default: Any = ..., choices: tuple = ()) -> Any:
        self.seen.add(key)
        if key not in self.obj:
            if default is ...:
                raise self.fail(key, "is missing")
            return default
        value = self.obj[key]
        if default is not ... and value is None:
            return default
        if isinstance(value, bool) and bool not in _as_tuple(types):
            raise self.fail(key, f"must be {_type_names(types)}, got {_kind(value)}")
        if not isinstance(value, types):
            raise self.fail(key, f"must be {_type_names(types)}, got {_kind(value)}")
        if choices and value not in choices:
            raise self.fail(key, f"must be one of {', '.join(choices)}, got {json.dumps(value)}")
        return value

    def str_list(self, key: str, default: Any = ..., choices: tuple = (), min_len: int = 0) -> tuple[str, ...]:
        values = self.get(key, list, default)
        if not isinstance(values, list | tuple):
            return values
        for value in values:
            if not isinstance(value, str) or not value:
                raise self.fail(key, f"must be a list of non-empty strings, got {json.dumps(values)}")
            if choices and value not in choices:
                raise self.fail(key, f"must only hold {', '.join(choices)}, got {json.dumps(value)}")
        if len(set(values)) != len(values):
            raise self.fail(key, f"has duplicates: {json.dumps(values)}")
        if len(values) < min_len:
            raise self.fail(key, f"must hold at least {min_len} item(s)")
        return tuple(values)

    def done(self) -> None:
        unknown = sorted(set(self.obj) - self.seen)
        if unknown:
            raise self.fail(unknown[0], f"is not a known key (known: {', '.join(sorted(self.seen))})")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    names.update({dict: "an object"})
    return " or ".join(names.get(t, t.__name__) for t in _as_tuple(types))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {json.dumps(value)}"


def _positive(reader: _Reader, key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise reader.fail(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {value}")


def _parse_data(obj: Any, where: str) -> DataSource:
    if isinstance(obj, str):
        if not obj.strip():
            raise ConfigError(f'{where}: "data" must be a CSV path or a generator object, got ""')
        if Path(obj).is_absolute():
            raise ConfigError(f'{where}: "data" must be a path relative to the repository, got "{obj}"')
        return DataSource(path=obj)
    if not isinstance(obj, dict):
        raise ConfigError(f'{where}: "data" must be a CSV path or a generator object, got {_kind(obj)}')
    r = _Reader(obj, f"{where}: data")
    spec = GeneratorSpec(
        generator=r.get("generator", str, choices=GENERATORS),
        partitions=r.get("partitions", int, 0),
        days=r.get("days", int, GeneratorSpec.days),
        seed=r.get("seed", int, GeneratorSpec.seed),
        start=r.get("start", str, GeneratorSpec.start),
    )
    r.done()
    _positive(r, "partitions", spec.partitions, allow_zero=True)
    _positive(r, "days", spec.days)
    try:
        import pandas as pd

        pd.Timestamp(spec.start)
    except (ValueError, TypeError):
        raise r.fail("start", f'must be a date like "2016-08-01", got "{spec.start}"') from None
    return DataSource(generator=spec)


def _parse_automl(obj: Any, where: str) -> AutoMLSettings:
    r = _Reader(obj, f"{where}: automl")
    budget = r.get("time_budget_s", (int, float))
    _positive(r, "time_budget_s", budget)
    metric = r.get("metric", str, choices=METRICS)
    estimators = r.str_list("estimators", choices=AUTOML_ESTIMATORS, min_len=1)
    fast_obj = r.get("fast_path", dict, None)
    seed = r.get("seed", int, 42)
    r.done()
    fast = FastPath()
    if fast_obj is not None:
        f = _Reader(fast_obj, f"{where}: automl.fast_path")
        fast = FastPath(
            enabled=f.get("enabled", bool),
            estimator=f.get("estimator", str, "ridge", choices=FAST_ESTIMATORS),
            min_partitions=f.get("min_partitions", int, 0),
        )
        f.done()
        _positive(f, "min_partitions", fast.min_partitions, allow_zero=True)
    return AutoMLSettings(float(budget), metric, estimators, fast, seed)


def _parse_checks(obj: Any, where: str, columns: tuple[str, ...]) -> Checks:
    r = _Reader(obj, f"{where}: checks")
    min_rows = r.get("min_rows", int, Checks.min_rows)
    _positive(r, "min_rows", min_rows)
    ranges_obj = r.get("ranges", dict, {})
    r.done()
    ranges = []
    for column, bounds in ranges_obj.items():
        if column not in columns:
            raise r.fail("ranges", f'names column "{column}" that is not in "columns"')
        ok = isinstance(bounds, list) and len(bounds) == 2
        ok = ok and all(b is None or (isinstance(b, int | float) and not isinstance(b, bool)) for b in bounds)
        if not ok:
            got = json.dumps(bounds)
            raise r.fail("ranges", f'["{column}"] must be [min, max] (numbers or null), got {got}')
        low, high = bounds
        if low is not None and high is not None and low > high:
            raise r.fail("ranges", f'["{column}"] has min {low} > max {high}')
        ranges.append((column, low, high))
    return Checks(min_rows=min_rows, ranges=tuple(ranges))


def _parse_use_case(obj: Any, where: str) -> UseCase:
    if isinstance(obj, dict) and isinstance(obj.get("model_name"), str):
        where = f"{where} ({obj['model_name']})"
    r = _Reader(obj, where)
    name = r.get("model_name", str)
    if not name or not all(c.isalnum() or c in "_-." for c in name):
        raise r.fail("model_name", f"must use only letters, digits, _ - or ., got {json.dumps(name)}")
    task = r.get("task", str, choices=TASKS)
    data = _parse_data(r.get("data", (str, dict)), where)
    columns = r.str_list("columns", min_len=2)
    label = r.get("label", str)
    time_column = r.get("time_column", str, None)
    horizon = r.get("horizon", int, None)
    partition_columns = r.str_list("partition_columns", ())
    automl = _parse_automl(r.get("automl", dict), where)
    evaluation_obj = r.get("evaluation", dict)
    checks_obj = r.get("checks", dict, None)
    r.done()

    if label not in columns:
        raise r.fail("label", f'must be one of "columns", got "{label}"')
    for column in partition_columns:
        if column not in columns:
            raise r.fail("partition_columns", f'names "{column}" that is not in "columns"')
        if column in (label, time_column):
            raise r.fail("partition_columns", f'cannot hold the label or time column "{column}"')
    if task == "forecasting":
        if time_column is None:
            raise r.fail("time_column", "is missing (required for forecasting)")
        if time_column not in columns:
            raise r.fail("time_column", f'must be one of "columns", got "{time_column}"')
        if horizon is None:
            raise r.fail("horizon", "is missing (required for forecasting, in hours)")
        _positive(r, "horizon", horizon)
    else:
        for key, value in (("time_column", time_column), ("horizon", horizon)):
            if value is not None:
                raise r.fail(key, "only applies to forecasting; remove it for regression")
    if data.generator is not None:
        if data.generator.partitions > 0 and not partition_columns:
            raise r.fail("partition_columns", 'is required when the generator makes partitions: ["region"]')
        if data.generator.partitions == 0 and partition_columns:
            raise r.fail("partition_columns", "must be empty when the generator makes one series")

    e = _Reader(evaluation_obj, f"{where}: evaluation")
    metric = e.get("metric", str, choices=METRICS)
    direction = e.get("direction", str, choices=("minimize", "maximize"))
    e.done()
    if METRIC_DIRECTION[metric] != direction:
        raise e.fail("direction", f'for {metric} must be "{METRIC_DIRECTION[metric]}", got "{direction}"')
    if task == "regression" and "mape" in (metric, automl.metric):
        raise e.fail("metric", "mape is only recorded for forecasting; use rmse, mae or r2")

    checks = _parse_checks(checks_obj, where, columns) if checks_obj is not None else Checks()
    return UseCase(
        model_name=name,
        task=task,
        data=data,
        columns=columns,
        label=label,
        automl=automl,
        evaluation=Evaluation(metric, direction),
        time_column=time_column,
        horizon=horizon,
        partition_columns=partition_columns,
        checks=checks,
    )


def parse_pipeline_config(obj: Any, source: str = "pipeline_config.json") -> PipelineConfig:
    """Validate an already-parsed JSON document; ``source`` prefixes every error message."""
    r = _Reader(obj, source)
    items = r.get("use_cases", list)
    parallel = _parse_parallel(r.get("parallel", dict, {}), f"{source}: parallel")
    r.done()
    if not items:
        raise r.fail("use_cases", "must hold at least one use case")
    use_cases = tuple(_parse_use_case(item, f"{source}: use_cases[{i}]") for i, item in enumerate(items))
    seen: set[str] = set()
    for i, use_case in enumerate(use_cases):
        if use_case.model_name in seen:
            raise ConfigError(f'{source}: use_cases[{i}] ({use_case.model_name}): "model_name" is used twice')
        seen.add(use_case.model_name)
    return PipelineConfig(use_cases=use_cases, path=source, parallel=parallel)


def _parse_parallel(obj: Any, where: str) -> ParallelSettings:
    r = _Reader(obj, where)
    defaults = ParallelSettings()
    minimums = {"error_threshold": -1, "retries": 0}
    values = {}
    for setting in dataclasses.fields(ParallelSettings):
        value = r.get(setting.name, int, getattr(defaults, setting.name))
        if value < minimums.get(setting.name, 1):
            raise r.fail(setting.name, f"must be at least {minimums.get(setting.name, 1)}, got {value}")
        values[setting.name] = value
    r.done()
    return ParallelSettings(**values)


def load_pipeline_config(path: str | Path = DEFAULT_CONFIG_PATH) -> PipelineConfig:
    """Read and validate the config file; raises ``ConfigError`` with a one-line message."""
    path = Path(path)
    shown = _shown_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read: {exc.strerror or exc}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ConfigError(f"{shown}: not valid JSON: {exc.msg} at {where}") from None
    config = parse_pipeline_config(obj, shown)
    return dataclasses.replace(config, path=str(path))


def _shown_path(path: Path) -> str:
    """The path as the user knows it: relative to the repository when inside it."""
    root = Path(__file__).resolve().parents[1]
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def use_case_to_dict(use_case: UseCase) -> dict[str, Any]:
    """Plain JSON-able dictionary of a use case (tags, logging, hashing)."""
    return json.loads(json.dumps(dataclasses.asdict(use_case)))


# The modules whose code shapes a trained model: editing one retrains every model on the next run, as editing a
# use case's configuration retrains that use case (a resume must never keep models the current code would not
# train).
MODEL_CODE = ("features.py", "train_automl.py")


def config_hash(use_case: UseCase, code_dir: Path = Path(__file__).parent) -> str:
    """Stable 16-hex-digit hash of everything that shapes the model, its configuration and the model code (the
    ``MODEL_CODE`` files in ``code_dir``): retrain when it changes."""
    canonical = json.dumps(use_case_to_dict(use_case), sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode("utf-8"))
    for name in MODEL_CODE:
        digest.update(name.encode("utf-8") + b"\0" + (code_dir / name).read_bytes())
    return digest.hexdigest()[:16]


def use_fast_path(use_case: UseCase, n_partitions: int) -> bool:
    """Whether the fixed scikit-learn estimator replaces AutoML for this many partitions."""
    fast = use_case.automl.fast_path
    return fast.enabled and n_partitions >= fast.min_partitions


def resolve_data_path(use_case: UseCase, repo_root: str | Path | None = None) -> Path | None:
    """Absolute CSV path of a use case (``None`` when generated); relative paths start at the repo root."""
    if use_case.data.path is None:
        return None
    root = Path(repo_root) if repo_root is not None else Path(__file__).resolve().parents[1]
    return root / use_case.data.path
