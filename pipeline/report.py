"""The evaluation report: a Markdown page and one figure, built from a run's metrics.

Pure functions (metrics in, text and PNG bytes out); the runner writes them into the evaluate
stage's directory and logs them to MLflow.
"""

from __future__ import annotations

import io
import re

import pandas as pd

PLOT_FILE = "report.png"
TRADEOFF_PLOT_FILE = "rerank_tradeoff.png"


def _fmt(value: float) -> str:
    return "–" if value is None or value != value else f"{value:.4f}"


def recall_table(metrics: dict[str, float]) -> pd.DataFrame:
    """Channel × K recall (rows: channels, then ``merged`` and ``random``)."""
    rows: dict[str, dict[int, float]] = {}
    for key, value in metrics.items():
        match = re.fullmatch(r"recall\.(?:(\w+)\.)?recall_at_(\d+)", key)
        if match:
            rows.setdefault(match.group(1) or "merged", {})[int(match.group(2))] = value
        match = re.fullmatch(r"recall\.random_recall_at_(\d+)", key)
        if match:
            rows.setdefault("random", {})[int(match.group(1))] = value
    table = pd.DataFrame(rows).T.sort_index(axis=1)
    order = sorted(i for i in table.index if i not in ("merged", "random")) + [i for i in ("merged", "random") if i in table.index]
    return table.loc[order]


def _png(fig) -> bytes:
    """The figure as PNG bytes (laid out tight, 110 dpi), and closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _figure(metrics: dict[str, float], importance: pd.DataFrame, calibration: pd.DataFrame | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # no display in batch jobs
    import matplotlib.pyplot as plt

    recall = recall_table(metrics)
    has_calibration = calibration is not None and len(calibration) > 0
    panels = (1 if len(recall) else 0) + 2 + int(has_calibration)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    axes = list(axes)
    if len(recall):
        ax = axes.pop(0)
        for name, row in recall.iterrows():
            ax.plot(row.index, row.values, marker="o", linestyle="--" if name == "random" else "-", linewidth=2.5 if name == "merged" else 1.5, label=name)
        ax.set(xscale="log", xlabel="K (candidates)", ylabel="recall@K", title="Recall by channel")
        ax.set_xticks(list(recall.columns), [str(k) for k in recall.columns])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    ax = axes.pop(0)
    if "rank.popularity_ndcg_at_10" in metrics:  # a funnel run: the ranker beside its baselines
        pairs = (("ranker\n(clicks)", "rank.ndcg_at_10"), ("popularity\n(clicks)", "rank.popularity_ndcg_at_10"),
                 ("ranker\n(truth)", "rank.oracle_ndcg_at_10"), ("popularity\n(truth)", "rank.popularity_oracle_ndcg_at_10"))
    else:  # a ready feature table: the ranker at each cut-off
        pairs = tuple((f"NDCG@{k}", f"rank.ndcg_at_{k}") for k in (1, 3, 5, 10))
    bars = {label: metrics[key] for label, key in pairs if key in metrics}
    ax.bar(list(bars), list(bars.values()), color=["#3b6ea8", "#a0a0a0", "#2f8f5b", "#c0c0c0"][: len(bars)])
    for i, v in enumerate(bars.values()):
        ax.text(i, v, f"{v:.3f}", ha="center", va="bottom", fontsize=9)
    ax.set(ylim=(0, 1.05), ylabel="NDCG", title="Ranking quality (test lists)")
    ax.tick_params(axis="x", labelsize=8)
    ax = axes.pop(0)
    top = importance.head(15).iloc[::-1]
    ax.barh(top["feature"], top["gain"] / max(top["gain"].sum(), 1e-12), color="#3b6ea8")
    ax.set(xlabel="share of gain (top 15)", title="Ranker feature importance")
    ax.tick_params(axis="y", labelsize=8)
    if has_calibration:  # reliability diagram: a calibrated model's points lie on the diagonal
        ax = axes.pop(0)
        ax.plot([0, 1], [0, 1], color="#a0a0a0", linestyle="--", linewidth=1)
        for method, rows in calibration.groupby("method", sort=False):
            ax.plot(rows["predicted"], rows["observed"], marker="o", linestyle="-" if len(rows) > 1 else "none",
                    label=f"{method} (log loss {rows['logloss'].iloc[0]:.4f}, ECE {rows['ece'].iloc[0]:.3f})")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="predicted P(click)", ylabel="observed click rate", title="Reliability (test rows)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _png(fig)


def _channel_lines(metrics: dict[str, float], channels: list[str]) -> list[str]:
    """Markdown table: each channel's catalogue coverage and its Jaccard overlap with every other channel."""
    overlap, k = {}, None
    for key, value in metrics.items():
        match = re.fullmatch(r"recall\.overlap_at_(\d+)\.(\w+)\.(\w+)", key)
        if match:
            k = int(match.group(1))
            overlap[match.group(2), match.group(3)] = overlap[match.group(3), match.group(2)] = value
    if not overlap:
        return []
    lines = [f"## Channels: catalogue coverage and overlap (Jaccard of top-{k} lists, mean over requests)", "",
             "| channel | coverage | " + " | ".join(channels) + " |", "| --- | --- |" + " --- |" * len(channels)]
    for a in channels:
        cells = ["–" if a == b else _fmt(overlap.get((a, b))) for b in channels]
        lines.append(f"| {a} | {_fmt(metrics.get(f'recall.{a}.coverage'))} | " + " | ".join(cells) + " |")
    return lines + [""]


