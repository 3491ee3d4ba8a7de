"""One HTML page per many-models run: what trained, how well, what was slow, what failed, what was promoted.

Self-contained (pictures inlined) so it can be opened from disk or attached to a CI run.
"""

from __future__ import annotations

import base64
import html
import math
from collections import Counter
from pathlib import Path
from typing import Any

from ml_service.pipelines.many_models import PLOT_FILE, model_folder
from ml_service.util.files import write_atomic

PLOTS_SHOWN = 4
SLOWEST_SHOWN = 10


def _histogram(values: list[float], title: str, width: int = 540, height: int = 260) -> str:
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
        tip = f"{edges[i]:.4g} to {edges[i + 1]:.4g}: {count} models"
        bars.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 0.5):.1f}" height="{h:.1f}" fill="#1f77b4">'
            f"<title>{html.escape(tip)}</title></rect>"
        )
    base = top + plot_h
    text = 'font-family="sans-serif" font-size="11"'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">'
        f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-family="sans-serif" font-size="13">'
        f"{html.escape(title)}</text>"
        f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#333"/>'
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{base}" stroke="#333"/>'
        f"{''.join(bars)}"
        f'<text x="{left}" y="{base + 16}" text-anchor="middle" {text}>{edges[0]:.4g}</text>'
        f'<text x="{left + plot_w}" y="{base + 16}" text-anchor="middle" {text}>{edges[-1]:.4g}</text>'
        f'<text x="{left - 6}" y="{top + 4}" text-anchor="end" {text}>{tallest}</text>'
        f'<text x="{left - 6}" y="{base}" text-anchor="end" {text}>0</text>'
        f'<text x="14" y="{top + plot_h / 2:.0f}" transform="rotate(-90 14 {top + plot_h / 2:.0f})" '
        f'text-anchor="middle" {text}>models</text>'
        "</svg>"
    )


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
    shown = 0
    for r in results:
        if shown == PLOTS_SHOWN:  # enough: do not look for the plot of each of thousands of models
            break
        plot = model_folder(trained_dir, r["model_id"]) / PLOT_FILE
        if r["status"] != "failed" and plot.exists():
            data = base64.b64encode(plot.read_bytes()).decode()
            title = html.escape(r["model_id"])
            parts.append(f'<h4>{title}</h4><img alt="hold-out" src="data:image/png;base64,{data}">')
            shown += 1
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
            [r for r in results if r["model_name"] == name],
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
        f"<!doctype html><html><head><meta charset='utf-8'><title>Many-models run report</title>"
        f"<style>{style}</style></head><body><h1>Many-models run report</h1>{''.join(sections)}</body></html>"
    )
    write_atomic(path, page.encode())
    return path
