"""How the funnel's time and memory grow with the log, on the local engine and on Dask.

Worlds of 1×, 3× and 10× a base world (users and sessions scaled, the catalogue kept: a shop with
more traffic) are generated and written as ``tables`` datasets, events partitioned by day (``--input
synthetic``: generated inside each run instead), then run up to ``--until`` (default ``rank``:
prepare, features, recall, rank) twice, each in a fresh subprocess so neither inherits the other's heap:

- local: ``engine.name=local``; peak memory is the process's peak RSS (VmHWM, in GB of 10^9 bytes);
- dask: a LocalCluster of ``--workers`` worker processes, each limited to ``--worker-memory``
  (Dask spills to disk above 60% of it and pauses above 80%), started by the subprocess so the
  workers' own peak RSS can be read before it is shut down; the driver's peak is reported too,
  since the driver still holds the log (see the README's "Scaling out").

Prints one line per size and engine, then as its LAST line one JSON object: ``growth_10x`` (Dask
wall time at 10× over 1×), ``peak_worker_gb_10x``, ``peak_driver_gb_10x``, ``dask_over_local_1x``
(Dask wall time over local at 1×), ``local_gb_10x`` and per-size details. A size that is not run
(``--sizes 1,3``) is absent from the keys.

Usage:
    python benchmarks/bench_scale.py                       # the default world as base: ~1.1M, 3.3M, 11M events
    python benchmarks/bench_scale.py --sizes 1,3,10 --until prepare   # reading, validation and the split alone
    python benchmarks/bench_scale.py --quick               # a tiny base world, 1× and 10×, up to features: a minute, for the test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUICK_BASE = ["dataset.synthetic.n_users=600", "dataset.synthetic.n_items=300", "dataset.synthetic.n_sessions=1500",
              "dataset.synthetic.days=10", "recall.k=50", "evaluate.recall_ks=[10,50]", "rank.lightgbm.n_estimators=40"]

# Runs in the subprocess: one engine, one size; prints one JSON line.
CHILD = r"""
import json, sys, time
from pathlib import Path
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.runner import Runner

engine, workers, memory, until, workdir, benchmarks = sys.argv[1:7]
sys.path.insert(0, benchmarks)
from bench_features import peak_rss_gb  # VmHWM: ru_maxrss would carry the parent's peak across fork and exec

overrides = json.loads(sys.argv[7])
cluster = client = None
if engine == "dask":
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True, dashboard_address=None, memory_limit=memory)
    client = Client(cluster)
    overrides += ["engine.name=dask", f"engine.scheduler={cluster.scheduler_address}"]
config = load_config(None, overrides)
runner = Runner(config, workdir, "scale", progress=False, track=False)
started = time.perf_counter()
runner.run(until=until)
wall = time.perf_counter() - started
stages = {}
for marker in Path(runner.run_dir).glob("*/_SUCCESS.json"):
    stages[marker.parent.name] = json.loads(marker.read_text())["seconds"]
events = json.loads((Path(runner.run_dir) / "prepare" / "_SUCCESS.json").read_text())["metrics"]["n_events"]
out = {"wall_s": wall, "stages": stages, "n_events": events, "peak_gb": peak_rss_gb()}
if client is not None:
    out["peak_worker_gb"] = max(client.run(peak_rss_gb).values())
    client.close(); cluster.close()
print("RESULT " + json.dumps(out))
"""


def scaled(base: list[str], factor: int) -> list[str]:
    """The base world's overrides with users and sessions multiplied by ``factor`` (the catalogue kept)."""
    from rankpipe.pipeline.config import load_config

    world = load_config(None, base).dataset.synthetic
    return [*base, f"dataset.synthetic.n_users={world.n_users * factor}", f"dataset.synthetic.n_sessions={world.n_sessions * factor}"]


