"""The evaluate stages: every stage's metrics on the test split, and the report."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import ID_COLUMNS, StageInputs, StageResult, item_vectors_of, positive_events, train_end
from rankpipe.pipeline.stages.truth import list_value as _list_value
from rankpipe.pipeline.stages.truth import oracle as _oracle
from rankpipe.ranking import metrics as M
from rankpipe.ranking.recall.base import without_seen
from rankpipe.ranking.rerank import RerankChain, top_by_score


def evaluate(inputs: StageInputs, config: Config) -> StageResult:
    """Metrics of every stage on the test split, keyed ``stage.metric``."""
    requests, labels, items = inputs.table("prepare", "requests"), inputs.table("prepare", "labels"), inputs.table("prepare", "items")
    test_ids = requests.loc[requests[S.SPLIT] == S.TEST, S.REQUEST_ID]
    test_labels = labels[labels[S.REQUEST_ID].isin(test_ids)]
    positives = test_labels[test_labels[S.GRADE] > 0]
    oracle = _oracle(inputs)
    out: dict[str, float] = {}

    # recall: each channel's own list and the merged list, on all positives and on cold items' (no
    # positive event in the train period: the behavioural channels cannot know them)
    logged_positives = positive_events(inputs)
    cold = S.cold_items(logged_positives[logged_positives[S.TS] < train_end(requests)], items)[S.ITEM_ID]
    cold_positives = positives[positives[S.ITEM_ID].isin(cold)]
    out["recall.cold.positive_share"] = len(cold_positives) / max(len(positives), 1)
    channels, merged = inputs.table("recall", "channels"), inputs.table("recall", "candidates")
    ks = config.evaluate.recall_ks
    for name, found in [*channels.groupby(S.CHANNEL, sort=True), (None, merged)]:
        prefix = f"recall.{name}." if name is not None else "recall."
        at, cold_at = M.recall_at_ks(found, positives, ks), M.recall_at_ks(found, cold_positives, ks)
        for k in ks:
            out[f"{prefix}recall_at_{k}"], out[f"{prefix}hit_rate_at_{k}"] = at[k]
            out[f"{prefix}cold_recall_at_{k}"] = cold_at[k][0]
        if name is not None:
            out[f"recall.{name}.coverage"] = found[S.ITEM_ID].nunique() / len(items)
    for k in ks:
        out[f"recall.random_recall_at_{k}"] = min(k / len(items), 1.0)  # expected recall of k random items
    out["recall.coverage"] = merged[S.ITEM_ID].nunique() / len(items)
    # How much the channels find the same items: a channel that mostly repeats another adds little to the merge.
    overlap_k = 100 if 100 in config.evaluate.recall_ks else max(config.evaluate.recall_ks)
    for row in M.channel_overlap(channels, overlap_k).itertuples():
        out[f"recall.overlap_at_{overlap_k}.{row.a}.{row.b}"] = row.jaccard

    # rank: re-rank the logged test lists
    logged = inputs.table("rank", "test_logged")
    groups, grades = logged[S.REQUEST_ID], logged[S.GRADE]
    out["rank.ndcg_at_10"] = M.ndcg_at_k(groups, logged[S.SCORE], grades, 10)
    out["rank.mrr"] = M.mrr(groups, logged[S.SCORE], grades)
    out["rank.auc"] = M.auc(logged[S.SCORE], grades)
    out["rank.gauc"] = M.gauc(logged[S.USER_ID], logged[S.SCORE], grades)  # per user, weighted by impressions
    out["rank.popularity_ndcg_at_10"] = M.ndcg_at_k(groups, logged["item_click_n"].fillna(0), grades, 10)
    if oracle is not None:
        # Scored against the world's true relevance (linear gain = click probability if examined),
        # free of the position bias and click noise in the logged labels.
        truth = oracle(logged)
        out["rank.oracle_ndcg_at_10"] = M.ndcg_at_k(groups, logged[S.SCORE], truth, 10, gain="linear")
        out["rank.popularity_oracle_ndcg_at_10"] = M.ndcg_at_k(groups, logged["item_click_n"].fillna(0), truth, 10, gain="linear")
        # The truth's own order scored on the logged labels: below 1 (and possibly below popularity)
        # because clicks were drawn at positions the logging policy chose.
        out["rank.truth_order_ndcg_at_10"] = M.ndcg_at_k(groups, truth, grades, 10)

    # rerank: the final lists against the rank stage's own top-k of the same candidates
    history = S.positive_history(logged_positives)
    chain = RerankChain.load(inputs.model_dir("rerank", "reranker"))
    inputs.step("final lists and the diversity trade-off")
    rerank_out, tradeoff = rerank_metrics(inputs, config, test_labels, positives, items, history, chain)
    out.update(rerank_out)

    # The literature's numbers: top 10 against held-out positives, every relevant item counted.
    inputs.step("protocols")
    protocol_out, protocol_tables = protocol_metrics(inputs, config, requests, positives, history, chain)
    out.update(protocol_out)
    inputs.step("counterfactual clicks")
    offpolicy_out, offpolicy_tables = offpolicy_metrics(inputs, config, requests, labels)
    out.update(offpolicy_out)
    return _evaluation_result(out, inputs, config, tradeoff, {**protocol_tables, **offpolicy_tables})


def offpolicy_metrics(inputs: StageInputs, config: Config, requests: pd.DataFrame, labels: pd.DataFrame) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """Counterfactual click-through of the test requests' new lists, from the logged clicks alone
    (:mod:`rankpipe.ranking.offpolicy`): the position propensities fitted on the train and valid
    requests' shown slots, then IPS, SNIPS and DR with 95% bootstrap intervals for the ranker's top
    ``rerank.k`` of each logged list (a reordering: the estimators' home ground), the funnel's final
    lists (items the log never showed for the request are the estimators' blind spot: ``covered``
    says how much of the list is not) and the logged lists themselves (IPS = the observed clicks).
    On the synthetic world each is printed beside the truth: the lists' expected clicks under the
    world's own user model. Tables ``offpolicy`` and ``propensity``; metrics ``offpolicy.<lists>.<estimator>``."""
    from rankpipe.ranking.offpolicy import NotIdentifiable, PositionClickModel, counterfactual_clicks, estimate

    shown = labels[labels[S.POSITION].notna()].merge(requests[[S.REQUEST_ID, S.QUERY, S.SPLIT]], on=S.REQUEST_ID, how="inner")
    if shown.empty:  # a log without positions (ratings, sessions): nothing was shown at a place
        return {}, {}
    shown = shown.assign(click=(shown[S.GRADE] > 0).astype(np.int8), **{S.POSITION: shown[S.POSITION].astype(np.int64)})
    try:
        model = PositionClickModel().fit(shown[shown[S.SPLIT] != S.TEST])
    except NotIdentifiable as reason:  # a diagnostic the log cannot support (a small log, a policy that never moved items): said, not fatal
        logging.getLogger(__name__).warning("evaluate: no off-policy estimates: %s", reason)
        return {}, {}
    test = shown[shown[S.SPLIT] == S.TEST]
    logged = inputs.table("rank", "test_logged")
    sources = {"ranker": top_by_score(logged[[S.REQUEST_ID, S.ITEM_ID, S.SCORE]], config.rerank.k),
               "funnel": inputs.table("rerank", "lists"), "logged": test[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]]}
    list_value = _list_value(inputs, config)
    rows, out = [], {}
    for source, lists in sources.items():
        lists = lists[lists[S.REQUEST_ID].isin(test[S.REQUEST_ID])]
        per_request = counterfactual_clicks(lists, test, model, context=S.QUERY)
        table = estimate(per_request, seed=config.seed).assign(lists=source, covered=float(per_request["covered"].mean()))
        if list_value is not None:
            truth = list_value(lists[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]])["expected_clicks"].reindex(per_request.index)
            table = table.assign(truth=float(truth.mean()), error=lambda t: t["estimate"] - t["truth"],
                                 within_ci=lambda t: (t["ci_low"] <= t["truth"]) & (t["truth"] <= t["ci_high"]))
        rows.append(table)
        for row in table.itertuples():
            out[f"offpolicy.{source}.{row.estimator}"] = row.estimate
        if list_value is not None:
            out[f"offpolicy.{source}.truth"] = float(truth.mean())
    propensity = model.examination_.rename_axis(S.POSITION).reset_index()
    if list_value is not None:
        from rankpipe.pipeline.datasets.synthetic import examination

        propensity["true_examination"] = examination(propensity[S.POSITION].to_numpy())
    return out, {"offpolicy": pd.concat(rows, ignore_index=True), "propensity": propensity}


