"""The one configuration schema of a use case, and the one declaration of which use cases exist.

Which use cases exist is declared in `pyproject.toml`, one line each::

    [tool.mlops.use-cases]
    churn = "churn/config.json"

and, optionally, named groups of them trained together (`--use-case retail`)::

    [tool.mlops.groups]
    retail = ["churn", "basket_size"]

A use case's file (JSON) says what the platform needs to know — where the data is, its columns with types and
checks, the label, optional partition and time columns, the promotion metric, the fan-out settings — and where
its code is (``"code": "package.module:Class"``). Its ``"model"`` section belongs to the use case alone: the
platform hands it to the use case's own ``Params`` model and never reads it.

Validation is pydantic's; every error is turned into one line naming the file, the use case and the key.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DECLARATION_FILE = "pyproject.toml"
DECLARATION_TABLE = ("tool", "mlops", "use-cases")
GROUPS_TABLE = ("tool", "mlops", "groups")
NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_]*$"

ColumnType = Literal["number", "integer", "string", "category", "datetime", "boolean"]


class ConfigError(ValueError):
    """A use-case declaration or configuration problem; the message is one line naming file, use case and key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class Column(_Strict):
    """A column of the raw data: its type and the checks prepare applies to it."""

    type: ColumnType
    min: float | None = None
    max: float | None = None
    allowed: tuple[str, ...] | None = None  # category/string: the values a model may see (also checked by serving)
    max_missing: Annotated[float, Field(ge=0, le=1)] = 0.0  # fraction of missing values tolerated

    @model_validator(mode="after")
    def _consistent(self) -> Column:
        numeric = self.type in ("number", "integer")
        if (self.min is not None or self.max is not None) and not numeric:
            raise ValueError(f"min/max apply to number and integer columns, not {self.type}")
        if self.allowed is not None and self.type not in ("string", "category"):
            raise ValueError(f"allowed applies to string and category columns, not {self.type}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        return self


class TimeSeries(_Strict):
    """A time column: rows are ordered by it, the hold-out is its last `horizon` steps of `frequency`.

    `frequency` is a pandas offset alias ("h", "D", "W", "15min"...); empty means "detect it from the data"
    (prepare then checks that every partition has one regular frequency and records it).
    """

    column: str
    frequency: str = ""
    horizon: Annotated[int, Field(ge=1)]

    @field_validator("frequency")
    @classmethod
    def _known_frequency(cls, value: str) -> str:
        if value:
            try:
                pd.tseries.frequencies.to_offset(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a pandas frequency such as 'h', 'D', 'W' or '15min'") from None
        return value


class Checks(_Strict):
    min_rows: Annotated[int, Field(ge=1)] = 1  # per partition (per model)


class Evaluation(_Strict):
    metric: str
    direction: Literal["minimize", "maximize"]


class Parallel(_Strict):
    """How training fans out, locally (process pool, Dask) and as an Azure ML parallel job alike."""

    error_threshold: Annotated[int, Field(ge=-1)] = 5  # failed models tolerated (-1: any number)
    mini_batch_size: Annotated[int, Field(ge=1)] = 10  # models per Azure ML run() call
    instance_count: Annotated[int, Field(ge=1)] = 2
    max_concurrency_per_instance: Annotated[int, Field(ge=1)] = 2
    retries: Annotated[int, Field(ge=0)] = 2
    timeout_s: Annotated[int, Field(ge=1)] = 600
    mini_batch_error_threshold: Annotated[int, Field(ge=-1)] = -1
    logging_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Monitoring(_Strict):
    """What the monitor step calls drift and decay (docs/monitoring.md). Every statistic is reported; `statistic`
    decides. PSI >= 0.2 is the usual "significant shift"; Jensen-Shannon distance (base 2) and the KS statistic are
    on [0, 1]. `threshold` defaults by statistic: psi 0.2, js 0.15, ks 0.2 (about the same shift). Sampling noise
    alone gives a PSI of about (bins - 1) / rows: below 100 collected rows it would pass 0.1, so `min_rows`."""

    statistic: Literal["psi", "js", "ks"] = "psi"
    threshold: Annotated[float, Field(gt=0)] | None = None
    min_rows: Annotated[int, Field(ge=2)] = 100  # collected rows a model needs before a statistic is computed
    # realised metric worse than the promoted one by more than this share of it (0.25: 25 % worse) is decay
    decay_tolerance: Annotated[float, Field(ge=0)] = 0.25
    retrain_on: tuple[Literal["drift", "decay"], ...] = ("drift", "decay")

    @property
    def drift_threshold(self) -> float:
        return self.threshold if self.threshold is not None else {"psi": 0.2, "js": 0.15, "ks": 0.2}[self.statistic]


class DataSource(_Strict):
    """`path`: the raw CSV, relative to the project root. `generate`: options for the use case's own
    `generate(options, destination)` that writes that file when it is missing (sample data, synthetic data)."""

    path: str
    generate: dict[str, Any] | None = None

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        if not value.strip() or Path(value).is_absolute():
            raise ValueError(f"must be a path relative to the project root, got {value!r}")
        return value


class UseCaseConfig(_Strict):
    """One use case: everything the platform needs, plus `model`, which only the use case reads."""

    name: str = Field(pattern=NAME_PATTERN)
    code: str  # "package.module:Class"
    model_name: str = ""  # the registered (and served) name; default: the use case's name
    description: str = ""
    data: DataSource
    columns: dict[str, Column]
    label: str
    partition_columns: tuple[str, ...] = ()
    time: TimeSeries | None = None
    checks: Checks = Checks()
    evaluation: Evaluation
    parallel: Parallel = Parallel()
    monitoring: Monitoring = Monitoring()
    model: dict[str, Any] = Field(default_factory=dict)
    path: str = ""  # the file it was read from (set by the loader)

    @field_validator("code")
    @classmethod
    def _code_reference(cls, value: str) -> str:
        module, sep, attribute = value.partition(":")
        if not sep or not module or not attribute.isidentifier():
            raise ValueError(f"must be 'package.module:Class', got {value!r}")
        return value

    @model_validator(mode="after")
    def _columns_agree(self) -> UseCaseConfig:
        if not self.model_name:
            object.__setattr__(self, "model_name", self.name)
        if "/" in self.model_name or not self.model_name.strip():
            raise ValueError(f"model_name {self.model_name!r} must be a non-empty name without '/'")
        known = set(self.columns)
        if self.label not in known:
            raise ValueError(f"label {self.label!r} is not one of the columns ({', '.join(self.columns)})")
        for column in self.partition_columns:
            if column not in known:
                raise ValueError(f"partition column {column!r} is not one of the columns")
            if column == self.label:
                raise ValueError("the label cannot be a partition column")
        if len(set(self.partition_columns)) != len(self.partition_columns):
            raise ValueError("partition_columns has duplicates")
        if self.columns[self.label].type not in ("number", "integer", "boolean", "category", "string"):
            raise ValueError(f"label {self.label!r} cannot be a {self.columns[self.label].type} column")
        if self.time is not None:
            if self.time.column not in known:
                raise ValueError(f"time column {self.time.column!r} is not one of the columns")
            if self.columns[self.time.column].type != "datetime":
                raise ValueError(f"time column {self.time.column!r} must have type datetime")
        if not self.input_columns:
            raise ValueError("no input columns: every column is the label or a partition column")
        return self

    @property
    def input_columns(self) -> tuple[str, ...]:
        """What a scoring request sends: every column except the label and the partition columns."""
        return tuple(c for c in self.columns if c != self.label and c not in self.partition_columns)

    @property
    def is_partitioned(self) -> bool:
        return bool(self.partition_columns)

    def input_types(self) -> dict[str, str]:
        return {c: self.columns[c].type for c in self.input_columns}


def project_root(start: Path | None = None) -> Path:
    """The folder holding the declaration (`pyproject.toml`): `start` (default: the current folder) or a parent."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / DECLARATION_FILE).is_file():
            return folder
    raise ConfigError(f"no {DECLARATION_FILE} in {here} or its parents: run from the project folder")


def _table(root: Path, keys: tuple[str, ...]) -> Any:
    path = root / DECLARATION_FILE
    try:
        table: Any = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    for key in keys:
        table = table.get(key, {}) if isinstance(table, dict) else {}
    return table


def declared_groups(root: Path) -> dict[str, list[str]]:
    """{group name: its use cases}; every member must be a declared use case."""
    table = _table(root, GROUPS_TABLE)
    where = f"{root / DECLARATION_FILE}: [{'.'.join(GROUPS_TABLE)}]"
    declared = declared_use_cases(root)
    groups = {}
    for name, members in table.items() if isinstance(table, dict) else []:
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ConfigError(f"{where}: {name} must be a list of use-case names")
        unknown = [m for m in members if m not in declared]
        if unknown:
            raise ConfigError(f"{where}: {name} names undeclared use case(s) {', '.join(unknown)}")
        if name in declared:
            raise ConfigError(f"{where}: {name} is both a group and a use case")
        groups[name] = list(members)
    return groups


def declared_use_cases(root: Path) -> dict[str, Path]:
    """{use case name: its configuration file}, in declaration order."""
    path = root / DECLARATION_FILE
    table = _table(root, DECLARATION_TABLE)
    where = f"{path}: [{'.'.join(DECLARATION_TABLE)}]"
    if not isinstance(table, dict):
        raise ConfigError(f'{where} must be a table of name = "path/to/config.json"')
    declared = {}
    for name, file in table.items():
        if not isinstance(file, str) or not file:
            raise ConfigError(f"{where}: {name} must be the path of its configuration file, got {file!r}")
        declared[name] = root / file
    return declared


def _where(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"] if part != "__root__") or "(top level)"


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    more = f" (and {error.error_count() - 1} more problem(s))" if error.error_count() > 1 else ""
    return f'"{_where(first)}": {message}{more}'


def config_from_mapping(name: str, raw: Mapping[str, Any], path: str = "<memory>", root: Path | None = None):
    """A checked `UseCaseConfig` from its JSON form; `columns` may name a JSON file (shared by use cases of one
    data set) relative to `root`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{path}: use case {name}: must be a JSON object")
    values = dict(raw)
    if "name" in values and values["name"] != name:
        raise ConfigError(f'{path}: use case {name}: "name" is {values["name"]!r}, declared as {name!r}')
    columns = values.get("columns")
    if isinstance(columns, str):
        columns_path = (root or Path.cwd()) / columns
        try:
            values["columns"] = json.loads(columns_path.read_text())
        except FileNotFoundError:
            raise ConfigError(f'{path}: use case {name}: "columns": {columns_path} not found') from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f'{path}: use case {name}: "columns": {columns_path} is not JSON ({exc})') from None
    try:
        return UseCaseConfig.model_validate({**values, "name": name, "path": str(path)})
    except ValidationError as exc:
        raise ConfigError(f"{path}: use case {name}: {_one_line(exc)}") from None


def load_config(name: str, root: Path) -> UseCaseConfig:
    """The checked configuration of a declared use case; an unknown name lists the declared ones."""
    declared = declared_use_cases(root)
    if name not in declared:
        known = ", ".join(declared) or f"none (declare one in {DECLARATION_FILE} [{'.'.join(DECLARATION_TABLE)}])"
        raise ConfigError(f"unknown use case {name!r}; declared use cases: {known}")
    path = declared[name]
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (declared for use case {name} in {DECLARATION_FILE})") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: use case {name}: not valid JSON ({exc})") from None
    return config_from_mapping(name, raw, str(path.relative_to(root) if path.is_relative_to(root) else path), root)


def select_use_cases(names: str | None, root: Path, everything: bool = False) -> list[str]:
    """Parse `--use-case a,b` (use cases or groups) or `--all` against the declaration; none given, or an
    unknown name, lists the declared ones."""
    declared = list(declared_use_cases(root))
    groups = declared_groups(root)
    known = ", ".join(declared) + (f"; groups: {', '.join(groups)}" if groups else "")
    if everything:
        if not declared:
            raise ConfigError(f"no use case declared in {DECLARATION_FILE} [{'.'.join(DECLARATION_TABLE)}]")
        return declared
    if not names:
        raise ConfigError(f"no use case given: pass --use-case NAME[,NAME] or --all; declared: {known}")
    wanted: list[str] = []
    for name in (n.strip() for n in names.split(",") if n.strip()):
        if name in groups:
            wanted += groups[name]
        elif name in declared:
            wanted.append(name)
        else:
            raise ConfigError(f"unknown use case {name!r}; declared use cases: {known}")
    return list(dict.fromkeys(wanted))
