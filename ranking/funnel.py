"""The fitted funnel: every part the stages fitted, put together to rank new requests.

``Funnel.score(requests)`` runs recall (each channel's ``retrieve``, items not yet launched at the
request's time dropped, the fitted merge), the feature builder's ``transform`` over the candidates,
the ranker and its calibrator, and the reranker. :func:`rank_candidates` is the one function that
turns merged candidates into scored candidates: the rank stage calls it for the test requests and
the funnel for any request, so a run's own test requests scored through a saved funnel give the
lists its rerank stage wrote.

Saved as plain files in one directory: ``funnel.json`` (what ties the parts together, and the
config that made them) and one folder per part in its own format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.features.embeddings import behaviour_sequences, embedding_similarity
from rankpipe.features.pit import EventKeys, KeyColumn, first_rows
from rankpipe.pipeline import schema as S
from rankpipe.ranking.base import Ranker
from rankpipe.ranking.recall.base import RecallChannel, launched_by_request, without_seen
from rankpipe.ranking.recall.merge import CandidateMerge
from rankpipe.ranking.recall.ranker_features import channel_rank_features
from rankpipe.ranking.rerank import RerankChain

FUNNEL_FILE = "funnel.json"
REQUEST_COLUMNS = (S.REQUEST_ID, S.USER_ID, S.TS, S.QUERY)
# The columns of a scored list (rankpipe score writes them).
LIST_COLUMNS = (S.REQUEST_ID, S.USER_ID, S.QUERY, S.RANK, S.ITEM_ID, S.SCORE, S.PROBABILITY, "channels")


def empty_list_frame() -> pd.DataFrame:
    """Lists with no rows: :data:`LIST_COLUMNS`, typed as scored lists are."""
    types = {S.RANK: "int64", S.SCORE: "float64", S.PROBABILITY: "float64"}
    return pd.DataFrame({column: pd.Series(dtype=types.get(column, "str")) for column in LIST_COLUMNS})


RECALL_PREFIX = "recall_"  # every feature the recall stage gives the ranker starts with it


def recall_features(pairs: pd.DataFrame, merged: pd.DataFrame, channel_lists: pd.DataFrame, quotas: dict[str, int]) -> pd.DataFrame:
    """What recall knows of each (request_id, item_id) of ``pairs``, as ranker features (float32,
    aligned with ``pairs``): ``recall_merge_rank`` and ``recall_merge_score`` (its place in the merged
    list and the merge's P(positive)), ``recall_<channel>_score`` and ``recall_<channel>_rank`` per
    channel, and ``recall_channels`` (how many found it).

    A pair of a request the merge listed but not this item gets the rank after the list's last and
    no score; a pair of a request never merged (a logged list outside the ranker's candidate
    requests) gets NaN everywhere: unknown, not "not found".

    Args:
        pairs: request_id, item_id rows to describe.
        merged: the merge's lists (request_id, item_id, rank, merge_score, ``<channel>_score``).
        channel_lists / quotas: every channel's own lists (request_id, item_id, rank, channel) and quotas.
    """
    # Integer codes shared by the lists and the pairs (no MultiIndex of strings): each pair's row in the merged lists, or -1.
    requests, items = KeyColumn(merged[S.REQUEST_ID]), KeyColumn(merged[S.ITEM_ID])
    listed = EventKeys([requests, items])
    pair_request = requests.codes(pairs[S.REQUEST_ID])
    pair_code = listed.codes([pair_request, items.codes(pairs[S.ITEM_ID])])
    first_row = np.r_[first_rows(listed), -1]  # -1: the spare code, a pair the merge did not list
    row = np.where(pair_code >= 0, first_row[np.maximum(pair_code, 0)], -1)
    found = row >= 0
    merged_request = (pair_request >= 0) & (pair_request < requests.size - 1)  # the spare code: a request the merge never listed
    list_length = np.bincount(requests.events[requests.events >= 0], minlength=requests.size).astype(np.float64)
    after_last = np.where(merged_request, list_length[np.maximum(pair_request, 0)], np.nan) + 1

    def lookup(column: str, missing: np.ndarray | float) -> np.ndarray:
        values = merged[column].to_numpy(dtype=np.float64) if column in merged and len(merged) else np.full(max(len(merged), 1), np.nan)
        picked = np.where(found, values[np.maximum(row, 0)], missing)
        return np.where(merged_request, picked, np.nan).astype(np.float32)

    out = {f"{RECALL_PREFIX}merge_rank": lookup(S.RANK, after_last)}
    out[f"{RECALL_PREFIX}merge_score"] = lookup(S.MERGE_SCORE, np.nan)
    for name in quotas:
        out[f"{RECALL_PREFIX}{name}_score"] = lookup(f"{name}_score", np.nan)
    ranks = channel_rank_features(channel_lists, pairs, quotas, pd.Index(pd.unique(merged[S.REQUEST_ID])))
    return pd.concat([pd.DataFrame(out), ranks.reset_index(drop=True)], axis=1)


def candidate_features(pairs: pd.DataFrame, builder: FeatureBuilder, history: pd.DataFrame, item_index: pd.Index, item_vectors: np.ndarray,
                       n_last: int, merged: pd.DataFrame | None = None, channel_lists: pd.DataFrame | None = None,
                       quotas: dict[str, int] | None = None, counter=None, sequence_length: int = 0) -> pd.DataFrame:
    """The ranker's features of (request, item) ``pairs`` (request_id, item_id, user_id, query, ts),
    aligned with them: the one feature function of the training rows and of any candidate scored.

    The builder's point-in-time statistics, ``emb_sim`` (item2vec cosine to the user's last
    ``n_last`` positives), with ``merged`` the recall features (:func:`recall_features`), and with
    ``sequence_length`` > 0 the behaviour columns a sequence ranker (DIN) reads.

    Args:
        history: positive events (user_id, item_id, ts); only those before a pair's ts count.
        counter: what computes the count statistics (see :meth:`FeatureBuilder.transform`).
    """
    pairs = pairs.reset_index(drop=True)
    parts = [embedding_similarity(builder.transform(pairs, counter), pairs, history, item_index, item_vectors, n_last).reset_index(drop=True)]
    if merged is not None:
        parts.append(recall_features(pairs, merged, channel_lists, quotas))
    if sequence_length:
        parts.append(behaviour_sequences(pairs, history, pd.Index(builder.items_[S.ITEM_ID]), sequence_length).reset_index(drop=True))
    return pd.concat(parts, axis=1)


def rank_candidates(candidates: pd.DataFrame, requests: pd.DataFrame, builder: FeatureBuilder, ranker: Ranker, history: pd.DataFrame,
                    item_index: pd.Index, item_vectors: np.ndarray, n_last: int, channel_lists: pd.DataFrame | None = None,
                    quotas: dict[str, int] | None = None, counter=None, merged: pd.DataFrame | None = None) -> pd.DataFrame:
    """Score (request, item) candidates with the ranker: :func:`candidate_features` (the features of
    training), then ``predict`` and the calibrator.

    Args:
        candidates: the pairs to score (request_id, item_id, rank, channel, …): the merge's output,
            or logged pairs to re-order (then ``merged`` gives the recall features).
        requests: request_id, user_id, ts, query of the candidates' requests.
        history: positive events (user_id, item_id, ts); only those before a request count.
        item_index / item_vectors: the item2vec channel's ids and (I, D) vectors, for ``emb_sim``.
        n_last: how many recent positives make the user's taste vector.
        channel_lists / quotas: every channel's own lists and quotas, for the recall features.
        counter: what computes the count statistics (see :meth:`FeatureBuilder.transform`).
        merged: the merged lists the recall features come from (default: ``candidates`` themselves).

    Returns:
        request_id, item_id, user_id, query, rank (the merged rank), channel, score, and probability
        when the ranker is calibrated; in the candidates' order.
    """
    pairs = candidates.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="inner").reset_index(drop=True)
    reads_recall = any(name.startswith(RECALL_PREFIX) for name in ranker.feature_names_)
    if reads_recall and (channel_lists is None or quotas is None):
        raise ValueError("the ranker reads what recall found for each pair (recall_*); pass channel_lists and quotas")
    sequence_length = ranker.nn_history if getattr(ranker, "uses_behaviour", False) else 0
    features = candidate_features(pairs, builder, history, item_index, item_vectors, n_last, (candidates if merged is None else merged)
                                  if reads_recall else None, channel_lists, quotas, counter, sequence_length)
    scored = pairs[[S.REQUEST_ID, S.ITEM_ID, S.USER_ID, S.QUERY, S.RANK, S.CHANNEL]].copy()
    scored[S.SCORE] = ranker.predict(features).astype(np.float64) if len(pairs) else np.empty(0)  # no candidate: nothing to predict
    if ranker.calibrator_ is not None:
        scored[S.PROBABILITY] = ranker.calibrator_.predict(scored[S.SCORE].to_numpy())
    return scored


def recall_candidates(channels: dict[str, RecallChannel], merge: CandidateMerge, requests: pd.DataFrame, depth: int, history: pd.DataFrame,
                      items: pd.DataFrame, cutoff: pd.Timestamp | None = None, exclude_seen: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(merged candidates, every channel's own lists) of ``requests``: each channel's ``retrieve`` of
    ``depth`` items, less the items launched after the request (or after ``cutoff``), then the
    fitted merge; with ``exclude_seen`` the items the user already had leave the merged lists
    (:func:`~rankpipe.ranking.recall.base.without_seen`). The recall of scoring and of the ranker's
    training requests alike."""
    lists = {name: launched_by_request(channel.retrieve(requests, depth, history), requests, items) for name, channel in channels.items()}
    if cutoff is not None and S.CREATED_AT in items:
        known = pd.Index(items.loc[items[S.CREATED_AT].isna() | (items[S.CREATED_AT] <= cutoff), S.ITEM_ID])
        keep = {name: known.get_indexer(found[S.ITEM_ID]) >= 0 for name, found in lists.items()}
        lists = {name: found if keep[name].all() else found[keep[name]].reset_index(drop=True) for name, found in lists.items()}
    channel_lists = pd.concat([frame.assign(**{S.CHANNEL: name}) for name, frame in lists.items()], ignore_index=True)
    merged = merge.merge(lists)
    if exclude_seen:
        merged = without_seen(merged, requests, history)
    return merged, channel_lists


