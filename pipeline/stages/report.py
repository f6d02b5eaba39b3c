"""The report stage: the run's self-contained HTML report (:mod:`rankpipe.pipeline.report_html`) from
what evaluate and promote wrote, with the trend of the dataset's last runs from MLflow."""

from __future__ import annotations

import pandas as pd

from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import StageInputs, StageResult

REPORT_FILE = "report.html"
# The headline metrics: the trend plot's lines and what the CLI prints at the end. The final lists
# under the run's protocol lead (what a user receives, beside the merge's own order); the logged-list
# NDCG stays as a diagnostic.
HEADLINE = ("protocol.funnel.ndcg_at_10", "protocol.recall.ndcg_at_10", "protocol.funnel.recall_at_10", "protocol.funnel.map_at_10",
            "protocol.funnel.true_relevance_at_10", "rank.ndcg_at_10", "rank.oracle_ndcg_at_10", "recall.recall_at_100", "rerank.ndcg_at_10",
            "rerank.expected_list_value")
# The funnel table's rows, in this order of prefixes: the protocol's orders first.
FUNNEL_PREFIXES = ("protocol.", "recall.recall_at_", "recall.coverage", "rank.ndcg_at_10", "rank.oracle_ndcg_at_10", "rank.auc", "rank.gauc",
                   "rank.mrr", "rank.ece_", "rank.logloss_", "rerank.ndcg_at_", "rerank.ild_at_", "rerank.expected_list_value",
                   "rerank.alpha_ndcg", "rerank.category_coverage")


def _file(inputs: StageInputs, stage: str, name: str) -> bytes | None:
    try:
        path = inputs.model_dir(stage, name)
    except KeyError:  # an in-memory run keeps no files
        return None
    return path.read_bytes() if path.exists() else None


def build(inputs: StageInputs, config: Config, trend: pd.DataFrame | None) -> str:
    """The HTML page of a run whose evaluate and promote stages are done."""
    from rankpipe.pipeline.report import PLOT_FILE, TRADEOFF_PLOT_FILE
    from rankpipe.pipeline.report_html import build_html

    metrics = inputs.table("evaluate", "metrics")
    first = {prefix: place for place, prefix in enumerate(FUNNEL_PREFIXES)}
    place = metrics["metric"].map(lambda name: next((first[p] for p in FUNNEL_PREFIXES if name.startswith(p)), None))
    funnel = metrics[place.notna()].assign(_place=place).sort_values("_place", kind="stable").drop(columns="_place").reset_index(drop=True)
    checks = inputs.optional_table("promote", "list_checks")
    if checks is not None and "scoring_ms_per_request" in checks:
        funnel = pd.concat([funnel, pd.DataFrame({"metric": ["scoring ms per request (challenger)"],
                                                  "value": [float(checks["scoring_ms_per_request"].iloc[0])]})], ignore_index=True)
    markdown = (_file(inputs, "evaluate", "report.md") or b"").decode()
    table = inputs.optional_table
    return build_html(f"rankpipe report: {config.dataset.name}", table("promote", "decision"), table("promote", "checks"),
                      table("promote", "comparison"), checks, table("evaluate", "offpolicy"), table("evaluate", "propensity"), funnel,
                      trend, HEADLINE, _file(inputs, "evaluate", PLOT_FILE), _file(inputs, "evaluate", TRADEOFF_PLOT_FILE), markdown,
                      config.promote.metric)


def report(inputs: StageInputs, config: Config) -> StageResult:
    """Write ``report.html``: decision, flagged slices, challenger against champion with paired CIs,
    slices, the funnel's numbers and plots, counterfactual click-through, behaviour checks, the
    trend of this dataset's last ``evaluate.trend_runs`` runs, and the Markdown evaluation."""
    trend = None
    if inputs.load_history is not None:
        trend = inputs.load_history(config.dataset.name, HEADLINE, config.evaluate.trend_runs)
        current = inputs.table("evaluate", "metrics").set_index("metric")["value"]
        trend = pd.concat([trend, pd.DataFrame([{"run_id": "this run", **{m: current.get(m) for m in HEADLINE}}])], ignore_index=True)
    text = build(inputs, config, trend)
    return StageResult({}, {"bytes": float(len(text))}, files={REPORT_FILE: text.encode()})
