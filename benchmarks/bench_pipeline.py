"""Time each stage of ``rankpipe run`` on the default world against the same work done bare.

Three measurements in one benchmark run, on the same generated world, each path in a fresh
subprocess so neither inherits the other's heap or caches:

1. rankpipe: the runner, as ``rankpipe run`` does it (validation, Parquet per stage, fingerprints,
   MLflow parent + nested runs, registry).
2. bare: the same computations wired by hand in memory: the world generated, then the stage
   functions called directly with tables passed as Python objects (no validation, no IO, no
   tracking).
3. library: the calls to gensim (Word2Vec), faiss (flat search) and LightGBM (train + predict)
   made directly on the same inputs, to show how much of each stage is library time.

Prints a table, then as its LAST line one JSON object with ``total_s`` (rankpipe's wall time),
``overhead_ratio`` (rankpipe total / bare total) and the run's headline quality
(``rank_oracle_ndcg_at_10``, ``recall_at_100``).

``--baseline DIR`` also runs the rankpipe path of an older snapshot of the code (``DIR`` holds it
as ``DIR/rankpipe``, e.g. a ``git worktree``; it is imported with ``PYTHONPATH=DIR``) in the same
benchmark run, and prints the per-stage table before and after with both runs' quality.

Usage: python benchmarks/bench_pipeline.py [--set key=value ...] [--baseline DIR] [--no-bare] [--quick]
  --quick: a 2,500-session world (seconds; a test runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from rankpipe.pipeline import schema as S  # noqa: E402
from rankpipe.pipeline import stages  # noqa: E402
from rankpipe.pipeline.config import load_config  # noqa: E402
from rankpipe.pipeline.datasets import Dataset  # noqa: E402
from rankpipe.pipeline.datasets.synthetic import generate  # noqa: E402
from rankpipe.pipeline.runner import STAGE_NAMES, Runner  # noqa: E402

QUICK = ["dataset.synthetic.n_users=800", "dataset.synthetic.n_items=400", "dataset.synthetic.n_sessions=2500", "dataset.synthetic.days=14",
         "recall.quotas={item2vec: 50, two_tower: 50, itemcf: 50, bm25: 50, popularity: 50}", "recall.k=50", "evaluate.recall_ks=[10,50,100]",
         "recall.calibration_requests=300", "suggest.epochs=1", "suggest.dim=32", "suggest.layers=1", "suggest.eval_queries=30"]
# The headline quality each run reports beside its time (the bounds a speed-up must hold).
QUALITY = ("rank.oracle_ndcg_at_10", "rank.ndcg_at_10", "recall.recall_at_100")


def run_rankpipe(config, workdir: Path) -> tuple[float, dict[str, float], dict[str, float]]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    summary = Runner(config, workdir, "bench", progress=False).run()
    total = time.perf_counter() - started
    per_stage = {s: json.loads((summary.run_dir / s / "_SUCCESS.json").read_text())["seconds"] for s in STAGE_NAMES}
    return total, per_stage, {k: summary.metrics[k] for k in QUALITY if k in summary.metrics}


def run_bare(config) -> tuple[float, dict[str, float], dict]:
    started = time.perf_counter()
    world = generate(config.dataset.synthetic, seed=config.dataset.synthetic.seed)
    dataset = Dataset("synthetic", {S.EVENTS: world.events, S.ITEMS: world.items, S.USERS: world.users},
                      {"oracle_items": world.oracle_items, "oracle_users": world.oracle_users, "oracle_queries": world.oracle_queries})
    per_stage = {"dataset": time.perf_counter() - started}
    tables: dict[tuple[str, str], pd.DataFrame] = {}
    models: dict[tuple[str, str], object] = {}
    tmp = Path(tempfile.mkdtemp())

    def model_dir(stage, name):
        # promote reads the ranker from disk in both paths; the bare path saves just that one model.
        path = tmp / stage / name
        if not path.exists():
            path.mkdir(parents=True)
            models[(stage, name)].save(path)
        return path

    inputs = stages.StageInputs(lambda st, n: tables[(st, n)], model_dir, dataset, load_champion=lambda name: None)  # no registry: no champion yet
    for stage in STAGE_NAMES:
        t = time.perf_counter()
        result = getattr(stages, stage)(inputs, config)
        tables.update({(stage, n): df for n, df in result.tables.items()})
        models.update({(stage, n): m for n, m in result.models.items()})
        per_stage[stage] = time.perf_counter() - t
    return time.perf_counter() - started, per_stage, {"tables": tables, "models": models}


def run_library(config, state) -> dict[str, float]:
    """gensim, faiss and LightGBM called directly on the inputs the stages built."""
    import faiss
    import lightgbm as lgb
    from gensim.models import Word2Vec

    from rankpipe.ranking.recall.base import stable_hash
    from rankpipe.ranking.recall.item2vec import session_sentences

    tables = state["tables"]
    requests, events = tables[("prepare", "requests")], tables[("prepare", "events")]
    sentences = session_sentences(events[events[S.TS] < requests.loc[requests["split"] != "train", S.TS].min()])
    i2v = config.recall.item2vec
    out = {}
    t = time.perf_counter()
    model = Word2Vec(sentences, vector_size=i2v.dims, window=i2v.window, negative=i2v.negative, sg=1, min_count=i2v.min_count,
                     epochs=i2v.epochs, seed=config.seed, workers=1, hashfxn=stable_hash)
    out["gensim Word2Vec"] = time.perf_counter() - t
    vectors = model.wv.vectors / np.linalg.norm(model.wv.vectors, axis=1, keepdims=True)
    queries = vectors[np.random.default_rng(0).integers(0, len(vectors), int((requests["split"] == "test").sum()))]
    t = time.perf_counter()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors.astype(np.float32))
    index.search(queries.astype(np.float32), config.recall.k)
    out["faiss flat search"] = time.perf_counter() - t

    ranker = state["models"][("rank", "ranker")]
    logged = tables[("features", "logged")]
    names = [n for n in ranker.feature_names_ if n in logged.columns]
    train = logged[logged["split"] == "train"]
    keep = train.groupby(S.REQUEST_ID, sort=False)["grade"].transform("max") > 0
    train = train[keep]
    codes, _ = pd.factorize(train[S.REQUEST_ID])
    order = np.argsort(codes, kind="stable")
    t = time.perf_counter()
    booster = lgb.train(ranker._params(), lgb.Dataset(train[names].iloc[order], train["grade"].to_numpy()[order], group=np.bincount(codes)),
                        num_boost_round=ranker.best_iteration_)
    booster.predict(tables[("rank", "candidates")].assign(**{n: 0.0 for n in names})[names])
    out["lightgbm train+predict"] = time.perf_counter() - t
    return out


def _child(mode: str, overrides: list[str], snapshot: Path | None = None) -> dict:
    """Run one path in a fresh interpreter (this script, importing the snapshot's rankpipe with ``snapshot``); it prints one JSON line."""
    env = dict(os.environ)
    if snapshot is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(snapshot), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    cmd = [sys.executable, __file__, "--mode", mode] + [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--baseline", type=Path, help="a snapshot of older code (DIR/rankpipe) to time in the same run")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare and library paths")
    parser.add_argument("--quick", action="store_true", help="a 2,500-session world (what the test runs)")
    parser.add_argument("--mode", choices=["rankpipe", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    overrides = [*QUICK, *args.overrides] if args.quick else args.overrides
    config = load_config(None, overrides)
    if args.mode == "bare":
        total, stages_s, state = run_bare(config)
        print(json.dumps({"total": total, "stages": stages_s, "library": run_library(config, state)}))
        return
    if args.mode == "rankpipe":
        with tempfile.TemporaryDirectory() as workdir:
            total, stages_s, quality = run_rankpipe(config, Path(workdir))
        print(json.dumps({"total": total, "stages": stages_s, "quality": quality}))
        return

    rankpipe = _child("rankpipe", overrides)
    before = _child("rankpipe", overrides, args.baseline) if args.baseline else None
    bare = None if args.no_bare else _child("bare", overrides)
    rp_total, rp_stages = rankpipe["total"], rankpipe["stages"]
    columns = [("rankpipe s", rp_stages, rp_total)]
    if before is not None:
        columns.insert(0, ("before s", before["stages"], before["total"]))
    if bare is not None:
        columns.append(("bare s", bare["stages"], bare["total"]))
    print(f"{'stage':<12}" + "".join(f"{name:>12}" for name, _, _ in columns) + f"{'ratio':>8}")
    baseline = before or bare
    for stage in STAGE_NAMES:
        ratio = f"{rp_stages[stage] / baseline['stages'][stage]:>8.2f}" if baseline and stage in baseline["stages"] else ""
        print(f"{stage:<12}" + "".join(f"{s.get(stage, float('nan')):>12.2f}" for _, s, _ in columns) + ratio)
    print(f"{'total':<12}" + "".join(f"{t:>12.2f}" for _, _, t in columns) + (f"{rp_total / baseline['total']:>8.2f}" if baseline else ""))
    print(f"  (ratio: rankpipe / {'before' if before else 'bare'}; the total also holds generation, validation, writes, MLflow;\n"
          "   a stage that ran beside the others in a second process (pipeline/beside.py, e.g. suggest) overlaps them: the stages add up to more than the total)")
    for label, run in (("before", before), ("rankpipe", rankpipe)):
        if run is not None and run.get("quality"):
            print(f"{label:<10}" + "  ".join(f"{k} {v:.4f}" for k, v in run["quality"].items()))
    if bare is not None:
        print("\nlibrary calls on the same inputs:")
        for name, seconds in bare["library"].items():
            print(f"  {name:<24}{seconds:>8.2f} s")
    quality = {k.replace("rank.", "rank_").replace("recall.", ""): round(v, 4) for k, v in rankpipe.get("quality", {}).items()}
    out = {"total_s": round(rp_total, 2), **quality}
    if bare is not None:
        out |= {"bare_total_s": round(bare["total"], 2), "overhead_ratio": round(rp_total / bare["total"], 3),
                **{f"library_{k.split()[0]}_s": round(v, 2) for k, v in bare["library"].items()}}
    if before is not None:
        out |= {"before_total_s": round(before["total"], 2), "speedup_vs_before": round(before["total"] / rp_total, 2),
                **{f"before_{k.replace('rank.', 'rank_').replace('recall.', '')}": round(v, 4) for k, v in before.get("quality", {}).items()}}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
