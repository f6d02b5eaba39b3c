"""Query suggestion: prefix completion (with the rare-prefix suffix fallback), the character
transformer, and their blend, on real query lists and on the default world's query log.

- Real sets (``<data>/queries``: WANDS, ESCI, Natural Questions): distinct normalized queries,
  a random split per set (the lists carry no time): 70% train, 10% valid (the blend weight), 20%
  test. Both suggesters are fitted on the union of the three sets' training queries, as one search
  box's log, and judged per set on its test queries (at most ``--max-queries`` per set).
- The default world (``--world-sessions``): the query log split in time (last 20% test, the 10%
  before it valid); pairs come from searches of those periods (popular queries repeat, so most
  prefixes are seen).

Every prefix length of every held-out query is a (prefix, intended query) pair; MRR@10 and
success@k over all pairs and over prefixes seen / unseen in training; latency per call in ms, one
thread (a suggestion service answers one request at a time; the blend's latency is both calls plus
the merge). The LAST line is one JSON object over the real sets' pairs together:
``mrr_unseen_generative``, ``mrr_unseen_prefix``, ``mrr_all_blended``, ``mrr_all_prefix``,
``p99_ms_prefix``, ``p99_ms_generative``.

Usage: python benchmarks/bench_suggest.py [--max-queries 150] [--epochs 20] [--data DIR] [--quick]
  --quick: 20 test queries per set, a one-layer 32-wide model for one epoch, a 3,000-session world (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rankpipe.generative.charlm import CharLM, CharLMConfig  # noqa: E402
from rankpipe.generative.evaluate import best_blend_weight, compare, pool, prefix_pairs, score_lists  # noqa: E402
from rankpipe.generative.normalize import normalize_queries  # noqa: E402
from rankpipe.generative.prefix import PrefixCompleter  # noqa: E402
from rankpipe.pipeline.datasets import shared_data_dir  # noqa: E402


def real_sets(directory: Path) -> dict[str, pd.Series]:
    """Distinct normalized queries of each real list: wands, esci, nq."""
    from rankpipe.pipeline.config import DatasetConfig
    from rankpipe.pipeline.datasets.queries import QueriesAdapter

    queries = QueriesAdapter().load(DatasetConfig(name="queries", path=str(directory)), seed=0).tables["queries"]
    family = queries["source"].str.split(":").str[0]
    out = {}
    for name in ("wands", "esci", "nq"):
        normalized = normalize_queries(queries.loc[family == name, "query"])
        out[name] = pd.Series(normalized[normalized != ""].unique())
    return out


def three_way(queries: pd.Series, seed: int) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(train 70%, valid 10%, test 20%) by a seeded permutation."""
    order = np.random.default_rng(seed).permutation(len(queries))
    n_test, n_valid = int(round(0.2 * len(queries))), int(round(0.1 * len(queries)))
    pick = lambda rows: queries.iloc[rows].reset_index(drop=True)  # noqa: E731
    return pick(order[n_test + n_valid:]), pick(order[n_test:n_test + n_valid]), pick(order[:n_test])


def world_log(n_sessions: int) -> pd.DataFrame:
    """The synthetic world's searches: query, ts, split (time: train 70%, valid 10%, test 20%)."""
    from rankpipe.pipeline import schema as S
    from rankpipe.pipeline.config import SyntheticConfig
    from rankpipe.pipeline.datasets.synthetic import generate

    events = generate(SyntheticConfig(n_sessions=n_sessions), seed=42).events
    searches = events.dropna(subset=[S.QUERY]).drop_duplicates(S.REQUEST_ID).sort_values(S.TS, kind="stable")
    cut = searches[S.TS].quantile([0.7, 0.8]).to_numpy()
    split = np.where(searches[S.TS] < cut[0], "train", np.where(searches[S.TS] < cut[1], "valid", "test"))
    return pd.DataFrame({"query": searches[S.QUERY].to_numpy(), "ts": searches[S.TS].to_numpy(), "split": split})


def report(name: str, lists: dict, targets: pd.Series, weight: float) -> dict[str, dict]:
    """Print and return each suggester's summary on one set."""
    out = compare(lists, targets, weight)
    for suggester, s in out.items():
        print(f"  {name:<6} {suggester:<10} MRR@10 all {s['mrr_all']:.4f} seen {s['mrr_seen']:.4f} unseen {s['mrr_unseen']:.4f} | "
              f"success@1/3/10 {s['success_at_1_all']:.3f}/{s['success_at_3_all']:.3f}/{s['success_at_10_all']:.3f} | "
              f"p50 {s['p50_ms']:.2f} p95 {s['p95_ms']:.2f} p99 {s['p99_ms']:.2f} ms | pairs {s['pairs_seen']} seen / {s['pairs_unseen']} unseen")
    return out


