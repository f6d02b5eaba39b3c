"""Fitting and judging the suggestion models from a query log: what the pipeline's suggest stages
and ``benchmarks/bench_suggest.py`` share."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.generative.charlm import CharLM, CharLMConfig
from rankpipe.generative.evaluate import best_blend_weight, compare, prefix_pairs, score_lists
from rankpipe.generative.prefix import PrefixCompleter


def fit_query_models(queries: pd.Series, ts: pd.Series | None, half_life_days: float = 14.0, epochs: int = 10, dim: int = 128,
                     layers: int = 3, max_len: int = 64, seed: int = 42, progress: bool = True) -> tuple[PrefixCompleter, CharLM]:
    """The prefix completer on the log (decayed counts) and the character model on its distinct
    queries, each drawn in proportion to its decayed count: a log repeats its head queries
    thousands of times, and epochs over the raw rows would spend most steps on them."""
    prefix = PrefixCompleter(half_life_days).fit(queries, ts)
    counts = prefix.counts()
    lm = CharLM(CharLMConfig(dim=dim, layers=layers, max_len=max_len), epochs=epochs, seed=seed, progress=progress)
    return prefix, lm.fit(counts["query"], counts["weight"].to_numpy())


def sample_queries(queries: pd.Series, n: int, seed: int) -> pd.Series:
    """At most ``n`` of the queries (seeded), index reset."""
    queries = pd.Series(queries).reset_index(drop=True)
    return queries.sample(n=n, random_state=seed).reset_index(drop=True) if len(queries) > n else queries


def tune_and_judge(prefix: PrefixCompleter, lm: CharLM, valid: pd.Series, test: pd.Series, n: int, seed: int) -> tuple[float, dict[str, float]]:
    """The blend weight chosen on ``valid`` queries' prefixes, and flat metrics
    ``<prefix|generative|blended>.<metric>`` on ``test`` queries' prefixes (at most ``n`` queries each)."""
    answered: dict = {}  # the valid and test queries share their short prefixes: each is decoded once
    valid_pairs = prefix_pairs(sample_queries(valid, n, seed))
    weight = best_blend_weight(score_lists(prefix, lm, valid_pairs, answered), valid_pairs["target"]) if len(valid_pairs) else 0.0
    test_pairs = prefix_pairs(sample_queries(test, n, seed))
    if not len(test_pairs):
        return weight, {}
    summaries = compare(score_lists(prefix, lm, test_pairs, answered), test_pairs["target"], weight)
    metrics = {f"{name}.{key}": value for name, summary in summaries.items() for key, value in summary.items()}
    return weight, {**metrics, "blend_weight": weight}


def list_mrr(lists: list[list[tuple[str, float]]], targets: pd.Series, k: int = 10) -> dict[str, float]:
    """MRR@k and success@k of one list per target."""
    from rankpipe.generative.evaluate import target_ranks

    ranks = target_ranks(lists, targets)
    hit = (ranks > 0) & (ranks <= k)
    return {"mrr": float(np.where(hit, 1.0 / np.maximum(ranks, 1), 0.0).mean()) if len(ranks) else float("nan"),
            f"success_at_{k}": float(hit.mean()) if len(ranks) else float("nan"), "pairs": int(len(ranks))}
