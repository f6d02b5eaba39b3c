"""Point-in-time windowed statistics: rankpipe's engine against a straightforward pandas implementation.

The statistics are every count group of ``features.stats.COUNT_GROUPS`` (item, user, query,
query×item, user×category; impressions, clicks, carts, purchases) over all history and over
trailing windows of 1, 7 and 30 days, for every logged impression of the synthetic world, each
counting only events strictly before the request.

- rankpipe: ``features.engine``, one compiled pass over time per key group; the requests are given
  as the history's own impression rows and the statistics stream to Parquet in chunks of 1M
  requests, as a training-set build over a large log would run (Arrow IPC, LZ4).
- pandas: per (key, event), the cumulative count of each key's events, joined to the requests
  (a DataFrame of the impressions) with ``merge_asof`` at t and at t − window (merge + groupby
  per window), all in memory.

Both engines run in fresh processes on the same Parquet input (timestamps at whole seconds) at
1M and 10M events; the 1M outputs are compared for equality. Prints a table (time, peak memory,
rows/s) and, as its LAST line, one JSON object with ``speedup_vs_pandas`` (at 10M),
``growth_10x`` (rankpipe's time at 10M / at 1M) and ``peak_mem_ratio`` (rankpipe's peak RSS at 10M
over the input's Arrow size).

Usage: python benchmarks/bench_features.py [--sizes 1,10] (millions of events, roughly)
       python benchmarks/bench_features.py --quick   # 0.03M and 0.1M events: seconds, for the test
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.ipc  # noqa: E402,F401  (pa.ipc for the sink)
import pyarrow.parquet as pq  # noqa: E402

from rankpipe.features.stats import COUNT_GROUPS, DAY_S, count_features, enrich_history  # noqa: E402
from rankpipe.pipeline import schema as S  # noqa: E402
from rankpipe.pipeline.config import SyntheticConfig  # noqa: E402
from rankpipe.pipeline.datasets.synthetic import generate  # noqa: E402

WINDOWS = (1, 7, 30)
# The counts of every declared group (decays, recency and COEC have no pandas twin here).
GROUPS = tuple(replace(g, decayed=(), recency=(), coec=False) for g in COUNT_GROUPS)
# Every key the groups count by (item, user, query, category, top category, ...), so a group added to COUNT_GROUPS is benchmarked too.
KEYS = list(dict.fromkeys(key for group in GROUPS for key in group.keys))
COLUMNS = [S.TS, S.EVENT, *KEYS]


def world_config(millions: float) -> SyntheticConfig:
    """A world of about ``millions`` × 1M events (the default world has ~1.1M)."""
    base = SyntheticConfig()
    scale = millions
    return SyntheticConfig(n_users=int(base.n_users * scale), n_items=int(base.n_items * scale), n_sessions=int(base.n_sessions * scale / 1.13))


def write_input(millions: float, directory: Path) -> tuple[Path, int, int]:
    """Generate, keep the columns the statistics read, floor times to seconds, write Parquet."""
    world = generate(world_config(millions), seed=7)
    history = enrich_history(world.events, world.items)[COLUMNS]
    history[S.TS] = history[S.TS].dt.floor("s")
    path = directory / f"events_{millions:g}m.parquet"
    table = pa.Table.from_pandas(history, preserve_index=False)
    pq.write_table(table, path)
    return path, len(history), table.nbytes


def load(path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    history = pq.read_table(path).to_pandas()
    requests = history.loc[history[S.EVENT] == "impression", [S.TS, *KEYS]].reset_index(drop=True)
    return history, requests


def rankpipe_engine(history: pd.DataFrame, sink: Path) -> int:
    """Statistics of every impression, streamed to ``sink``; returns the number of requests."""
    rows = np.flatnonzero((history[S.EVENT] == "impression").to_numpy(dtype=bool, na_value=False))
    count_features(history, rows, WINDOWS, GROUPS, sink=str(sink))
    return len(rows)


def pandas_engine(history: pd.DataFrame, requests: pd.DataFrame) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for group in GROUPS:
        keys = list(group.keys)
        known = requests[keys].notna().all(axis=1).to_numpy()
        queries = requests.loc[known, keys + [S.TS]].assign(_row=np.flatnonzero(known)).sort_values(S.TS, kind="stable")
        for event in group.events:
            events = history.loc[(history[S.EVENT] == event), keys + [S.TS]].dropna(subset=keys).sort_values(S.TS, kind="stable")
            events["_cum"] = events.groupby(keys, sort=False).cumcount() + 1
            cutoffs = [(f"{group.name}_{event}_n", None)]
            if event in group.windowed:
                cutoffs += [(f"{group.name}_{event}_n_{d}d", d) for d in WINDOWS]
            at_t = pd.merge_asof(queries, events, on=S.TS, by=keys, allow_exact_matches=False)["_cum"].fillna(0).to_numpy()
            for name, days in cutoffs:
                values = at_t
                if days is not None:
                    earlier = queries.assign(**{S.TS: queries[S.TS] - pd.Timedelta(seconds=days * DAY_S)})
                    before_window = pd.merge_asof(earlier, events, on=S.TS, by=keys, allow_exact_matches=False)["_cum"].fillna(0).to_numpy()
                    values = at_t - before_window
                column = np.full(len(requests), np.nan, dtype=np.float32)
                column[queries["_row"].to_numpy()] = values
                out[name] = column
    return out


def peak_rss_gb() -> float:
    """This process's peak resident memory, from /proc (VmHWM).

    Not ``getrusage().ru_maxrss``: Linux carries that across fork and exec, so a child started by
    the parent that just generated a 10M-event world would report the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def child(engine: str, path: Path, check: Path | None) -> None:
    count_features(*_tiny_world())  # compile (or load the cached) kernel before the clock starts
    if engine == "rankpipe":
        history = pq.read_table(path).to_pandas()
        sink = path.with_suffix(".stats.arrow")
        started = time.perf_counter()
        n_rows = rankpipe_engine(history, sink)
        seconds = time.perf_counter() - started
        peak_gb = peak_rss_gb()
        stats = pa.ipc.open_file(sink).read_all()
        n_columns = stats.num_columns - 1
        if check is not None:
            order = np.argsort(stats["row"].to_numpy())
            result = {name: stats[name].to_numpy()[order] for name in stats.column_names if name != "row"}
        sink.unlink()
    else:
        history, requests = load(path)
        started = time.perf_counter()
        result = pandas_engine(history, requests)
        seconds = time.perf_counter() - started
        peak_gb = peak_rss_gb()
        n_rows, n_columns = len(requests), len(result)
    if check is not None:
        np.savez(check, **result)
    print(json.dumps({"seconds": seconds, "peak_gb": peak_gb, "rows": n_rows, "columns": n_columns}))


