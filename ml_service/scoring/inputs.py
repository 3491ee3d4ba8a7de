"""Request rows → the model's input (DataFrame or NumPy array), with errors that name the offending field.

A model's input schema is an ordered tuple of ``Column(name, kind, values)``; validation and conversion are driven
by ``kind`` alone, so a new input type is one entry in ``_CHECKS`` and one branch in ``rows_to_frame``:

- ``number``: a finite JSON number (not a boolean, not a string) → float64;
- ``datetime``: a string pandas can parse → datetime64[ns];
- ``string``: a JSON string → object column of str;
- ``category``: a JSON string, one of ``values`` when the schema lists them → an object column of str, as the
  model saw its training data (prepare gives text columns as str; the model's own encoder, fitted on those, is
  what encodes them, so a row's encoding never depends on the other rows of its batch);
- ``boolean``: JSON true/false → bool.

Metadata forms read by ``schema_from_metadata``: ``input_columns`` (order; alone it means all numbers) and
``input_schema`` ``{column: "number" | "datetime" | "string" | "category"}`` or ``{column: {"type": ...,
"values": [...]}}``. Each request row is a list with one value per column, in order.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

NUMBER = "number"
DATETIME = "datetime"
STRING = "string"
CATEGORY = "category"
BOOLEAN = "boolean"
KINDS = (NUMBER, DATETIME, STRING, CATEGORY, BOOLEAN)
_SHOWN = 80  # longest value echoed in an error message


class Column(NamedTuple):
    name: str
    kind: str = NUMBER
    values: tuple[str, ...] | None = None  # allowed values of a category column (None: any string)


Schema = tuple[Column, ...]


class InputError(ValueError):
    """Bad request data; ``field`` is a JSON path such as ``data[1][2]``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def shown(value: Any) -> str:
    """``repr(value)`` cut to a bounded length: a request must not be able to make its own error message huge."""
    text = repr(value)
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _column(name: str, spec: Any) -> Column:
    if isinstance(spec, Mapping):
        kind = spec.get("type", NUMBER)
        values = spec.get("values")
    else:
        kind, values = (spec or NUMBER), None
    if kind not in KINDS:
        raise ValueError(f"input column {name!r}: unknown type {kind!r}; known: {', '.join(KINDS)}")
    return Column(str(name), kind, tuple(str(v) for v in values) if values is not None else None)


def schema_from_metadata(metadata: Mapping[str, Any]) -> Schema:
    """The ``Column``s of a model's metadata.

    The order comes from ``input_columns`` (JSON files are written with sorted keys, so the ``input_schema``
    object's order means nothing); types from ``input_schema`` (missing: number).
    """
    schema = metadata.get("input_schema")
    types = dict(schema) if isinstance(schema, Mapping) else {}
    columns = metadata.get("input_columns") or list(types)
    return tuple(_column(c, types.get(c)) for c in columns)


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


def all_numbers(schema: Schema) -> bool:
    return all(column.kind == NUMBER for column in schema)


def rows_to_array(schema: Schema, rows: Any, field: str = "data") -> np.ndarray:
    """The checks of ``rows_to_frame`` for an all-number schema, giving a NumPy array instead of a DataFrame."""
    check_rows(schema, rows, field)
    return _finite_array(rows, [column.name for column in schema], field)


def accepts_arrays(model: Any, schema: Schema, sample: Any) -> bool:
    """Whether `model` may be fed NumPy arrays instead of DataFrames (scikit-learn's DataFrame checks cost ~5x the
    prediction of a small model). Only for all-number inputs, only when every part of the model is scikit-learn's own
    (no custom step that could select columns by name), and only if both inputs give identical predictions on the
    model's sample rows."""
    if not sample or not all_numbers(schema):
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


def _check_number(column: Column, value: Any) -> str | None:
    if value.__class__ is float:
        return None if math.isfinite(value) else f"column {column.name!r} must be finite, got {value}"
    if value.__class__ is int:
        return None
    return f"column {column.name!r} must be a number, got {shown(value)}"


def _check_datetime(column: Column, value: Any) -> str | None:
    if isinstance(value, str):
        return None
    return f"column {column.name!r} must be a date/time string, got {shown(value)}"


def _check_string(column: Column, value: Any) -> str | None:
    return None if isinstance(value, str) else f"column {column.name!r} must be a string, got {shown(value)}"


