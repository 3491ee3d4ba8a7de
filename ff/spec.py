"""The energy and regression use cases' own parameters (the `model` section of their configuration), and the
view of a use case their training code works with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Metric = Literal["rmse", "mae", "mape", "r2"]
# Which way each metric this use case reports is better (mape only for forecasting: see train_automl).
METRIC_DIRECTIONS = {"rmse": "minimize", "mae": "minimize", "mape": "minimize", "r2": "maximize"}
# FLAML estimator names usable for regression with the packages in requirements.lock.
Estimator = Literal["lgbm", "rf", "extra_tree", "xgboost", "xgb_limitdepth", "histgb", "kneighbor", "enet"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FastPath(_Strict):
    """A fixed scikit-learn estimator instead of AutoML: milliseconds a partition, for thousands of them."""

    enabled: bool = False
    estimator: Literal["ridge", "hist_gradient_boosting"] = "ridge"


class AutoMLSettings(_Strict):
    time_budget_s: float = Field(gt=0)
    metric: Metric
    estimators: tuple[Estimator, ...] = Field(min_length=1)
    fast_path: FastPath = FastPath()
    seed: int = 42


class Params(_Strict):
    """`task`: forecasting (calendar and weather features, time-based hold-out) or regression (the numeric
    inputs as they are, a seeded 20 % hold-out); `automl`: the FLAML search."""

    task: Literal["forecasting", "regression"]
    automl: AutoMLSettings


@dataclass(frozen=True)
class Spec:
    """What ff's training code needs of a use case, from the platform's configuration and its own parameters."""

    model_name: str
    task: str
    label: str
    input_columns: tuple[str, ...]
    automl: AutoMLSettings
    time_column: str | None = None
    horizon: int | None = None
    frequency: str = ""

    @classmethod
    def of(cls, config: Any, params: Params) -> Spec:
        time = config.time
        if params.task == "forecasting" and time is None:
            raise ValueError('task "forecasting" needs a "time" section (column, horizon)')
        # the promotion metric must be one this use case reports, in its own direction: caught here, at load,
        # rather than as a failure of every model after training
        metric, direction = config.evaluation.metric, config.evaluation.direction
        reported = [m for m in METRIC_DIRECTIONS if m != "mape" or params.task == "forecasting"]
        if metric not in reported:
            raise ValueError(f'"evaluation.metric": task {params.task} reports no {metric!r} ({", ".join(reported)})')
        if direction != METRIC_DIRECTIONS[metric]:
            raise ValueError(f'"evaluation.direction": {metric} is {METRIC_DIRECTIONS[metric]}d, not {direction}d')
        return cls(
            model_name=config.model_name,
            task=params.task,
            label=config.label,
            input_columns=tuple(config.input_columns),
            automl=params.automl,
            time_column=time.column if time else None,
            horizon=time.horizon if time else None,
            frequency=time.frequency if time else "",
        )