def _tiny_world() -> tuple[pd.DataFrame, np.ndarray, tuple[int, ...], tuple]:
    ts = pd.Series(pd.to_datetime(["2026-01-01", "2026-01-02"]).astype("datetime64[us]"))
    history = pd.DataFrame({S.TS: ts, S.EVENT: ["impression", "click"], **{key: ["k", "k"] for key in KEYS}}).assign(**{S.QUERY: [None, "q"]})
    return history, np.array([1]), WINDOWS, GROUPS


def run_child(engine: str, path: Path, check: Path | None = None) -> dict:
    cmd = [sys.executable, __file__, "--child", engine, "--input", str(path)] + (["--check", str(check)] if check else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,10", help="comma-separated sizes in millions of events")
    parser.add_argument("--quick", action="store_true", help="sizes 0.03,0.1: the same checks in seconds")
    parser.add_argument("--child", choices=["rankpipe", "pandas"], help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--check", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.input, args.check)
        return
    sizes = [0.03, 0.1] if args.quick else [float(s) for s in args.sizes.split(",")]
    results, checked = {}, 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for millions in sizes:
            path, n_events, arrow_bytes = write_input(millions, tmp)
            check = millions == sizes[0]
            ours = run_child("rankpipe", path, tmp / "ours.npz" if check else None)
            theirs = run_child("pandas", path, tmp / "theirs.npz" if check else None)
            if check:
                a, b = np.load(tmp / "ours.npz"), np.load(tmp / "theirs.npz")
                mismatched = [k for k in a.files if not np.array_equal(a[k], b[k], equal_nan=True)]
                if mismatched:
                    raise SystemExit(f"engines disagree on {mismatched}")
                checked = len(a.files)
                print(f"outputs identical at {millions:g}M: {checked} statistics")
            results[millions] = {"events": n_events, "arrow_gb": arrow_bytes / 1e9, "rankpipe": ours, "pandas": theirs}
    print(f"{'events':>10} {'engine':<9} {'seconds':>8} {'peak GB':>8} {'rows/s':>11} {'stats':>6}")
    for millions, r in results.items():
        for engine in ("rankpipe", "pandas"):
            e = r[engine]
            print(f"{r['events']:>10,} {engine:<9} {e['seconds']:>8.2f} {e['peak_gb']:>8.2f} {e['rows'] / e['seconds']:>11,.0f} {e['columns']:>6}")
        print(f"{'':>10} input Arrow size {r['arrow_gb']:.2f} GB")
    big, small = results[max(sizes)], results[min(sizes)]
    summary = {
        "speedup_vs_pandas": round(big["pandas"]["seconds"] / big["rankpipe"]["seconds"], 2),
        "growth_10x": round(big["rankpipe"]["seconds"] / small["rankpipe"]["seconds"], 2),
        "peak_mem_ratio": round(big["rankpipe"]["peak_gb"] / big["arrow_gb"], 2),
        "rankpipe_seconds_at_max": round(big["rankpipe"]["seconds"], 2),
        "pandas_seconds_at_max": round(big["pandas"]["seconds"], 2),
        "statistics_checked": checked,  # equal in both engines at the first size (the run stops otherwise)
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
