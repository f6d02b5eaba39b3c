"""The promote stages: the challenger (this run's funnel) against the registered champion on the same
test requests, by slice and with paired CIs (:mod:`rankpipe.pipeline.comparison`), the gate
(:mod:`rankpipe.pipeline.promotion`), and the fitted funnel (or, for a ready feature table, the
ranker) handed to the runner to register with the decision as tags."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.pipeline import comparison as C
from rankpipe.pipeline import promotion as P
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config, to_dict
from rankpipe.pipeline.stages.base import Champion, Registration, StageInputs, StageResult, positive_events, recall_depth, train_end
from rankpipe.ranking.funnel import Funnel
from rankpipe.ranking.rankers import load_ranker
from rankpipe.ranking.recall import load_channel
from rankpipe.ranking.recall.merge import CandidateMerge
from rankpipe.ranking.rerank import RerankChain

# Requests the challenger's funnel scores twice, in two orders, for the row-order invariance check.
INVARIANCE_REQUESTS = 200


def fitted_funnel(inputs: StageInputs, config: Config) -> Funnel:
    """The run's whole fitted funnel, read back from its stages' files: every channel, the merge, the
    feature builder, the ranker and its calibrator, the reranker."""
    return Funnel({channel: load_channel(inputs.model_dir("recall", f"channel_{channel}"), config.device) for channel in config.recall.quotas},
                  CandidateMerge.load(inputs.model_dir("recall", "merge")), FeatureBuilder.load(inputs.model_dir("features", "builder")),
                  load_ranker(inputs.model_dir("rank", "ranker")), RerankChain.load(inputs.model_dir("rerank", "reranker")),
                  depth=recall_depth(config), n_last=config.recall.item2vec.history, config=to_dict(config),
                  exclude_seen=config.recall.exclude_seen)


def _champion(inputs: StageInputs, name: str) -> Champion | None:
    if inputs.load_champion is None:
        raise RuntimeError("the promote stage needs the model registry (MLflow tracking); run with tracking enabled or stop at 'evaluate'")
    return inputs.load_champion(name)


def stage_result(config: Config, name: str, decision: P.Decision, comparison: pd.DataFrame, champion: Champion | None,
                  tables: dict[str, pd.DataFrame], tags: dict[str, str], kind: str, model: tuple[str, str], models: dict | None = None) -> StageResult:
    """Metrics, tables and the registration (none when ``promote.enabled`` is false) of a judged challenger."""
    metric = config.promote.metric
    overall = comparison[comparison["slice"] == "all"].set_index("metric") if len(comparison) else pd.DataFrame()
    metrics: dict = {"promoted": decision.promoted}
    if metric in overall.index:
        row = overall.loc[metric]
        metrics[f"challenger_{metric}"] = float(row["challenger"])
        if "delta" in row and np.isfinite(row.get("delta", np.nan)):
            metrics.update({f"champion_{metric}": float(row["champion"]), f"delta_{metric}": float(row["delta"]),
                            "delta_ci95_low": float(row["ci_low"]), "delta_ci95_high": float(row["ci_high"]),
                            "slices_worse": float(comparison["worse"].sum())})
    if champion is not None:
        metrics["champion_version"] = float(champion.version)
    decision_table = pd.DataFrame([{"model_name": name, "gate": config.promote.gate, "metric": metric, "rule": decision.rule,
                                    "promoted": decision.promoted, "reason": decision.reason,
                                    "champion_version": champion.version if champion is not None else None,
                                    "enabled": config.promote.enabled}])
    checks = pd.DataFrame(decision.checks, columns=["check", "value", "bound", "passed"]) if decision.checks else \
        pd.DataFrame({"check": pd.Series(dtype="str"), "value": pd.Series(dtype="float64"), "bound": pd.Series(dtype="float64"),
                      "passed": pd.Series(dtype="bool")})
    out = StageResult({"decision": decision_table, "checks": checks, "comparison": comparison, **tables}, metrics, models or {})
    if config.promote.enabled:
        description = (f"rankpipe {kind} trained on dataset '{config.dataset.name}' (data {tags['data_fingerprint']}, training up to "
                       f"{tags['train_end']}); {decision.reason}")
        out.registrations.append(Registration(kind, name, model, "champion" if decision.promoted else "challenger",
                                              {**tags, **decision.tags()}, metric="version", description=description[:4000]))
    return out


def version_tags(config: Config, data: str, cutoff: pd.Timestamp, comparison: pd.DataFrame) -> dict[str, str]:
    overall = comparison[comparison["slice"] == "all"] if len(comparison) else comparison
    tags = {"dataset": config.dataset.name, "data_fingerprint": data, "source": P.source_fingerprint(config), "train_end": str(cutoff)}
    tags.update({f"test_{r.metric}": f"{r.challenger:.6f}" for r in overall.itertuples()})
    return tags


def promote(inputs: StageInputs, config: Config) -> StageResult:
    """Judge this run's funnel against the registered champion's on the same sample of test requests
    (``promote.compare_requests``): both funnels score the requests (lists) and their logged lists
    (the ranker's order), and every per-request metric is compared overall and per slice with a
    paired bootstrap 95% CI; the gate (``promote.gate`` and ``promote.guardrails``) decides. The
    whole fitted funnel is then registered as ``rankpipe-<dataset>-<source>`` (alias ``champion`` if
    promoted, else ``challenger``) with the decision as tags; its version becomes metric ``version``.

    Tables: ``decision``, ``checks`` (each rule with its value and bound), ``comparison`` (slice ×
    metric), ``list_checks`` (challenger and champion: coverage, ECE, popularity bias, cold share,
    near-duplicates, row-order invariance).
    """
    from rankpipe.pipeline.datasets import get_adapter
    from rankpipe.pipeline.stages.truth import list_value as list_value_of
    from rankpipe.pipeline.stages.truth import oracle as oracle_of

    name = P.registered_name(config)
    requests, labels, items = inputs.table("prepare", "requests"), inputs.table("prepare", "labels"), inputs.table("prepare", "items")
    test = requests[requests[S.SPLIT] == S.TEST]
    sample = test.sample(n=min(config.promote.compare_requests, len(test)), random_state=config.seed).sort_values(S.TS, kind="stable")
    index = pd.Index(sample[S.REQUEST_ID])
    context = sample[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]]
    shown = labels[labels[S.REQUEST_ID].isin(index)][[S.REQUEST_ID, S.ITEM_ID, S.GRADE]].merge(context, on=S.REQUEST_ID, how="inner")
    scored = inputs.table("rank", "test_logged")
    columns = [S.REQUEST_ID, S.ITEM_ID, S.SCORE] + ([S.PROBABILITY] if S.PROBABILITY in scored else [])
    logged = shown.merge(scored[columns], on=[S.REQUEST_ID, S.ITEM_ID], how="inner")
    lists = inputs.table("rerank", "lists")
    lists = lists[lists[S.REQUEST_ID].isin(index)].rename(columns={S.POSITION: S.RANK})
    history = positive_events(inputs)
    cutoff = train_end(requests)
    train_positives = history[history[S.TS] < cutoff]
    buckets = C.item_buckets(train_positives, items)
    popularity = train_positives[S.ITEM_ID].value_counts()
    oracle, list_value = oracle_of(inputs), list_value_of(inputs, config)
    users = inputs.optional_table("prepare", S.USERS)
    slices = C.request_slices(sample, S.positive_history(history), users, config.promote.min_slice_requests)

    challenger = C.request_metrics(index, logged, lists, buckets, oracle, list_value)
    challenger_set = C.list_checks(lists, logged, items, buckets, popularity)
    funnel = fitted_funnel(inputs, config)
    challenger_set.update(_invariance(funnel, context, lists))
    data = P.data_fingerprint(config, get_adapter(config.dataset.name))
    champion = _champion(inputs, name)
    champion_metrics, champion_set, comparable = None, {}, (False, "")
    if champion is not None:
        comparable = P.comparable(champion.tags, data, test[S.TS].min())
        if comparable[0]:
            their_funnel = Funnel.load(champion.directory, config.device)
            their_lists, their_scores = their_funnel.score_with_logged(context, logged)
            their_logged = logged.drop(columns=[c for c in (S.SCORE, S.PROBABILITY) if c in logged]).merge(
                their_scores[[S.REQUEST_ID, S.ITEM_ID, S.SCORE, *([S.PROBABILITY] if S.PROBABILITY in their_scores else [])]],
                on=[S.REQUEST_ID, S.ITEM_ID], how="left")
            champion_metrics = C.request_metrics(index, their_logged, their_lists, buckets, oracle, list_value)
            champion_set = C.list_checks(their_lists, their_logged, items, buckets, popularity)
    comparison = P.compare(challenger, champion_metrics, slices, config.promote.min_slice_requests, config.seed)
    decision = P.verdict(config.promote, champion, comparable, comparison, challenger_set, champion_set)
    list_table = pd.DataFrame([{"funnel": "challenger", **challenger_set}] + ([{"funnel": "champion", **champion_set}] if champion_set else []))
    tags = version_tags(config, data, cutoff, comparison)
    return stage_result(config, name, decision, comparison, champion, {"list_checks": list_table}, tags, "funnel", ("promote", "funnel"),
                         {"funnel": funnel})


def _invariance(funnel: Funnel, requests: pd.DataFrame, stage_lists: pd.DataFrame) -> dict[str, float]:
    """Row-order invariance: the share of lists that come out the same when the same requests are
    scored in reverse order, the share equal to the rerank stage's own (one code path), and the
    scoring latency (milliseconds per request, in one batch of them)."""
    import time

    part = requests.head(INVARIANCE_REQUESTS)
    started = time.perf_counter()
    forward = funnel.score(part, allow_past=True)
    latency = (time.perf_counter() - started) * 1000 / max(len(part), 1)
    backward = funnel.score(part.iloc[::-1], allow_past=True)

    def keyed(frame: pd.DataFrame) -> pd.Series:
        ordered = frame.sort_values([S.REQUEST_ID, S.RANK], kind="stable")
        return ordered.groupby(S.REQUEST_ID, sort=True)[S.ITEM_ID].agg(tuple)

    ours = keyed(forward)
    same_order = (ours == keyed(backward).reindex(ours.index)).mean()
    same_stage = (ours == keyed(stage_lists[stage_lists[S.REQUEST_ID].isin(part[S.REQUEST_ID])]).reindex(ours.index)).mean()
    return {"order_invariance": float(same_order), "stage_consistency": float(same_stage), "scoring_ms_per_request": latency}


def promote_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """:func:`promote` for a ready feature table: no recall, lists or slices, so the ranker alone is
    judged (NDCG@10 and MRR of the test file's lists, paired with the champion ranker's on the same
    rows) and registered (served by ``rankpipe.ranking.registry_model``)."""
    from rankpipe.pipeline.datasets import get_adapter

    name = P.registered_name(config)
    logged = inputs.table("rank", "test_logged")
    index = pd.Index(pd.unique(logged[S.REQUEST_ID]))
    challenger = pd.DataFrame(C.ranker_metrics(index, logged), index=index)
    data = P.data_fingerprint(config, get_adapter(config.dataset.name))
    champion = _champion(inputs, name)
    champion_metrics, comparable = None, (False, "")
    if champion is not None:
        comparable = (champion.tags.get("data_fingerprint") == data, "the champion was trained on another file or split")
        if comparable[0]:
            ranker = load_ranker(champion.directory)
            missing = [c for c in ranker.feature_names_ if c not in logged.columns]
            if missing:
                comparable = (False, f"the champion reads features {missing[:3]} this file does not have")
            else:
                theirs = logged.assign(**{S.SCORE: ranker.predict(logged)})
                champion_metrics = pd.DataFrame(C.ranker_metrics(index, theirs), index=index)
    slices = pd.DataFrame({"all": np.ones(len(index), dtype=bool)}, index=index)
    comparison = P.compare(challenger, champion_metrics, slices, 1, config.seed)
    decision = P.verdict(config.promote, champion, comparable, comparison, {}, {})
    tags = version_tags(config, data, pd.NaT, comparison)
    return stage_result(config, name, decision, comparison, champion, {}, tags, "ranker", ("rank", "ranker"))
