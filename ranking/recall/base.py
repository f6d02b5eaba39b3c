"""What every recall channel shares: the channel contract, the output table, and the helpers the
channels reuse (top-k grids to rows, decayed popularity, the popularity prior as an index dimension,
an unfitted copy of the configured faiss index).

The contract (scikit-learn's estimator contract): ``__init__`` stores hyperparameters, ``fit(train_events,
items)`` learns state ending in ``_`` and returns self, ``retrieve(requests, k, history)`` returns one
row per (request_id, item_id) with ``score`` and a 1-based ``rank``. ``requests`` has columns
request_id, user_id, ts, query; ``history`` holds positive events (user_id, item_id, ts) of all
time, of which a channel may only use rows strictly before each request. ``from_config`` builds a
channel from the ``recall`` config section, so the registry is one name → class line per channel.
``save(directory)`` / ``load(directory)`` keep a fitted channel as plain files: ``channel.json``
(class and hyperparameters) beside the channel's own state (Parquet, ``.npy``, ``.npz``, faiss).
"""

from __future__ import annotations

import inspect
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rankpipe.features.pit import KeyColumn, first_rows, once_per
from rankpipe.pipeline import schema as S
from rankpipe.ranking.index import VectorIndex
from rankpipe.ranking.recall.config import RecallConfig

CHANNEL_FILE = "channel.json"


class RecallChannel:
    """The base of every channel: :meth:`from_config` (the channel's hyperparameters from the
    ``recall`` section; by default none), the contract's two methods, hyperparameters read from the
    ``__init__`` signature, and :meth:`save` / :meth:`load`. A subclass writes and reads its learned
    state in ``_save_state`` / ``_load_state``."""

    @classmethod
    def from_config(cls, recall: RecallConfig, index: VectorIndex, seed: int, device: str) -> "RecallChannel":
        """The channel with its configured hyperparameters. ``index`` is the configured faiss index
        (a template: an embedding channel fits its own copy)."""
        return cls()

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "RecallChannel":
        """Learn from the train period's events and the catalogue; returns self."""
        raise NotImplementedError

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """Up to ``k`` candidates per request: request_id, item_id, score, rank (1-based)."""
        raise NotImplementedError

    def get_params(self) -> dict[str, Any]:
        """Hyperparameters as passed to ``__init__``."""
        return S.get_params(self)

    def save(self, directory: str | Path) -> None:
        """Write the fitted channel into ``directory``: ``channel.json`` and its state files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_state(directory)
        params = {k: (index_spec(v) if isinstance(v, VectorIndex) else v) for k, v in self.get_params().items()}
        S.write_json({"class": type(self).__name__, "params": params}, directory / CHANNEL_FILE)

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> "RecallChannel":
        """Rebuild a channel :meth:`save` wrote (indexes on ``device``); no pickle is read."""
        directory = Path(directory)
        meta = S.read_json(directory / CHANNEL_FILE)
        if meta["class"] != cls.__name__:
            raise ValueError(f"{directory}/{CHANNEL_FILE} holds a {meta['class']}, not a {cls.__name__}")
        params = {k: (index_from_spec(v, device) if isinstance(v, dict) and "factory" in v else v) for k, v in meta["params"].items()}
        if "device" in params:
            params["device"] = device
        defaults = {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}
        params = {k: tuple(v) if isinstance(v, list) and isinstance(defaults.get(k), tuple) else v for k, v in params.items()}  # JSON has no tuples
        channel = cls(**params)
        channel._load_state(directory, device)
        return channel

    def _save_state(self, directory: Path) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not save its state")

    def _load_state(self, directory: Path, device: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not load its state")


def index_spec(index: VectorIndex) -> dict[str, Any]:
    """A faiss index template as JSON: factory, metric and search-time knobs (the device is the loader's)."""
    return {"factory": index.factory, "metric": index.metric, "nprobe": index.nprobe, "ef_search": index.ef_search}


def index_from_spec(spec: dict[str, Any], device: str) -> VectorIndex:
    """The template :func:`index_spec` described, on ``device``."""
    return VectorIndex(spec["factory"], spec["metric"], device, spec["nprobe"], spec["ef_search"])


def save_index(index: VectorIndex, directory: Path) -> None:
    """A fitted faiss index in ``directory`` (its file) with the search knobs it was fitted with."""
    index.save(directory)
    S.write_json(index_spec(index), directory / "index.json")


def load_index(directory: Path, device: str) -> VectorIndex:
    """The index :func:`save_index` wrote, with its search knobs, on ``device``."""
    spec = S.read_json(directory / "index.json")
    return VectorIndex.load(directory, spec["metric"], device, spec["nprobe"], spec["ef_search"])


def save_ids(ids, path: Path) -> None:
    """Item (or token) ids, in order, as a one-column Parquet file."""
    S.write_frame(pd.DataFrame({"id": pd.Series(np.asarray(ids), dtype="str")}), path)


def load_ids(path: Path) -> np.ndarray:
    """The ids :func:`save_ids` wrote, in order."""
    return S.read_frame(path)["id"].to_numpy()


def empty_lists() -> pd.DataFrame:
    """A channel's output when it has nothing to return."""
    return pd.DataFrame({S.REQUEST_ID: pd.Series(dtype="str"), S.ITEM_ID: pd.Series(dtype="str"), S.SCORE: pd.Series(dtype=np.float32), S.RANK: pd.Series(dtype=np.int32)})


def top_k_rows(request_ids: np.ndarray, scores: np.ndarray, item_rows: np.ndarray, item_ids: np.ndarray) -> pd.DataFrame:
    """(R, k) score and item-row grids → long frame with rank; -1 item rows (padding) dropped."""
    r, k = scores.shape
    valid = item_rows >= 0
    return pd.DataFrame({
        S.REQUEST_ID: np.repeat(request_ids, k)[valid.ravel()],
        S.ITEM_ID: item_ids[item_rows[valid]],
        S.SCORE: scores[valid].astype(np.float32),
        S.RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), r)[valid.ravel()],
    })


