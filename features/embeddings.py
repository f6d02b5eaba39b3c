"""A user's point-in-time taste vector: the mean embedding of her last N positive items before a moment.

Shared by the item2vec recall channel (the query vector of the ANN search) and the ranker's
``emb_sim`` feature, so retrieval and ranking see the same history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.pit import joint_codes, time_frame, to_seconds


def history_vectors(request_users: np.ndarray, request_ts: pd.Series | np.ndarray, history: pd.DataFrame,
                    item_index: pd.Index, item_vectors: np.ndarray, n_last: int) -> np.ndarray:
    """Mean of the vectors of each user's ``n_last`` most recent positive items strictly before each request.

    Args:
        request_users: (R,) user ids.
        request_ts: (R,) request timestamps.
        history: positive events with columns user_id, item_id, ts (any order).
        item_index: ids of the rows of ``item_vectors``.
        item_vectors: (I, D) float32, rows L2-normalised.
        n_last: how many recent items to average.

    Returns:
        (R, D) float32, L2-normalised; zero rows where the user has no usable history.
    """
    dims = item_vectors.shape[1]
    out = np.zeros((len(request_users), dims), dtype=np.float32)
    vec_row = item_index.get_indexer(history["item_id"])
    history = history[vec_row >= 0]
    vec_row = vec_row[vec_row >= 0]
    if len(history) == 0 or len(request_users) == 0:
        return out
    ev_code, rq_code = joint_codes([history["user_id"].to_numpy()], [np.asarray(request_users)])
    ev_s, rq_s = to_seconds(history["ts"]), to_seconds(request_ts)
    origin, span = time_frame(ev_s, rq_s)
    combined = ev_code * span + (ev_s - origin)
    order = np.argsort(combined, kind="stable")
    combined, vec_row = combined[order], vec_row[order]
    safe = np.where(rq_code >= 0, rq_code, 0)
    end = np.searchsorted(combined, safe * span + (rq_s - origin), side="left")  # (R,)
    start = np.searchsorted(combined, safe * span, side="left")  # (R,)
    idx = end[:, None] - np.arange(1, n_last + 1)[None, :]  # (R, N)
    valid = (idx >= start[:, None]) & (rq_code >= 0)[:, None]  # (R, N)
    gathered = item_vectors[vec_row[np.clip(idx, 0, len(vec_row) - 1)]] * valid[:, :, None]  # (R, N, D)
    summed = gathered.sum(axis=1)  # (R, D)
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    np.divide(summed, norms, out=out, where=norms > 0)
    return out
