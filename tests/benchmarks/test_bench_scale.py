"""bench_scale.py --quick runs (so the benchmark cannot rot) and its last line is the promised JSON."""

from __future__ import annotations

import pytest
from quick_benchmarks import quick_json

pytestmark = pytest.mark.slow
pytest.importorskip("dask.distributed", reason="the dask extra is not installed (pip install -e '.[dask]')")


def test_bench_scale_quick_prints_its_json_last():
    result = quick_json("bench_scale.py")
    for size in (1, 10):
        for engine in ("local", "dask"):
            run = result["sizes"][str(size)][engine]
            assert "error" not in run, (size, engine, run)
            assert run["stages"].keys() >= {"prepare", "features"}
        # Events grow with the world; the local and Dask runs saw the same log.
        assert result["sizes"][str(size)]["local"]["n_events"] == result["sizes"][str(size)]["dask"]["n_events"]
    assert result["sizes"]["10"]["local"]["n_events"] > 5 * result["sizes"]["1"]["local"]["n_events"]
    for key in ("growth_10x", "dask_over_local_1x", "peak_worker_gb_10x", "peak_driver_gb_10x", "local_gb_10x"):
        assert result[key] > 0, key
