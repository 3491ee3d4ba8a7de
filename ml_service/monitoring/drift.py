"""Drift of one model: what it sees in production against its training profile, per input column.

Three standard statistics, all from SciPy (already installed with scikit-learn, well kept, and the formulas are
a few lines, so every number in the report can be checked by hand; a drift library such as Evidently or NannyML
would add a large dependency tree for the same three numbers):

- **PSI** (population stability index) over the training deciles: sum of (p - q) * ln(p / q), shares floored at
  1e-4 so an empty bin does not give infinity. The usual reading: < 0.1 stable, 0.1-0.2 moderate, >= 0.2 shifted.
- **Jensen-Shannon distance** (`scipy.spatial.distance.jensenshannon`, base 2) over the same bins: in [0, 1].
- **Kolmogorov-Smirnov**: the largest gap between the training CDF (from the profile's 101 quantiles, so exact
  to about 1 %) and the production sample's CDF, with the asymptotic two-sample p-value
  (`scipy.stats.kstwobign`). Numbers only.

Categories use PSI and Jensen-Shannon over the training values (values never seen in training count as one
extra value). Date-time columns are not compared (time moves on).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import kstwobign

from ml_service.monitoring.profile import OTHER, bin_shares, category_values, numeric_values

FLOOR = 1e-4
UNSEEN = "__unseen__"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    p = np.clip(np.asarray(actual, dtype=float), FLOOR, None)
    q = np.clip(np.asarray(expected, dtype=float), FLOOR, None)
    return float(np.sum((p - q) * np.log(p / q)))


def js_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    value = jensenshannon(np.asarray(expected, dtype=float), np.asarray(actual, dtype=float), base=2)
    return float(0.0 if not np.isfinite(value) else value)


def training_cdf(quantiles: list[float], points: np.ndarray) -> np.ndarray:
    """The training CDF at `points`, from quantiles at 0, 0.01, ..., 1 (a tie takes the highest probability)."""
    q = np.asarray(quantiles, dtype=float)
    probs = np.linspace(0.0, 1.0, len(q))
    values, last = np.unique(q[::-1], return_index=True)
    return np.interp(points, values, probs[::-1][last], left=0.0, right=1.0)


def ks(quantiles: list[float], training_rows: int, sample: np.ndarray) -> tuple[float, float]:
    """(statistic, p-value) of the production `sample` against the training distribution."""
    ordered = np.sort(sample)
    points = np.concatenate([ordered, np.asarray(quantiles, dtype=float)])
    production = np.searchsorted(ordered, points, side="right") / len(ordered)
    statistic = float(np.max(np.abs(training_cdf(quantiles, points) - production)))
    n, m = max(int(training_rows), 1), len(ordered)
    return statistic, float(kstwobign.sf(statistic * np.sqrt(n * m / (n + m))))


@dataclass
class FeatureDrift:
    rows: int
    psi: float | None = None
    js: float | None = None
    ks: float | None = None
    ks_pvalue: float | None = None
    missing: float = 0.0
    reason: str = ""  # why nothing was computed
    bins: dict[str, list] | None = None  # labels, training shares, production shares (the report's bar charts)

    def value(self, statistic: str) -> float | None:
        """The deciding number; categories have no KS statistic, so they are judged by PSI."""
        chosen = getattr(self, statistic)
        return self.psi if chosen is None and statistic == "ks" else chosen

    def as_dict(self) -> dict[str, Any]:
        out = {"rows": self.rows, "missing": round(self.missing, 6)}
        for name in ("psi", "js", "ks", "ks_pvalue"):
            value = getattr(self, name)
            if value is not None:
                out[name] = round(value, 6)
        if self.reason:
            out["reason"] = self.reason
        if self.bins is not None:
            out["bins"] = self.bins
        return out


def _labels(edges: list[float]) -> list[str]:
    def short(value: float) -> str:
        return f"{value:.3g}"

    if not edges:
        return ["all"]
    return (
        [f"< {short(edges[0])}"]
        + [f"{short(a)}-{short(b)}" for a, b in zip(edges[:-1], edges[1:], strict=True)]
        + [f">= {short(edges[-1])}"]
    )


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in values]


def feature_drift(profile: Mapping[str, Any], values: Any) -> FeatureDrift:
    """One column's drift; a column that cannot be compared says why (never raises on data)."""
    kind = profile.get("kind")
    if kind == "number":
        finite, missing = numeric_values(values)
        out = FeatureDrift(rows=len(finite), missing=missing / max(len(values), 1))
        if "edges" not in profile:
            out.reason = "no numbers in the training data"
        elif not len(finite):
            out.reason = "no numbers among the collected values"
        else:
            actual = bin_shares(finite, np.asarray(profile["edges"], dtype=float))
            expected = np.asarray(profile["shares"], dtype=float)
            out.psi, out.js = psi(expected, actual), js_distance(expected, actual)
            out.ks, out.ks_pvalue = ks(profile["quantiles"], profile["rows"], finite)
            out.bins = {
                "labels": _labels(profile["edges"]),
                "training": _rounded(expected),
                "production": _rounded(actual),
            }
        return out
    if kind == "category":
        present, missing = category_values(values)
        out = FeatureDrift(rows=len(present), missing=missing / max(len(values), 1))
        shares: dict[str, float] = dict(profile.get("shares") or {})
        if not shares or not len(present):
            out.reason = "no values to compare"
            return out
        known = [k for k in shares if k != OTHER]
        counts = present.value_counts()
        seen = {k: float(counts.get(k, 0)) for k in known}
        rest = float(len(present) - sum(seen.values()))
        expected = np.array([shares[k] for k in known] + [shares.get(OTHER, 0.0)])
        actual = np.array([seen[k] for k in known] + [rest]) / len(present)
        out.psi, out.js = psi(expected, actual), js_distance(expected, actual)
        out.bins = {"labels": [*known, "other"], "training": _rounded(expected), "production": _rounded(actual)}
        return out
    return FeatureDrift(rows=len(values), reason=f"{kind} columns are not compared")


