"""The monitoring report: one self-contained HTML page (inline SVG, like the training report) a person reads.

Per use case: how many models were measured, drifted, decayed and are selected for retraining; for a model set
the distribution of the drift statistic across its partitions; the worst models with their drifted features
drawn (training shares against production shares, bin by bin); realised against promised metric; and every
model that could not be measured, with the reason.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ml_service.monitoring.monitor import drift_values
from ml_service.pipelines.report import _frame, _histogram, _table
from ml_service.util.files import write_atomic

WORST_SHOWN = 5
FEATURES_SHOWN = 3
UNMEASURED_SHOWN = 50


def bars_chart(
    bins: Mapping[str, list],
    title: str,
    width: int = 540,
    height: int = 230,
    shares: bool = True,
    names: tuple[str, str] = ("training", "production"),
) -> str:
    """Training against production share per bin (`shares`; else plain values): grey and orange bars side by
    side, named `names` in the legend and the tooltips."""
    labels, training, production = bins["labels"], bins["training"], bins["production"]
    left, right, top, bottom = 46, 12, 40, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    tallest = max([*training, *production, 0.01])
    slot = plot_w / max(len(labels), 1)
    text = 'font-family="sans-serif" font-size="10"'
    parts = [_frame(width, height, title, left, top, plot_w, top + plot_h)]
    for i, label in enumerate(labels):
        for j, (share, colour, name) in enumerate(
            ((training[i], "#9e9e9e", names[0]), (production[i], "#ff7f0e", names[1]))
        ):
            h = plot_h * share / tallest
            x = left + i * slot + 2 + j * (slot - 4) / 2
            tip = html.escape(f"{label}: {name} {_value(share, shares)}")
            parts.append(
                f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{max((slot - 4) / 2 - 1, 0.5):.1f}" '
                f'height="{h:.1f}" fill="{colour}"><title>{tip}</title></rect>'
            )
        if len(labels) <= 12:
            parts.append(
                f'<text x="{left + (i + 0.5) * slot:.1f}" y="{top + plot_h + 12}" text-anchor="middle" {text}>'
                f"{html.escape(str(label)[:12])}</text>"
            )
    parts.append(f'<text x="{left - 4}" y="{top + 4}" text-anchor="end" {text}>{_value(tallest, shares)}</text>')
    parts.append(
        f'<rect x="{left}" y="{height - 14}" width="10" height="8" fill="#9e9e9e"/>'
        f'<text x="{left + 14}" y="{height - 6}" {text}>{names[0]}</text>'
        f'<rect x="{left + 70}" y="{height - 14}" width="10" height="8" fill="#ff7f0e"/>'
        f'<text x="{left + 84}" y="{height - 6}" {text}>{names[1]}</text></svg>'
    )
    return "".join(parts)


def _value(value: float, share: bool) -> str:
    return f"{value:.0%}" if share else f"{value:.4g}"


def metric_chart(results: list[Mapping[str, Any]], metric: str, width: int = 540, height: int = 240) -> str:
    """Realised against promised metric for the models with actuals (pairs of bars, the worst first)."""
    rows = [r for r in results if (r.get("decay") or {}).get("realised") is not None][:12]
    if not rows:
        return ""
    bins = {
        "labels": [r["key"] or r["model"] for r in rows],
        "training": [float(r["decay"]["promised"] or 0.0) for r in rows],
        "production": [float(r["decay"]["realised"]) for r in rows],
    }
    title = f"{metric}: at promotion (grey) and realised on actuals (orange)"
    return bars_chart(bins, title, width, height, shares=False, names=("promised", "realised"))


def _fmt(value: Any) -> str:
    return "" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def use_case_section(name: str, result: Mapping[str, Any]) -> str:
    if "error" in result:
        return f"<h2>{html.escape(name)}</h2><p class='bad'>{html.escape(result['error'])}</p>"
    statistic = result["statistic"]
    parts = [
        f"<h2>{html.escape(name)} <small>({html.escape(result['model_name'])} version "
        f"{html.escape(result['version'])})</small></h2>",
        _table(
            ["models", "with collected data", "drifted", "decayed", "to retrain", "no data"],
            [
                [
                    result["models"],
                    result["with_data"],
                    result["drifted"],
                    result["decayed"],
                    len(result["retrain"]),
                    len(result["no_data"]),
                ]
            ],
        ),
        f"<p>Drift: {html.escape(statistic)} &ge; {result['threshold']:g} on an input column.</p>",
    ]
    values = drift_values(result)
    if len(values) > 1:
        parts.append(_histogram(list(values), f"worst {statistic} per model ({len(values)} models)"))
    ranked = sorted(
        result["results"],
        key=lambda r: (not r["retrain"], -((r.get("drift") or {}).get("worst_value") or 0.0), r["model"]),
    )
    table_rows = []
    for r in ranked[:25]:
        drift, decay = r.get("drift") or {}, r.get("decay") or {}
        table_rows.append(
            [
                r["model"],
                r["version"],
                r["rows"],
                r["status"],
                drift.get("worst_feature"),
                _fmt(drift.get("worst_value")),
                _fmt(decay.get("promised")),
                _fmt(decay.get("realised")),
                "yes" if r["retrain"] else "",
            ]
        )
    parts.append(
        _table(
            ["model", "version", "rows", "status", "worst column", statistic, "promised", "realised", "retrain"],
            table_rows,
        )
    )
    for r in [r for r in ranked if (r.get("drift") or {}).get("drifted_features")][:WORST_SHOWN]:
        for feature in r["drift"]["drifted_features"][:FEATURES_SHOWN]:
            info = r["drift"]["features"][feature]
            if info.get("bins"):
                title = f"{r['model']}: {feature} ({statistic} {info.get(statistic, info.get('psi', 0)):.3g})"
                parts.append(bars_chart(info["bins"], title))
    decay_rows = sorted(
        (r for r in result["results"] if (r.get("decay") or {}).get("realised") is not None),
        key=lambda r: not r["decay"]["decayed"],
    )
    chart = metric_chart(decay_rows, decay_rows[0]["decay"]["metric"]) if decay_rows else ""
    if chart:
        parts.append(chart)
    unmeasured = [r for r in result["results"] if not r.get("drift")]
    if unmeasured:
        parts.append("<h3>Not measured</h3>")
        parts.append(
            _table(
                ["model", "status", "reason"],
                [[r["model"], r["status"], r.get("reason", "")] for r in unmeasured[:UNMEASURED_SHOWN]],
            )
        )
    if result["no_data"]:
        shown = ", ".join(k or result["model_name"] for k in result["no_data"][:20])
        more = f" and {len(result['no_data']) - 20} more" if len(result["no_data"]) > 20 else ""
        parts.append(f"<p>No collected data for {len(result['no_data'])} model(s): {html.escape(shown)}{more}.</p>")
    return "".join(parts)


def write_monitor_report(path: Path, outcome: Mapping[str, Any]) -> Path:
    sections = "".join(use_case_section(name, result) for name, result in outcome["use_cases"].items())
    problems = outcome.get("problems") or []
    listed = "".join(f"<li>{html.escape(p)}</li>" for p in problems[:50])
    notes = f"<h2>Collected files not read</h2><ul>{listed}</ul>" if problems else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Monitoring report</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#f3f3f3}.bad{color:#b00}"
        "svg{margin:6px;vertical-align:top}</style></head><body>"
        f"<h1>Monitoring report</h1><p>Collected data: {html.escape(str(outcome.get('collected', '')))}; "
        f"{outcome.get('rows', 0)} rows read; created {html.escape(outcome.get('created', ''))}.</p>"
        f"{sections}{notes}</body></html>"
    )
    write_atomic(Path(path), page.encode())
    return Path(path)
