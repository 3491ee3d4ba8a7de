"""Monitor one use case's production model: drift and decay per model, and which models to retrain.

Pure over its inputs (the registered manifest and data folder, the collected frames, the actuals): the monitor
step (`ml_service.pipelines.steps.monitor`) reads those and writes the results. Every model gets a status and,
when nothing could be measured, the reason; nothing about one model stops the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml_service.config import UseCaseConfig
from ml_service.monitoring.decay import join, model_decay
from ml_service.monitoring.drift import model_drift
from ml_service.monitoring.profile import PROFILE_FILE, ProfileError, read_profile
from ml_service.registry.model_set import model_key, parse_model_key, served_name

# statuses, in the order the report lists them
DRIFT, DECAY, BOTH, OK = "drift", "decay", "drift and decay", "ok"
TOO_FEW, NO_PROFILE, NO_DATA, ERROR = "too few rows", "no training profile", "no data", "error"


def actual_keys(config: UseCaseConfig) -> list[str]:
    """The columns actuals are joined on (see `ml_service.monitoring.decay`)."""
    if config.time is not None:
        return [*config.partition_columns, config.time.column]
    return ["request_id", "row"]


def _actuals_by_key(actuals: pd.DataFrame | None, config: UseCaseConfig) -> dict[str, pd.DataFrame] | None:
    """Actuals split by partition key when they carry the partition columns (a time series); None: every model
    gets them all (joined on request ids, which are unique)."""
    columns = list(config.partition_columns)
    if actuals is None or not columns or not all(c in actuals for c in columns):
        return None
    text = actuals[columns].astype(str).itertuples(index=False, name=None)
    keys = [model_key(dict(zip(columns, values, strict=True))) for values in text]
    return {key: group for key, group in actuals.assign(_key=keys).groupby("_key", sort=False)}


def monitor_model(
    key: str,
    entry: Mapping[str, Any],
    frame: pd.DataFrame,
    version: str,
    data_folder: Path,
    config: UseCaseConfig,
    metrics: Any,
    actuals: pd.DataFrame | None,
) -> dict[str, Any]:
    """One model's result (`status`, `reason`, `drift`, `decay`, `retrain`)."""
    settings = config.monitoring
    name = served_name(config.model_name, key)
    out: dict[str, Any] = {"model": name, "key": key, "version": version, "rows": 0, "retrain": False}
    current = frame[(frame["model_version"].astype(str) == version).to_numpy()]
    if len(current) < len(frame):
        out["superseded_rows"] = len(frame) - len(current)  # collected from a version no longer in production
    out["rows"] = len(current)
    if len(current) < settings.min_rows:
        out.update(
            status=TOO_FEW, reason=f"{len(current)} collected rows, {settings.min_rows} needed (monitoring.min_rows)"
        )
        return out
    try:
        profile = read_profile(data_folder / entry["path"] / PROFILE_FILE)
    except ProfileError as exc:
        out.update(status=NO_PROFILE, reason=str(exc))
        return out
    columns = {c: current[c].to_numpy() for c in config.input_columns if c in current}
    predictions = current["prediction"].to_numpy() if "prediction" in current else None
    drift = model_drift(profile, columns, predictions, settings.statistic, settings.drift_threshold)
    out["drift"] = drift.as_dict()
    drifted = bool(out["drift"]["drifted_features"])
    decayed = False
    if actuals is not None:
        on = actual_keys(config)
        own = [c for c in on if c not in config.partition_columns]
        if all(c in current for c in own):
            joined = join(current, actuals, config.label, own, config.time.column if config.time else None)
            promised = (entry.get("metrics") or {}).get(config.evaluation.metric)
            decay = model_decay(
                joined,
                metrics,
                config.evaluation.metric,
                config.evaluation.direction,
                None if promised is None else float(promised),
                settings.decay_tolerance,
                settings.min_rows,
            )
            out["decay"] = decay.as_dict()
            decayed = decay.decayed
    out["status"] = BOTH if drifted and decayed else DRIFT if drifted else DECAY if decayed else OK
    if drifted:
        features = ", ".join(out["drift"]["drifted_features"])
        out["reason"] = f"{settings.statistic} >= {settings.drift_threshold:g} for {features}"
    elif decayed:
        d = out["decay"]
        out["reason"] = f"{d['metric']} {d['realised']:.4g} against {d['promised']:.4g} at promotion"
    out["retrain"] = ("drift" in settings.retrain_on and drifted) or ("decay" in settings.retrain_on and decayed)
    return out


def monitor_use_case(
    config: UseCaseConfig,
    metrics: Any,
    manifest: Mapping[str, Any],
    production_version: str,
    data_folder: Path,
    frames: Mapping[str, pd.DataFrame],
    actuals: pd.DataFrame | None,
) -> dict[str, Any]:
    """Every model of the production version: the use case's result for monitor.json."""
    by_key = _actuals_by_key(actuals, config)

    def own_actuals(key: str) -> pd.DataFrame | None:
        return actuals if by_key is None else by_key.get(key)

    results, no_data = [], []
    for key, entry in manifest["models"].items():
        frame = frames.get(served_name(config.model_name, key))
        if frame is None or not len(frame):
            no_data.append(key)
            continue
        # a partition model answers with its own version; a single model with the registered version
        version = str(entry.get("version") or production_version) if key else str(production_version)
        if key:
            parse_model_key(key)  # a manifest key that does not decode is a broken registration: fail loudly
        try:
            result = monitor_model(key, entry, frame, version, data_folder, config, metrics, own_actuals(key))
        except Exception as exc:  # noqa: BLE001 - one model's failure is its result, the others go on
            result = {
                "model": served_name(config.model_name, key),
                "key": key,
                "version": version,
                "rows": len(frame),
                "retrain": False,
                "status": ERROR,
                "reason": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}",
            }
        results.append(result)
    counts = {
        s: sum(1 for r in results if r["status"] == s) for s in (DRIFT, DECAY, BOTH, OK, TOO_FEW, NO_PROFILE, ERROR)
    }
    worst = sorted(
        (r for r in results if r.get("drift") and r["drift"]["worst_value"] is not None),
        key=lambda r: -r["drift"]["worst_value"],
    )
    return {
        "model_name": config.model_name,
        "version": str(production_version),
        "kind": manifest.get("kind"),
        "statistic": config.monitoring.statistic,
        "threshold": config.monitoring.drift_threshold,
        "models": len(manifest["models"]),
        "with_data": len(results),
        "drifted": counts[DRIFT] + counts[BOTH],
        "decayed": counts[DECAY] + counts[BOTH],
        "counts": {k: v for k, v in counts.items() if v},
        "no_data": no_data,
        "retrain": [r["key"] for r in results if r["retrain"]],
        "worst": [r["model"] for r in worst[:10]],
        "results": results,
    }


def drift_values(result: Mapping[str, Any]) -> np.ndarray:
    """The worst drift statistic of each measured model of a use case (the report's histogram)."""
    return np.array(
        [
            r["drift"]["worst_value"]
            for r in result["results"]
            if r.get("drift") and r["drift"]["worst_value"] is not None
        ]
    )
