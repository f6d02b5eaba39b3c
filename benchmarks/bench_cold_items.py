"""Cold-item recall on the default world: the generated-queries channel (doc2query), with and without.

Cold items are the catalogue items with no positive event (click, cart, purchase) before the test
period: the behavioural channels cannot know them, and BM25 ranks them under every clicked item
sharing their words. The recall stage runs three times on the same prepared world (its own merge,
quotas and calibration, ``recall.ranker_snapshots=0`` because the rank stage is not run):

- ``base``: the default channels;
- ``+bm25_cold``: plus BM25 over the cold items only, the text-only control (is it the model, or
  just a quota reserved for cold items?);
- ``+generated_queries``: plus the channel that indexes the queries the conditional character
  transformer writes for each cold item (``generative.doc2query``).

Prints each channel's and each merged list's recall@K on all test positives and on cold items'
positives, and as its LAST line one JSON object with the merged cold recall@K of each variant.

Usage: python benchmarks/bench_cold_items.py [--quota 100] [--set key=value ...] [--quick]
  --quick: a 2,500-session world, small models (seconds; a test runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd  # noqa: E402

from rankpipe.pipeline import schema as S  # noqa: E402
from rankpipe.pipeline import stages  # noqa: E402
from rankpipe.pipeline.config import load_config  # noqa: E402
from rankpipe.pipeline.datasets import Dataset  # noqa: E402
from rankpipe.pipeline.datasets.synthetic import generate  # noqa: E402
from rankpipe.pipeline.schema import cold_items  # noqa: E402
from rankpipe.pipeline.stages.base import train_end  # noqa: E402
from rankpipe.ranking import metrics as M  # noqa: E402

QUICK = ["dataset.synthetic.n_users=800", "dataset.synthetic.n_items=400", "dataset.synthetic.n_sessions=2500", "dataset.synthetic.days=14",
         "recall.two_tower.epochs=1", "recall.item2vec.epochs=5", "recall.calibration_requests=300", "recall.k=50",
         "evaluate.recall_ks=[10,50]", "suggest.epochs=2", "suggest.dim=32", "suggest.layers=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quota", type=int, default=100, help="candidates of each added channel (default 100)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides, as for rankpipe run")
    parser.add_argument("--quick", action="store_true", help="a 2,500-session world and small models (what the test runs)")
    args = parser.parse_args()
    if args.quick:
        args.set = [*QUICK, *args.set]
    config = load_config(None, ["recall.ranker_snapshots=0", *args.set])
    world = generate(config.dataset.synthetic, seed=config.dataset.synthetic.seed)
    dataset = Dataset("synthetic", {S.EVENTS: world.events, S.ITEMS: world.items, S.USERS: world.users})
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    inputs = stages.StageInputs(lambda stage, name: tables[(stage, name)], lambda stage, name: None, dataset)
    tables.update({("prepare", n): df for n, df in stages.prepare(inputs, config).tables.items()})
    requests, events, items, labels = (tables[("prepare", n)] for n in ("requests", "events", "items", "labels"))
    cold = cold_items(events[events[S.TS] < train_end(requests)], items)[S.ITEM_ID]
    test = requests.loc[requests["split"] == "test", [S.REQUEST_ID, S.QUERY]]
    positives = labels[labels[S.REQUEST_ID].isin(test[S.REQUEST_ID]) & (labels["grade"] > 0)]
    cold_positives = positives[positives[S.ITEM_ID].isin(cold)]
    on_search = cold_positives[S.REQUEST_ID].isin(test.loc[test[S.QUERY].notna(), S.REQUEST_ID])
    print(f"default world: {len(items)} items, {len(cold)} cold ({len(cold) / len(items):.0%}); {len(positives)} test positives, "
          f"{len(cold_positives)} on cold items ({len(cold_positives) / len(positives):.1%}), {int(on_search.sum())} of them from search")
    ks = sorted({10, 50, config.recall.k})
    variants = {"base": {}, "+bm25_cold": {"bm25_cold": args.quota}, "+generated_queries": {"generated_queries": args.quota}}
    rows = []
    for variant, added in variants.items():
        variant_config = load_config(None, ["recall.ranker_snapshots=0", *args.set, *(f"recall.quotas.{c}={q}" for c, q in added.items())])
        started = time.perf_counter()
        result = stages.recall(inputs, variant_config)
        seconds = time.perf_counter() - started
        lists = dict(tuple(result.tables["channels"].groupby("channel", sort=True)))
        lists["merged"] = result.tables["candidates"]
        for name, found in lists.items():
            if name != "merged" and (variant != "base" and name not in added):
                continue  # the base channels' lists are the same in every variant
            row = {"variant": variant, "list": name, "quota": variant_config.recall.quotas.get(name, config.recall.k)}
            for k in ks:
                row[f"recall@{k}"] = M.recall_at_k(found, positives, k)[0]
                row[f"cold_recall@{k}"] = M.recall_at_k(found, cold_positives, k)[0]
            rows.append(row)
        print(f"  {variant}: recall stage {seconds:.0f} s ({result.metrics.get('generated_queries_seconds', float('nan')):.0f} s generated_queries)")
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    k, merged = config.recall.k, table[table["list"] == "merged"].set_index("variant")
    print(json.dumps({f"cold_recall_at_{k}_{v.strip('+')}": round(float(merged.loc[v, f"cold_recall@{k}"]), 4) for v in variants}
                     | {f"recall_at_{k}_{v.strip('+')}": round(float(merged.loc[v, f"recall@{k}"]), 4) for v in variants}))


if __name__ == "__main__":
    main()
