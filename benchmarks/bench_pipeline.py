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

Prints a table, then as its LAST line one JSON object with ``total_s`` (rankpipe's wall time) and
``overhead_ratio`` (rankpipe total / bare total).

Usage: python benchmarks/bench_pipeline.py [--set key=value ...]
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


def run_rankpipe(config, workdir: Path) -> tuple[float, dict[str, float]]:
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    started = time.perf_counter()
    summary = Runner(config, workdir, "bench", progress=False).run()
    total = time.perf_counter() - started
    per_stage = {s: json.loads((summary.run_dir / s / "_SUCCESS.json").read_text())["seconds"] for s in STAGE_NAMES}
    return total, per_stage


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


def _child(mode: str, overrides: list[str]) -> dict:
    """Run one path in a fresh interpreter; it prints one JSON line."""
    cmd = [sys.executable, __file__, "--mode", mode] + [a for o in overrides for a in ("--set", o)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--mode", choices=["rankpipe", "bare"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    config = load_config(None, args.overrides)
    if args.mode == "bare":
        total, stages_s, state = run_bare(config)
        print(json.dumps({"total": total, "stages": stages_s, "library": run_library(config, state)}))
        return
    if args.mode == "rankpipe":
        with tempfile.TemporaryDirectory() as workdir:
            total, stages_s = run_rankpipe(config, Path(workdir))
        print(json.dumps({"total": total, "stages": stages_s}))
        return

    bare, rankpipe = _child("bare", args.overrides), _child("rankpipe", args.overrides)
    rp_total, rp_stages, bare_total, bare_stages = rankpipe["total"], rankpipe["stages"], bare["total"], bare["stages"]
    print(f"{'stage':<12}{'rankpipe s':>12}{'bare s':>10}{'ratio':>8}")
    for stage in STAGE_NAMES:
        print(f"{stage:<12}{rp_stages[stage]:>12.2f}{bare_stages[stage]:>10.2f}{rp_stages[stage] / bare_stages[stage]:>8.2f}")
    other = rp_total - sum(rp_stages.values())
    print(f"{'dataset+run':<12}{other:>12.2f}{bare_stages['dataset']:>10.2f}   (generation, validation, writes, MLflow, config)")
    print(f"{'total':<12}{rp_total:>12.2f}{bare_total:>10.2f}{rp_total / bare_total:>8.2f}")
    print("\nlibrary calls on the same inputs:")
    for name, seconds in bare["library"].items():
        print(f"  {name:<24}{seconds:>8.2f} s")
    print(json.dumps({"total_s": round(rp_total, 2), "bare_total_s": round(bare_total, 2), "overhead_ratio": round(rp_total / bare_total, 3),
                      **{f"library_{k.split()[0]}_s": round(v, 2) for k, v in bare["library"].items()}}))


if __name__ == "__main__":
    main()
