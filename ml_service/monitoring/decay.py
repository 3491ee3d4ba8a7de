"""Decay of one model: its collected predictions joined to the actuals that arrived later, scored with the use
case's own `metrics`, against the metric the model had when it was promoted.

Join keys: a time series joins on its time column (a partition model: within its partition, the actuals carrying
the partition columns); anything else on the request id and the row's position in its request (the service
answers `X-Request-Id`, so whoever records the outcome can quote it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ACTUALS_SUFFIXES = (".csv", ".parquet")


class ActualsError(ValueError):
    """Actuals that cannot be used; the message names the file and the fix."""


def actuals_files(folder: Path, use_case: str) -> list[Path]:
    """`<folder>/<use case>.csv|.parquet` and every such file under `<folder>/<use case>/`."""
    folder = Path(folder)
    found = [
        folder / f"{use_case}{suffix}" for suffix in ACTUALS_SUFFIXES if (folder / f"{use_case}{suffix}").is_file()
    ]
    if (folder / use_case).is_dir():
        found += sorted(p for p in (folder / use_case).rglob("*") if p.suffix in ACTUALS_SUFFIXES and p.is_file())
    return found


def read_actuals(folder: Path, use_case: str, label: str, keys: Sequence[str]) -> pd.DataFrame | None:
    """The use case's actuals (None when there are none); a file without the label or a key is an error."""
    frames = []
    for path in actuals_files(folder, use_case):
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, dtype=str)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is named, with pandas' reason
            raise ActualsError(f"{path}: not readable ({' '.join(str(exc).split())[:200]})") from None
        missing = [c for c in (label, *keys) if c not in frame.columns]
        if missing:
            raise ActualsError(f"{path}: missing column(s) {', '.join(missing)}; actuals need {label} and {list(keys)}")
        frames.append(frame[[*keys, label]])
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True)


def _time_key(values: Any) -> pd.Series:
    return pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", format="mixed")


def join(
    collected: pd.DataFrame, actuals: pd.DataFrame, label: str, on: Sequence[str], time: str | None
) -> pd.DataFrame:
    """Collected rows with an actual: columns `prediction` and `actual`; the last actual given for a key wins."""
    left = collected[[*on, "prediction"]].copy()
    right = actuals[[*on, label]].rename(columns={label: "actual"}).copy()
    for frame in (left, right):
        for column in on:
            frame[column] = _time_key(frame[column]) if column == time else frame[column].astype(str)
    right = right.drop_duplicates(list(on), keep="last")
    joined = left.merge(right, on=list(on), how="inner")
    joined["actual"] = pd.to_numeric(joined["actual"], errors="coerce")
    joined["prediction"] = pd.to_numeric(joined["prediction"], errors="coerce")
    return joined[np.isfinite(joined["actual"]) & np.isfinite(joined["prediction"])]


@dataclass
class Decay:
    metric: str
    direction: str
    promised: float | None
    realised: float | None
    rows: int
    tolerance: float
    reason: str = ""

    @property
    def decayed(self) -> bool:
        if self.promised is None or self.realised is None:
            return False
        margin = self.tolerance * abs(self.promised)
        if self.direction == "minimize":
            return self.realised > self.promised + margin
        return self.realised < self.promised - margin

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "metric": self.metric,
            "direction": self.direction,
            "promised": self.promised,
            "realised": None if self.realised is None else round(self.realised, 6),
            "rows": self.rows,
            "tolerance": self.tolerance,
            "decayed": self.decayed,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def model_decay(
    joined: pd.DataFrame,
    metrics: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    metric: str,
    direction: str,
    promised: float | None,
    tolerance: float,
    min_rows: int,
) -> Decay:
    """The realised metric on the joined rows, by the use case's `metrics(actual, predicted)`."""
    decay = Decay(metric, direction, promised, None, len(joined), tolerance)
    if promised is None:
        decay.reason = f"no {metric} recorded at promotion"
    if len(joined) < min_rows:
        decay.reason = f"{len(joined)} rows with actuals, {min_rows} needed (monitoring.min_rows)"
        return decay
    values = metrics(joined["actual"].to_numpy(dtype=float), joined["prediction"].to_numpy(dtype=float))
    if metric not in values:
        decay.reason = f"the use case's metrics() gives no {metric!r}"
        return decay
    decay.realised = float(values[metric])
    return decay
