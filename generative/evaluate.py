"""Offline evaluation of suggesters: held-out (prefix, intended query) pairs at every prefix length.

For each held-out query, every prefix of it (1 character up to the whole query) is a request
whose intended query is the query itself. A suggester's list is judged by the rank of that query:
MRR@10 and success@k (the query in the top k), over all pairs and split by whether the prefix
was *seen* (some training query starts with it) or not, where only generalization can help.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import pandas as pd

from rankpipe.generative.normalize import normalize_queries

K = 10


def prefix_pairs(queries: pd.Series) -> pd.DataFrame:
    """(prefix, target) for every prefix length of every (normalized, non-empty) query, in query order."""
    targets = normalize_queries(pd.Series(queries).reset_index(drop=True))
    targets = targets[targets != ""]
    lengths = targets.str.len().to_numpy()
    target = np.repeat(targets.to_numpy(dtype=object), lengths)
    cut = np.concatenate([np.arange(1, n + 1) for n in lengths]) if len(lengths) else np.zeros(0, dtype=int)
    prefix = pd.Series([t[:c] for t, c in zip(target, cut)], dtype=object)  # pandas has no per-row slice length
    return pd.DataFrame({"prefix": prefix, "target": target, "length": cut})


def run_suggester(suggest: Callable[[str, int], list[tuple[str, float]]], prefixes: pd.Series, k: int = K,
                  answered: dict | None = None, suggest_many: Callable[[list[str], int], list[list[tuple[str, float]]]] | None = None,
                  timed: int = 150, seed: int = 0) -> tuple[list[list[tuple[str, float]]], np.ndarray]:
    """(each prefix's suggestions as (query, score), each call's latency in ms): one call per
    distinct prefix, timed as a suggestion service answers one request at a time.

    Suggesters are deterministic, so a prefix that several held-out queries share ("r", "re", "red"
    of every query starting with "red") is answered once and its list and latency stand for each of
    its pairs: the latency distribution over pairs is the one a service would see, without decoding
    the same prefix again (on the default world's log, most pairs repeat a prefix). ``answered``
    (prefix → (list, ms), filled here) carries that across calls: the validation and test pairs of
    one evaluation share their short prefixes.

    With ``suggest_many`` (the same suggester over a list of prefixes at once, e.g.
    :meth:`~rankpipe.generative.charlm.CharLM.suggest_many`: 2-3x cheaper per prefix for the
    character model) the lists come from it, and latency is still that of single ``suggest``
    calls, timed on ``timed`` of the new distinct prefixes drawn at random (``seed``); the others'
    latency is NaN, which :func:`summarize` leaves out of the percentiles.
    """
    prefixes = pd.Series(prefixes).reset_index(drop=True)
    codes, distinct = pd.factorize(prefixes)
    answered = {} if answered is None else answered
    new = [prefix for prefix in distinct if prefix not in answered]
    if suggest_many is not None and new:
        clocked = set(np.random.default_rng(seed).choice(len(new), size=min(timed, len(new)), replace=False).tolist())
        for i, (prefix, found) in enumerate(zip(new, suggest_many(new, k))):
            ms = float("nan")
            if i in clocked:
                started = time.perf_counter()
                suggest(prefix, k)
                ms = (time.perf_counter() - started) * 1000
            answered[prefix] = (found, ms)
    else:
        for prefix in new:
            started = time.perf_counter()
            found = suggest(prefix, k)
            answered[prefix] = (found, (time.perf_counter() - started) * 1000)
    lists, ms = [answered[prefix][0] for prefix in distinct], np.array([answered[prefix][1] for prefix in distinct], dtype=np.float64)
    return [lists[c] for c in codes], ms[codes]


def target_ranks(lists: list[list[tuple[str, float]]], targets: pd.Series) -> np.ndarray:
    """1-based rank of each target among its list's queries; 0 when absent."""
    out = np.zeros(len(lists), dtype=np.int64)
    for i, (items, target) in enumerate(zip(lists, targets)):
        for rank, (query, _) in enumerate(items, start=1):
            if query == target:
                out[i] = rank
                break
    return out


def summarize(ranks: np.ndarray, seen: np.ndarray, ms: np.ndarray | None = None, k: int = K) -> dict[str, float]:
    """MRR@k and success@1/3/k over all pairs and the seen / unseen ones, pair counts, and latency percentiles."""
    ranks, seen = np.asarray(ranks), np.asarray(seen, dtype=bool)
    rr = np.where((ranks > 0) & (ranks <= k), 1.0 / np.maximum(ranks, 1), 0.0)
    out: dict[str, float] = {}
    for name, mask in (("all", np.ones_like(seen)), ("seen", seen), ("unseen", ~seen)):
        out[f"pairs_{name}"] = int(mask.sum())
        out[f"mrr_{name}"] = float(rr[mask].mean()) if mask.any() else float("nan")
        for at in (1, 3, k):
            out[f"success_at_{at}_{name}"] = float(((ranks > 0) & (ranks <= at))[mask].mean()) if mask.any() else float("nan")
    ms = None if ms is None else np.asarray(ms, dtype=np.float64)[np.isfinite(ms)]  # NaN: a list not timed (see run_suggester)
    if ms is not None and len(ms):
        out.update({f"p{q}_ms": float(np.percentile(ms, q)) for q in (50, 95, 99)})
    return out


# ------------------------------------------------------------------ prefix completer vs model vs blend
BLEND_GRID = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def score_lists(prefix_model, lm, pairs: pd.DataFrame, answered: dict | None = None) -> dict:
    """Both suggesters' lists and latencies on the pairs, and which prefixes the prefix index has seen.
    ``answered``: a dict that several calls on the same two models share, so that each of them
    answers a prefix once (see :func:`run_suggester`)."""
    answered = {} if answered is None else answered
    return {"prefix": run_suggester(prefix_model.suggest, pairs["prefix"], answered=answered.setdefault("prefix", {})),
            "generative": run_suggester(lm.suggest, pairs["prefix"], answered=answered.setdefault("generative", {}),
                                        suggest_many=getattr(lm, "suggest_many", None)),
            "seen": np.array([prefix_model.seen(p) for p in pairs["prefix"]], dtype=bool)}


def blended_lists(lists: dict, weight: float) -> tuple[list, np.ndarray]:
    """The blend's lists (``weight`` on the model) and latency: both suggesters' calls plus the merge."""
    from rankpipe.generative.blend import blend_lists

    out, ms = [], lists["prefix"][1] + lists["generative"][1]
    for i, (a, b) in enumerate(zip(lists["prefix"][0], lists["generative"][0])):
        started = time.perf_counter()
        out.append(blend_lists([a, b], [1 - weight, weight]))
        ms[i] += (time.perf_counter() - started) * 1000
    return out, ms


def best_blend_weight(lists: dict, targets: pd.Series, grid: tuple[float, ...] = BLEND_GRID) -> float:
    """The weight on the model with the best MRR@10 on (validation) pairs; ties go to the smaller weight."""
    mrr = {w: summarize(target_ranks(blended_lists(lists, w)[0], targets), lists["seen"])["mrr_all"] for w in grid}
    return max(grid, key=lambda w: (round(mrr[w], 6), -w))


def compare(lists: dict, targets: pd.Series, weight: float) -> dict[str, dict[str, float]]:
    """:func:`summarize` of the prefix completer, the model and their blend at ``weight``."""
    return {name: summarize(target_ranks(items, targets), lists["seen"], ms)
            for name, (items, ms) in (("prefix", lists["prefix"]), ("generative", lists["generative"]), ("blended", blended_lists(lists, weight)))}


def pool(parts: list[tuple[dict, pd.Series]]) -> tuple[dict, pd.Series]:
    """Several sets' (lists, targets) as one."""
    lists = {key: ([x for p, _ in parts for x in p[key][0]], np.concatenate([p[key][1] for p, _ in parts])) for key in ("prefix", "generative")}
    lists["seen"] = np.concatenate([p["seen"] for p, _ in parts])
    return lists, pd.concat([t for _, t in parts], ignore_index=True)
