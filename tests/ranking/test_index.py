"""The faiss index: every factory kind round-trips through its file."""

from __future__ import annotations

import numpy as np
import pytest

from rankpipe.ranking.index import VectorIndex


@pytest.mark.parametrize("factory", ["Flat", "IVF16,Flat", "HNSW16", "IVF16,PQ8"])
def test_index_round_trip(factory, tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(2000, 16)).astype(np.float32)
    exact = np.argsort(-(vectors[:50] @ vectors.T), axis=1)[:, :10]
    index = VectorIndex(factory, "ip", "cpu", nprobe=16, ef_search=64).fit(vectors)
    scores, ids = index.search(vectors[:50], 10)
    assert ids.shape == (50, 10) and (np.diff(scores, axis=1) <= 1e-5).all()
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, exact)])
    # nprobe = all lists makes IVF exact; PQ's 8 bytes per vector lose precision, HNSW is approximate
    assert recall >= {"Flat": 1.0, "IVF16,Flat": 1.0, "HNSW16": 0.9, "IVF16,PQ8": 0.3}[factory], recall
    index.save(tmp_path)
    loaded = VectorIndex.load(tmp_path, device="cpu", nprobe=16, ef_search=64)
    np.testing.assert_array_equal(loaded.search(vectors[:50], 10)[1], ids)  # search parameters re-applied on load
    with pytest.raises(ValueError, match="factory"):
        VectorIndex("NotAnIndex").fit(vectors)