def validate_requests(requests: pd.DataFrame, cutoff: pd.Timestamp, allow_past: bool = False) -> pd.DataFrame:
    """Requests in the funnel's terms (request_id and user_id as strings, ts as a timestamp, query
    nullable), or a :class:`~rankpipe.pipeline.schema.ContractError` naming the column and rows.

    Refused: a missing column (``query`` may be absent: feed requests), a duplicate or null
    request id, a null user or time, and, unless ``allow_past``, a request timed before the funnel's
    ``cutoff`` (the last event it knows): scoring the past is almost always the wrong file.
    """
    table = "requests"
    if not isinstance(requests, pd.DataFrame):
        raise S.ContractError(table, None, "a DataFrame with columns request_id, user_id, ts[, query]", type(requests).__name__)
    missing = [c for c in (S.REQUEST_ID, S.USER_ID, S.TS) if c not in requests.columns]
    if missing:
        raise S.ContractError(table, missing[0], f"columns {[S.REQUEST_ID, S.USER_ID, S.TS]} (and optionally {S.QUERY!r})",
                              f"columns {list(requests.columns)}")
    out = pd.DataFrame({S.REQUEST_ID: requests[S.REQUEST_ID], S.USER_ID: requests[S.USER_ID]})
    for column in (S.REQUEST_ID, S.USER_ID):
        missing = out[column].isna() | out[column].astype("str").str.strip().eq("")
        if missing.any():
            raise S.ContractError(table, column, "a value on every row", f"{int(missing.sum())} nulls or empty values", requests[missing])
        out[column] = S.id_strings(out[column], table, column)  # 42.0 would become the id '42.0', a user the funnel never saw
    duplicated = out[S.REQUEST_ID].duplicated(keep=False)
    if duplicated.any():
        raise S.ContractError(table, S.REQUEST_ID, "one row per request id", f"{int(duplicated.sum())} rows share an id", requests[duplicated])
    ts = S.parse_timestamps(requests[S.TS], table, S.TS, rows=requests)  # ISO-8601 strings or timestamps, offsets to UTC
    if ts.isna().any():
        raise S.ContractError(table, S.TS, "a timestamp on every row", f"{int(ts.isna().sum())} nulls", requests[ts.isna()])
    if not allow_past and (ts < cutoff).any():
        early = ts < cutoff
        raise S.ContractError(table, S.TS, f"requests at or after the funnel's cutoff {cutoff} (allow_past to score earlier ones)",
                              f"{int(early.sum())} earlier requests", requests[early])
    out[S.TS] = ts.to_numpy()
    query = requests[S.QUERY].astype("str").where(requests[S.QUERY].notna()) if S.QUERY in requests else pd.Series(None, index=out.index, dtype="str")
    out[S.QUERY] = query.where(query.str.strip() != "")  # an empty query is a feed request
    return out.reset_index(drop=True)


