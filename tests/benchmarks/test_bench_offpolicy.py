"""bench_offpolicy.py --quick runs (so the benchmark cannot rot): on a small world the off-policy
intervals hold the ranker's lists' true expected clicks, and its last line is the promised JSON."""

from __future__ import annotations

import pytest
from quick_benchmarks import quick_json

pytestmark = pytest.mark.slow


def test_bench_offpolicy_quick_covers_the_truth():
    result = quick_json("bench_offpolicy.py")
    assert result["replicates"] == 5 and result["requests"] > 1000 and result["truth"] > 0
    assert result["ips_coverage"] >= 0.8  # measured 5 of 5; an estimator biased by a tenth of the truth would cover none
    assert abs(result["ips_mean_error"]) < 0.02 * result["truth"] and result["ips_mean_width"] < 0.15 * result["truth"]
    assert result["dr_mean_error"] == pytest.approx(result["ips_mean_error"])  # a reordering: every item was shown, DR is IPS
    assert result["propensity_max_relative_error"] < 0.3
