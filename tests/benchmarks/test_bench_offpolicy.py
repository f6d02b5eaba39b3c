"""bench_offpolicy.py --quick runs (so the benchmark cannot rot): on a small world the off-policy
intervals hold the ranker's lists' true expected clicks, and its last line is the promised JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_offpolicy.py"


def test_bench_offpolicy_quick_covers_the_truth():
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicates"] == 5 and result["requests"] > 1000 and result["truth"] > 0
    assert result["ips_coverage"] >= 0.8  # measured 5 of 5; an estimator biased by a tenth of the truth would cover none
    assert abs(result["ips_mean_error"]) < 0.02 * result["truth"] and result["ips_mean_width"] < 0.15 * result["truth"]
    assert result["dr_mean_error"] == pytest.approx(result["ips_mean_error"])  # a reordering: every item was shown, DR is IPS
    assert result["propensity_max_relative_error"] < 0.3