def protocol_metrics(inputs: StageInputs, config: Config, requests: pd.DataFrame, positives: pd.DataFrame,
                     history: pd.DataFrame, chain: RerankChain) -> tuple[dict[str, float], dict[str, pd.DataFrame]]:
    """NDCG@10, recall@10 and MAP@10 (:func:`ranking.metrics.top_k_metrics`) under ``evaluate.protocol``
    of the merged candidates (``protocol.recall.*``, in merge order) and the funnel's final lists
    (``protocol.funnel.*``: ranker, then reranker), items each user already had taken out first.

    ``time``: the test requests, against their positives. ``leave_last_out`` / ``random_75_25``: one
    request per held-out user (at the held-out item's time / at the end of the log), through the
    fitted funnel (the scoring path), against the held-out items. Also returns the tables ``protocol_truth`` and ``protocol_lists``
    (request_id, item_id, rank, source) a benchmark scores other models beside. ``chain``: the
    rerank stage's fitted chain.
    """
    if config.evaluate.protocol == "time":
        asked = requests.loc[requests[S.SPLIT] == S.TEST, [S.REQUEST_ID, S.USER_ID, S.TS, S.QUERY]]
        truth = positives[[S.REQUEST_ID, S.ITEM_ID]]
        scored = inputs.table("rank", "candidates")
    else:
        from rankpipe.pipeline.stages.promote import fitted_funnel

        funnel = fitted_funnel(inputs, config)
        held_out = inputs.table("prepare", "holdout")
        # leave_last_out asks at the held-out item's own time (the user's next item, point in time);
        # random_75_25's items have no one time, so it asks at the funnel's cutoff.
        at = held_out.groupby(S.USER_ID, sort=False)[S.TS].max() if config.evaluate.protocol == "leave_last_out" else None
        users = held_out[S.USER_ID].drop_duplicates().to_numpy()
        asked = pd.DataFrame({S.REQUEST_ID: users, S.USER_ID: users, S.TS: funnel.cutoff if at is None else at.reindex(users).to_numpy(),
                              S.QUERY: pd.Series([None] * len(users), dtype="str")})
        truth = held_out.rename(columns={S.USER_ID: S.REQUEST_ID})[[S.REQUEST_ID, S.ITEM_ID]]
        scored = funnel.ranked_candidates(asked, allow_past=at is not None)
        history = funnel.history()
    unseen = without_seen(scored, asked, history)  # the exclude_seen rule: a protocol never counts what the user had
    recall_lists = unseen.sort_values([S.REQUEST_ID, S.RANK], kind="stable")  # without_seen renumbered the merge's ranks 1…
    final = chain.rerank(unseen, asked, history).rename(columns={S.POSITION: S.RANK})
    ranker_lists = top_by_score(unseen, 10).rename(columns={S.RANK: "merge_rank"}).rename(columns={S.POSITION: S.RANK})
    orders = {"recall": recall_lists[recall_lists[S.RANK] <= 10], "ranker": ranker_lists, "funnel": final}
    out: dict[str, float] = {}
    for source, lists in orders.items():
        scores = M.top_k_metrics(lists, truth, 10, group=S.REQUEST_ID)
        out.update({f"protocol.{source}.{name[:-2]}_10": value for name, value in scores.items() if name.endswith("_at_k")})
    out["protocol.requests"] = float(truth[S.REQUEST_ID].nunique())
    out.update(truth_of_orders(inputs, config, orders, asked))
    lists = pd.concat([lists[[S.REQUEST_ID, S.ITEM_ID, S.RANK]].assign(source=source) for source, lists in orders.items()], ignore_index=True)
    asked_by = asked[[S.REQUEST_ID, S.USER_ID, S.TS]].reset_index(drop=True)
    return out, {"protocol_truth": truth.reset_index(drop=True), "protocol_lists": lists, "protocol_requests": asked_by}


