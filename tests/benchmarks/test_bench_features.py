"""bench_features.py --quick runs (so the benchmark cannot rot: it crashed once a count group on a new key was
declared), both engines agree on every statistic, and its last line is the promised JSON."""

from __future__ import annotations

import sys
from pathlib import Path

from quick_benchmarks import quick_json

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_features.py"


def test_bench_features_quick_checks_every_declared_statistic_and_prints_its_json_last():
    sys.path.insert(0, str(BENCH.parent))
    try:
        from bench_features import GROUPS, WINDOWS
    finally:
        sys.path.remove(str(BENCH.parent))
    result = quick_json("bench_features.py", timeout=600)
    # Every group's all-time count per event, and the windowed ones per window: both engines computed each.
    expected = sum(len(g.events) + len(WINDOWS) * len(g.windowed) for g in GROUPS)
    assert result["statistics_checked"] == expected, (result, expected)
    for key in ("speedup_vs_pandas", "growth_10x", "peak_mem_ratio", "rankpipe_seconds_at_max", "pandas_seconds_at_max"):
        assert result[key] > 0, key
