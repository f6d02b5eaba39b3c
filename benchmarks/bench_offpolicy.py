"""Do the off-policy estimates' 95% intervals hold the truth? Seeded replicates on the synthetic world.

The funnel runs once to its rank stage (the default world, a position-based click model: no
satiation, no cascade). The policy judged is the ranker's: its top 10 of each logged test list. Its
truth is exact: the mean over test requests of ``Σ_k θ_k · a(user, query, item_k, ts)`` with the
world's own examination θ and relevance a. Each replicate redraws every logged slot's click from
the same world (``P(click) = θ_position · a``), refits the position propensities on the train and
valid slots (:class:`~rankpipe.ranking.offpolicy.PositionClickModel`, from the clicks alone), and
estimates the ranker's lists' clicks on the test slots by IPS, SNIPS and DR with 95% bootstrap
intervals. Printed per estimator: coverage (share of replicates whose interval holds the truth),
mean estimate, mean error, mean interval width; and the propensity curve's error.

The LAST line is one JSON object: ``truth``, ``replicates``, ``requests`` and, per estimator,
``<estimator>_coverage``, ``<estimator>_mean_error``, ``<estimator>_mean_width``; ``propensity_max_relative_error``.

Usage: python benchmarks/bench_offpolicy.py [--replicates 40] [--quick]
  --quick: a small world, 5 replicates (a test runs it)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rankpipe.pipeline import schema as S  # noqa: E402
from rankpipe.pipeline.config import load_config  # noqa: E402
from rankpipe.pipeline.datasets.synthetic import examination, true_relevance  # noqa: E402
from rankpipe.pipeline.runner import Runner  # noqa: E402
from rankpipe.ranking.offpolicy import ESTIMATORS, PositionClickModel, counterfactual_clicks, estimate  # noqa: E402
from rankpipe.ranking.rerank import top_by_score  # noqa: E402

QUICK = ["dataset.synthetic.n_users=3000", "dataset.synthetic.n_items=1500", "dataset.synthetic.n_sessions=9000", "dataset.synthetic.days=30",
         "rank.lightgbm.n_estimators=60", "recall.k=100", "evaluate.recall_ks=[20,100]", "recall.calibration_requests=300",
         "recall.two_tower.epochs=1"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    replicates = 5 if args.quick else args.replicates
    config = load_config(None, QUICK if args.quick else [])
    world = config.dataset.synthetic
    if world.satiation or world.cascade_stop:
        raise SystemExit("the check needs a position-based world (dataset.synthetic.satiation = cascade_stop = 0)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as workdir:
        runner = Runner(config, workdir, "offpolicy", progress=False, track=False)
        runner.run(until="rank")
        requests, labels = runner.load_table("prepare", "requests"), runner.load_table("prepare", "labels")
        oracle = [runner.load_table("prepare", n) for n in ("oracle_users", "oracle_items", "oracle_queries")]
        logged = runner.load_table("rank", "test_logged")
    print(f"funnel to rank in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    slots = labels[labels[S.POSITION].notna()].merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS, S.SPLIT]], on=S.REQUEST_ID)
    slots = slots.assign(**{S.POSITION: slots[S.POSITION].astype(np.int64)}).reset_index(drop=True)
    p_click = examination(slots[S.POSITION].to_numpy()) * true_relevance(*oracle, slots)
    lists = top_by_score(logged[[S.REQUEST_ID, S.ITEM_ID, S.SCORE]], 10)
    judged = lists.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID)
    per_list = pd.Series(examination(judged[S.POSITION].to_numpy()) * true_relevance(*oracle, judged)).groupby(judged[S.REQUEST_ID].to_numpy()).sum()
    train, test = (slots[S.SPLIT] != S.TEST).to_numpy(), (slots[S.SPLIT] == S.TEST).to_numpy()
    rows, curve_errors = [], []
    for replicate in range(replicates):
        rng = np.random.default_rng([replicate, 7])
        clicked = slots.assign(click=(rng.random(len(slots)) < p_click).astype(np.int8))
        model = PositionClickModel().fit(clicked[train])
        theta = model.examination_.to_numpy()
        curve_errors.append(float(np.max(np.abs(theta / examination(np.arange(1, len(theta) + 1)) - 1))))
        per_request = counterfactual_clicks(lists, clicked[test], model)
        truth = float(per_list.reindex(per_request.index).mean())
        table = estimate(per_request, seed=replicate).assign(replicate=replicate, truth=truth)
        rows.append(table)
    results = pd.concat(rows, ignore_index=True)
    results["error"] = results["estimate"] - results["truth"]
    results["covered"] = (results["ci_low"] <= results["truth"]) & (results["truth"] <= results["ci_high"])
    results["width"] = results["ci_high"] - results["ci_low"]
    summary = results.groupby("estimator").agg(coverage=("covered", "mean"), estimate=("estimate", "mean"), truth=("truth", "mean"),
                                               mean_error=("error", "mean"), sd_error=("error", "std"), mean_width=("width", "mean"))
    print(summary.round(4).to_string())
    print(f"propensity curve, largest relative error per replicate: mean {np.mean(curve_errors):.3f}, max {np.max(curve_errors):.3f}")
    out = {"truth": float(results["truth"].mean()), "replicates": replicates, "requests": int(results["requests"].iloc[0]),
           "propensity_max_relative_error": float(np.max(curve_errors)), "seconds": round(time.perf_counter() - started, 1)}
    for estimator in ESTIMATORS:
        row = summary.loc[estimator]
        out.update({f"{estimator}_coverage": float(row["coverage"]), f"{estimator}_mean_error": float(row["mean_error"]),
                    f"{estimator}_mean_width": float(row["mean_width"])})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