def channel_names(channel_lists: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """request_id, item_id, ``channels``: for each (request_id, item_id) of ``pairs`` that a channel
    found, every channel of ``channel_lists`` that found it, in alphabetical order, comma-separated.

    One bit per channel, OR-ed per pair, then one label per distinct set of bits: a Python join per
    pair cost promote ~1.5 s for 200 requests, and batch scoring as much per 200 requests.
    """
    keys = [S.REQUEST_ID, S.ITEM_ID]
    found = channel_lists[[*keys, S.CHANNEL]].merge(pairs[keys].drop_duplicates(), on=keys)  # only the listed pairs
    code, names = pd.factorize(found[S.CHANNEL], sort=True)
    pair = found.groupby(keys, sort=False).ngroup().to_numpy()
    masks = np.zeros(int(pair.max()) + 1 if len(pair) else 0, dtype=np.int64)
    np.bitwise_or.at(masks, pair, np.left_shift(1, code.astype(np.int64)))
    sets, which = np.unique(masks, return_inverse=True)
    labels = np.array([",".join(str(name) for j, name in enumerate(names) if bits >> j & 1) for bits in sets], dtype=object)
    first = np.unique(pair, return_index=True)[1]  # each pair's first row, in pair order
    return found.iloc[first][keys].reset_index(drop=True).assign(channels=pd.Series(labels[which], dtype="str"))


class Funnel:
    """The fitted funnel (see the module docstring).

    Args:
        channels: fitted recall channels by name (the merge's quotas name them).
        merge: the fitted :class:`CandidateMerge`.
        builder: the fitted :class:`FeatureBuilder` (its history is the log as of its cutoff).
        ranker: the fitted, calibrated ranker.
        reranker: the fitted :class:`~rankpipe.ranking.rerank.RerankChain` (``rerank.chain``).
        depth: how many candidates each channel retrieves (the recall stage's depth).
        n_last: recent positives in the user's taste vector (``recall.item2vec.history``).
        config: the resolved run config as plain values, kept for the record.
        exclude_seen: the business rule that no list offers an item its user already had (``recall.exclude_seen``).
    """

    def __init__(self, channels: dict[str, RecallChannel], merge: CandidateMerge, builder: FeatureBuilder, ranker: Ranker,
                 reranker: RerankChain, depth: int, n_last: int, config: dict[str, Any] | None = None, exclude_seen: bool = False):
        self.channels, self.merge, self.builder, self.ranker, self.reranker = channels, merge, builder, ranker, reranker
        self.depth, self.n_last, self.config, self.exclude_seen = depth, n_last, config or {}, exclude_seen

    @property
    def cutoff(self) -> pd.Timestamp:
        """The last event the funnel knows (its history ends there)."""
        return self.builder.history_[S.TS].max()

    def history(self) -> pd.DataFrame:
        """The positive events the channels and features read (user_id, item_id, ts)."""
        if not hasattr(self, "_history"):
            self._history = S.positive_history(self.builder.history_)
        return self._history

    def until(self, cutoff: pd.Timestamp) -> "Funnel":
        """The same fitted parts, reading the log only up to ``cutoff``: features, histories and the
        catalogue as they were then (items launched later are never returned)."""
        cutoff = pd.Timestamp(cutoff)
        if cutoff > self.cutoff:
            raise S.ConfigError(f"cutoff {cutoff} is after the funnel's last event {self.cutoff}: it knows nothing later")
        first = self.builder.history_[S.TS].min()
        if cutoff < first:
            raise S.ConfigError(f"cutoff {cutoff} is before the funnel's first event {first}: it would know nothing")
        return Funnel(self.channels, self.merge, self.builder.until(cutoff), self.ranker, self.reranker, self.depth, self.n_last, self.config,
                      self.exclude_seen)

    def recall(self, requests: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(merged candidates, every channel's own lists) for ``requests`` (:func:`recall_candidates`):
        an item launched after a request's time or after the funnel's cutoff is never a candidate,
        and with ``exclude_seen`` neither is one the user already had."""
        return recall_candidates(self.channels, self.merge, requests, self.depth, self.history(), self.builder.items_, self.cutoff,
                                 self.exclude_seen)

    def _ranked(self, requests: pd.DataFrame, allow_past: bool) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(the validated requests, their merged candidates scored by the ranker, every channel's lists, the merged lists)."""
        requests = validate_requests(requests, self.cutoff, allow_past)
        merged, channel_lists = self.recall(requests)
        i2v = self.channels["item2vec"]
        scored = rank_candidates(merged, requests, self.builder, self.ranker, self.history(), i2v.item_index_, i2v.vectors_, self.n_last,
                                 channel_lists, self.merge.quotas_)
        return requests, scored, channel_lists, merged

    def ranked_candidates(self, requests: pd.DataFrame, allow_past: bool = False) -> pd.DataFrame:
        """Every merged candidate of ``requests`` with the ranker's ``score`` (``rank``: its place in
        the merge), before the reranker: what :meth:`score` reranks."""
        return self._ranked(requests, allow_past)[1]

    def score(self, requests: pd.DataFrame, allow_past: bool = False, k: int | None = None) -> pd.DataFrame:
        """The final ranked lists of ``requests`` (request_id, user_id, ts, query; checked by
        :func:`validate_requests`): :data:`LIST_COLUMNS`, ``rank`` 1-based, at most the reranker's
        ``k`` per request; ``channels`` names every channel that found the item. A request no channel
        finds anything for gets no rows. ``k``: list length (default: the reranker's). The lists come
        in the order of ``requests``, so scoring them in parts and concatenating gives the same frame."""
        requests, scored, channel_lists, _ = self._ranked(requests, allow_past)
        if scored.empty:  # no request, or none any channel found anything for: the documented columns, no rows
            return empty_list_frame()
        reranker = self.reranker
        if k is not None and k != reranker.k:
            if k < 1:
                raise ValueError(f"k must be at least 1. Got {k} instead.")
            reranker = reranker.with_k(k)
        lists = self.describe(reranker.rerank(scored, requests, self.history()), scored, channel_lists)
        request_order = pd.Index(requests[S.REQUEST_ID]).get_indexer(lists[S.REQUEST_ID])
        return lists.iloc[np.lexsort((lists[S.RANK].to_numpy(), request_order))].reset_index(drop=True)

    def score_with_logged(self, requests: pd.DataFrame, logged: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(:meth:`score`'s lists of ``requests``, and ``logged`` (request_id, item_id: what was shown for
        them) scored by the ranker with the same features), past requests allowed: how the promotion
        gate judges a registered funnel on a later run's test requests, the lists and the ranker both."""
        requests, scored, channel_lists, merged = self._ranked(requests, allow_past=True)
        lists = self.describe(self.reranker.rerank(scored, requests, self.history()), scored, channel_lists)
        i2v = self.channels["item2vec"]
        shown = logged[[S.REQUEST_ID, S.ITEM_ID]].assign(**{S.RANK: 0, S.CHANNEL: ""})
        logged_scores = rank_candidates(shown, requests, self.builder, self.ranker, self.history(), i2v.item_index_, i2v.vectors_, self.n_last,
                                        channel_lists, self.merge.quotas_, merged=merged)
        return lists, logged_scores

    @staticmethod
    def describe(lists: pd.DataFrame, scored: pd.DataFrame, channel_lists: pd.DataFrame) -> pd.DataFrame:
        """The reranked ``lists`` with each item's user, query, probability and the channels that found it."""
        keys = [S.REQUEST_ID, S.ITEM_ID]
        context = scored.drop(columns=[S.SCORE, S.RANK, S.CHANNEL]).drop_duplicates(keys)
        out = lists.merge(context, on=keys, how="left").merge(channel_names(channel_lists, lists), on=keys, how="left")
        out = out.rename(columns={S.POSITION: S.RANK})
        if S.PROBABILITY not in out:
            out[S.PROBABILITY] = np.nan
        return out[list(LIST_COLUMNS)]

    # ------------------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> None:
        """Every part in its own folder (channels/<name>/, merge/, builder/, ranker/, reranker/) and ``funnel.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, channel in self.channels.items():
            channel.save(directory / "channels" / name)
        self.merge.save(directory / "merge")
        self.builder.save(directory / "builder")
        self.ranker.save(directory / "ranker")
        self.reranker.save(directory / "reranker")
        S.write_json({"channels": list(self.channels), "depth": self.depth, "n_last": self.n_last, "exclude_seen": self.exclude_seen,
                      "config": self.config}, directory / FUNNEL_FILE)

    @classmethod
    def load(cls, directory: str | Path, device: str = "auto") -> "Funnel":
        """The funnel :meth:`save` wrote; no pickle is read."""
        from rankpipe.ranking.rankers import load_ranker
        from rankpipe.ranking.recall import load_channel

        directory = Path(directory)
        what = f"the saved funnel {directory}"
        S.refuse_links_out(directory, what)
        meta = S.read_json(directory / FUNNEL_FILE)
        if not isinstance(meta.get("channels"), list):
            raise S.ContractError(f"{directory / FUNNEL_FILE}", "channels", "a list of channel names", type(meta.get("channels")).__name__)
        channels = {name: load_channel(S.part_path(directory, "channels", name, what=what), device) for name in meta["channels"]}
        return cls(channels, CandidateMerge.load(directory / "merge"), FeatureBuilder.load(directory / "builder"),
                   load_ranker(directory / "ranker"), RerankChain.load(directory / "reranker"), meta["depth"], meta["n_last"], meta["config"],
                   bool(meta.get("exclude_seen", False)))