def truth_of_orders(inputs: StageInputs, config: Config, orders: dict[str, pd.DataFrame], asked: pd.DataFrame) -> dict[str, float]:
    """On the synthetic world, each protocol order's top 10 judged by the truth rather than by logged
    clicks, which exist only where the logging policy showed an item: ``protocol.<order>.true_relevance_at_10``
    (the mean true relevance of the listed items, each alone) and, for the run's own test requests,
    ``protocol.<order>.expected_clicks`` (the whole list under the world's user model), with the paired
    95% CI of the funnel's mean true relevance against the merge order's. Empty elsewhere."""
    oracle, list_value = _oracle(inputs), _list_value(inputs, config)
    if oracle is None:
        return {}
    out: dict[str, float] = {}
    context = asked[[S.REQUEST_ID, S.USER_ID, S.TS]].assign(**{S.QUERY: asked[S.QUERY] if S.QUERY in asked else None})
    per_request = {}
    for source, lists in orders.items():
        top = lists.loc[lists[S.RANK] <= 10, [S.REQUEST_ID, S.ITEM_ID, S.RANK]].merge(context, on=S.REQUEST_ID, how="left")
        relevance = pd.Series(oracle(top), index=top.index, dtype="float64")
        per_request[source] = relevance.groupby(top[S.REQUEST_ID].to_numpy()).mean()
        out[f"protocol.{source}.true_relevance_at_10"] = float(per_request[source].mean())
        if list_value is not None and config.evaluate.protocol == "time":
            out[f"protocol.{source}.expected_clicks"] = float(list_value(top.rename(columns={S.RANK: S.POSITION}))["expected_clicks"].mean())
    paired = pd.concat([per_request["funnel"], per_request["recall"]], axis=1, join="inner").to_numpy()
    delta, low, high = M.paired_bootstrap_ci(paired[:, 0], paired[:, 1], seed=config.seed)
    out.update({"protocol.funnel.true_relevance_delta": delta, "protocol.funnel.true_relevance_delta_ci_low": low,
                "protocol.funnel.true_relevance_delta_ci_high": high})
    return out


