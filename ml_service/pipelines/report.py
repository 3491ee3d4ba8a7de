"""One HTML page per training run: what trained, how well, what was slow, what failed, what was promoted, and
the hold-out of the worst models by the promotion metric (where a fix is most needed, not the first in name order).

Self-contained (pictures are inline SVG, drawn here: no plotting library to import) so it can be opened from
disk or attached to a CI run.
"""

from __future__ import annotations

import html
import math
from collections import Counter
from pathlib import Path
from typing import Any

from ml_service.pipelines.training import read_result
from ml_service.util.files import write_atomic

PLOTS_SHOWN = 4
SLOWEST_SHOWN = 10


def _frame(width: int, height: int, title: str, left: float, top: float, plot_w: float, base: float) -> str:
    """The opening of a chart: the SVG element, its title and its two axes."""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">'
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-family="sans-serif" font-size="13">'
        f"{html.escape(title)}</text>"
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#333"/>'
    )


def _histogram(values: list[float], title: str, width: int = 540, height: int = 260, unit: str = "models") -> str:
    """The distribution as an inline SVG bar chart: one chart does not need a plotting library, and importing
    matplotlib would cost the register step about a second."""
    import numpy as np

    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=min(40, max(5, len(values) // 5)))
    left, right, top, bottom = 56, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    bar_w, tallest = plot_w / len(counts), max(int(counts.max()), 1)
    bars = []
    for i, count in enumerate(counts):
        h = plot_h * count / tallest
        x, y = left + i * bar_w, top + plot_h - h
        tip = f"{edges[i]:.4g} to {edges[i + 1]:.4g}: {count} {unit}"
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" fill="#1f77b4">'
            f"<title>{html.escape(tip)}</title></rect>"
        )
    base = top + plot_h
    text = 'font-family="sans-serif" font-size="11"'
    return (
        f"{_frame(width, height, title, left, top, plot_w, base)}"
        f"{''.join(bars)}"
        f"{_ticks(edges[0], edges[-1], left, plot_w, base, text)}"
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" {text}>{tallest}</text>'
        f'<text x="{left - 6}" y="{base}" text-anchor="end" {text}>0</text>'
        f'<text x="14" y="{top + plot_h / 2:.0f}" transform="rotate(-90 14 {top + plot_h / 2:.0f})" '
        f'text-anchor="middle" {text}>{html.escape(unit)}</text>'
        "</svg>"
    )


def _label(value: float) -> str:
    """A tick label short enough to sit under a fifth of the axis: at most 6 characters."""
    text = f"{value:.3g}"
    return text if len(text) <= 6 else f"{value:.1e}"


def _ticks(low: float, high: float, left: float, width: float, base: float, text: str, n: int = 5) -> str:
    out = []
    for i in range(n):
        value, x = low + (high - low) * i / (n - 1), left + width * i / (n - 1)
        anchor = "start" if i == 0 else "end" if i == n - 1 else "middle"
        out.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#333"/>')
        out.append(f'<text x="{x:.1f}" y="{base + 16}" text-anchor="{anchor}" {text}>{_label(value)}</text>')
    return "".join(out)


def _series_chart(record: dict[str, list], title: str, width: int = 540, height: int = 220) -> str:
    """Actual and predicted hold-out values as two lines (in time order when there is a time column)."""
    import numpy as np

    actual = np.asarray([np.nan if v is None else v for v in record["actual"]], dtype=float)
    predicted = np.asarray([np.nan if v is None else v for v in record["predicted"]], dtype=float)
    if not len(actual):
        return ""
    if "time" not in record:  # no order to show: sort by the actual value, so the fit reads as a band
        order = np.argsort(actual, kind="stable")
        actual, predicted = actual[order], predicted[order]
    left, right, top, bottom = 56, 12, 28, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    both = np.concatenate([actual, predicted])
    low, high = float(np.nanmin(both)), float(np.nanmax(both))
    span = (high - low) or 1.0

    def points(values) -> str:
        step = plot_w / max(len(values) - 1, 1)
        return " ".join(
            f"{left + i * step:.1f},{top + plot_h - plot_h * (v - low) / span:.1f}"
            for i, v in enumerate(values)
            if np.isfinite(v)
        )

    text = 'font-family="sans-serif" font-size="11"'
    first = record.get("time", ["row 1"])[0]
    last = record.get("time", [f"row {len(actual)}"])[-1]
    base = top + plot_h
    return (
        f"{_frame(width, height, title, left, top, plot_w, base)}"
        f'<polyline fill="none" stroke="#333" stroke-width="1.5" points="{points(actual)}">'
        "<title>actual</title></polyline>"
        f'<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{points(predicted)}">'
        "<title>predicted</title></polyline>"
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" {text}>{_label(high)}</text>'
        f'<text x="{left - 6}" y="{base}" text-anchor="end" {text}>{_label(low)}</text>'
        f'<text x="{left}" y="{base + 16}" text-anchor="start" {text}>{html.escape(str(first))}</text>'
        f'<text x="{left + plot_w}" y="{base + 16}" text-anchor="end" {text}>{html.escape(str(last))}</text>'
        f'<text x="{left + plot_w}" y="{top + 4}" text-anchor="end" {text}><tspan fill="#333">actual</tspan> '
        '<tspan fill="#d62728">predicted</tspan></text>'
        "</svg>"
    )


def worst(results: list[dict], metric: str, direction: str, n: int) -> list[dict]:
    """The `n` trained models that are worst by the promotion metric."""
    scored = [
        r for r in results if r["status"] != "failed" and math.isfinite(r.get("metrics", {}).get(metric, math.nan))
    ]
    return sorted(scored, key=lambda r: r["metrics"][metric], reverse=direction == "minimize")[:n]


def _table(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def use_case_section(name: str, results: list[dict], decision: dict, registered: dict, trained_dir: Path) -> str:
    metric = decision["metric"]
    counts = Counter(r["status"] for r in results)
    promoted = sum(d["promote"] for d in decision["models"].values())
    parts = [f"<h2>{html.escape(name)}</h2>"]
    outcome = f"registered version {registered['version']}" if registered.get("registered") else "nothing registered"
    parts.append(
        _table(
            ["models", "trained", "unchanged", "failed", "promoted", "kept", "registry"],
            [
                [
                    len(results),
                    counts["trained"],
                    counts["skipped"],
                    counts["failed"],
                    promoted,
                    len(results) - promoted,
                    outcome,
                ]
            ],
        )
    )
    values = [v for r in results if math.isfinite(v := r.get("metrics", {}).get(metric, math.nan))]
    if len(values) > 1:
        chart = _histogram(values, f"{metric} ({decision['direction']}) over {len(values)} models")
        parts.append(chart)
    elif values:
        parts.append(f"<p>{html.escape(metric)} = {values[0]:.6g}</p>")
    slowest = sorted((r for r in results if r["status"] == "trained"), key=lambda r: -r["seconds"])
    if slowest:
        rows = [[r["model_id"], f"{r['seconds']:.3f}", r["estimator"]] for r in slowest[:SLOWEST_SHOWN]]
        parts.append("<h3>Slowest models</h3>" + _table(["model", "seconds", "estimator"], rows))
    failures = [[r["model_id"], r["error"]] for r in results if r["status"] == "failed"]
    if failures:
        parts.append("<h3>Failures</h3>" + _table(["model", "error"], failures))
    rows = [[m, "promoted" if d["promote"] else "kept production", d["reason"]] for m, d in decision["models"].items()]
    parts.append("<h3>Promotion decisions</h3>" + _table(["model", "decision", "why"], rows[:50]))
    if len(rows) > 50:
        parts.append(f"<p>... and {len(rows) - 50} more (see decisions.json)</p>")
    chosen = worst(results, metric, decision["direction"], PLOTS_SHOWN)
    if chosen:
        label = "worst" if len(results) > 1 else "hold-out"
        parts.append(
            f"<h3>Hold-out of the {label} {len(chosen)} by {html.escape(metric)}</h3>" if len(results) > 1 else ""
        )
        for r in chosen:
            try:
                record = read_result(trained_dir, r["model_id"]).get("holdout")
            except FileNotFoundError:
                continue
            if record:
                title = f"{r['model_id']}: {metric}={r['metrics'][metric]:.4g}"
                parts.append(_series_chart(record, title))
    return "\n".join(parts)


def write_report(
    path: Path,
    results: list[dict],
    decisions: dict[str, dict],
    registered: dict[str, dict],
    trained_dir: Path,
) -> Path:
    sections = [
        use_case_section(
            name,
            [r for r in results if r["use_case"] == name],
            decisions[name],
            registered.get(name, {}),
            trained_dir,
        )
        for name in sorted(decisions)
    ]
    style = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}img{max-width:100%}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Training run report</title>"
        f"<style>{style}</style></head><body><h1>Training run report</h1>{''.join(sections)}</body></html>"
    )
    write_atomic(path, page.encode())
    return path
