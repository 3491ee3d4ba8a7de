"""Hold-out plots saved as PNG, so a reviewer sees at a glance whether a new model is sensible."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ff.config import UseCase  # noqa: E402


def plot_holdout(holdout: pd.DataFrame, use_case: UseCase, path: str | Path, title: str | None = None) -> Path:
    """Forecast vs actual over time (forecasting) or predicted vs actual scatter (regression) as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    try:
        if use_case.task == "forecasting" and use_case.time_column in holdout.columns:
            times = pd.to_datetime(holdout[use_case.time_column])
            ax.plot(times, holdout["actual"], label="actual", color="black", linewidth=1.5)
            ax.plot(times, holdout["predicted"], label="forecast", color="tab:orange", linewidth=1.5)
            ax.set_xlabel(use_case.time_column)
            ax.set_ylabel(use_case.label)
            ax.legend()
            fig.autofmt_xdate()
        else:
            ax.scatter(holdout["actual"], holdout["predicted"], s=12, alpha=0.7)
            low = float(min(holdout["actual"].min(), holdout["predicted"].min()))
            high = float(max(holdout["actual"].max(), holdout["predicted"].max()))
            ax.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1, label="perfect")
            ax.set_xlabel(f"actual {use_case.label}")
            ax.set_ylabel(f"predicted {use_case.label}")
            ax.legend()
        ax.set_title(title or f"{use_case.model_name}: hold-out ({len(holdout)} rows)")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return path