def _evaluation_result(metrics: dict[str, float], inputs: StageInputs, config: Config, tradeoff: pd.DataFrame | None = None,
                       extra_tables: dict[str, pd.DataFrame] | None = None) -> StageResult:
    """The evaluate stage's output: the metrics table and the report (Markdown + figure)."""
    from rankpipe.pipeline.report import PLOT_FILE, TRADEOFF_PLOT_FILE, build_report, tradeoff_figure

    metrics = {k: float(v) for k, v in metrics.items()}
    selection = inputs.table("rank", "selection")
    text, figure = build_report(f"rankpipe evaluation: {config.dataset.name}", metrics, inputs.table("rank", "importance"), selection,
                                inputs.table("rank", "calibration"), tradeoff, config.evaluate.protocol)
    table = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    files = {"report.md": text.encode(), PLOT_FILE: figure}
    tables = {"metrics": table, **(extra_tables or {})}
    if tradeoff is not None:
        files[TRADEOFF_PLOT_FILE] = tradeoff_figure(tradeoff)
        tables["tradeoff"] = tradeoff
    return StageResult(tables, {}, files=files)


def evaluate_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """NDCG@{1,3,5,10}, MRR and AUC of the ranker on the test file's lists."""
    logged = inputs.table("rank", "test_logged")
    groups, scores, grades = logged[S.REQUEST_ID], logged[S.SCORE], logged[S.GRADE]
    out = {f"rank.ndcg_at_{k}": M.ndcg_at_k(groups, scores, grades, k) for k in (1, 3, 5, 10)}
    # No users in an LTR file: GAUC is per list (query), weighted by its rows.
    out.update({"rank.mrr": M.mrr(groups, scores, grades), "rank.auc": M.auc(scores, grades), "rank.gauc": M.gauc(groups, scores, grades)})
    return _evaluation_result(out, inputs, config)


