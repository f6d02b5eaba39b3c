"""What the channels that read a user's whole history share: the point-in-time (requests × items)
profile matrix, and retrieval from dense scores of those profiles (EASE, ALS, BPR)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from rankpipe.pipeline import schema as S
from rankpipe.ranking.recall.base import empty_lists, top_k_per_row, top_k_rows


def history_matrix(requests: pd.DataFrame, history: pd.DataFrame, item_index: pd.Index) -> sp.csr_matrix:
    """(requests × items) binary CSR: the items of ``item_index`` each request's user had a positive
    event for strictly before the request's ``ts``. Sorted arrays and ranges, no loop over events."""
    known = item_index.get_indexer(history[S.ITEM_ID])
    h = history[known >= 0]
    item_rows = known[known >= 0]
    user_codes, users = pd.factorize(h[S.USER_ID])
    ts = h[S.TS].to_numpy(dtype="datetime64[us]").astype(np.int64)
    times = np.unique(ts)
    order = np.lexsort((ts, user_codes))
    # One sortable key per event: the user's code, then the event's rank among every distinct time.
    key = user_codes[order].astype(np.int64) * (len(times) + 1) + np.searchsorted(times, ts[order])
    request_user = pd.Index(users).get_indexer(requests[S.USER_ID])
    request_ts = np.searchsorted(times, requests[S.TS].to_numpy(dtype="datetime64[us]").astype(np.int64), side="left")
    base = np.maximum(request_user, 0).astype(np.int64) * (len(times) + 1)
    start = np.searchsorted(key, base, side="left")
    end = np.searchsorted(key, base + request_ts, side="left")  # strictly before the request's time
    counts = np.where(request_user >= 0, end - start, 0)
    rows = np.repeat(np.arange(len(requests)), counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + np.repeat(start, counts)
    matrix = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, item_rows[order][offsets])), shape=(len(requests), len(item_index)))
    matrix.data[:] = 1.0  # duplicates (a click and a purchase of one item) summed: binary again
    return matrix


def profile_retrieve(requests: pd.DataFrame, history: pd.DataFrame | None, item_index: pd.Index, k: int, batch: int,
                     scores_of: Callable[[sp.csr_matrix, np.ndarray], np.ndarray], channel: str) -> pd.DataFrame:
    """Each request's top ``k`` items of ``item_index`` by ``scores_of(profiles, positions)``, the
    items its user already had left out, in batches of ``batch`` requests (bounding the dense score block).

    Args:
        history: positive events (user_id, item_id, ts); only those before a request count.
        scores_of: (B, I) float scores of a batch, from its (B, I) binary profiles and the batch's
            positions in ``requests``.
        channel: the channel's name, for the error when ``history`` is missing.

    A request whose user had nothing before it gets no candidates: a profile model knows nothing of them.
    """
    if history is None:
        raise ValueError(f"{channel} retrieve needs history: positive events (user_id, item_id, ts)")
    profile = history_matrix(requests, history, item_index)  # (R, I)
    positions = np.flatnonzero(np.diff(profile.indptr) > 0)
    profile, ids = profile[positions], requests[S.REQUEST_ID].to_numpy()[positions]
    k = min(k, len(item_index))
    frames = []
    for start in range(0, profile.shape[0], batch):
        rows = profile[start : start + batch]
        scores = np.asarray(scores_of(rows, positions[start : start + batch]), dtype=np.float32)  # (B, I)
        scores[rows.nonzero()] = -np.inf  # what the user has is no recommendation of this model's
        top, top_scores = top_k_per_row(scores, k)  # (B, k) each
        frames.append(top_k_rows(ids[start : start + batch], top_scores, np.where(np.isfinite(top_scores), top, -1), item_index.to_numpy()))
    if not frames:
        return empty_lists()
    return pd.concat(frames, ignore_index=True)