def fit_lm(queries: pd.Series, args, weights: np.ndarray | None = None) -> CharLM:
    started = time.perf_counter()
    config = CharLMConfig(dim=args.dim, layers=args.layers, heads=4, max_len=args.max_len)
    lm = CharLM(config, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, progress=False).fit(queries, weights)
    print(f"  char transformer: {sum(p.numel() for p in lm.model_.parameters()):,} weights, {len(lm.chars_)} characters, "
          f"{args.epochs} epochs in {time.perf_counter() - started:.0f} s, last epoch loss {lm.losses_[-1]:.3f}")
    return lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data directory (default ../shared/data)")
    parser.add_argument("--max-queries", type=int, default=150, help="test queries per set (every prefix of each is a pair)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--world-sessions", type=int, default=40000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-lm", type=Path, help="save the real lists' character model here (to time decoding again without retraining)")
    parser.add_argument("--lm", type=Path, help="load the real lists' character model saved by --save-lm with the same --seed")
    parser.add_argument("--quick", action="store_true", help="20 queries per set, a tiny model, one epoch, a small world (what the test runs)")
    args = parser.parse_args()
    if args.quick:
        args.max_queries, args.epochs, args.dim, args.layers, args.world_sessions = 20, 1, 32, 1, 3000
    if args.data is None or not (args.data / "queries").is_dir():
        raise SystemExit("the query lists were not found: pass --data DIR (holding queries/) or set RANKPIPE_SHARED_DATA")
    torch.set_num_threads(1)

    # ---- real query lists
    sets = {name: three_way(q, args.seed) for name, q in real_sets(args.data / "queries").items()}
    train = pd.concat([parts[0] for parts in sets.values()], ignore_index=True)
    print(f"real query lists: {', '.join(f'{n} {sum(map(len, p))}' for n, p in sets.items())} distinct queries; "
          f"{len(train)} train (union)")
    prefix_model = PrefixCompleter().fit(train)
    if args.lm is not None:  # a model trained earlier on this same split (--save-lm with the same --seed)
        lm = CharLM.load(args.lm)
        print(f"  char transformer: loaded from {args.lm} ({sum(p.numel() for p in lm.model_.parameters()):,} weights)")
    else:
        lm = fit_lm(train, args)
        if args.save_lm is not None:
            lm.save(args.save_lm)
    valid = pd.concat([prefix_pairs(_sample(parts[1], args.max_queries, args.seed)) for parts in sets.values()], ignore_index=True)
    weight = best_blend_weight(score_lists(prefix_model, lm, valid), valid["target"])
    print(f"  blend weight on the model, chosen on {len(valid)} validation pairs: {weight}")
    parts = []
    for name, (_, _, test) in sets.items():
        pairs = prefix_pairs(_sample(test, args.max_queries, args.seed))
        lists = score_lists(prefix_model, lm, pairs)
        report(name, lists, pairs["target"], weight)
        parts.append((lists, pairs["target"]))
    real = report("real", *pool(parts), weight)

    # ---- the default world's query log (time split, decayed counts)
    log = world_log(args.world_sessions)
    train_log = log[log["split"] == "train"]
    print(f"default world: {len(log):,} searches, {log['query'].nunique():,} distinct queries")
    world_prefix = PrefixCompleter().fit(train_log["query"], train_log["ts"])
    # The model learns from the distinct queries, drawn by decayed count (the log itself repeats a few heads thousands of times).
    counts = pd.Series(world_prefix.queries_.weights, index=world_prefix.queries_.strings)
    world_lm = fit_lm(pd.Series(counts.index), args, counts.to_numpy())
    sampled = {part: _sample(log.loc[log["split"] == part, "query"], args.max_queries, args.seed) for part in ("valid", "test")}
    valid = prefix_pairs(sampled["valid"])
    world_weight = best_blend_weight(score_lists(world_prefix, world_lm, valid), valid["target"])
    test = prefix_pairs(sampled["test"])
    print(f"  blend weight on the model: {world_weight}")
    report("world", score_lists(world_prefix, world_lm, test), test["target"], world_weight)

    print(json.dumps({"mrr_unseen_generative": round(real["generative"]["mrr_unseen"], 4),
                      "mrr_unseen_prefix": round(real["prefix"]["mrr_unseen"], 4),
                      "mrr_all_blended": round(real["blended"]["mrr_all"], 4), "mrr_all_prefix": round(real["prefix"]["mrr_all"], 4),
                      "p99_ms_prefix": round(real["prefix"]["p99_ms"], 3), "p99_ms_generative": round(real["generative"]["p99_ms"], 3)}))


def _sample(queries: pd.Series, n: int, seed: int) -> pd.Series:
    """At most ``n`` of the queries, seeded."""
    return queries.sample(n=n, random_state=seed).reset_index(drop=True) if len(queries) > n else queries.reset_index(drop=True)


if __name__ == "__main__":
    main()
