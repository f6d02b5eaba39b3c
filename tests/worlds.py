"""Config overrides of the test worlds (tests/ is on pytest's path: ``from worlds import SMALL_WORLD``)."""

# A world small enough for a full funnel run in seconds, large enough for the ranker to learn.
SMALL_WORLD = [
    "dataset.synthetic.n_users=3000", "dataset.synthetic.n_items=1500", "dataset.synthetic.n_sessions=9000",
    "dataset.synthetic.days=30", "rank.lightgbm.n_estimators=120", "rank.xgboost.n_estimators=120", "rank.sklearn.n_estimators=120",
    "recall.k=100", "evaluate.recall_ks=[20,100]",
    # The merge is picked by cross-validation on these validation requests: 2000 (the default) took 40 of the recall stage's 53 s
    # here; 500 take 10 (merged recall@100 0.882 → 0.877).
    "recall.calibration_requests=500",
    "suggest.epochs=2", "suggest.dim=32", "suggest.layers=1", "suggest.eval_queries=30",
]

# The stage tests' world (tests/pipeline/stages): a few seconds per stage, five channels at quota 50.
TINY_WORLD = SMALL_WORLD + [
    "dataset.synthetic.n_users=800", "dataset.synthetic.n_items=400", "dataset.synthetic.n_sessions=2500", "dataset.synthetic.days=14",
    "recall.quotas={item2vec: 50, two_tower: 50, itemcf: 50, bm25: 50, popularity: 50}", "recall.two_tower.epochs=1",
    "recall.k=50", "evaluate.recall_ks=[10,50]", "recall.calibration_requests=300", "rank.lightgbm.n_estimators=40",
]


def start_run(workdir, run_id: str, world=None):
    """``rankpipe run`` of ``world`` (default: TINY_WORLD) in a process of its own, output captured:
    for the tests that kill runs or run two at once."""
    import os
    import subprocess
    import sys

    overrides = [arg for override in (TINY_WORLD if world is None else world) for arg in ("--set", override)]
    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI: a run tracked earlier in this process must not redirect this one's store.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-m", "rankpipe.pipeline.cli", "run", "--workdir", str(workdir), "--run-id", run_id, *overrides],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