@dataclass
class ModelDrift:
    statistic: str
    threshold: float
    rows: int
    features: dict[str, FeatureDrift] = field(default_factory=dict)
    prediction: FeatureDrift | None = None

    def _scored(self) -> list[tuple[float, str]]:
        """(deciding statistic, column) of every column it could be computed for."""
        scored = [(f.value(self.statistic), name) for name, f in self.features.items()]
        return [(v, n) for v, n in scored if v is not None]

    @property
    def drifted_features(self) -> list[str]:
        """Input columns whose deciding statistic reached the threshold, the worst first."""
        over = [(v, n) for v, n in self._scored() if v >= self.threshold]
        return [n for _, n in sorted(over, key=lambda item: (-item[0], item[1]))]

    @property
    def worst(self) -> tuple[str, float] | None:
        scored = self._scored()
        if not scored:
            return None
        value, name = max(scored, key=lambda item: (item[0], item[1]))
        return name, value

    def as_dict(self) -> dict[str, Any]:
        worst = self.worst
        out: dict[str, Any] = {
            "statistic": self.statistic,
            "threshold": self.threshold,
            "rows": self.rows,
            "drifted_features": self.drifted_features,
            "worst_feature": worst[0] if worst else None,
            "worst_value": round(worst[1], 6) if worst else None,
            "features": {name: f.as_dict() for name, f in self.features.items()},
        }
        if self.prediction is not None:
            out["prediction"] = self.prediction.as_dict()
        return out


def model_drift(
    profile: Mapping[str, Any],
    columns: Mapping[str, Any],
    predictions: Any,
    statistic: str,
    threshold: float,
) -> ModelDrift:
    """Every profiled input column of one model against its collected values (`columns`: name -> values).
    A column the profile has but production lacks is reported, not fatal."""
    rows = len(next(iter(columns.values()))) if columns else 0
    drift = ModelDrift(statistic, threshold, rows)
    for name, summary in profile["features"].items():
        if name not in columns:
            drift.features[name] = FeatureDrift(rows=0, reason="not in the collected data")
            continue
        drift.features[name] = feature_drift(summary, columns[name])
    if profile.get("prediction") and predictions is not None:
        drift.prediction = feature_drift(profile["prediction"], predictions)
    return drift
