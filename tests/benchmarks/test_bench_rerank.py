"""bench_rerank.py --quick runs (so the benchmark cannot rot), its fast paths agree with their references, and its last line is the promised JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_rerank.py"


def test_bench_rerank_quick_prints_its_json_last():
    done = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["lists"] == 2000
    for key in ("dpp_ms_per_list", "dpp_single_ms", "dpp_reference_ms", "prm_lists_per_s", "prm_reference_lists_per_s"):
        assert result[key] > 0, key
    assert result["dpp_same_as_reference"] is True  # the fast greedy picks what the determinants pick
    assert result["prm_max_abs_diff"] < 1e-4  # torch and the NumPy forward pass compute the same network