# The trade-off curve: MMR's λ and DPP's θ swept on the same candidates.
TRADEOFF_GRID = (0.0, 0.3, 0.6, 0.8, 0.9, 1.0)


def rerank_metrics(inputs: StageInputs, config: Config, test_labels: pd.DataFrame, positives: pd.DataFrame,
                   items: pd.DataFrame, history: pd.DataFrame, chain: RerankChain) -> tuple[dict[str, float], pd.DataFrame]:
    """The final lists against the ranker's own top k of the same candidates: NDCG@k on the logged
    labels, ILD, category coverage, α-NDCG; on the synthetic world their expected list value (clicks
    and purchases under the world's user model, with the paired 95% CI of the difference); PRM's
    NDCG@10 reordering the logged test lists. Also returns the trade-off table: relevance (expected
    list value, else NDCG@k) and ILD of MMR over λ and DPP over θ on the same candidates, with the
    operating points of the chain, of each of its rerankers alone (as fitted and configured) and of
    the ranker. ``chain``: the rerank stage's fitted chain."""
    from rankpipe.ranking.rerank import DPPReranker, MMRReranker, RerankData

    out: dict[str, float] = {}
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    category = items.set_index(S.ITEM_ID)[S.CATEGORY]
    k = config.rerank.k
    candidates = inputs.table("rank", "candidates")
    final = inputs.table("rerank", "lists")
    ranked = top_by_score(candidates, k)
    list_value = _list_value(inputs, config)
    oracle = _oracle(inputs)
    requests = inputs.table("prepare", "requests")
    judged_requests = positives[S.REQUEST_ID].unique()

    def logged_ndcg(lists: pd.DataFrame) -> float:
        judged = lists.merge(test_labels[[S.REQUEST_ID, S.ITEM_ID, S.GRADE]], on=ID_COLUMNS, how="left").fillna({S.GRADE: 0})
        judged = judged[judged[S.REQUEST_ID].isin(judged_requests)]
        return M.ndcg_at_k(judged[S.REQUEST_ID], -judged[S.POSITION], judged[S.GRADE], k)

    def relevance_and_ild(lists: pd.DataFrame) -> tuple[float, float]:
        """A trade-off point: (expected list value, else logged NDCG@k; ILD@k), without describe's other metrics."""
        relevance = float(list_value(lists)["expected_clicks"].mean()) if list_value is not None else logged_ndcg(lists)
        return relevance, M.intra_list_distance(lists, vectors, item_index, k)

    def describe(lists: pd.DataFrame) -> dict[str, float]:
        row = {f"ndcg_at_{k}": logged_ndcg(lists), f"ild_at_{k}": M.intra_list_distance(lists, vectors, item_index, k),
               f"category_coverage_at_{k}": M.category_coverage(lists, category, k),
               f"alpha_ndcg_at_{k}": M.alpha_ndcg_at_k(lists, positives, category, k)}
        if oracle is not None:  # the mean true relevance of the listed items, out of any list context
            context = lists[ID_COLUMNS].merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="left")
            row[f"true_relevance_at_{k}"] = float(np.nanmean(oracle(context)))
        return row

    values = {}
    for prefix, lists in (("rerank", final), ("rerank.before", ranked)):
        out.update({f"{prefix}.{name}": v for name, v in describe(lists).items()})
        if list_value is not None:
            values[prefix] = list_value(lists)
            out[f"{prefix}.expected_list_value"] = float(values[prefix]["expected_clicks"].mean())
            out[f"{prefix}.expected_purchases"] = float(values[prefix]["expected_purchases"].mean())
    if list_value is not None:
        paired = values["rerank"].join(values["rerank.before"].add_suffix("_before"), how="inner")
        delta, low, high = M.paired_bootstrap_ci(paired["expected_clicks"].to_numpy(), paired["expected_clicks_before"].to_numpy(), seed=config.seed)
        out.update({"rerank.expected_list_value_delta": delta, "rerank.expected_list_value_ci_low": low,
                    "rerank.expected_list_value_ci_high": high})

    if "prm" in chain.names:  # PRM alone, reordering the logged test lists from the ranker's order, judged on their clicks
        prm = chain.rerankers[chain.names.index("prm")]
        logged = inputs.table("rank", "test_logged")
        logged = logged[logged[S.REQUEST_ID].isin(judged_requests)]
        lists = top_by_score(logged[[S.REQUEST_ID, S.ITEM_ID, S.SCORE, S.USER_ID, S.TS, S.GRADE]])
        reordered = prm.rerank(lists, k, history)
        before = M.ndcg_per_group(lists[S.REQUEST_ID], -lists[S.POSITION], lists[S.GRADE], 10)
        after = M.ndcg_per_group(reordered[S.REQUEST_ID], -reordered[S.POSITION], reordered[S.GRADE], 10)
        # ndcg_per_group orders groups by first appearance: align both on the request ids
        before = pd.Series(before, index=pd.unique(lists[S.REQUEST_ID]))
        after = pd.Series(after, index=pd.unique(reordered[S.REQUEST_ID])).reindex(before.index)
        delta, low, high = M.paired_bootstrap_ci(after.to_numpy(), before.to_numpy(), seed=config.seed)
        out.update({"rerank.prm.logged_ndcg_at_10": float(np.nanmean(after)), "rerank.prm.ranker_logged_ndcg_at_10": float(np.nanmean(before)),
                    "rerank.prm.logged_ndcg_delta_ci_low": low, "rerank.prm.logged_ndcg_delta_ci_high": high})
        if oracle is not None:  # the same two orders judged by the world's true relevance instead of the logged clicks
            for name, frame in (("logged_oracle_ndcg_at_10", reordered), ("ranker_logged_oracle_ndcg_at_10", lists)):
                context = frame[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]].merge(logged[[S.REQUEST_ID, S.ITEM_ID, S.USER_ID, S.QUERY, S.TS]],
                                                                           on=ID_COLUMNS, how="left")
                out[f"rerank.prm.{name}"] = M.ndcg_at_k(context[S.REQUEST_ID], -context[S.POSITION], oracle(context), 10, gain="linear")

    # The trade-off curve: relevance (expected list value, else logged NDCG@k) against diversity (ILD) over λ / θ.
    pool = top_by_score(candidates, config.rerank.pool)
    rows = []
    catalogue = RerankData(items, item_index, vectors)
    for fitted, parameter in ((MMRReranker().fit(catalogue), "relevance_weight"),
                              (DPPReranker(similarity=config.rerank.dpp.similarity).fit(catalogue), "theta")):
        for value in TRADEOFF_GRID:
            setattr(fitted, parameter, value)
            lists = fitted.rerank(pool, k)
            relevance, ild = relevance_and_ild(lists[lists[S.POSITION] <= k])
            rows.append({"reranker": fitted.name, "parameter": parameter, "value": value, "relevance": relevance, "ild": ild})
    if len(chain.names) > 1:  # each fitted member of the chain alone, as configured: where each one stands
        for reranker in chain.rerankers:
            relevance, ild = relevance_and_ild(RerankChain([reranker], chain.pool, k).rerank(candidates, requests, history))
            rows.append({"reranker": f"{reranker.name} alone", "parameter": "", "value": np.nan, "relevance": relevance, "ild": ild})
    final_relevance = out.get("rerank.expected_list_value", out[f"rerank.ndcg_at_{k}"])
    rows.append({"reranker": "chain:" + "+".join(chain.names) if chain.names else "ranker", "parameter": "", "value": np.nan,
                 "relevance": final_relevance, "ild": out[f"rerank.ild_at_{k}"]})
    rows.append({"reranker": "ranker", "parameter": "", "value": np.nan, "relevance": out.get("rerank.before.expected_list_value",
                 out[f"rerank.before.ndcg_at_{k}"]), "ild": out[f"rerank.before.ild_at_{k}"]})
    tradeoff = pd.DataFrame(rows).assign(relevance_metric="expected_list_value" if list_value is not None else f"ndcg_at_{k}")
    return out, tradeoff