def top_k_per_row(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(columns, scores) of each row's ``k`` highest scores in a dense (R, I) block, best first: a
    partial sort (``argpartition``), then a sort of the ``k`` kept. ``k`` at most I."""
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (R, k)
    top_scores = np.take_along_axis(scores, top, axis=1)
    order = np.argsort(-top_scores, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)


def ranked_lists(ordered: pd.DataFrame, k: int) -> pd.DataFrame:
    """A channel's output from candidates already ordered best first within each request: ranks 1..k, the rest cut."""
    rank = (ordered.groupby(S.REQUEST_ID, sort=False).cumcount() + 1).to_numpy(dtype=np.int32)
    keep = rank <= k
    return ordered.loc[keep, [S.REQUEST_ID, S.ITEM_ID]].reset_index(drop=True).assign(
        score=ordered[S.SCORE].to_numpy(dtype=np.float32)[keep], rank=rank[keep])


def decayed_counts(train_events: pd.DataFrame, half_life_days: float, by: str | None = None,
                   end: pd.Timestamp | None = None) -> pd.Series:
    """Positive events per item (per (``by``, item) when given), each weighted ``0.5 ** (age / half_life_days)``
    at ``end`` (default: the last event), indexed by item id (or by ``by``, item id)."""
    if half_life_days <= 0:
        raise ValueError(f"half_life_days must be a float in (0, inf). Got {half_life_days} instead.")
    positive = train_events[train_events[S.EVENT].isin(S.POSITIVE_EVENTS)]
    end = train_events[S.TS].max() if end is None else end
    age_days = (end - positive[S.TS]) / pd.Timedelta(days=1)
    weight = pd.Series(np.power(0.5, age_days.to_numpy() / half_life_days), index=positive.index)
    keys = [positive[S.ITEM_ID]] if by is None else [positive[by], positive[S.ITEM_ID]]
    return weight.groupby(keys, observed=True, sort=True).sum().rename_axis([S.ITEM_ID] if by is None else [by, S.ITEM_ID])


def popularity_prior(train_events: pd.DataFrame, item_index: pd.Index, half_life_days: float) -> np.ndarray:
    """(I,) float32 in [0, 1]: ``log1p`` of each item's decayed positive count over the largest (0 for unseen items)."""
    counts = decayed_counts(train_events, half_life_days).reindex(item_index, fill_value=0.0).to_numpy()
    log_count = np.log1p(counts)
    return (log_count / max(float(log_count.max()), 1e-9)).astype(np.float32)


def with_prior(item_vectors: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Item vectors with the popularity prior as one more dimension. Searched with
    :func:`with_prior_query` query vectors, the inner product is ``similarity + weight * prior``:
    faiss still does the search, and the weight is a search-time knob (no rebuild to tune it).

    Embedding similarity alone ignores how often an item is wanted at all; logged positives lean to
    popular items, so a learned channel without the prior can lose to plain popularity on recall.
    """
    return np.hstack([item_vectors, prior[:, None]]).astype(np.float32)  # (I, D + 1)


def with_prior_query(query_vectors: np.ndarray, weight: float) -> np.ndarray:
    """Query vectors matching :func:`with_prior` items: ``weight`` in the extra dimension."""
    return np.hstack([query_vectors, np.full((len(query_vectors), 1), weight, dtype=np.float32)])  # (R, D + 1)


PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0)


def tune_popularity_weight(channel, requests: pd.DataFrame, positives: pd.DataFrame, history: pd.DataFrame, k: int,
                           weights: tuple[float, ...] = PRIOR_WEIGHTS) -> dict[float, float]:
    """Set a fitted embedding channel's ``popularity_weight`` to the one with the best recall@``k``
    on held-out ``requests`` (their (request_id, item_id) ``positives``); ties go to the smaller weight.

    Returns:
        {weight: recall@k} for every weight tried.
    """
    from rankpipe.ranking.metrics import recall_at_k

    results = {}
    for weight in weights:
        channel.popularity_weight = weight
        results[weight] = recall_at_k(channel.retrieve(requests, k, history), positives, k)[0]
    judged = {w: r for w, r in results.items() if np.isfinite(r)}
    channel.popularity_weight = max(judged, key=lambda w: (judged[w], -w)) if judged else weights[0]
    return results


def new_index(template: VectorIndex | None) -> VectorIndex:
    """An unfitted copy of the configured index (exact inner-product search when none is given)."""
    if template is None:
        return VectorIndex("Flat", "ip", "auto")
    return VectorIndex(template.factory, template.metric, template.device, template.nprobe, template.ef_search)


def stable_hash(text: str) -> int:
    # gensim seeds each word's initial vector with hashfxn(word + str(seed)); Python's hash() is
    # salted per process, which would make training irreproducible across runs.
    return zlib.crc32(text.encode("utf-8"))


def keep_top_per_row(matrix, k: int):
    """Keep each row's ``k`` largest entries of a CSR matrix (vectorized over all rows at once)."""
    import scipy.sparse as sp

    matrix = matrix.tocsr()
    row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    order = np.lexsort((-matrix.data, row_of))
    rank_in_row = np.arange(len(order)) - matrix.indptr[row_of[order]]
    keep = order[rank_in_row < k]
    return sp.csr_matrix((matrix.data[keep], (row_of[keep], matrix.indices[keep])), shape=matrix.shape)


def launched_by_request(found: pd.DataFrame, requests: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Drop candidates that did not exist yet at their request's time (``created_at`` after ``ts``).

    Channels that index the whole catalogue (text search) would otherwise offer items launched
    later; an item without ``created_at`` counts as always available.
    """
    if S.CREATED_AT not in items or found.empty:
        return found
    # Integer codes, the catalogue's built once per catalogue: a reindex by id strings cost a tenth of a second per batch and channel.
    catalogue, launched = once_per((items,), ("launch_times",), lambda: _times_by_code(items[S.ITEM_ID], items[S.CREATED_AT]))
    asking, asked_at = _times_by_code(requests[S.REQUEST_ID], requests[S.TS])
    created = launched[catalogue.codes(found[S.ITEM_ID])]  # NaT (the last entry) for an item outside the catalogue: always available
    asked = asked_at[asking.codes(found[S.REQUEST_ID])]
    later = created > asked
    return found[~later].reset_index(drop=True) if later.any() else found


def _times_by_code(ids: pd.Series, ts: pd.Series) -> tuple[KeyColumn, np.ndarray]:
    """(the ids' :class:`KeyColumn`, the time of each code's first row as naive UTC datetime64 with
    NaT last, for the spare and the null code): a comparison with NaT is false, as with a missing time."""
    ids_coded = KeyColumn(ids)
    times = pd.Series(ts)
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    values = times.to_numpy()
    return ids_coded, np.r_[values[first_rows(ids_coded)], np.array(["NaT"], dtype=values.dtype)]


def without_seen(candidates: pd.DataFrame, requests: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """``candidates`` less the items each request's user had a positive event for before the request's
    ``ts`` (the ``exclude_seen`` rule: a feed of films or books does not offer what the user already
    has), with ``rank`` renumbered 1… in the order kept when the candidates have one.

    Args:
        candidates: request_id, item_id[, rank], … in each request's order.
        requests: request_id, user_id, ts.
        history: positive events (user_id, item_id, ts) of all time; only those before a request count.
    """
    first = history.groupby([S.USER_ID, S.ITEM_ID], sort=False, observed=True)[S.TS].min().rename("_first_positive").reset_index()
    at = candidates[[S.REQUEST_ID, S.ITEM_ID]].merge(requests[[S.REQUEST_ID, S.USER_ID, S.TS]], on=S.REQUEST_ID, how="left")
    seen = at.merge(first, on=[S.USER_ID, S.ITEM_ID], how="left")["_first_positive"].to_numpy() < at[S.TS].to_numpy()
    if not seen.any():
        return candidates
    kept = candidates[~seen].reset_index(drop=True)
    if S.RANK in kept:
        codes = pd.factorize(kept[S.REQUEST_ID])[0]
        order = np.lexsort((kept[S.RANK].to_numpy(), codes))
        renumbered = np.empty(len(kept), dtype=np.int64)
        sorted_codes = codes[order]
        renumbered[order] = np.arange(len(order)) - np.searchsorted(sorted_codes, sorted_codes, side="left") + 1
        kept[S.RANK] = renumbered.astype(kept[S.RANK].dtype)
    return kept
