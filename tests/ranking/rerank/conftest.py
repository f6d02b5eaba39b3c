"""Shared lists for the reranker tests: random scores over a small catalogue with clustered embeddings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank import RerankData

N_ITEMS, N_CLUSTERS = 60, 6


def make_catalogue(seed: int = 0) -> RerankData:
    """Items in clusters (category c<k>, brand b<j>), embeddings near their cluster's centre; the first three have none."""
    rng = np.random.default_rng(seed)
    cluster = np.arange(N_ITEMS) % N_CLUSTERS
    centres = rng.normal(size=(N_CLUSTERS, 8))
    vectors = (centres[cluster] + 0.2 * rng.normal(size=(N_ITEMS, 8))).astype(np.float32)
    ids = np.array([f"i{j:02d}" for j in range(N_ITEMS)], dtype=object)
    vectors[:3] = 0.0
    items = pd.DataFrame({S.ITEM_ID: ids, S.CATEGORY: [f"top>c{c}" for c in cluster], S.BRAND: [f"b{j % 9}" for j in range(N_ITEMS)],
                          S.TITLE: [f"title {j % 40}" for j in range(N_ITEMS)],
                          S.CREATED_AT: pd.Timestamp("2026-01-01") - pd.to_timedelta(np.arange(N_ITEMS) * 2, unit="D")})
    return RerankData(items, pd.Index(ids), vectors)


def make_scored(seed: int = 0, n_requests: int = 25, per_request: int = 30) -> pd.DataFrame:
    """Random candidate scores, ``per_request`` distinct items per request."""
    rng = np.random.default_rng(seed)
    item_ids = np.concatenate([rng.choice(N_ITEMS, per_request, replace=False) for _ in range(n_requests)])
    return pd.DataFrame({S.REQUEST_ID: np.repeat([f"r{i}" for i in range(n_requests)], per_request),
                         S.ITEM_ID: np.array([f"i{j:02d}" for j in item_ids], dtype=object), S.SCORE: rng.normal(size=n_requests * per_request)})


@pytest.fixture(scope="module")
def catalogue() -> RerankData:
    return make_catalogue()


@pytest.fixture(name="make_scored", scope="session")
def make_scored_fixture():
    """:func:`make_scored`, for tests to draw lists with their own seeds."""
    return make_scored


@pytest.fixture(name="make_catalogue", scope="session")
def make_catalogue_fixture():
    """:func:`make_catalogue`."""
    return make_catalogue
