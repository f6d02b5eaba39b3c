"""bench_peers.py --quick runs (so the benchmark cannot rot): every protocol, rankpipe and each peer
scored by the one metric path, and its last line is the promised JSON."""

from __future__ import annotations

import json

import pytest
from quick_benchmarks import quick_lines

from rankpipe.pipeline.datasets import shared_data_dir

pytestmark = [pytest.mark.slow, pytest.mark.realdata,
              pytest.mark.skipif(shared_data_dir() is None, reason="../shared/data is absent (set RANKPIPE_SHARED_DATA to its location)")]

PEERS = {"implicit_als", "implicit_bpr", "cornac_ease", "cornac_mostpop"}


def test_bench_peers_quick_scores_rankpipe_and_every_peer_under_each_protocol():
    lines = quick_lines("bench_peers.py")
    result = json.loads(lines[-1])
    assert set(result) == {"time", "leave_last_out", "random_75_25", "seeds"} and result.pop("seeds") == [42]
    table = [line.split() for line in lines[1:-1]]
    for protocol, entry in result.items():
        rows = {row[2]: float(row[3]) for row in table if row[1] == protocol}
        assert set(rows) == PEERS | {"rankpipe_funnel", "rankpipe_ranker", "rankpipe_recall"}
        assert entry["best_peer"] in PEERS and entry["best_peer_ndcg_at_10"] == pytest.approx(max(rows[p] for p in PEERS), abs=1e-4)
        # The evaluate stage's own number is the one the benchmark's metric path gives for the same lists.
        assert entry["rankpipe_ndcg_at_10"] == pytest.approx(entry["evaluate_stage_ndcg_at_10"], abs=1e-4)
        assert all(0.0 <= value <= 1.0 for value in rows.values())
        # The paired differences are the seed's own numbers' (one seed in --quick).
        assert entry["funnel_minus_recall"] == [pytest.approx(rows["rankpipe_funnel"] - rows["rankpipe_recall"], abs=2e-4)]
        # A library that learned anything beats nobody-in-particular's list on a held-out set of 80 users.
        assert max(rows[p] for p in PEERS - {"cornac_mostpop"}) > 0
    assert result["leave_last_out"]["requests"] == 80  # one held-out rating per user
