"""bench_rerank.py --quick runs (so the benchmark cannot rot), its fast paths agree with their references, and its last line is the promised JSON."""

from __future__ import annotations

from quick_benchmarks import quick_json


def test_bench_rerank_quick_prints_its_json_last():
    result = quick_json("bench_rerank.py", timeout=600)
    assert result["lists"] == 2000
    for key in ("dpp_ms_per_list", "dpp_single_ms", "dpp_reference_ms", "prm_lists_per_s", "prm_reference_lists_per_s"):
        assert result[key] > 0, key
    assert result["dpp_same_as_reference"] is True  # the fast greedy picks what the determinants pick
    assert result["prm_max_abs_diff"] < 1e-4  # torch and the NumPy forward pass compute the same network
