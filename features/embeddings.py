"""A user's point-in-time history: her last N positive items before a moment, and their mean embedding.

Shared by the item2vec and itemCF recall channels and the ranker's ``emb_sim`` feature, so
retrieval and ranking see the same history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.features.pit import KeyColumn, SortedEvents, SortedQueries, once_per, time_frame, to_seconds
from rankpipe.pipeline import schema as S


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
    if len(request_users) == 0:
        return out
    users, events = once_per((history, item_index), ("recent_items",), lambda: _sorted_positives(history, item_index))
    if events is None:
        return out
    rq_code = users.codes(pd.Series(np.asarray(request_users))).astype(np.int64)
    start, end = events.bounds(SortedQueries(rq_code, to_seconds(request_ts), events.origin, events.span))  # (R,), (R,)
    idx = end[:, None] - np.arange(1, n_last + 1)[None, :]  # (R, N)
    valid = idx >= start[:, None]  # (R, N); null users have start = end = 0
    return np.where(valid, events.payload[np.clip(idx, 0, len(events.payload) - 1)], -1)


def _sorted_positives(history: pd.DataFrame, item_index: pd.Index) -> tuple[KeyColumn, SortedEvents | None]:
    """(the users' codes, the positives of items in ``item_index`` sorted by (user, time) with their
    item rows), built once per history: a request time outside the history's span is clipped to its
    edge, which reads the same events (none before the first, all after the last)."""
    item_row = item_index.get_indexer(history["item_id"])
    history, item_row = history[item_row >= 0], item_row[item_row >= 0]
    users = KeyColumn(history["user_id"])
    if len(history) == 0:
        return users, None
    ev_s = to_seconds(history["ts"])
    origin, span = time_frame(ev_s)
    return users, SortedEvents(users.events.astype(np.int64), ev_s, origin, span, payload=item_row)


# The behaviour sequence a sequence ranker (DIN) reads: the candidate's item code and the user's last
# positive items before the request, most recent first; codes are 1 + the item's row in the catalogue, 0 unknown/padding.
BEHAVIOUR_TARGET = "behaviour_target"
BEHAVIOUR_HISTORY_PREFIX = "behaviour_hist_"


def behaviour_columns(length: int) -> list[str]:
    """The behaviour column names for a history of ``length`` items (target first)."""
    return [BEHAVIOUR_TARGET, *(f"{BEHAVIOUR_HISTORY_PREFIX}{i}" for i in range(1, length + 1))]


def behaviour_sequences(pairs: pd.DataFrame, history: pd.DataFrame, item_index: pd.Index, length: int) -> pd.DataFrame:
    """Point-in-time behaviour columns (:func:`behaviour_columns`) for (request, item) pairs.

    Args:
        pairs: columns request_id, user_id, ts, item_id; one row per pair.
        history: positive events (user_id, item_id, ts); only those strictly before a request count.
        item_index: the catalogue's item ids; an item's code is 1 + its position, 0 when absent.
        length: how many recent items to keep.

    Returns:
        int32 frame row-aligned with ``pairs`` (a fresh RangeIndex).
    """
    requests = pairs.drop_duplicates("request_id")
    recent = recent_items(requests["user_id"].to_numpy(), requests["ts"], history, item_index, length) + 1  # (R, L)
    request_row = pd.Index(requests["request_id"]).get_indexer(pairs["request_id"])
    codes = np.concatenate([item_index.get_indexer(pairs["item_id"])[:, None] + 1, recent[request_row]], axis=1)
    return pd.DataFrame(codes.astype(np.int32), columns=behaviour_columns(length))


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


def embedding_similarity(feats: pd.DataFrame, pairs: pd.DataFrame, history: pd.DataFrame,
                         item_index: pd.Index, vectors: np.ndarray, n_last: int) -> pd.DataFrame:
    """``feats`` with ``emb_sim``: the cosine between the user's point-in-time taste (the mean of her last
    ``n_last`` positive items' vectors, :func:`history_vectors`) and the item's vector; NaN without either."""
    req = pairs.drop_duplicates(S.REQUEST_ID)
    user_vec = history_vectors(req[S.USER_ID].to_numpy(), req[S.TS], history, item_index, vectors, n_last)  # (R, D)
    req_row = pd.Index(req[S.REQUEST_ID]).get_indexer(pairs[S.REQUEST_ID])
    item_row = item_index.get_indexer(pairs[S.ITEM_ID])
    sim = np.einsum("nd,nd->n", user_vec[req_row], vectors[np.clip(item_row, 0, None)])  # (N,)
    has = (item_row >= 0) & (np.linalg.norm(user_vec, axis=1)[req_row] > 0)
    return feats.assign(emb_sim=np.where(has, sim, np.nan).astype(np.float32))
