"""Point-in-time statistics per entity, declared once and used for training rows and for scoring.

Each :class:`CountGroup` names its entity keys and the event types it counts. :func:`fit_priors`
fits an empirical-Bayes Beta prior per group on the training period; :func:`build_features` turns
any (request, item) pairs into features using only events strictly before each request, so the
same code builds the training set and scores recall candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rankpipe.features.config import FeaturesConfig
from rankpipe.features.engine import Column, snapshot, walk
from rankpipe.features.pit import EventKeys, KeyColumn, once_per
from rankpipe.pipeline import schema as S

DAY_S = 86_400
TOP_CATEGORY = "category_top"  # derived key: the first level of the item's category path (``top>mid>leaf``)


@dataclass(frozen=True)
class CountGroup:
    """A feature group declared once: entity ``keys`` (columns of both the history and the requests)
    and the statistics of the events it counts, all taken strictly before each request.

    events: all-history counts; windowed: counts over each configured trailing window;
    decayed: exponentially decayed counts per configured half-life; recency: days since the last
    such event; coec: clicks over expected clicks at the positions shown (position-debiased CTR).
    Smoothed rates (:data:`RATES`) follow wherever both of their events are counted.
    """

    name: str
    keys: tuple[str, ...]
    events: tuple[str, ...] = ("impression", "click")
    windowed: tuple[str, ...] = ("impression", "click")
    decayed: tuple[str, ...] = ()
    recency: tuple[str, ...] = ()
    coec: bool = False


COUNT_GROUPS = (
    CountGroup("item", (S.ITEM_ID,), ("impression", "click", "cart", "purchase"), decayed=("click",), recency=("click",), coec=True),
    CountGroup("user", (S.USER_ID,), ("impression", "click", "purchase"), recency=("click",)),
    CountGroup("query", (S.QUERY,)),
    CountGroup("query_item", (S.QUERY, S.ITEM_ID), coec=True),
    CountGroup("user_category", (S.USER_ID, S.CATEGORY), windowed=(), recency=("click",)),
    # The category path's first level: a user who likes shirts leans to t-shirts too, and with a
    # few sessions per user the leaf counts are mostly zero where the top level already knows.
    CountGroup("user_top_category", (S.USER_ID, TOP_CATEGORY), windowed=(), recency=("click",)),
)

# Rates smoothed with a Beta prior: (name, numerator event, denominator event).
RATES = (("ctr", "click", "impression"), ("cvr", "purchase", "click"))

# The engine's slots: one per event type, plus impressions weighted by the CTR expected at their position.
# The event types the engine counts, in slot order (impression 0 … purchase 3; see S.LABEL_GRADES).
COUNTED_EVENTS = tuple(S.LABEL_GRADES)
EXPECTED_CLICK = len(COUNTED_EVENTS)
_TYPE_SLOTS = np.array([[0, EXPECTED_CLICK], [1, -1], [2, -1], [3, -1]], dtype=np.int16)
_SLOT_WEIGHTED = np.array([False, False, False, False, True])


def item_keys(items: pd.DataFrame) -> pd.DataFrame:
    """The item-level keys of the count groups (category and its top level), indexed by item id."""
    keys = items.set_index(S.ITEM_ID)[[S.CATEGORY]]
    top = keys[S.CATEGORY].str.split(">", n=1).str[0].astype(keys[S.CATEGORY].dtype)  # split's pieces come back as objects
    return keys.assign(**{TOP_CATEGORY: top})


def _attach_item_keys(frame: pd.DataFrame, keys: pd.DataFrame) -> np.ndarray:
    """Add ``keys``' columns (:func:`item_keys`) to ``frame`` by its item ids; returns each row's
    catalogue row, -1 for an item missing from the catalogue (null keys, hence zero counts)."""
    row = keys.index.get_indexer(frame[S.ITEM_ID])
    for column in keys.columns:
        frame[column] = keys[column].array.take(row, allow_fill=True)  # the keys' own dtype (str), also in an empty frame
    return row


def enrich_history(events, items: pd.DataFrame):
    """Events with the item's keys attached (for user × category counts, :func:`item_keys`), in time order.

    ``events`` may be a Dask DataFrame in time order across its partitions (as the prepare stage
    writes it): each partition is enriched on the workers, and the result stays there, lazy.
    """
    if not isinstance(events, pd.DataFrame):
        keys = item_keys(items)  # sent with each task: the catalogue's keys, not the log
        return events.map_partitions(_enrich_partition, keys, meta=_enrich_partition(events._meta, keys))
    out = _enrich_partition(events, item_keys(items))
    if not out[S.TS].is_monotonic_increasing:
        out = out.sort_values(S.TS, kind="stable", ignore_index=True)
    return out


def _enrich_partition(events: pd.DataFrame, keys: pd.DataFrame) -> pd.DataFrame:
    columns = [S.TS, S.USER_ID, S.ITEM_ID, S.EVENT, S.QUERY] + ([S.POSITION] if S.POSITION in events else [])
    out = events[columns].copy()
    _attach_item_keys(out, keys)
    return out


def _micros(ts) -> np.ndarray:
    return np.asarray(ts, dtype="datetime64[us]").view(np.int64)


def statistic_columns(group: CountGroup, windows_days: tuple[int, ...], half_lives_days: tuple[int, ...]) -> list[tuple[str, str, int, str]]:
    """(column name, kind, seconds, slot name) of every statistic ``group`` declares."""
    out = []
    for event in group.events:
        out.append((f"{group.name}_{event}_n", "total", 0, event))
        if event in group.windowed:
            out += [(f"{group.name}_{event}_n_{d}d", "window", d * DAY_S, event) for d in windows_days]
    out += [(f"{group.name}_{event}_decay_{h}d", "decay", h * DAY_S, event) for event in group.decayed for h in half_lives_days]
    out += [(f"{group.name}_{event}_days_since", "since", 0, event) for event in group.recency]
    if group.coec:
        out.append((f"{group.name}_expected_clicks", "total", 0, "expected_click"))
    return out


def count_features(history: pd.DataFrame, pairs: pd.DataFrame | np.ndarray, windows_days: tuple[int, ...],
                   groups: tuple[CountGroup, ...] = COUNT_GROUPS, half_lives_days: tuple[int, ...] = (),
                   position_ctr: pd.DataFrame | None = None, sink: str | None = None,
                   chunk_rows: int = 1_000_000) -> dict[str, np.ndarray] | None:
    """Every statistic of every group for ``pairs`` (see :func:`build_features`), float32, NaN where a key is null.

    Args:
        history: events with ts, event, the groups' key columns and (for COEC) position.
        pairs: the requests (ts plus key columns), or an integer array of positions into a
            time-ordered ``history``: requests that are logged events themselves (e.g. every
            impression), whose keys are then read from the history without a second table.
        windows_days / groups / half_lives_days: what to compute (the declared specs).
        position_ctr: :func:`fit_position_ctr` output, weighting impressions for the expected
            clicks behind COEC; without it every impression expects the same click.
        sink: a file path (``.parquet``: Parquet, else Arrow IPC). Given, the statistics are written there in chunks of ``chunk_rows``
            requests (in time order, with a ``row`` column giving each request's position) and
            nothing is returned, so memory stays flat however many requests there are.
    """
    from_rows = isinstance(pairs, np.ndarray)
    if not history[S.TS].is_monotonic_increasing:
        if from_rows:
            raise ValueError("count_features: request rows index the history, which must then be in time order (see enrich_history)")
        history = history.sort_values(S.TS, kind="stable", ignore_index=True)
    coded = once_per((history,) if position_ctr is None else (history, position_ctr), ("counts", groups, tuple(windows_days), tuple(half_lives_days)),
                     lambda: CodedHistory(history, windows_days, groups, half_lives_days, position_ctr))
    if from_rows:
        rq_us, rq_codes = coded.ev_us[pairs], [codes[pairs] for codes in coded.ev_codes]
    else:
        rq_us = _micros(pairs[S.TS])
        part_codes = {key: part.codes(pairs[key]) for key, part in coded.parts.items()}  # a column shared by groups (item, user) is coded once
        rq_codes = [keys.codes([part_codes[key] for key in group.keys]) for keys, group in zip(coded.keys, groups)]
    # Requests at or after the log's last event (every scoring request of a fitted funnel) walk on
    # from the state there, built once, and read only the events from there on.
    late = not from_rows and sink is None and len(rq_us) > 0 and rq_us.min() >= coded.last_us
    walked = walk(coded.ev_us, coded.event_type, coded.weight, coded.ev_codes, coded.n_keys, _TYPE_SLOTS, _SLOT_WEIGHTED, rq_us, rq_codes,
                  coded.columns, chunk_rows=chunk_rows if sink else None, start=coded.snapshot() if late else None)
    if sink is None:
        walked[coded.days_since] /= np.float32(DAY_S)
        return dict(zip(coded.names, walked))
    _write_chunks(walked, coded.names, coded.days_since, sink)
    return None


class CodedHistory:
    """A time-ordered history as the engine reads it, coded once for the given statistics (see
    :func:`count_features`): event times, types and COEC weights, each group's key codes and what
    codes a request's keys the same way, the statistics' columns, and (:meth:`snapshot`, on first
    use) the walk's state at the last event."""

    def __init__(self, history: pd.DataFrame, windows_days: tuple[int, ...], groups: tuple[CountGroup, ...], half_lives_days: tuple[int, ...],
                 position_ctr: pd.DataFrame | None):
        self.ev_us = _micros(history[S.TS])
        self.last_us = int(self.ev_us[-1]) if len(self.ev_us) else np.iinfo(np.int64).min
        event_type = pc.index_in(pa.array(history[S.EVENT], from_pandas=True), value_set=pa.array(COUNTED_EVENTS))
        self.event_type = pc.fill_null(event_type, -1).to_numpy().astype(np.int8)
        self.weight = _expected_click_weight(history, position_ctr)
        self.parts = {key: KeyColumn(history[key]) for key in dict.fromkeys(key for group in groups for key in group.keys)}
        self.keys = [EventKeys([self.parts[key] for key in group.keys]) for group in groups]
        self.ev_codes, self.n_keys = [keys.events for keys in self.keys], [keys.size for keys in self.keys]
        self.columns, self.names = [], []
        for g, group in enumerate(groups):
            for name, kind, seconds, slot in statistic_columns(group, windows_days, half_lives_days):
                slot_code = EXPECTED_CLICK if slot == "expected_click" else COUNTED_EVENTS.index(slot)
                self.columns.append(Column(g, slot_code, kind, seconds))
                self.names.append(name)
        self.days_since = np.array([name.endswith("_days_since") for name in self.names])
        self._snapshot = None

    def snapshot(self):
        """The walk's state at the last event (:func:`~rankpipe.features.engine.snapshot`), built on first use."""
        if self._snapshot is None:
            self._snapshot = snapshot(self.last_us, self.ev_us, self.event_type, self.weight, self.ev_codes, self.n_keys, _TYPE_SLOTS,
                                      _SLOT_WEIGHTED, self.columns)
        return self._snapshot


def _write_chunks(chunks, names: list[str], days_since: np.ndarray, sink: str) -> None:
    """Write (rows, values) chunks to one file, atomically (a failed run leaves no file).

    ``.parquet``: Parquet; anything else: an Arrow IPC file. Both are LZ4-compressed without
    dictionary pages (float statistics rarely repeat enough to pay for them). A writer thread
    overlaps the disk with the next chunk's computation.
    """
    import os
    import queue
    import threading

    import pyarrow.ipc as ipc
    import pyarrow.parquet as pq

    schema = pa.schema([pa.field("row", pa.int64())] + [pa.field(n, pa.float32()) for n in names])
    partial = f"{sink}.partial"
    pending: queue.Queue = queue.Queue(maxsize=1)  # at most one chunk waits: memory stays at two chunks
    failure: list[BaseException] = []

    def write() -> None:
        try:
            if str(sink).endswith(".parquet"):
                writer = pq.ParquetWriter(partial, schema, compression="lz4", use_dictionary=False, write_statistics=False)
            else:
                writer = ipc.new_file(partial, schema, options=ipc.IpcWriteOptions(compression="lz4"))
            with writer:
                while (table := pending.get()) is not None:
                    writer.write_table(table)
        except BaseException as error:  # surfaced by the caller after join
            failure.append(error)
            while pending.get() is not None:  # drain so the producer never blocks
                pass

    thread = threading.Thread(target=write, name="rankpipe-stats-writer", daemon=True)
    thread.start()
    try:
        try:
            for rows, values in chunks:
                values[days_since] /= np.float32(DAY_S)
                pending.put(pa.Table.from_arrays([pa.array(rows.astype(np.int64))] + [pa.array(v) for v in values], schema=schema))
        finally:
            pending.put(None)
            thread.join()
        if failure:
            raise failure[0]
        os.replace(partial, sink)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _expected_click_weight(history: pd.DataFrame, position_ctr: pd.DataFrame | None) -> np.ndarray:
    """Per event, the CTR expected at its position (the mean CTR where the position is unknown)."""
    if position_ctr is None or len(position_ctr) == 0:
        return np.ones(len(history), dtype=np.float32)
    table = position_ctr.set_index("position")["ctr"]
    overall = np.float32(table.get(0, table.mean()))  # row 0: the CTR over all positions
    if S.POSITION not in history:
        return np.full(len(history), overall, dtype=np.float32)
    positions = history[S.POSITION].to_numpy(dtype=np.float64, na_value=np.nan)
    known = ~np.isnan(positions)
    lookup = np.full(int(table.index.max()) + 1, overall, dtype=np.float32)  # past the last position: the pooled tail's CTR
    lookup[table.index.to_numpy(dtype=np.int64)] = table.to_numpy(dtype=np.float32)
    clipped = np.clip(np.where(known, positions, 0), 0, len(lookup) - 1).astype(np.int64)
    return np.where(known, lookup[clipped], overall).astype(np.float32)


def fit_position_ctr(history, train_end: pd.Timestamp, max_position: int = 50) -> pd.DataFrame:
    """CTR at each shown position on the training period (positions past ``max_position`` pooled).

    ``history`` is a pandas frame or a Dask one (counted per partition on its workers; only the
    counts per position come back).

    Returns:
        DataFrame with columns position, ctr; position 0 holds the CTR over all positions, used
        for events whose position is unknown. Empty when the events carry no positions.
    """
    empty = pd.DataFrame({"position": pd.Series(dtype=np.int64), "ctr": pd.Series(dtype=np.float64)})
    if S.POSITION not in history.columns:
        return empty
    (counts,) = _computed(_summed(history, _position_counts, ["position"], train_end=pd.Timestamp(train_end), max_position=max_position))
    if counts["any"].sum() == 0:  # no event has a position
        return empty
    shown, clicked = counts["shown"], counts["clicked"]
    shown, clicked = shown[shown > 0].sort_index(), clicked[shown > 0].sort_index()
    ctr = (clicked + 1) / (shown + 2)  # Laplace: a rarely shown position is not 0 or 1
    ctr = pd.concat([pd.Series({0: (clicked.sum() + 1) / (shown.sum() + 2)}), ctr])
    return pd.DataFrame({"position": ctr.index.to_numpy(np.int64), "ctr": ctr.to_numpy(np.float64)})


def _position_counts(events: pd.DataFrame, train_end: pd.Timestamp, max_position: int) -> pd.DataFrame:
    """Per position (clipped), impressions and clicks before ``train_end``, and how many events of
    any time have a position (``any``: only its sum means something)."""
    known = events[S.POSITION].notna().to_numpy()
    past = events[known & (events[S.TS] < train_end).to_numpy()]
    position = past[S.POSITION].to_numpy(dtype=np.int64).clip(max=max_position)
    event = past[S.EVENT].to_numpy()
    frame = pd.DataFrame({"position": position, "shown": (event == "impression").astype(np.int64),
                          "clicked": (event == "click").astype(np.int64), "any": np.zeros(len(past), np.int64)})
    out = frame.groupby("position").sum()
    out.loc[-1] = [0, 0, int(known.sum())]  # a row that no real position takes
    return out.reset_index()


def _summed(frame, counter, by: list[str], **kwargs):
    """``counter(partition, **kwargs)`` (a frame of the ``by`` columns and counts) over ``frame``'s
    partitions, summed by ``by``: on Dask a lazy sum of the workers' counts, else one call here."""
    if isinstance(frame, pd.DataFrame):
        return counter(frame, **kwargs).groupby(by).sum()
    meta = counter(frame._meta, **kwargs)
    return frame.map_partitions(counter, **kwargs, meta=meta).groupby(by).sum()


def _computed(*frames) -> tuple:
    """``frames`` as pandas: Dask collections computed together (one pass over their shared inputs),
    pandas ones as they are."""
    if not any(hasattr(frame, "dask") for frame in frames):
        return frames
    import dask

    return dask.compute(*frames)


def _rated_groups() -> list[tuple[CountGroup, str, str, str]]:
    """(group, rate, numerator event, denominator event) of every rate a group counts both events of."""
    return [(group, rate, num, den) for group in COUNT_GROUPS for rate, num, den in RATES if num in group.events and den in group.events]


def _rate_counts(events: pd.DataFrame, train_end: pd.Timestamp) -> pd.DataFrame:
    """Per (rate, entity), the numerator and denominator events before ``train_end``. An entity is
    the 64-bit hash of its keys: counts are all the priors need, and integers group far faster than
    strings (two entities sharing a hash, about one chance in 10^7 at 10^6 entities, would pool)."""
    past = events[events[S.TS] < train_end]
    pieces = []
    for number, (group, _, num, den) in enumerate(_rated_groups()):
        keyed = past.dropna(subset=list(group.keys))
        keyed = keyed[keyed[S.EVENT].isin([num, den])]
        is_num = (keyed[S.EVENT] == num).to_numpy()
        entity = pd.util.hash_pandas_object(keyed[list(group.keys)], index=False).to_numpy()
        # Each rate's rows are summed by entity before they are joined: the log's rows never pile up eight times over.
        counted = pd.DataFrame({"entity": entity, "num": is_num, "den": ~is_num}).groupby("entity", sort=False).sum()
        pieces.append(counted.reset_index().assign(rate=np.int16(number)))
    return pd.concat(pieces, ignore_index=True)[["rate", "entity", "num", "den"]].astype({"num": np.int64, "den": np.int64})


def fit_priors(history, train_end: pd.Timestamp, min_impressions: int) -> pd.DataFrame:
    """Empirical-Bayes Beta(alpha, beta) prior per (group, rate), by the method of moments.

    Fitted on entity-level rates over events before ``train_end`` among entities with at least
    ``min_impressions`` denominator events; a weak uniform prior where too few entities qualify.
    ``history`` is a pandas frame or a Dask one (counted per partition on its workers; only the
    counts per entity come back).

    Returns:
        DataFrame with columns group, rate, alpha, beta.
    """
    (counts,) = _computed(_summed(history, _rate_counts, ["rate", "entity"], train_end=pd.Timestamp(train_end)))
    counts = counts.reset_index()
    rows = []
    for number, (group, rate, _, _) in enumerate(_rated_groups()):
        entities = counts[counts["rate"] == number]
        enough = entities[entities["den"] >= min_impressions]
        alpha, beta = 1.0, 1.0
        if len(enough) >= 5:
            # Sorted: the sums then add in one order, however the entities came back from the workers.
            r = pd.Series(np.sort((enough["num"] / enough["den"]).clip(0, 1).to_numpy()))
            mean, var = float(r.mean()), float(r.var())
            if 0 < mean < 1 and var > 0:
                strength = min(max(mean * (1 - mean) / var - 1, 1.0), 1e4)
                alpha, beta = mean * strength, (1 - mean) * strength
        rows.append({"group": group.name, "rate": rate, "alpha": alpha, "beta": beta})
    return pd.DataFrame(rows)


def build_features(pairs: pd.DataFrame, history: pd.DataFrame, items: pd.DataFrame, priors: pd.DataFrame,
                   config: FeaturesConfig, position_ctr: pd.DataFrame | None = None, counter=count_features) -> pd.DataFrame:
    """Point-in-time features for (request, item) pairs: the one function behind training rows and scoring.

    Args:
        pairs: columns ts (the request time), user_id, item_id, query (null for feed requests).
        history: :func:`enrich_history` output; only rows strictly before each pair's ts are used.
        items: the items table.
        priors: :func:`fit_priors` output.
        config: windows and half-lives of the statistics.
        position_ctr: :func:`fit_position_ctr` output, for COEC.
        counter: computes the count statistics, with :func:`count_features`'s arguments and
            result; an engine passes one that runs that same function on a cluster's partitions.

    Returns:
        A float32 feature frame aligned with ``pairs`` (same index order).
    """
    pairs = pairs.reset_index(drop=True)
    enriched = pairs[[S.TS, S.USER_ID, S.ITEM_ID, S.QUERY]].copy()
    row = _attach_item_keys(enriched, once_per((items,), ("item_keys",), lambda: item_keys(items)))  # the keys split once per catalogue
    columns = counter(history, enriched, config.windows_days, COUNT_GROUPS, config.half_lives_days, position_ctr)
    prior = priors.set_index(["group", "rate"])
    for group in COUNT_GROUPS:
        for rate, num, den in RATES:
            if (group.name, rate) in prior.index:
                a, b = prior.loc[(group.name, rate), ["alpha", "beta"]]
                columns[f"{group.name}_{rate}"] = ((columns[f"{group.name}_{num}_n"] + a) / (columns[f"{group.name}_{den}_n"] + a + b)).astype(np.float32)
        if group.coec:
            # Clicks over the clicks its impressions' positions predict, shrunk towards 1 by the prior's pseudo-clicks.
            a = float(prior.loc[(group.name, "ctr"), "alpha"]) if (group.name, "ctr") in prior.index else 1.0
            columns[f"{group.name}_coec"] = ((columns[f"{group.name}_click_n"] + a) / (columns[f"{group.name}_expected_clicks"] + a)).astype(np.float32)
    known = row >= 0
    price = items[S.PRICE].to_numpy(dtype=np.float32, na_value=np.nan)
    columns["item_price"] = np.where(known, price[np.maximum(row, 0)], np.nan).astype(np.float32) if len(price) else np.full(len(row), np.nan, np.float32)
    created = pd.Series(items[S.CREATED_AT].array.take(row, allow_fill=True))
    columns["item_age_days"] = ((pairs[S.TS].to_numpy() - created.to_numpy()) / np.timedelta64(1, "D")).astype(np.float32)
    columns["is_search"] = pairs[S.QUERY].notna().to_numpy().astype(np.float32)
    columns.update(_text_match(pairs, items, config.dense_text))
    return pd.DataFrame(columns)


def _text_match(pairs: pd.DataFrame, items: pd.DataFrame, dense: bool) -> dict[str, np.ndarray]:
    """Query × item text features: token coverage, BM25, and (``dense``) MiniLM cosine; NaN without a query."""
    # Imported here: it brings scikit-learn (3 s), which a Dask worker counting statistics never needs.
    from rankpipe.features.text import embed_texts, pair_scores, query_coverage, tokenize

    queries = pd.Series(pairs[S.QUERY].dropna().unique(), dtype="str")
    names = ("query_coverage", "bm25") + (("dense_sim",) if dense else ())
    if len(queries) == 0:
        return {name: np.full(len(pairs), np.nan, dtype=np.float32) for name in names}
    texts, item_tokens, vectorizer, weights = once_per((items,), ("text_match",), lambda: _item_text_index(items))
    # The items' vocabulary: a query word no item has matches nothing, and still counts among the query's words.
    query_tokens = vectorizer.transform(queries.tolist()).tocsr()
    query_lengths = np.array([len(set(tokenize(query))) for query in queries.tolist()], dtype=np.float64)  # per distinct query, not per row
    query_codes = pd.Index(queries).get_indexer(pairs[S.QUERY])
    item_codes = pd.Index(items[S.ITEM_ID]).get_indexer(pairs[S.ITEM_ID])
    item_codes = np.where(item_codes >= 0, item_codes, 0)
    out = {"query_coverage": query_coverage(query_codes, item_codes, query_tokens, item_tokens, query_lengths),
           "bm25": pair_scores(query_codes, item_codes, query_tokens, weights)}
    if dense:
        query_vectors, item_vectors = embed_texts(queries.tolist()), embed_texts(texts.tolist())
        has = query_codes >= 0
        sim = np.full(len(pairs), np.nan, dtype=np.float32)
        sim[has] = np.einsum("nd,nd->n", query_vectors[query_codes[has]], item_vectors[item_codes[has]])
        out["dense_sim"] = sim
    return out


def _item_text_index(items: pd.DataFrame):
    """(the items' texts, their binary token matrix, its vectorizer, their BM25 weights): built once per catalogue."""
    from rankpipe.features.text import bm25_weights, item_text, token_matrix

    texts = item_text(items)
    item_tokens, vectorizer = token_matrix(texts)
    return texts, item_tokens, vectorizer, bm25_weights(texts, vectorizer)


# What a missing value means, declared per kind of feature (policies of features.encoders.FillMissing):
# a count whose key is null (a query count on a feed request) counts nothing; "days since" is
# missing when the event never happened, which is information, so it gets a flag; a rate or an
# attribute of an unknown key takes train's median; a text match without a query matches nothing.
STATISTIC_POLICY = {"total": "zero", "window": "zero", "decay": "zero", "since": "indicator"}
RATE_POLICY = "median"
# Features that come from outside the count groups: the group an ablation drops them as → {column: missing policy}.
OTHER_GROUPS = {"item_attributes": {"item_price": "median", "item_age_days": "median"}, "context": {"is_search": "zero"},
                "text_match": {"query_coverage": "zero", "bm25": "zero"}, "dense_text": {"dense_sim": "zero"}, "embedding": {"emb_sim": "zero"}}
UNDECLARED_POLICY = "indicator"  # a column no spec declares: keep the information that it was missing


def _declared(config: FeaturesConfig) -> dict[str, tuple[str, str]]:
    """Every column the specs produce → (its group, its missing policy)."""
    out: dict[str, tuple[str, str]] = {}
    for group in COUNT_GROUPS:
        out.update({name: (group.name, STATISTIC_POLICY[kind]) for name, kind, *_ in statistic_columns(group, config.windows_days, config.half_lives_days)})
        for rate, num, den in RATES:
            if num in group.events and den in group.events:
                out[f"{group.name}_{rate}"] = (group.name, RATE_POLICY)
        if group.coec:
            out[f"{group.name}_coec"] = (group.name, RATE_POLICY)
    for name, members in OTHER_GROUPS.items():
        out.update({column: (name, policy) for column, policy in members.items()})
    return out


def feature_groups(columns: list[str], config: FeaturesConfig) -> dict[str, list[str]]:
    """Which feature group each column belongs to, from the same specs that build them.

    Names are generated from :data:`COUNT_GROUPS` (not matched by prefix: ``query_`` must not
    swallow ``query_item_``); columns no spec produces form their own group.
    """
    declared = _declared(config)
    groups: dict[str, list[str]] = {}
    for column in columns:
        groups.setdefault(declared[column][0] if column in declared else column, []).append(column)
    return groups


def missing_policies(columns: list[str], config: FeaturesConfig) -> dict[str, str]:
    """The declared missing-value policy of each column (``UNDECLARED_POLICY`` for columns no spec makes)."""
    declared = _declared(config)
    return {column: declared[column][1] if column in declared else UNDECLARED_POLICY for column in columns}