def _check_category(column: Column, value: Any) -> str | None:
    if not isinstance(value, str):
        return f"column {column.name!r} must be a string, got {shown(value)}"
    if column.values is not None and value not in column.values:
        allowed = ", ".join(column.values[:20]) + (" ..." if len(column.values) > 20 else "")
        return f"column {column.name!r} must be one of [{allowed}], got {shown(value)}"
    return None


def _check_boolean(column: Column, value: Any) -> str | None:
    return None if isinstance(value, bool) else f"column {column.name!r} must be true or false, got {shown(value)}"


_CHECKS = {
    NUMBER: _check_number,
    DATETIME: _check_datetime,
    STRING: _check_string,
    CATEGORY: _check_category,
    BOOLEAN: _check_boolean,
}


def check_rows(schema: Schema, rows: Any, field: str = "data") -> None:
    """Shape and types of every value; raises ``InputError`` naming the first bad field."""
    names = ", ".join(column.name for column in schema)
    if not isinstance(rows, list):
        raise InputError(field, f"must be a list of rows, each [{names}]")
    if not rows:
        raise InputError(field, f"is empty: send at least one row [{names}]")
    width = len(schema)
    if all_numbers(schema):  # the common case, without a call per value
        for i, row in enumerate(rows):
            if row.__class__ is not list or len(row) != width:
                _bad_row(i, row, width, names, field)
            for j, value in enumerate(row):
                if value.__class__ is not int and (value.__class__ is not float or not math.isfinite(value)):
                    raise InputError(f"{field}[{i}][{j}]", _check_number(schema[j], value) or "")
        return
    checks = [(column, _CHECKS[column.kind]) for column in schema]
    for i, row in enumerate(rows):
        if row.__class__ is not list or len(row) != width:
            _bad_row(i, row, width, names, field)
        for j, value in enumerate(row):
            column, check = checks[j]
            problem = check(column, value)
            if problem:
                raise InputError(f"{field}[{i}][{j}]", problem)


def _bad_row(i: int, row: Any, width: int, names: str, field: str) -> None:
    if not isinstance(row, list):
        raise InputError(f"{field}[{i}]", f"must be a list [{names}], got {type(row).__name__}")
    raise InputError(f"{field}[{i}]", f"has {len(row)} values; expected {width}: [{names}]")


def rows_to_frame(schema: Schema, rows: Any, field: str = "data") -> pd.DataFrame:
    """Check ``rows`` against ``schema`` and build the DataFrame; raises ``InputError`` naming the field."""
    check_rows(schema, rows, field)
    return checked_rows_to_frame(schema, rows, field)


def checked_rows_to_frame(schema: Schema, rows: list, field: str = "data") -> pd.DataFrame:
    """``rows_to_frame`` for rows ``check_rows`` has already accepted (conversion errors can remain: a date/time
    that does not parse, a number beyond float range)."""
    names = [column.name for column in schema]
    if all_numbers(schema):
        return pd.DataFrame(_finite_array(rows, names, field), columns=names, copy=False)
    columns: dict[str, Any] = {}
    for j, column in enumerate(schema):
        values = [row[j] for row in rows]
        if column.kind == DATETIME:
            parsed = pd.to_datetime(values, format="mixed", errors="coerce")
            if parsed.isna().any():
                i = int(np.argmax(parsed.isna()))
                raise InputError(f"{field}[{i}][{j}]", f"column {column.name!r} is not a date/time: {shown(values[i])}")
            columns[column.name] = parsed.astype("datetime64[ns]")
        elif column.kind in (STRING, CATEGORY):
            columns[column.name] = np.array(values, dtype=object)
        elif column.kind == BOOLEAN:
            columns[column.name] = np.array(values, dtype=bool)
        else:
            array = _float_array(values, field)
            if not np.isfinite(array).all():
                i = int(np.argmax(~np.isfinite(array)))
                raise InputError(f"{field}[{i}][{j}]", f"column {column.name!r} is too large to be a finite number")
            columns[column.name] = array
    return pd.DataFrame(columns)


def checked_rows_to_input(schema: Schema, rows: list, array_input: bool, field: str = "data") -> Any:
    """The model's input for checked rows: a NumPy array when the model takes arrays, else a DataFrame."""
    if array_input:
        return _finite_array(rows, [column.name for column in schema], field)
    return checked_rows_to_frame(schema, rows, field)
