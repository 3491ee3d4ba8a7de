"""Data sanity checks run by every prepare step, so bad data stops the pipeline before training.

A schema is plain data (it lives in the use case's parameters.json):
    {"columns": {"AGE": {"type": "number", "min": 0, "max": 120, "nullable": false}, ...}, "min_rows": 100}
Types: "number", "integer", "string", "datetime".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

COLUMN_TYPES = ("number", "integer", "string", "datetime")
COLUMN_KEYS = {"type", "min", "max", "nullable"}


class DataValidationError(ValueError):
    """The data cannot be used; the message names the file, the column and the problem."""


@dataclass(frozen=True)
class ColumnRule:
    name: str
    type: str
    min: float | None = None
    max: float | None = None
    nullable: bool = False


@dataclass(frozen=True)
class DataSchema:
    columns: tuple[ColumnRule, ...]
    min_rows: int = 1

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def schema_from_dict(raw: dict[str, Any]) -> DataSchema:
    """Build a schema from its JSON form, refusing unknown keys and types so typos do not disable a check."""
    if not isinstance(raw.get("columns"), dict) or not raw["columns"]:
        raise ValueError("data schema: 'columns' must be a non-empty object")
    unknown = set(raw) - {"columns", "min_rows"}
    if unknown:
        raise ValueError(f"data schema: unknown key(s) {sorted(unknown)}")
    rules = []
    for name, spec in raw["columns"].items():
        extra = set(spec) - COLUMN_KEYS
        if extra:
            raise ValueError(f"data schema: column {name!r}: unknown key(s) {sorted(extra)}")
        if spec.get("type") not in COLUMN_TYPES:
            raise ValueError(f"data schema: column {name!r}: 'type' must be one of {', '.join(COLUMN_TYPES)}")
        rules.append(
            ColumnRule(name, spec["type"], spec.get("min"), spec.get("max"), bool(spec.get("nullable", False)))
        )
    min_rows = raw.get("min_rows", 1)
    if not isinstance(min_rows, int) or isinstance(min_rows, bool) or min_rows < 1:
        raise ValueError("data schema: 'min_rows' must be a whole number >= 1")
    return DataSchema(tuple(rules), min_rows)


def read_csv_checked(path: str | Path) -> pd.DataFrame:
    """Read a CSV, turning pandas' many failure modes into one message that names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataValidationError(f"{path}: file is empty")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(f"{path}: not a readable CSV file ({reason})") from None
    return frame


def find_problems(frame: pd.DataFrame, schema: DataSchema) -> list[str]:
    """Every problem of `frame` against `schema` as 'column X: problem' strings; empty when all is fine."""
    problems = []
    missing = [c for c in schema.column_names if c not in frame.columns]
    problems += [f"column {c!r}: missing (columns found: {', '.join(map(str, frame.columns))})" for c in missing]
    if len(frame) < schema.min_rows:
        problems.append(f"{len(frame)} data rows, at least {schema.min_rows} needed")
    for rule in schema.columns:
        if rule.name in missing:
            continue
        problems += _column_problems(frame[rule.name], rule)
    return problems


def _column_problems(series: pd.Series, rule: ColumnRule) -> list[str]:
    label = f"column {rule.name!r}"
    nulls = int(series.isna().sum())
    problems = []
    if nulls and not rule.nullable:
        problems.append(f"{label}: {nulls} missing value(s), first at row {int(series.isna().to_numpy().argmax())}")
    present = series.dropna()
    if rule.type in ("number", "integer"):
        numeric = pd.to_numeric(present, errors="coerce")
        bad = numeric.isna()
        if bad.any():
            example = present[bad].iloc[0]
            return problems + [f"{label}: expected {rule.type}s, found {int(bad.sum())} value(s) like {example!r}"]
        if rule.type == "integer" and not (numeric == numeric.round()).all():
            problems.append(f"{label}: expected integers, found fractional values")
        if rule.min is not None and (numeric < rule.min).any():
            problems.append(
                f"{label}: {int((numeric < rule.min).sum())} value(s) below {rule.min} (min {numeric.min()})"
            )
        if rule.max is not None and (numeric > rule.max).any():
            problems.append(
                f"{label}: {int((numeric > rule.max).sum())} value(s) above {rule.max} (max {numeric.max()})"
            )
    elif rule.type == "datetime":
        parsed = pd.to_datetime(present, errors="coerce", format="mixed")
        if parsed.isna().any():
            example = present[parsed.isna()].iloc[0]
            problems.append(f"{label}: {int(parsed.isna().sum())} value(s) are not date-times, like {example!r}")
    return problems


def validate_csv(path: str | Path, schema: DataSchema) -> pd.DataFrame:
    """Read and check a CSV; raise DataValidationError naming the file and every problem found."""
    frame = read_csv_checked(path)
    problems = find_problems(frame, schema)
    if problems:
        raise DataValidationError(f"{path}: " + "; ".join(problems))
    return frame
