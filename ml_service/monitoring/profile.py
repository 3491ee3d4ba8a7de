"""The training profile of a model: a small summary of the data it was trained on, written next to its pickle.

It travels with the model into the registry (`models/<key>/profile.json` inside the registered MLflow model, its
sha256 in the manifest), so drift can be measured in production without the training data. Per input column:

- numbers: row count, missing share, mean, standard deviation, the decile bin edges with the share of training
  rows in each bin (for PSI and Jensen-Shannon) and 101 quantiles (for the Kolmogorov-Smirnov statistic);
- categories, text and booleans: the share of each value (the 50 most frequent; the rest as one "other" value);
- date-times: first and last value only (time moves on in production: not a drift signal).

The model's predictions on its hold-out get the numeric summary too (prediction drift). Pure functions, no I/O
except `write_profile` / `read_profile`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

PROFILE_FILE = "profile.json"
PROFILE_VERSION = 1
BINS = 10
QUANTILES = np.linspace(0.0, 1.0, 101)
TOP_VALUES = 50
OTHER = "__other__"
NUMERIC = ("number", "integer")
CATEGORICAL = ("category", "string", "boolean")


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values, dtype=float)]


def bin_shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Share of `values` in each bin `(-inf, e0), [e0, e1), ..., [e_last, inf)`: the one binning of training and
    production values."""
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return counts / max(len(values), 1)


def numeric_values(values: Any) -> tuple[np.ndarray, int]:
    """The finite numbers among `values` and how many were missing or not numbers."""
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(dtype=float)
    finite = numbers[np.isfinite(numbers)]
    return finite, len(numbers) - len(finite)


def category_values(values: Any) -> tuple[pd.Series, int]:
    series = pd.Series(values, dtype=object)
    present = series[series.notna()].astype(str)
    return present, len(series) - len(present)


def profile_column(values: Any, kind: str) -> dict[str, Any]:
    """The summary of one column of training rows (see the module docstring)."""
    total = len(values)
    if kind in NUMERIC:
        finite, missing = numeric_values(values)
        out: dict[str, Any] = {"kind": "number", "rows": int(total), "missing": missing / total if total else 0.0}
        if len(finite):
            edges = np.unique(np.quantile(finite, np.linspace(0, 1, BINS + 1)[1:-1]))
            out.update(
                mean=float(finite.mean()),
                std=float(finite.std()),
                edges=_floats(edges),
                shares=_floats(bin_shares(finite, edges)),
                quantiles=_floats(np.quantile(finite, QUANTILES)),
            )
        return out
    if kind in CATEGORICAL:
        present, missing = category_values(values)
        shares = present.value_counts(normalize=True, sort=True)
        top = shares.iloc[:TOP_VALUES]
        table = {str(k): float(v) for k, v in top.items()}
        if len(shares) > TOP_VALUES:
            table[OTHER] = float(shares.iloc[TOP_VALUES:].sum())
        return {"kind": "category", "rows": int(total), "missing": missing / total if total else 0.0, "shares": table}
    stamps = pd.to_datetime(pd.Series(values), errors="coerce")
    valid = stamps.dropna()
    return {
        "kind": "datetime",
        "rows": int(total),
        "first": valid.min().isoformat() if len(valid) else None,
        "last": valid.max().isoformat() if len(valid) else None,
    }


def profile_frame(frame: pd.DataFrame, input_types: Mapping[str, str], predictions: Any = None) -> dict[str, Any]:
    """The profile of a model trained on `frame` (its input columns, typed as declared) and, when given, of its
    predictions on the hold-out."""
    features = {column: profile_column(frame[column].to_numpy(), kind) for column, kind in input_types.items()}
    profile: dict[str, Any] = {"version": PROFILE_VERSION, "rows": len(frame), "features": features}
    if predictions is not None and len(np.atleast_1d(predictions)):
        values = np.ravel(np.asarray(predictions))
        kind = "number" if values.dtype.kind in "biuf" else "category"  # a classifier's labels are categories
        profile["prediction"] = profile_column(values, kind)
    return profile


def write_profile(folder: Path, profile: Mapping[str, Any]) -> Path:
    """A plain write into a model's staging folder (the folder's rename makes the model all-or-nothing)."""
    path = Path(folder) / PROFILE_FILE
    path.write_text(json.dumps(profile, sort_keys=True, allow_nan=False) + "\n")
    return path


class ProfileError(ValueError):
    """A profile that is missing or unreadable; the message says which and why."""


def read_profile(path: Path) -> dict[str, Any]:
    try:
        profile = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ProfileError(f"no training profile ({Path(path).name}): registered before profiles were kept") from None
    except ValueError as exc:
        raise ProfileError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("features"), dict):
        raise ProfileError(f"{path}: no 'features' in the training profile")
    return profile
