"""bench_score.py --quick runs (so the benchmark cannot rot) and its last line is the promised JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_score.py"


def test_bench_score_quick_prints_its_json_last():
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests"] == 1000 and result["rows"] > 0
    for key in ("requests_per_s", "library_ratio", "p50_ms", "p99_ms", "peak_memory_mb"):
        assert result[key] > 0, key
    assert result["p50_ms"] <= result["p99_ms"]
    assert {"merge", "rank", "rerank", "library.faiss_search", "library.lightgbm_predict"} <= set(result["seconds"])
