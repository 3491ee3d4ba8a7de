"""Request rows → the model's input DataFrame, with errors that name the offending field.

A model's input schema is ordered ``(column, kind)`` pairs with kind "number", "datetime", "string" or
"boolean" (from the registered model's MLflow signature: double/long, datetime, string, boolean), plus the
allowed values of category columns. Each request row is a list with one value per column, in order. Numbers
must be finite JSON numbers (not booleans, not strings); date/times are strings pandas can parse; strings are
JSON strings (one of the allowed values, when the use case declares them); booleans are true/false.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

NUMBER = "number"
DATETIME = "datetime"
STRING = "string"
BOOLEAN = "boolean"
KINDS = {"number": NUMBER, "integer": NUMBER, "datetime": DATETIME, "string": STRING, "category": STRING}
KINDS["boolean"] = BOOLEAN


class InputSchema(tuple):
    """``(column, kind)`` pairs, in request order, with ``allowed``: {column: allowed values} for categories."""

    allowed: dict[str, frozenset[str]]

    def __new__(cls, pairs, allowed: Mapping[str, Sequence[str]] | None = None):
        schema = super().__new__(cls, tuple(pairs))
        schema.allowed = {c: frozenset(v) for c, v in (allowed or {}).items()}
        return schema


class InputError(ValueError):
    """Bad request data; ``field`` is a JSON path such as ``data[1][2]``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def schema_from_metadata(metadata: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``(column, type)`` pairs from a model's metadata.

    The order comes from ``input_columns`` (JSON files are written with sorted keys, so the ``input_schema``
    object's order means nothing); types from ``input_schema`` (missing: number).
    """
    schema = metadata.get("input_schema")
    types = dict(schema) if isinstance(schema, Mapping) else {}
    columns = metadata.get("input_columns") or list(types)
    pairs = [(str(c), KINDS.get(types.get(c, NUMBER), NUMBER)) for c in columns]
    return InputSchema(pairs, metadata.get("allowed"))


def _float_array(values: list, field: str) -> np.ndarray:
    """``values`` as float64; an integer beyond float range (JSON allows any) is the client's error, not a 500."""
    try:
        return np.array(values, dtype=np.float64)
    except OverflowError:
        raise InputError(field, "a number is too large") from None


def _finite_array(rows: list, names: list[str], field: str) -> np.ndarray:
    array = _float_array(rows, field)
    if not np.isfinite(array).all():
        i, j = (int(k) for k in np.argwhere(~np.isfinite(array))[0])
        raise InputError(f"{field}[{i}][{j}]", f"column {names[j]!r} is too large to be a finite number")
    return array


def rows_to_array(schema: Sequence[tuple[str, str]], rows: Any, field: str = "data") -> np.ndarray:
    """The checks of ``rows_to_frame`` for an all-number schema, giving a NumPy array instead of a DataFrame."""
    _check_rows(schema, rows, field)
    return _finite_array(rows, [name for name, _ in schema], field)


def accepts_arrays(model: Any, schema: Sequence[tuple[str, str]], sample: Any) -> bool:
    """Whether `model` may be fed NumPy arrays instead of DataFrames (scikit-learn's DataFrame checks cost ~5x the
    prediction of a small model). Only for all-number inputs, only when every part of the model is scikit-learn's own
    (no custom step that could select columns by name), and only if both inputs give identical predictions on the
    model's sample rows."""
    if not sample or any(kind != NUMBER for _, kind in schema):
        return False
    parts = [step for _, step in getattr(model, "steps", [])] or [model]
    if not all(type(part).__module__.startswith("sklearn.") for part in parts):
        return False
    try:
        frame = rows_to_frame(schema, sample)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return bool(np.array_equal(model.predict(frame), model.predict(frame.to_numpy())))
    except Exception:  # noqa: BLE001 - any failure means: keep the DataFrame path
        return False


def _check_rows(schema: Sequence[tuple[str, str]], rows: Any, field: str) -> None:
    """Shape and types of every value; raises ``InputError`` naming the first bad field."""
    names = [name for name, _ in schema]
    shown = ", ".join(names)
    if not isinstance(rows, list):
        raise InputError(field, f"must be a list of rows, each [{shown}]")
    if not rows:
        raise InputError(field, f"is empty: send at least one row [{shown}]")
    width = len(schema)
    kinds = [kind for _, kind in schema]
    allowed = getattr(schema, "allowed", {})
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(f"{field}[{i}]", f"must be a list [{shown}], got {type(row).__name__}")
        if len(row) != width:
            raise InputError(f"{field}[{i}]", f"has {len(row)} values; expected {width}: [{shown}]")
        for j, value in enumerate(row):
            kind = kinds[j]
            if kind == NUMBER:
                if value.__class__ is float:
                    if not math.isfinite(value):
                        raise InputError(f"{field}[{i}][{j}]", f"column {names[j]!r} must be finite, got {value}")
                elif value.__class__ is not int:
                    raise InputError(f"{field}[{i}][{j}]", f"column {names[j]!r} must be a number, got {value!r}")
            elif kind == STRING:
                if not isinstance(value, str):
                    raise InputError(f"{field}[{i}][{j}]", f"column {names[j]!r} must be a string, got {value!r}")
                if names[j] in allowed and value not in allowed[names[j]]:
                    shown_values = ", ".join(sorted(allowed[names[j]])[:10])
                    raise InputError(
                        f"{field}[{i}][{j}]", f"column {names[j]!r}: {value[:80]!r} is not one of {shown_values}"
                    )
            elif kind == BOOLEAN:
                if not isinstance(value, bool):
                    raise InputError(f"{field}[{i}][{j}]", f"column {names[j]!r} must be true or false, got {value!r}")
            elif not isinstance(value, str):
                raise InputError(f"{field}[{i}][{j}]", f"column {names[j]!r} must be a date/time string, got {value!r}")


def rows_to_frame(schema: Sequence[tuple[str, str]], rows: Any, field: str = "data") -> pd.DataFrame:
    """Check ``rows`` against ``schema`` and build the DataFrame; raises ``InputError`` naming the field."""
    _check_rows(schema, rows, field)
    names = [name for name, _ in schema]
    if all(kind == NUMBER for _, kind in schema):
        return pd.DataFrame(_finite_array(rows, names, field), columns=names, copy=False)
    columns: dict[str, Any] = {}
    for j, (name, kind) in enumerate(schema):
        values = [row[j] for row in rows]
        if kind == DATETIME:
            parsed = pd.to_datetime(values, format="mixed", errors="coerce")
            if parsed.isna().any():
                i = int(np.argmax(parsed.isna()))
                raise InputError(f"{field}[{i}][{j}]", f"column {name!r} is not a date/time: {values[i]!r}")
            columns[name] = parsed.astype("datetime64[ns]")
        elif kind in (STRING, BOOLEAN):
            columns[name] = np.array(values, dtype=object if kind == STRING else bool)
        else:
            array = _float_array(values, field)
            if not np.isfinite(array).all():
                i = int(np.argmax(~np.isfinite(array)))
                raise InputError(f"{field}[{i}][{j}]", f"column {name!r} is too large to be a finite number")
            columns[name] = array
    return pd.DataFrame(columns)