def tradeoff_figure(tradeoff: pd.DataFrame) -> bytes:
    """PNG of the rerankers' trade-off: relevance against diversity (ILD@k) as MMR's λ and DPP's θ
    sweep, with the chain's and the ranker's own operating points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for name, rows in tradeoff[tradeoff["parameter"] != ""].groupby("reranker", sort=False):
        ax.plot(rows["ild"], rows["relevance"], marker="o", label=f"{name} ({rows['parameter'].iloc[0]})")
        for row in rows.itertuples():
            ax.annotate(f"{row.value:g}", (row.ild, row.relevance), textcoords="offset points", xytext=(4, 3), fontsize=7)
    points = tradeoff[tradeoff["parameter"] == ""]
    others = iter(["#8e44ad", "#16a085", "#d35400", "#7f8c8d"])
    for row in points.itertuples():
        ranker, chain = row.reranker == "ranker", row.reranker.startswith("chain:")
        color = "black" if ranker else "#c0392b" if chain else next(others, "#7f8c8d")
        ax.scatter([row.ild], [row.relevance], marker="s" if ranker else "*" if chain else "D", s=140 if chain else 70, zorder=3, color=color,
                   label=row.reranker)
    ax.set(xlabel="diversity: intra-list distance", ylabel=str(tradeoff["relevance_metric"].iloc[0]).replace("_", " "),
           title="Reranking: relevance against diversity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def tradeoff_lines(tradeoff: pd.DataFrame) -> list[str]:
    """Markdown section of the trade-off table."""
    metric = str(tradeoff["relevance_metric"].iloc[0])
    lines = ["", "## Reranking trade-off (same candidates)", "", f"![trade-off]({TRADEOFF_PLOT_FILE})", "",
             f"| reranker | parameter | {metric} | ILD |", "| --- | --- | --- | --- |"]
    lines += [f"| {r.reranker} | {r.parameter}{'' if r.parameter == '' else ' = ' + format(r.value, 'g')} | {_fmt(r.relevance)} | {_fmt(r.ild)} |"
              for r in tradeoff.itertuples()]
    return lines


def build_report(title: str, metrics: dict[str, float], importance: pd.DataFrame,
                 selection: pd.DataFrame | None = None, calibration: pd.DataFrame | None = None,
                 tradeoff: pd.DataFrame | None = None, protocol: str | None = None) -> tuple[str, bytes]:
    """(Markdown text, PNG bytes) for a run's metrics (under ``evaluate.protocol`` ``protocol``), the ranker's feature importance, the
    reliability of its calibrated probabilities, the rerankers' trade-off table (its figure is
    :func:`tradeoff_figure`) and, when feature selection ran, the features it dropped and why."""
    lines = [f"# {title}", "", f"![summary]({PLOT_FILE})", ""]
    if "protocol.funnel.ndcg_at_10" in metrics:  # what a user receives leads: the final lists beside the merge's and the ranker's orders
        lines += [f"## Top 10 against held-out positives ({protocol or 'time'} protocol, {int(metrics['protocol.requests'])} requests, "
                  "items the user had taken out)", "", "| lists | NDCG@10 | recall@10 | MAP@10 | true relevance@10 |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {name} | " + " | ".join(_fmt(metrics.get(f"protocol.{source}.{m}_at_10")) for m in ("ndcg", "recall", "map", "true_relevance"))
                  + " |" for name, source in (("merged candidates", "recall"), ("ranker's order", "ranker"), ("funnel's final lists", "funnel"))
                  if f"protocol.{source}.ndcg_at_10" in metrics]
        lines.append("")
    recall = recall_table(metrics)
    if len(recall):
        lines += ["## Recall (share of a test request's positives in the top K)", "",
                  "| channel | " + " | ".join(f"@{k}" for k in recall.columns) + " |",
                  "| --- |" + " --- |" * len(recall.columns)]
        lines += [f"| {name} | " + " | ".join(_fmt(v) for v in row.values) + " |" for name, row in recall.iterrows()]
        lines.append("")
    lines += _channel_lines(metrics, [name for name in recall.index if name not in ("merged", "random")])
    lines += ["## Ranking and reranking", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items()) if k.startswith(("rank.", "rerank.")) and isinstance(v, float)]
    if calibration is not None and len(calibration):
        summary = calibration.groupby("method", sort=False)[["logloss", "ece"]].first()
        lines += ["", "## Calibration: P(click) on test rows (fitted on validation rows)", "", "| method | log loss | ECE |", "| --- | --- | --- |"]
        lines += [f"| {m} | {_fmt(r.logloss)} | {_fmt(r.ece)} |" for m, r in summary.iterrows()]
    if tradeoff is not None and len(tradeoff):
        lines += tradeoff_lines(tradeoff)
    lines += ["", "## Top features (gain)", "", "| feature | share of gain |", "| --- | --- |"]
    total = max(float(importance["gain"].sum()), 1e-12)
    lines += [f"| {r.feature} | {r.gain / total:.3f} |" for r in importance.head(15).itertuples()]
    if selection is not None and len(selection):
        lines += ["", f"## Feature selection: {len(selection)} dropped", "", "| feature | reason | detail |", "| --- | --- | --- |"]
        lines += [f"| {r.feature} | {r.reason} | {r.detail} |" for r in selection.itertuples()]
    return "\n".join(lines) + "\n", _figure(metrics, importance, calibration)
