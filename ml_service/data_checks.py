"""The one data-check engine: raw data against the columns a use case declares, before any training.

Every problem is reported at once, as ``column 'x': problem`` strings, so a bad file is fixed in one go; the
checks are the declared ones (type, min/max, allowed values, missing-value limit, minimum rows per model) and,
for a time series, one regular frequency per partition (the declared one, or the one detected).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ml_service.config import UseCaseConfig

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TEXT_TYPES = ("string", "category")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


class DataValidationError(ValueError):
    """Data that cannot be used; `problems` lists each problem found in `source`."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        shown = "; ".join(self.problems[:5]) + (f" (and {len(self.problems) - 5} more)" if len(problems) > 5 else "")
        super().__init__(f"{source}: {shown}")


def read_csv(path: str | Path, config: UseCaseConfig) -> pd.DataFrame:
    """Read a raw CSV (text columns kept as text), turning missing, empty and unreadable files into one error."""
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(str(path), ["file not found"])
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head.strip():
        raise DataValidationError(str(path), ["file is empty"])
    if b"\x00" in head:
        raise DataValidationError(str(path), ["not a CSV file (binary content)"])
    text = {c: str for c, spec in config.columns.items() if spec.type in TEXT_TYPES}
    try:
        return pd.read_csv(path, dtype=text, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataValidationError(str(path), [f"not a CSV file ({first})"]) from None


def _examples(values: pd.Series, n: int = 3) -> str:
    return ", ".join(repr(v) for v in values.head(n).tolist())


def _parse(raw: pd.Series, kind: str) -> pd.Series:
    """Values as the declared type; what cannot be parsed becomes missing (the caller reports it)."""
    if kind in ("number", "integer"):
        return raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    if kind == "datetime":
        if pd.api.types.is_datetime64_any_dtype(raw):
            return raw
        try:
            return pd.to_datetime(raw)
        except (ValueError, TypeError):
            return pd.to_datetime(raw, format="mixed", errors="coerce")
    if kind == "boolean":
        if pd.api.types.is_bool_dtype(raw):
            return raw
        words = raw.astype(str).str.strip().str.lower()
        return words.map(lambda w: True if w in _TRUE else False if w in _FALSE else None).where(raw.notna())
    return raw.where(raw.isna(), raw.astype(str))


def check_frame(frame: pd.DataFrame, config: UseCaseConfig) -> list[str]:
    """Every problem of `frame` against the declared columns; an empty list means it is usable."""
    missing = [c for c in config.columns if c not in frame.columns]
    if missing:
        have = ", ".join(map(str, frame.columns))
        return [f"column {c!r}: missing (have: {have})" for c in missing]
    if len(frame) == 0:
        return ["no rows"]
    problems = []
    for column, spec in config.columns.items():
        raw = frame[column]
        present = raw.notna()
        parsed = _parse(raw, spec.type)
        bad = present & parsed.isna()
        if bad.any():
            what = {"datetime": "date/times", "boolean": "booleans"}.get(spec.type, "numbers")
            problems.append(f"column {column!r}: {int(bad.sum())} values are not {what} (e.g. {_examples(raw[bad])})")
            continue
        n_missing = int((~present).sum())
        limit = spec.max_missing
        if n_missing > limit * len(frame):
            allowed = f"more than {limit:.0%} allowed" if limit else "none allowed"
            problems.append(f"column {column!r}: {n_missing} of {len(frame)} values missing ({allowed})")
        if spec.type == "integer" and bool((parsed.dropna() % 1 != 0).any()):
            problems.append(f"column {column!r}: values are not whole numbers (e.g. {_examples(raw[parsed % 1 != 0])})")
        if spec.min is not None or spec.max is not None:
            out = pd.Series(False, index=frame.index)
            if spec.min is not None:
                out |= parsed < spec.min
            if spec.max is not None:
                out |= parsed > spec.max
            if out.any():
                shown = f"[{'-inf' if spec.min is None else spec.min}, {'inf' if spec.max is None else spec.max}]"
                problems.append(
                    f"column {column!r}: {int(out.sum())} values outside {shown} (e.g. {_examples(raw[out])})"
                )
        if spec.allowed is not None:
            unknown = present & ~parsed.isin(spec.allowed)
            if unknown.any():
                values = ", ".join(repr(v) for v in pd.unique(parsed[unknown])[:3])
                problems.append(f"column {column!r}: {int(unknown.sum())} values not allowed (e.g. {values})")
    return problems


def coerce(frame: pd.DataFrame, config: UseCaseConfig) -> pd.DataFrame:
    """The declared columns, in declared order, as their types: float64 for numbers, datetime64 for time, text as
    str, booleans as bool (call after `check_frame` found nothing)."""
    out = {}
    for column, spec in config.columns.items():
        parsed = _parse(frame[column], spec.type)
        if spec.type in ("number", "integer"):
            out[column] = parsed.astype("float64")
        elif spec.type == "datetime":
            out[column] = parsed.astype("datetime64[ns]")
        elif spec.type == "boolean":
            out[column] = parsed.astype("boolean") if parsed.isna().any() else parsed.astype(bool)
        else:
            out[column] = parsed.astype(object)
    return pd.DataFrame(out, index=frame.index)


def validate(frame: pd.DataFrame, config: UseCaseConfig, source: str) -> pd.DataFrame:
    """Check, then coerce; raise `DataValidationError` naming `source` and every problem."""
    problems = check_frame(frame, config)
    if problems:
        raise DataValidationError(source, problems)
    return coerce(frame, config)


def detect_frequency(stamps: pd.Series) -> str:
    """The one regular step of sorted time stamps, as a pandas alias ("h", "D", ...); "" when irregular."""
    if len(stamps) < 3:
        return ""
    steps = np.diff(stamps.to_numpy().astype("datetime64[ns]").astype(np.int64))
    if len(steps) == 0 or steps.min() <= 0 or steps.min() != steps.max():
        return ""
    step = pd.Timedelta(int(steps[0]), unit="ns")
    days, rest = divmod(step, pd.Timedelta(days=1))
    if days and not rest:  # pandas spells whole days in hours ("24h"): a daily series must read as daily
        return "D" if days == 1 else f"{days}D"
    return pd.tseries.frequencies.to_offset(step).freqstr


def check_frequency(part: pd.DataFrame, config: UseCaseConfig, where: str) -> str:
    """A prepared partition's time stamps must be sorted and regular at the declared frequency (or, with none
    declared, at one detected frequency). Returns the frequency."""
    assert config.time is not None
    stamps = part[config.time.column]
    if not stamps.is_monotonic_increasing:
        raise DataValidationError(where, [f"column {config.time.column!r}: time stamps are not sorted"])
    declared = config.time.frequency
    if declared:
        expected = pd.tseries.frequencies.to_offset(declared)
        if _fixed(expected):  # on the int64 stamps: 10,000 partitions are checked one by one
            ints = stamps.to_numpy().astype("datetime64[ns]").astype(np.int64)
            off = np.diff(ints) != pd.Timedelta(expected).value
        else:  # calendar frequencies (month starts...) have no fixed length
            off = ~stamps.iloc[1:].reset_index(drop=True).eq((stamps.iloc[:-1] + expected).reset_index(drop=True))
        if bool(np.asarray(off).any()):
            n = int(np.asarray(off).sum())
            raise DataValidationError(
                where,
                [
                    f"column {config.time.column!r}: {n} step(s) are not the declared frequency {declared!r} "
                    f"(detected: {detect_frequency(stamps) or 'irregular'}); regularise the series in the use case's "
                    "prepare()"
                ],
            )
        return declared
    detected = detect_frequency(stamps)
    if not detected:
        raise DataValidationError(
            where,
            [
                f"column {config.time.column!r}: the series has no single regular frequency; declare "
                "time.frequency and regularise it in the use case's prepare()"
            ],
        )
    return detected


def _fixed(offset) -> bool:
    try:
        pd.Timedelta(offset)
    except ValueError:
        return False
    return True
