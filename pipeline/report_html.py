"""The run's report as one self-contained HTML page: every plot inline (base64 PNG), no script, no
network, so it opens from disk and from the MLflow UI's artifact view alike.

Pure functions: tables and metrics in, text out. Sections (each an ``<section id=…>``, so a test or
a reader can find them): ``decision``, ``flagged``, ``comparison``, ``slices``, ``funnel``,
``offpolicy``, ``behaviour``, ``trend``, ``evaluation``.
"""

from __future__ import annotations

import base64
import html
import math

import numpy as np
import pandas as pd

from rankpipe.pipeline.report import _png

SECTIONS = ("decision", "flagged", "comparison", "slices", "funnel", "offpolicy", "behaviour", "trend", "evaluation")
STYLE = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.9rem}th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.worse{background:#fde2e2}.better{background:#e2f5e6}
.banner{padding:.75rem 1rem;border-radius:6px;margin:1rem 0}.promoted{background:#e2f5e6}.refused{background:#fde2e2}
img{max-width:100%}pre{background:#f7f7f7;padding:1rem;overflow-x:auto;font-size:.8rem}.note{color:#666;font-size:.85rem}"""


def _cell(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (float, np.floating)):
        return "–" if not math.isfinite(float(value)) else f"{float(value):.4f}"
    return html.escape(str(value))


def table_html(frame: pd.DataFrame, row_class: pd.Series | None = None) -> str:
    """An HTML table of ``frame`` (floats at 4 decimals); ``row_class``: a CSS class per row."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        css = f' class="{row_class.iloc[i]}"' if row_class is not None and row_class.iloc[i] else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{_cell(v)}</td>" for v in row.to_numpy()) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def image_html(png: bytes, alt: str) -> str:
    """An inline PNG."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _figure(width: float = 7.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def forest_plot(comparison: pd.DataFrame, metric: str) -> bytes:
    """The challenger's difference to the champion in ``metric`` with its 95% CI, per slice (red: worse beyond noise)."""
    rows = comparison[comparison["metric"] == metric].iloc[::-1]
    fig, ax = _figure(7.0, 0.3 * len(rows) + 1.2)
    y = np.arange(len(rows))
    colors = np.where(rows["ci_high"] < 0, "#c0392b", np.where(rows["ci_low"] > 0, "#2f8f5b", "#3b6ea8"))
    ax.errorbar(rows["delta"], y, xerr=[rows["delta"] - rows["ci_low"], rows["ci_high"] - rows["delta"]], fmt="none", ecolor=colors)
    ax.scatter(rows["delta"], y, color=colors, zorder=3)
    ax.axvline(0, color="#888", linewidth=1)
    ax.set_yticks(y, [f"{s} (n={n})" for s, n in zip(rows["slice"], rows["requests"])], fontsize=8)
    ax.set(xlabel=f"challenger − champion, {metric} (95% CI)", title=f"{metric} by slice")
    ax.grid(alpha=0.3, axis="x")
    return _png(fig)


def propensity_plot(propensity: pd.DataFrame) -> bytes:
    """Estimated examination by position (and the world's true one when known)."""
    fig, ax = _figure(6.0, 3.6)
    ax.plot(propensity["position"], propensity["examination"], marker="o", label="estimated from the log")
    if "true_examination" in propensity:
        ax.plot(propensity["position"], propensity["true_examination"], linestyle="--", color="#888", label="the world's truth")
    ax.set(xlabel="position", ylabel="P(examined)", ylim=(0, 1.05), title="Position propensities")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def trend_plot(trend: pd.DataFrame, metrics: tuple[str, ...]) -> bytes:
    """Each headline metric over the last runs of this dataset (oldest left)."""
    fig, ax = _figure(7.0, 3.6)
    for metric in metrics:
        if metric in trend and trend[metric].notna().any():
            ax.plot(np.arange(len(trend)), trend[metric], marker="o", label=metric)
    ax.set_xticks(np.arange(len(trend)), [str(r)[:8] for r in trend["run_id"]], rotation=45, fontsize=7)
    ax.set(title="Headline metrics, last runs of this dataset", xlabel="MLflow run")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _png(fig)


def _section(name: str, title: str, body: str) -> str:
    return f'<section id="{name}"><h2>{html.escape(title)}</h2>{body}</section>'


def build_html(title: str, decision: pd.DataFrame | None, checks: pd.DataFrame | None, comparison: pd.DataFrame | None,
               list_checks: pd.DataFrame | None, offpolicy: pd.DataFrame | None, propensity: pd.DataFrame | None,
               funnel_metrics: pd.DataFrame, trend: pd.DataFrame | None, headline: tuple[str, ...], evaluation_png: bytes | None,
               tradeoff_png: bytes | None, evaluation_md: str, primary: str) -> str:
    """The report page (see the module docstring for its sections)."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if decision is not None and len(decision):
        d = decision.iloc[0]
        verdict = "promoted" if bool(d["promoted"]) else "refused"
        body = (f'<div class="banner {verdict}"><b>{html.escape(str(d["model_name"]))}: {verdict}</b> by gate '
                f'<code>{html.escape(str(d["gate"]))}</code> ({html.escape(str(d["rule"]))})<br>{html.escape(str(d["reason"]))}</div>')
        if checks is not None and len(checks):
            body += table_html(checks, pd.Series(np.where(checks["passed"].astype(bool), "", "worse")))
        parts.append(_section("decision", "Promotion decision", body))
    has_champion = comparison is not None and "delta" in comparison and comparison["delta"].notna().any()
    if has_champion:
        worse = comparison[comparison["worse"].astype(bool)]
        body = ("<p>Every slice and metric where the challenger is worse than the champion beyond noise (the paired 95% CI of the "
                "difference lies below 0).</p>" + table_html(worse) if len(worse) else "<p>No slice where the challenger is worse beyond noise.</p>")
        parts.append(_section("flagged", "Where the challenger is worse", body))
        overall = comparison[comparison["slice"] == "all"]
        parts.append(_section("comparison", "Challenger against champion, same test requests", table_html(overall.drop(columns=["slice"]))
                              + image_html(forest_plot(comparison, primary), "forest plot")))
    else:
        parts.append(_section("flagged", "Where the challenger is worse", "<p class='note'>No comparable champion: nothing to compare.</p>"))
        parts.append(_section("comparison", "Challenger against champion", "<p class='note'>No comparable champion yet: the challenger's "
                              "own numbers follow.</p>" + (table_html(comparison[comparison["slice"] == "all"]) if comparison is not None and len(comparison) else "")))
    if comparison is not None and len(comparison):
        shown = comparison[comparison["metric"] == primary]
        css = pd.Series(np.where(shown["worse"].astype(bool), "worse", ""), index=shown.index) if has_champion else None
        parts.append(_section("slices", f"Slices ({primary})", table_html(shown, css)))
    body = table_html(funnel_metrics)
    body += image_html(evaluation_png, "recall, ranking, importance, calibration") if evaluation_png else ""
    body += image_html(tradeoff_png, "reranking trade-off") if tradeoff_png else ""
    parts.append(_section("funnel", "The funnel: recall, rank, rerank, calibration, scoring latency", body))
    if offpolicy is not None and len(offpolicy):
        body = ("<p>Expected clicks per request of new lists, estimated from the logged clicks alone (IPS, self-normalized IPS, doubly "
                "robust; 95% bootstrap intervals over requests). <i>covered</i>: share of a list's examination on items the log showed "
                "for that request. Where the world's truth is known it is printed beside.</p>" + table_html(offpolicy))
        body += image_html(propensity_plot(propensity), "propensities") if propensity is not None and len(propensity) else ""
        parts.append(_section("offpolicy", "Counterfactual click-through of the new lists", body))
    if list_checks is not None and len(list_checks):
        body = ("<p>What a mean hides: catalogue coverage, calibration error (ECE), popularity bias of the lists against the requests' "
                "positives (percentile lift), cold items' share, lists with near-duplicate items, row-order invariance, agreement "
                "with the rerank stage, scoring latency.</p>" + table_html(list_checks.set_index("funnel").T.reset_index(names="check")))
        parts.append(_section("behaviour", "Behaviour checks", body))
    if trend is not None and len(trend) > 1:
        parts.append(_section("trend", "Trend", image_html(trend_plot(trend, headline), "trend") + table_html(trend)))
    else:
        parts.append(_section("trend", "Trend", "<p class='note'>The first tracked run of this dataset: no trend yet.</p>"))
    parts.append(_section("evaluation", "Evaluation report (Markdown)", f"<pre>{html.escape(evaluation_md)}</pre>"))
    return "".join(parts) + "</body></html>"
