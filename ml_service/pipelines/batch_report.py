"""One HTML page per batch-scoring run, beside the predictions: per use case the counts, the failures with their
reasons, the forecast of a few partitions and the distribution of predictions across partitions.

Self-contained inline SVG, drawn with the training report's own chart helpers (no plotting library).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ml_service.config import UseCaseConfig
from ml_service.pipelines.report import _frame, _histogram, _label, _table
from ml_service.util.files import write_atomic

REPORT_FILE = "batch_report.html"
PLOTS_SHOWN = 4
FAILURES_SHOWN = 20


def forecast_chart(times: Sequence[Any] | None, values: np.ndarray, title: str, width=540, height=220) -> str:
    """The predictions of one partition as a line, in time order when there is a time column."""
    if not len(values):
        return ""
    left, right, top, bottom = 56, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    span = (high - low) or 1.0
    step = plot_w / max(len(values) - 1, 1)
    points = " ".join(
        f"{left + i * step:.1f},{top + plot_h - plot_h * (v - low) / span:.1f}"
        for i, v in enumerate(values)
        if np.isfinite(v)
    )
    text = 'font-family="sans-serif" font-size="11"'
    first = str(times[0]) if times is not None else "row 1"
    last = str(times[-1]) if times is not None else f"row {len(values)}"
    base = top + plot_h
    return (
        f"{_frame(width, height, title, left, top, plot_w, base)}"
        f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{points}">'
        "<title>prediction</title></polyline>"
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" {text}>{_label(high)}</text>'
        f'<text x="{left - 6}" y="{base}" text-anchor="end" {text}>{_label(low)}</text>'
        f'<text x="{left}" y="{base + 16}" text-anchor="start" {text}>{html.escape(first)}</text>'
        f'<text x="{left + plot_w}" y="{base + 16}" text-anchor="end" {text}>{html.escape(last)}</text>'
        "</svg>"
    )


def use_case_section(name: str, config: UseCaseConfig, combined: Path | None, counts: dict, failed: list) -> str:
    parts = [f"<h2>{html.escape(name)}</h2>"]
    parts.append(
        _table(
            ["scored", "already scored (skipped)", "failed", "rows"],
            [[counts.get("scored", 0), counts.get("skipped", 0), counts.get("failed", 0), counts.get("rows", 0)]],
        )
    )
    if failed:
        shown = [[f["key"] or "(single model)", f["error"]] for f in failed[:FAILURES_SHOWN]]
        more = f"<p>and {len(failed) - FAILURES_SHOWN} more (batch_summary.json)</p>" if len(failed) > 20 else ""
        parts.append("<h3>Failed partitions</h3>" + _table(["partition", "reason"], shown) + more)
    if combined is None or not combined.is_file():
        parts.append("<p>No combined predictions (nothing scored, or over the error threshold).</p>")
        return "".join(parts)
    import pyarrow.parquet as pq

    time_column = config.time.column if config.time else None
    columns = ["prediction", "model_name", *([time_column] if time_column else [])]
    frame = pq.read_table(combined, columns=columns).to_pandas()
    names = sorted(frame["model_name"].unique())
    charts = []
    for model_name in names[:PLOTS_SHOWN]:
        rows = frame[frame["model_name"] == model_name]
        if time_column:
            rows = rows.sort_values(time_column)
        times = rows[time_column].astype(str).tolist() if time_column else None
        charts.append(forecast_chart(times, rows["prediction"].to_numpy(dtype=float), f"{model_name}: prediction"))
    parts.append(f"<h3>Predictions of {min(len(names), PLOTS_SHOWN)} of {len(names)} partition(s)</h3>")
    parts.append("".join(charts))
    if len(names) > 1:
        means = frame.groupby("model_name")["prediction"].mean().to_numpy()
        chart = _histogram(list(means), "mean prediction per partition", unit="partitions")
    else:
        chart = _histogram(list(frame["prediction"].to_numpy(dtype=float)), "predictions", unit="rows")
    parts.append("<h3>Distribution of predictions</h3>" + chart)
    return "".join(parts)


def write_batch_report(path: Path, summary: dict, configs: dict[str, UseCaseConfig], combined: dict) -> Path:
    sections = []
    for name, counts in sorted(summary["use_cases"].items()):
        failed = [f for f in summary["failed"] if f["use_case"] == name]
        file = Path(combined[name]["file"]) if name in combined else None
        sections.append(use_case_section(name, configs[name], file, counts, failed))
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Batch scoring report</title>"
        f"<style>{style}</style></head><body><h1>Batch scoring report</h1>"
        f"<p>{html.escape(str(summary['seconds']))} s; versions: {html.escape(str(summary.get('versions', {})))}</p>"
        f"{''.join(sections)}</body></html>"
    )
    write_atomic(path, page.encode())
    return path
