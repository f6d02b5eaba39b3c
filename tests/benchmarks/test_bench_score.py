"""bench_score.py --quick runs (so the benchmark cannot rot) and its last line is the promised JSON."""

from __future__ import annotations

import pytest
from quick_benchmarks import quick_json

pytestmark = pytest.mark.slow


def test_bench_score_quick_prints_its_json_last():
    result = quick_json("bench_score.py")
    assert result["requests"] == 1000 and result["rows"] > 0
    for key in ("requests_per_s", "library_ratio", "p50_ms", "p99_ms", "peak_memory_mb", "http_p50_ms", "http_p99_ms"):
        assert result[key] > 0, key
    assert result["p50_ms"] <= result["p99_ms"] and result["http_p50_ms"] <= result["http_p99_ms"]
    assert set(result["streamed"]) == {"500", "2000"} and all(m["peak_mb"] > 0 for m in result["streamed"].values())
    assert {"merge", "rank", "rerank", "library.faiss_search", "library.lightgbm_predict"} <= set(result["seconds"])
