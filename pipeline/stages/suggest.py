"""The suggest stages: query suggestion fitted on the search log (``suggest``) or on query lists
without time (``suggest_queries``); the suggester is registered by the runner."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.generative.normalize import normalize_queries
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import Registration, StageInputs, StageResult, positive_events, train_end


def _gated(inputs: StageInputs, config: Config, suggester, test_queries: pd.Series, metrics: dict[str, float],
           test_start: pd.Timestamp | None, cutoff: pd.Timestamp | None) -> StageResult:
    """The suggester's result with its promotion: MRR@10 over ``test_queries``' prefixes (each query's
    mean over its prefixes is one unit) of this suggester and of the registered champion, paired, through
    ``promote.gate`` (``promote.guardrails`` apply to the funnel only). The runner registers it as
    ``rankpipe-suggest-<dataset>-<source>`` with alias champion when it passes, else challenger; its version
    becomes metric ``registered_version``. Nothing is registered when the run is not tracked or
    ``promote.enabled`` is false."""
    from rankpipe.generative.evaluate import prefix_pairs, target_ranks
    from rankpipe.generative.suggester import QuerySuggester
    from rankpipe.generative.train import sample_queries
    from rankpipe.pipeline import promotion as P
    from rankpipe.pipeline.datasets import get_adapter

    pairs = prefix_pairs(sample_queries(test_queries, config.suggest.eval_queries, config.seed))
    models = {"suggester": suggester}
    if pairs.empty or inputs.load_champion is None:
        return StageResult({}, metrics, models)

    def reciprocal_ranks(model) -> pd.Series:
        ranks = target_ranks([model.suggest(prefix, None, 10) for prefix in pairs["prefix"]], pairs["target"])
        return pd.Series(np.where(ranks > 0, 1.0 / np.maximum(ranks, 1), 0.0)).groupby(pairs["target"].to_numpy(), sort=False).mean()

    name = P.registered_name(config, "suggester")
    data = P.data_fingerprint(config, get_adapter(config.dataset.name))
    ours = reciprocal_ranks(suggester)
    champion = inputs.load_champion(name)
    theirs, comparable = None, (False, "")
    if champion is not None:
        comparable = P.comparable(champion.tags, data, test_start) if test_start is not None else \
            (champion.tags.get("data_fingerprint") == data, "the champion was fitted on other query lists or another split")
        if comparable[0]:
            theirs = pd.DataFrame({"mrr": reciprocal_ranks(QuerySuggester.load(champion.directory)).reindex(ours.index)})
    slices = pd.DataFrame({"all": np.ones(len(ours), dtype=bool)}, index=ours.index)
    comparison = P.compare(pd.DataFrame({"mrr": ours}), theirs, slices, 1, config.seed)
    decision = P.verdict(config.promote, champion, comparable, comparison, {}, {}, metric="mrr", unit="queries")
    row = comparison.iloc[0]
    metrics = {**metrics, "gate.promoted": decision.promoted, "gate.challenger_mrr_at_10": float(row["challenger"])}
    if theirs is not None:
        metrics.update({"gate.champion_mrr_at_10": float(row["champion"]), "gate.delta_ci95_low": float(row["ci_low"]),
                        "gate.delta_ci95_high": float(row["ci_high"])})
    result = StageResult({"decision": pd.DataFrame([{"model_name": name, "promoted": decision.promoted, "reason": decision.reason}])}, metrics, models)
    if config.promote.enabled:
        tags = {"dataset": config.dataset.name, "data_fingerprint": data, "train_end": str(cutoff) if cutoff is not None else "",
                "test_mrr_at_10": f"{row['challenger']:.6f}", **decision.tags()}
        result.registrations.append(Registration("suggester", name, ("suggest", "suggester"), "champion" if decision.promoted else "challenger",
                                                 tags, metric="registered_version",
                                                 description=f"rankpipe query suggester, dataset '{config.dataset.name}' (data {data}); {decision.reason}"))
    return result


def suggest(inputs: StageInputs, config: Config) -> StageResult:
    """Query suggestion from the search log: prefix completion + the character model (blend weight
    chosen on valid searches), next-query refinements from sessions and pre-search suggestions per
    user, fitted on train searches and judged on test searches; the runner registers the suggester in MLflow.

    A log without queries (MovieLens) yields no suggester and says so in its metrics.
    """
    from rankpipe.generative.sessions import NextQuerySuggester, PreSearchSuggester
    from rankpipe.generative.suggester import QuerySuggester
    from rankpipe.generative.train import fit_query_models, list_mrr, sample_queries, tune_and_judge

    requests, items = inputs.table("prepare", "requests"), inputs.table("prepare", "items")
    searches = requests[requests[S.QUERY].notna() & (requests[S.QUERY].astype("str").str.strip() != "")]
    train = searches[searches[S.SPLIT] == S.TRAIN]
    if train.empty:
        return StageResult({}, {"n_train_searches": 0})
    cfg = config.suggest
    inputs.step(f"character model, {cfg.epochs} epochs")
    prefix, lm = fit_query_models(train[S.QUERY], train[S.TS], cfg.half_life_days, cfg.epochs, cfg.dim, cfg.layers, cfg.max_len, config.seed)
    by_split = {part: searches.loc[searches[S.SPLIT] == part, S.QUERY] for part in ("valid", "test")}
    inputs.step("blend weight and held-out prefixes")
    weight, metrics = tune_and_judge(prefix, lm, by_split["valid"], by_split["test"], cfg.eval_queries, config.seed)

    next_query = NextQuerySuggester(cfg.half_life_days).fit(train)
    positive = positive_events(inputs)
    clicks = positive[positive[S.REQUEST_ID].isin(train[S.REQUEST_ID])]
    presearch = PreSearchSuggester(cfg.half_life_days).fit(train, clicks, items)
    test = searches[searches[S.SPLIT] == S.TEST].sort_values([S.SESSION_ID, S.TS], kind="stable")
    # Next query: consecutive different queries within a test session.
    following = test[S.QUERY].shift(-1)
    step = (test[S.SESSION_ID].shift(-1) == test[S.SESSION_ID]) & (following != test[S.QUERY])
    steps = sample_queries(pd.Series(np.flatnonzero(step.to_numpy())), cfg.eval_queries, config.seed)
    previous, target = test[S.QUERY].to_numpy()[steps], following.to_numpy()[steps]
    metrics.update({f"next_query.{k}": v for k, v in list_mrr([next_query.suggest(q) for q in previous], pd.Series(normalize_queries(pd.Series(target)))).items()})
    # Pre-search: each test session's first query, for the user, from her train history.
    first = test.drop_duplicates(S.SESSION_ID)
    first = first.iloc[sample_queries(pd.Series(np.arange(len(first))), cfg.eval_queries, config.seed).to_numpy()]
    targets = normalize_queries(first[S.QUERY])
    metrics.update({f"presearch.{k}": v for k, v in list_mrr([presearch.suggest(u) for u in first[S.USER_ID]], targets).items()})
    metrics.update({f"presearch_popular.{k}": v for k, v in list_mrr([presearch.suggest(None)] * len(first), targets).items()})
    suggester = QuerySuggester(prefix, lm, weight, next_query, presearch)
    metrics.update({"n_train_searches": len(train), "n_distinct_train_queries": len(prefix.counts())})
    return _gated(inputs, config, suggester, by_split["test"], metrics, test[S.TS].min(), train_end(requests))


def suggest_queries(inputs: StageInputs, config: Config) -> StageResult:
    """Query suggestion on query lists without time (WANDS, ESCI, Natural Questions): a seeded split
    of each source's distinct queries (70% train, 10% valid, 20% test); one suggester fitted on all
    sources' training queries, judged per source and overall; registered in MLflow."""
    from rankpipe.generative.evaluate import best_blend_weight, compare, pool, prefix_pairs, score_lists
    from rankpipe.generative.suggester import QuerySuggester
    from rankpipe.generative.train import fit_query_models, sample_queries

    queries = inputs.table("prepare", S.QUERIES)
    family = queries[S.SOURCE].astype("str").str.split(":").str[0]
    parts = {}
    for name in sorted(family.unique()):
        distinct = pd.Series(normalize_queries(queries.loc[family == name, S.QUERY]).unique())
        distinct = distinct[distinct != ""].reset_index(drop=True)
        order = np.random.default_rng(config.seed).permutation(len(distinct))
        n_test, n_valid = int(round(0.2 * len(distinct))), int(round(0.1 * len(distinct)))
        parts[name] = {"test": distinct.iloc[order[:n_test]], "valid": distinct.iloc[order[n_test:n_test + n_valid]],
                       "train": distinct.iloc[order[n_test + n_valid:]]}
    train = pd.concat([p["train"] for p in parts.values()], ignore_index=True)
    if train.empty:
        raise S.ContractError(S.QUERIES, S.QUERY, "non-empty queries to learn suggestions from", "none")
    cfg = config.suggest
    prefix, lm = fit_query_models(train, None, cfg.half_life_days, cfg.epochs, cfg.dim, cfg.layers, cfg.max_len, config.seed)
    valid = prefix_pairs(pd.concat([sample_queries(p["valid"], cfg.eval_queries, config.seed) for p in parts.values()], ignore_index=True))
    answered: dict = {}  # the sets share short prefixes: each is decoded once
    weight = best_blend_weight(score_lists(prefix, lm, valid, answered), valid["target"])
    judged, metrics = [], {"blend_weight": weight, "n_train_queries": len(train)}
    for name, part in parts.items():
        pairs = prefix_pairs(sample_queries(part["test"], cfg.eval_queries, config.seed))
        lists = score_lists(prefix, lm, pairs, answered)
        judged.append((lists, pairs["target"]))
        for suggester, summary in compare(lists, pairs["target"], weight).items():
            metrics.update({f"{name}.{suggester}.{k}": v for k, v in summary.items()})
    for suggester, summary in compare(*pool(judged), weight).items():
        metrics.update({f"{suggester}.{k}": v for k, v in summary.items()})
    model = QuerySuggester(prefix, lm, weight)
    return _gated(inputs, config, model, pd.concat([p["test"] for p in parts.values()], ignore_index=True), metrics, None, None)
