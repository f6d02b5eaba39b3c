"""A user's point-in-time history: her last N positive items before a moment, and their mean embedding.

Shared by the item2vec and itemCF recall channels and the ranker's ``emb_sim`` feature, so
retrieval and ranking see the same history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.pit import SortedEvents, SortedQueries, joint_codes, time_frame, to_seconds


def recent_items(request_users: np.ndarray, request_ts: pd.Series | np.ndarray, history: pd.DataFrame,
                 item_index: pd.Index, n_last: int) -> np.ndarray:
    """Rows (into ``item_index``) of each user's ``n_last`` most recent positive items strictly before each request.

    Args:
        request_users: (R,) user ids.
        request_ts: (R,) request timestamps.
        history: positive events with columns user_id, item_id, ts (any order).
        item_index: the item ids to map to rows; items outside it are ignored.
        n_last: how many recent items to keep.

    Returns:
        (R, n_last) int64, most recent first; -1 where the user has fewer usable items.
    """
    out = np.full((len(request_users), n_last), -1, dtype=np.int64)
    item_row = item_index.get_indexer(history["item_id"])
    history = history[item_row >= 0]
    item_row = item_row[item_row >= 0]
    if len(history) == 0 or len(request_users) == 0:
        return out
    ev_code, rq_code = joint_codes([history["user_id"]], [pd.Series(np.asarray(request_users))])
    ev_s, rq_s = to_seconds(history["ts"]), to_seconds(request_ts)
    origin, span = time_frame(ev_s, rq_s)
    events = SortedEvents(ev_code, ev_s, origin, span, payload=item_row)
    start, end = events.bounds(SortedQueries(rq_code, rq_s, origin, span))  # (R,), (R,)
    idx = end[:, None] - np.arange(1, n_last + 1)[None, :]  # (R, N)
    valid = idx >= start[:, None]  # (R, N); null users have start = end = 0
    return np.where(valid, events.payload[np.clip(idx, 0, len(events.payload) - 1)], -1)


def history_vectors(request_users: np.ndarray, request_ts: pd.Series | np.ndarray, history: pd.DataFrame,
                    item_index: pd.Index, item_vectors: np.ndarray, n_last: int) -> np.ndarray:
    """Mean of the vectors of each user's ``n_last`` most recent positive items strictly before each request.

    Args: as :func:`recent_items`, plus ``item_vectors`` (I, D) float32 whose rows match ``item_index``.

    Returns:
        (R, D) float32, L2-normalised; zero rows where the user has no usable history.
    """
    rows = recent_items(request_users, request_ts, history, item_index, n_last)  # (R, N)
    gathered = item_vectors[np.clip(rows, 0, None)] * (rows >= 0)[:, :, None]  # (R, N, D)
    summed = gathered.sum(axis=1)  # (R, D)
    out = np.zeros_like(summed, dtype=np.float32)
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    np.divide(summed, norms, out=out, where=norms > 0)
    return out