def write_tables(overrides: list[str], directory: Path) -> list[str]:
    """The world of ``overrides`` written as a ``tables`` dataset, events partitioned by day (hive
    directories, as a shop's log lands); returns the overrides that read it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.datasets.synthetic import generate

    config = load_config(None, overrides)
    world = generate(config.dataset.synthetic, config.seed)
    world.items.to_parquet(directory / "items.parquet")
    events = pa.Table.from_pandas(world.events.assign(day=world.events["ts"].dt.strftime("%Y-%m-%d")), preserve_index=False)
    pq.write_to_dataset(events, directory / "events.parquet", partition_cols=["day"])
    return [*overrides, "dataset.name=tables", f"dataset.path={directory}"]


def run_child(engine: str, overrides: list[str], args) -> dict:
    with tempfile.TemporaryDirectory() as work:
        done = subprocess.run([sys.executable, "-c", CHILD, engine, str(args.workers), args.worker_memory, args.until, work,
                               str(Path(__file__).resolve().parent), json.dumps(overrides)],
                              capture_output=True, text=True, timeout=args.timeout, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"], "returncode": done.returncode}
    return json.loads(lines[-1][len("RESULT "):])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,3,10", help="multiples of the base world (default 1,3,10)")
    parser.add_argument("--until", default="rank", help="the last stage run (default rank)")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes (default 2)")
    parser.add_argument("--worker-memory", default="3GiB", help="memory limit per Dask worker (default 3GiB)")
    parser.add_argument("--local-up-to", type=int, default=10, help="run the local engine only for sizes up to this (default 10)")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per run before it counts as failed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="base world overrides")
    parser.add_argument("--input", choices=("tables", "synthetic"), default="tables",
                        help="tables (default): each world written as a day-partitioned Parquet log, read by the engine "
                             "(on Dask, by the workers); synthetic: generated in the run's own process")
    parser.add_argument("--quick", action="store_true", help="a tiny base world up to features (seconds)")
    args = parser.parse_args(argv)
    base = list(args.overrides)
    if args.quick:  # the smallest and the largest size only: the growth keys, in about a minute
        base, args.until = QUICK_BASE + base, "features" if args.until == "rank" else args.until
        args.sizes = "1,10" if args.sizes == "1,3,10" else args.sizes
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[int, dict[str, dict]] = {}
    print(f"{'size':>5} {'engine':<6} {'events':>10} {'wall s':>8} {'peak GB':>8} {'worker GB':>9}  stages (s)")
    for size in sizes:
        overrides = scaled(base, size)
        results[size] = {}
        logs = tempfile.TemporaryDirectory()
        if args.input == "tables":
            overrides = write_tables(overrides, Path(logs.name))
        for engine in ("local", "dask"):
            if engine == "local" and size > args.local_up_to:
                continue
            started = time.perf_counter()
            result = run_child(engine, overrides, args)
            results[size][engine] = result
            if "error" in result:
                print(f"{size:>4}× {engine:<6} failed after {time.perf_counter() - started:.0f}s: {result['error']}", flush=True)
                continue
            stages = " ".join(f"{k} {v:.1f}" for k, v in sorted(result["stages"].items(), key=lambda kv: -kv[1]))
            print(f"{size:>4}× {engine:<6} {result['n_events']:>10,.0f} {result['wall_s']:>8.1f} {result['peak_gb']:>8.2f} "
                  f"{result.get('peak_worker_gb', float('nan')):>9.2f}  {stages}", flush=True)
        logs.cleanup()
    summary: dict = {"input": args.input, "until": args.until, "workers": args.workers, "worker_memory": args.worker_memory, "sizes": results}

    def wall(size: int, engine: str) -> float | None:
        return results.get(size, {}).get(engine, {}).get("wall_s")

    if wall(10, "dask") and wall(1, "dask"):
        summary["growth_10x"] = wall(10, "dask") / wall(1, "dask")
    if wall(1, "dask") and wall(1, "local"):
        summary["dask_over_local_1x"] = wall(1, "dask") / wall(1, "local")
    for size in sizes:
        dask = results[size].get("dask", {})
        if "peak_worker_gb" in dask:
            summary[f"peak_worker_gb_{size}x"] = dask["peak_worker_gb"]
            summary[f"peak_driver_gb_{size}x"] = dask["peak_gb"]
        if "peak_gb" in results[size].get("local", {}):
            summary[f"local_gb_{size}x"] = results[size]["local"]["peak_gb"]
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
