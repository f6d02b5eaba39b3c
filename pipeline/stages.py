"""The funnel's stages. Each is a pure function from input tables and a frozen config to a
:class:`StageResult` (output tables, metrics, models); the runner does IO, caching and tracking.

Tables passed between stages (``stage.table``):

- ``prepare.requests``: request_id, user_id, session_id, ts, query, split (train/valid/test)
- ``prepare.labels``: request_id, item_id, grade (0 impression … 3 purchase), position
- ``prepare.events`` / ``prepare.items``: the validated contract tables (events are the history)
- ``features.logged``: labels of every split joined with point-in-time features
- ``features.priors``: the Beta priors of the smoothed rates
- ``recall.candidates`` (merged), ``recall.channels`` (each channel's own list), ``recall.item_vectors``
- ``rank.test_logged``: test impressions with features and the ranker's score
- ``rank.candidates``: test candidates with the ranker's score
- ``rerank.lists``: the final lists
- ``evaluate.metrics``: every metric as (name, value)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd

from features.embeddings import behaviour_columns, behaviour_sequences
from features.stats import build_features, enrich_history, feature_groups, fit_position_ctr, fit_priors
from generative.doc2query import GeneratedQueryRecall, cold_items
from generative.normalize import normalize_queries
from pipeline import schema as S
from pipeline.config import Config, ConfigError, to_dict
from ranking import metrics as M
from ranking.calibration import CALIBRATION_METHODS
from ranking.index import VectorIndex
from ranking.recall import (CHANNELS, MERGES, POSITIVE_EVENTS, BM25Recall, channel_rank_features, DenseTextRecall, Item2VecRecall, ItemCFRecall,
                            PopularityRecall, TwoTowerRecall, choose_merge, fit_merge, merge_candidates, tune_popularity_weight)
from ranking.rankers import RANKERS, make_ranker
from ranking.rerank import mmr_rerank

SPLITS = ("train", "valid", "test")
ID_COLUMNS = [S.REQUEST_ID, S.ITEM_ID]
PAIR_CONTEXT = [S.REQUEST_ID, S.ITEM_ID, S.USER_ID, S.QUERY, S.TS]


@dataclass
class StageResult:
    """What a stage hands back to the runner."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # name -> object with save(directory)
    files: dict[str, bytes] = field(default_factory=dict)  # name -> content (reports, plots)


@dataclass
class StageInputs:
    """Lazy access to upstream outputs: ``inputs.table("prepare", "requests")``."""

    load_table: Callable[[str, str], pd.DataFrame]
    model_dir: Callable[[str, str], Any]
    dataset: Any = None  # the loaded Dataset, for prepare only
    extras: Mapping[str, Any] = field(default_factory=dict)  # e.g. the registry, for promote

    def table(self, stage: str, name: str) -> pd.DataFrame:
        return self.load_table(stage, name)


# --------------------------------------------------------------------------------------- prepare
def interactions_from_ratings(events: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Events in funnel terms: each ``rating`` becomes an impression, plus a click when its value >= ``threshold``.

    Explicit feedback then flows through the same labels (a rated item is a shown item; a liked
    one a positive), features and recall channels as implicit feedback. Other events pass through.
    """
    is_rating = (events[S.EVENT] == "rating").to_numpy()
    if not is_rating.any():
        return events
    ratings = events[is_rating]
    if ratings[S.VALUE].isna().any():
        missing = ratings[ratings[S.VALUE].isna()]
        raise S.ContractError(S.EVENTS, S.VALUE, "a rating value on every rating event", f"{len(missing)} ratings without a value", missing)
    liked = ratings[ratings[S.VALUE] >= threshold]
    out = pd.concat([events[~is_rating], ratings.assign(**{S.EVENT: "impression"}), liked.assign(**{S.EVENT: "click"})], ignore_index=True)
    return out.sort_values(S.TS, kind="stable").reset_index(drop=True)


def prepare(inputs: StageInputs, config: Config) -> StageResult:
    """Split requests by time (whole requests on one side) and derive graded labels per (request, item)."""
    dataset = inputs.dataset
    events = interactions_from_ratings(dataset.tables[S.EVENTS], config.dataset.rating_threshold)
    items = dataset.tables[S.ITEMS]
    in_request = events[events[S.REQUEST_ID].notna()]
    if in_request.empty:
        raise S.ContractError(S.EVENTS, S.REQUEST_ID, "request ids on the events shown in lists", "no event with a request_id")
    known = events[S.ITEM_ID].isin(items[S.ITEM_ID])
    if not known.all():
        raise S.ContractError(S.EVENTS, S.ITEM_ID, "item ids present in the items table", f"{int((~known).sum())} events with unknown items", events[~known])

    first = in_request.sort_values(S.TS, kind="stable").drop_duplicates(S.REQUEST_ID)
    requests = first[[S.REQUEST_ID, S.USER_ID, S.SESSION_ID, S.TS, S.QUERY]].reset_index(drop=True)
    n = len(requests)
    n_test = int(round(n * config.split.test_fraction))
    n_valid = int(round(n * config.split.valid_fraction))
    if n - n_test - n_valid < 1 or n_test < 1:
        raise S.ContractError(S.EVENTS, S.REQUEST_ID, "enough requests for a train/valid/test split", f"{n} requests")
    split = np.full(n, "train", dtype=object)
    split[n - n_test - n_valid : n - n_test] = "valid"
    split[n - n_test :] = "test"
    requests["split"] = pd.Series(split, dtype="str")

    graded = in_request[in_request[S.EVENT].isin(list(S.LABEL_GRADES))]
    labels = graded.assign(grade=S.label_grades(graded[S.EVENT])).groupby(ID_COLUMNS, sort=False, observed=True).agg(
        grade=("grade", "max"), position=(S.POSITION, "min")).reset_index()
    labels["grade"] = labels["grade"].astype(np.int8)

    tables = {"requests": requests, "labels": labels, "events": events, "items": items}
    tables.update(dataset.oracle)
    metrics = {"n_events": len(events), "n_items": len(items), "n_requests": n,
               **{f"n_{s}_requests": int((requests["split"] == s).sum()) for s in SPLITS}}
    return StageResult(tables, metrics)


def _train_end(requests: pd.DataFrame) -> pd.Timestamp:
    return requests.loc[requests["split"] != "train", S.TS].min()


def _pairs(labels_or_candidates: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    return labels_or_candidates.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS, "split"]], on=S.REQUEST_ID, how="inner")


# -------------------------------------------------------------------------------------- features
def features(inputs: StageInputs, config: Config) -> StageResult:
    """Point-in-time statistics for every logged (request, item) pair, with priors fitted on train."""
    requests, labels = inputs.table("prepare", "requests"), inputs.table("prepare", "labels")
    events, items = inputs.table("prepare", "events"), inputs.table("prepare", "items")
    history = enrich_history(events, items)
    priors = fit_priors(history, _train_end(requests), config.features.min_impressions_for_prior)
    position_ctr = fit_position_ctr(history, _train_end(requests))
    pairs = _pairs(labels, requests)
    feats = build_features(pairs, history, items, priors, config.features, position_ctr)
    logged = pd.concat([pairs[[S.REQUEST_ID, S.ITEM_ID, "split", "grade"]].reset_index(drop=True), feats], axis=1)
    return StageResult({"logged": logged, "priors": priors, "position_ctr": position_ctr},
                       {"n_rows": len(logged), "n_features": feats.shape[1]})


# ---------------------------------------------------------------------------------------- recall
def _positive_history(events: pd.DataFrame) -> pd.DataFrame:
    return events.loc[events[S.EVENT].isin(POSITIVE_EVENTS), [S.USER_ID, S.ITEM_ID, S.TS]]


def launched_by_request(found: pd.DataFrame, requests: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Drop candidates that did not exist yet at their request's time (``created_at`` after ``ts``).

    Channels that index the whole catalogue (text search) would otherwise offer items launched
    later; an item without ``created_at`` counts as always available.
    """
    created = items.set_index(S.ITEM_ID)[S.CREATED_AT].reindex(found[S.ITEM_ID]).to_numpy()
    asked = requests.set_index(S.REQUEST_ID)[S.TS].reindex(found[S.REQUEST_ID]).to_numpy()
    later = ~pd.isna(created) & (created > asked)
    return found[~later].reset_index(drop=True) if later.any() else found


def check_config(config: Config) -> None:
    """Config errors that only the stages can judge, raised before the run writes anything."""
    if config.recall.merge not in ("auto",) + MERGES:
        raise ConfigError(f"recall.merge must be one of {['auto', *MERGES]}. Got {config.recall.merge!r} instead.")
    unknown = sorted(set(config.recall.quotas) - set(CHANNELS))
    if unknown:
        raise ConfigError(f"recall.quotas names unknown channel(s) {unknown}; known: {sorted(CHANNELS)}")
    if "item2vec" not in config.recall.quotas:
        raise ConfigError("recall.quotas must keep 'item2vec': the ranker's emb_sim feature and the MMR rerank use its embeddings")
    if config.rank.model not in RANKERS:
        raise ConfigError(f"rank.model must be one of {sorted(RANKERS)}. Got {config.rank.model!r} instead.")
    if config.rank.calibration not in ("none", *CALIBRATION_METHODS):
        raise ConfigError(f"rank.calibration must be one of {['none', *CALIBRATION_METHODS]}. Got {config.rank.calibration!r} instead.")


def _fixed_prior(weight: float | None) -> dict[str, float]:
    """``popularity_weight`` for a channel's constructor when the config fixes it; none when it is tuned."""
    return {} if weight is None else {"popularity_weight": weight}


def make_channels(config: Config) -> dict[str, Any]:
    """Channel objects for the names in ``recall.quotas``, with their configured hyperparameters."""
    check_config(config)
    rc = config.recall
    index = VectorIndex(rc.index.factory, "ip", config.device, rc.index.nprobe, rc.index.ef_search)  # every embedding channel's index
    i2v, tt = rc.item2vec, rc.two_tower
    built = {
        "popularity": lambda: PopularityRecall(rc.popularity_half_life_days, rc.popularity_scopes),
        # A None prior weight is tuned on validation requests after fit (see recall); the class default until then.
        "item2vec": lambda: Item2VecRecall(i2v.dims, i2v.window, i2v.negative, i2v.min_count, i2v.epochs, i2v.history,
                                           popularity_half_life_days=rc.popularity_half_life_days, query_weight=i2v.query_weight, index=index,
                                           seed=config.seed, **_fixed_prior(i2v.popularity_weight)),
        "two_tower": lambda: TwoTowerRecall(tt.dims, tt.hidden, tt.history, tt.epochs, tt.batch_size, tt.learning_rate, tt.temperature,
                                            popularity_half_life_days=rc.popularity_half_life_days, index=index, seed=config.seed,
                                            device=config.device, **_fixed_prior(tt.popularity_weight)),
        "bm25": lambda: BM25Recall(),
        "bm25_cold": lambda: BM25Recall(cold_only=True),
        "dense_text": lambda: DenseTextRecall(index),
        "itemcf": lambda: ItemCFRecall(half_life_days=rc.itemcf_half_life_days),
        "generated_queries": lambda: GeneratedQueryRecall(seed=config.seed),
    }
    return {name: built[name]() for name in config.recall.quotas}


def _logged_channel_ranks(config: Config, channels: dict[str, Any], test_lists: dict[str, pd.DataFrame], labels: pd.DataFrame,
                          requests: pd.DataFrame, events: pd.DataFrame, items: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """``recall_<channel>_rank`` features (:func:`ranking.recall.channel_rank_features`) for every logged
    pair, each from channels fitted before its request's time.

    A channel fitted on the train period has seen the very clicks the ranker trains on and would
    tell it where they are. So test requests use the stage's own lists and validation requests the
    same channels (both fitted before them), while train requests use ``recall.ranker_snapshots``
    refits on the events before evenly spaced cuts of the train period, each serving the requests
    up to the next cut. Train requests before the first cut get NaN: unknown, not "not found".
    """
    quotas = dict(config.recall.quotas)
    logged = requests[requests[S.REQUEST_ID].isin(labels[S.REQUEST_ID])]
    train, valid = logged[logged["split"] == "train"], logged[logged["split"] == "valid"]
    start, end = train[S.TS].min(), _train_end(requests)
    n = config.recall.ranker_snapshots
    cuts = [start + (end - start) * j / (n + 1) for j in range(1, n + 1)] + [end]
    found = [df.assign(channel=name) for name, df in test_lists.items()]
    found += [launched_by_request(channel.retrieve(valid, quotas[name], history), valid, items).assign(channel=name)
              for name, channel in channels.items()]
    for cut, until in zip(cuts[:-1], cuts[1:]):
        served = train[(train[S.TS] >= cut) & (train[S.TS] < until)]
        for name, snapshot in make_channels(config).items():
            snapshot.fit(events[events[S.TS] < cut], items)
            if hasattr(channels[name], "popularity_weight"):  # the weight tuned for the full-period channel
                snapshot.popularity_weight = channels[name].popularity_weight
            found.append(launched_by_request(snapshot.retrieve(served, quotas[name], history), served, items).assign(channel=name))
    covered = pd.Index(logged.loc[(logged["split"] != "train") | (logged[S.TS] >= cuts[0]), S.REQUEST_ID])
    pairs = labels[[S.REQUEST_ID, S.ITEM_ID]].reset_index(drop=True)
    return pd.concat([pairs, channel_rank_features(pd.concat(found, ignore_index=True), pairs, quotas, covered)], axis=1)


def recall(inputs: StageInputs, config: Config) -> StageResult:
    """Fit every channel on the train period, retrieve for test requests, merge with quotas.

    Unless ``recall.merge`` is ``interleave``, the channels also retrieve for a sample of
    validation requests; which channels found the positives there, and at what rank, orders the
    merged lists (:class:`ranking.recall.LearnedMerge`, or per-channel hit rates combined by
    noisy-OR; see :func:`ranking.recall.merge_candidates`). ``auto`` picks the method by 2-fold
    cross-validation on those requests (:func:`ranking.recall.choose_merge`).
    """
    requests, events, items = inputs.table("prepare", "requests"), inputs.table("prepare", "events"), inputs.table("prepare", "items")
    train_events = events[events[S.TS] < _train_end(requests)]
    test_requests = requests[requests["split"] == "test"]
    valid_requests = requests[requests["split"] == "valid"]
    if len(valid_requests) > config.recall.calibration_requests:
        valid_requests = valid_requests.sample(config.recall.calibration_requests, random_state=config.seed)
    calibrate = config.recall.merge != "interleave" and len(valid_requests) > 0
    history = _positive_history(events)
    channels = make_channels(config)
    depth = max(config.recall.k, max(config.evaluate.recall_ks))
    labels = inputs.table("prepare", "labels")
    valid_positives = labels[labels[S.REQUEST_ID].isin(valid_requests[S.REQUEST_ID]) & (labels["grade"] > 0)]
    untuned = {"item2vec": config.recall.item2vec.popularity_weight is None, "two_tower": config.recall.two_tower.popularity_weight is None}
    lists, held_out, timings, tuned = {}, {}, {}, {}
    for name, channel in channels.items():
        started = time.perf_counter()
        channel.fit(train_events, items)
        if untuned.get(name) and len(valid_positives):
            tried = tune_popularity_weight(channel, valid_requests, valid_positives, history, config.recall.quotas[name])
            tuned.update({f"{name}_prior_recall.{w:g}": r for w, r in tried.items()})
            tuned[f"{name}_popularity_weight"] = channel.popularity_weight
        lists[name] = launched_by_request(channel.retrieve(test_requests, depth, history), test_requests, items)
        if calibrate:
            held_out[name] = launched_by_request(channel.retrieve(valid_requests, config.recall.quotas[name], history), valid_requests, items)
        timings[f"{name}_seconds"] = time.perf_counter() - started
    quotas, method, fitted, tables, merge_metrics = dict(config.recall.quotas), config.recall.merge, {}, {}, {}
    if calibrate:
        if method == "auto":
            method, cv = choose_merge(held_out, quotas, valid_positives, config.recall.k, config.evaluate.recall_ks, config.seed)
            merge_metrics = {f"merge_cv.{m}.recall": v for m, v in cv.items()}
        fitted = fit_merge(method, held_out, quotas, valid_positives)
        if "learned" in fitted:
            tables["calibration"] = fitted["learned"].summary()
        elif "hit_rates" in fitted:
            tables["calibration"] = fitted["hit_rates"]
    elif method == "auto":
        method = "interleave"
    merged = merge_candidates(lists, quotas, config.recall.k, **fitted)
    channel_lists = pd.concat([df.assign(channel=name) for name, df in lists.items()], ignore_index=True)
    tables.update(candidates=merged, channels=channel_lists)
    models = {}
    if "item2vec" in channels:
        i2v = channels["item2vec"]
        vectors = pd.DataFrame(i2v.vectors_, columns=[f"v{j}" for j in range(i2v.vectors_.shape[1])])
        vectors.insert(0, S.ITEM_ID, pd.Series(i2v.item_index_.to_numpy(), dtype="str"))
        tables["item_vectors"] = vectors
        models["item2vec_index"] = i2v.index_
    if config.recall.ranker_snapshots > 0:
        started = time.perf_counter()
        tables["logged_ranks"] = _logged_channel_ranks(config, channels, lists, labels, requests, events, items, history)
        timings["ranker_snapshots_seconds"] = time.perf_counter() - started
    metrics = {"candidates_per_request": float(merged.groupby(S.REQUEST_ID).size().mean()), **timings, **tuned, **merge_metrics,
               **{f"merge_is_{m}": float(m == method) for m in MERGES}}
    if "two_tower" in channels:
        models["two_tower"] = channels["two_tower"]
        metrics["two_tower_train_loss"] = channels["two_tower"].train_loss_
    return StageResult(tables, metrics, models)


def item_vectors_of(table: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """(item id index, (I, D) float32 matrix) from a ``recall.item_vectors`` table."""
    return pd.Index(table[S.ITEM_ID].to_numpy()), table.drop(columns=[S.ITEM_ID]).to_numpy(dtype=np.float32)


# ------------------------------------------------------------------------------------------ rank
def ranker_from_config(config: Config, **overrides):
    """The ranker named by ``rank.model`` with the ``rank`` section's hyperparameters (``overrides`` win)."""
    params = {k: v for k, v in to_dict(config.rank).items() if k not in ("model", "ablation", "calibration") and not k.startswith("selection")}
    return make_ranker(config.rank.model, **{"seed": config.seed, "device": config.device, **params, **overrides})


def feature_ablation(config: Config, train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame,
                     groups: dict[str, list[str]], full_ndcg: float) -> dict[str, float]:
    """Test NDCG@10 of the ranker retrained without each feature group, and the change from the full model.

    Returns ``ablation.<group>.ndcg_at_10`` and ``ablation.<group>.delta`` (negative: the group helps).
    """
    features = [c for cols in groups.values() for c in cols]
    out: dict[str, float] = {}
    for name, dropped in groups.items():
        kept = [c for c in features if c not in dropped]
        ranker = ranker_from_config(config, progress=False)
        ranker.fit(train[kept], train["grade"].to_numpy(), train[S.REQUEST_ID].to_numpy(),
                   valid[kept], valid["grade"].to_numpy(), valid[S.REQUEST_ID].to_numpy())
        ndcg = M.ndcg_at_k(test[S.REQUEST_ID], ranker.predict(test[kept]), test["grade"], 10)
        out[f"ablation.{name}.ndcg_at_10"] = ndcg
        out[f"ablation.{name}.delta"] = ndcg - full_ndcg
    return out


def _select_features(config: Config, train: pd.DataFrame, feature_names: list[str]) -> tuple[list[str], pd.DataFrame]:
    """:func:`ranking.selection.select_features` on the training lists, with the configured ranker
    (no early stopping: the selection fits see train only)."""
    from ranking.selection import select_features

    groups = train[S.REQUEST_ID].to_numpy()

    def fit_gain(X: pd.DataFrame, y: np.ndarray) -> pd.Series:
        return ranker_from_config(config, progress=False, refit=False).fit(X, y, groups).feature_importance()

    return select_features(train[feature_names], train["grade"].to_numpy(), groups, fit_gain,
                           config.rank.selection_correlation, config.rank.selection_null_runs, config.seed)


def _with_embedding_similarity(feats: pd.DataFrame, pairs: pd.DataFrame, history: pd.DataFrame,
                               item_index: pd.Index, vectors: np.ndarray, n_last: int) -> pd.DataFrame:
    """Add ``emb_sim``: cosine between the user's point-in-time item2vec taste and the item."""
    from features.embeddings import history_vectors

    req = pairs.drop_duplicates(S.REQUEST_ID)
    user_vec = history_vectors(req[S.USER_ID].to_numpy(), req[S.TS], history, item_index, vectors, n_last)  # (R, D)
    req_row = pd.Index(req[S.REQUEST_ID]).get_indexer(pairs[S.REQUEST_ID])
    item_row = item_index.get_indexer(pairs[S.ITEM_ID])
    sim = np.einsum("nd,nd->n", user_vec[req_row], vectors[np.clip(item_row, 0, None)])  # (N,)
    has = (item_row >= 0) & (np.linalg.norm(user_vec, axis=1)[req_row] > 0)
    return feats.assign(emb_sim=np.where(has, sim, np.nan).astype(np.float32))


def _calibrate(ranker, config: Config, X_valid: pd.DataFrame, y_valid: pd.Series, X_test: pd.DataFrame,
               y_test: pd.Series) -> tuple[dict[str, float], pd.DataFrame]:
    """``rank.calibration``: calibrate the ranker on validation rows and measure test log loss / ECE
    (:func:`ranking.calibration.calibration_report`); with ``none``, nothing (an empty reliability table)."""
    from ranking.calibration import calibration_report

    if config.rank.calibration == "none":
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in ("bin", "predicted", "observed", "rows", "logloss", "ece")})
        return {}, empty.assign(method=pd.Series(dtype="str"))
    return calibration_report(ranker, X_valid, y_valid.to_numpy(), X_test, y_test.to_numpy(), config.rank.calibration)


def rank(inputs: StageInputs, config: Config) -> StageResult:
    """Train the ranker on logged train lists (early stopping on valid); score test lists and test candidates."""
    requests, events, items = inputs.table("prepare", "requests"), inputs.table("prepare", "events"), inputs.table("prepare", "items")
    logged, priors = inputs.table("features", "logged"), inputs.table("features", "priors")
    position_ctr = inputs.table("features", "position_ctr")
    candidates = inputs.table("recall", "candidates")
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    history = _positive_history(events)
    n_last = config.recall.item2vec.history

    logged_pairs = _pairs(logged[[S.REQUEST_ID, S.ITEM_ID]], requests)
    logged = _with_embedding_similarity(logged, logged_pairs, history, item_index, vectors, n_last)
    try:  # which channels found each logged pair, from channels fitted before it (recall.ranker_snapshots > 0)
        logged_ranks = inputs.table("recall", "logged_ranks")
    except KeyError:
        logged_ranks = None
    if logged_ranks is not None:
        logged = logged.merge(logged_ranks, on=[S.REQUEST_ID, S.ITEM_ID], how="left", validate="many_to_one")
    feature_names = [c for c in logged.columns if c not in (S.REQUEST_ID, S.ITEM_ID, "split", "grade")]
    # Lists without any positive carry no ranking signal for lambdarank.
    has_positive = logged.groupby(S.REQUEST_ID, sort=False)["grade"].transform("max") > 0
    train = logged[(logged["split"] == "train") & has_positive]
    valid = logged[(logged["split"] == "valid") & has_positive]
    selection = pd.DataFrame({c: pd.Series(dtype="str") for c in ("feature", "reason", "detail")})
    if config.rank.selection:
        feature_names, selection = _select_features(config, train, feature_names)
    ranker = ranker_from_config(config)
    # A sequence ranker (DIN) also reads each pair's behaviour columns; they are ids, not features to select or ablate.
    sequence_length = ranker.nn_history if getattr(ranker, "uses_behaviour", False) else 0
    item_ids = pd.Index(items[S.ITEM_ID])
    if sequence_length:
        sequences = behaviour_sequences(logged_pairs, history, item_ids, sequence_length)
        logged = logged.assign(**{c: sequences[c].to_numpy() for c in sequences.columns})
        train, valid = logged.loc[train.index], logged.loc[valid.index]
    model_columns = feature_names + (behaviour_columns(sequence_length) if sequence_length else [])
    started = time.perf_counter()
    ranker.fit(train[model_columns], train["grade"].to_numpy(), train[S.REQUEST_ID].to_numpy(),
               valid[model_columns], valid["grade"].to_numpy(), valid[S.REQUEST_ID].to_numpy())
    train_seconds = time.perf_counter() - started

    test = logged[logged["split"] == "test"].reset_index(drop=True)
    test_logged = test.assign(score=ranker.predict(test[model_columns]).astype(np.float64))
    # Calibrated on every validation row: the lists without a click, left out of training, are part of the click rate.
    all_valid = logged[logged["split"] == "valid"]
    calibration_metrics, reliability = _calibrate(ranker, config, all_valid[model_columns], all_valid["grade"], test[model_columns], test["grade"])
    if ranker.calibrator_ is not None:
        test_logged["probability"] = ranker.predict_proba(test[model_columns])
    test_logged = test_logged.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="left")

    cand_pairs = _pairs(candidates, requests)
    cand_feats = build_features(cand_pairs, enrich_history(events, items), items, priors, config.features, position_ctr)
    cand_feats = _with_embedding_similarity(cand_feats, cand_pairs, history, item_index, vectors, n_last)
    if logged_ranks is not None:
        cand_feats = pd.concat([cand_feats.reset_index(drop=True), channel_rank_features(
            inputs.table("recall", "channels"), cand_pairs.reset_index(drop=True), dict(config.recall.quotas))], axis=1)
    scored = cand_pairs[[S.REQUEST_ID, S.ITEM_ID, S.USER_ID, S.QUERY, "rank", "channel"]].reset_index(drop=True)
    if sequence_length:
        cand_feats = pd.concat([cand_feats.reset_index(drop=True),
                                behaviour_sequences(cand_pairs.reset_index(drop=True), history, item_ids, sequence_length)], axis=1)
    scored["score"] = ranker.predict(cand_feats[model_columns]).astype(np.float64)
    if ranker.calibrator_ is not None:
        scored["probability"] = ranker.calibrator_.predict(scored["score"].to_numpy())

    importance = ranker.feature_importance()
    metrics = {"train_rows": len(train), "train_seconds": train_seconds, "trees": ranker.best_iteration_,
               f"valid_ndcg_at_{config.rank.eval_at}": ranker.valid_score_}
    if config.rank.ablation:
        groups = feature_groups(feature_names, config.features)
        full = M.ndcg_at_k(test_logged[S.REQUEST_ID], test_logged["score"], test_logged["grade"], 10)
        metrics.update(feature_ablation(config, train, valid, test, groups, full))
    metrics.update({"n_features": len(feature_names), "n_features_dropped": len(selection), **calibration_metrics})
    tables = {"test_logged": test_logged, "candidates": scored, "selection": selection, "calibration": reliability,
              "importance": importance.rename_axis("feature").reset_index(name="gain")}
    return StageResult(tables, metrics, {"ranker": ranker})


# ---------------------------------------------------------------------------------------- rerank
def rerank(inputs: StageInputs, config: Config) -> StageResult:
    """MMR over item2vec embeddings on each test request's ranked candidates."""
    scored = inputs.table("rank", "candidates")
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    rc = config.rerank
    lists = mmr_rerank(scored, item_index, vectors, rc.mmr_lambda, rc.pool, rc.k)
    return StageResult({"lists": lists}, {"lists": float(lists[S.REQUEST_ID].nunique())})


# -------------------------------------------------------------------------------------- evaluate
def _oracle(inputs: StageInputs) -> Callable[[pd.DataFrame], np.ndarray] | None:
    """True relevance for (user_id, query, item_id, ts) rows when the dataset knows it (the synthetic world)."""
    try:
        tables = [inputs.table("prepare", n) for n in ("oracle_users", "oracle_items", "oracle_queries")]
    except KeyError:
        return None
    from pipeline.datasets.synthetic import true_relevance

    return lambda pairs: true_relevance(*tables, pairs)


def _top_lists(scored: pd.DataFrame, k: int) -> pd.DataFrame:
    ordered = scored.sort_values([S.REQUEST_ID, "score"], ascending=[True, False], kind="stable")
    ordered = ordered.assign(position=ordered.groupby(S.REQUEST_ID, sort=False).cumcount() + 1)
    return ordered[ordered["position"] <= k]


def evaluate(inputs: StageInputs, config: Config) -> StageResult:
    """Metrics of every stage on the test split, keyed ``stage.metric``."""
    requests, labels, items = inputs.table("prepare", "requests"), inputs.table("prepare", "labels"), inputs.table("prepare", "items")
    test_ids = requests.loc[requests["split"] == "test", S.REQUEST_ID]
    test_labels = labels[labels[S.REQUEST_ID].isin(test_ids)]
    positives = test_labels[test_labels["grade"] > 0]
    oracle = _oracle(inputs)
    out: dict[str, float] = {}

    # recall: each channel's own list and the merged list, on all positives and on cold items' (no
    # positive event in the train period: the behavioural channels cannot know them)
    events = inputs.table("prepare", "events")
    cold = cold_items(events[events[S.TS] < _train_end(requests)], items)[S.ITEM_ID]
    cold_positives = positives[positives[S.ITEM_ID].isin(cold)]
    out["recall.cold.positive_share"] = len(cold_positives) / max(len(positives), 1)
    channels, merged = inputs.table("recall", "channels"), inputs.table("recall", "candidates")
    for name, found in channels.groupby("channel", sort=True):
        for k in config.evaluate.recall_ks:
            out[f"recall.{name}.recall_at_{k}"], out[f"recall.{name}.hit_rate_at_{k}"] = M.recall_at_k(found, positives, k)
            out[f"recall.{name}.cold_recall_at_{k}"] = M.recall_at_k(found, cold_positives, k)[0]
        out[f"recall.{name}.coverage"] = found[S.ITEM_ID].nunique() / len(items)
    for k in config.evaluate.recall_ks:
        out[f"recall.recall_at_{k}"], out[f"recall.hit_rate_at_{k}"] = M.recall_at_k(merged, positives, k)
        out[f"recall.cold_recall_at_{k}"] = M.recall_at_k(merged, cold_positives, k)[0]
        out[f"recall.random_recall_at_{k}"] = min(k / len(items), 1.0)  # expected recall of k random items
    out["recall.coverage"] = merged[S.ITEM_ID].nunique() / len(items)
    # How much the channels find the same items: a channel that mostly repeats another adds little to the merge.
    overlap_k = 100 if 100 in config.evaluate.recall_ks else max(config.evaluate.recall_ks)
    for row in M.channel_overlap(channels, overlap_k).itertuples():
        out[f"recall.overlap_at_{overlap_k}.{row.a}.{row.b}"] = row.jaccard

    # rank: re-rank the logged test lists
    logged = inputs.table("rank", "test_logged")
    groups, grades = logged[S.REQUEST_ID], logged["grade"]
    out["rank.ndcg_at_10"] = M.ndcg_at_k(groups, logged["score"], grades, 10)
    out["rank.mrr"] = M.mrr(groups, logged["score"], grades)
    out["rank.auc"] = M.auc(logged["score"], grades)
    out["rank.gauc"] = M.gauc(logged[S.USER_ID], logged["score"], grades)  # per user, weighted by impressions
    out["rank.popularity_ndcg_at_10"] = M.ndcg_at_k(groups, logged["item_click_n"].fillna(0), grades, 10)
    if oracle is not None:
        # Scored against the world's true relevance (linear gain = click probability if examined),
        # free of the position bias and click noise in the logged labels.
        truth = oracle(logged)
        out["rank.oracle_ndcg_at_10"] = M.ndcg_at_k(groups, logged["score"], truth, 10, gain="linear")
        out["rank.popularity_oracle_ndcg_at_10"] = M.ndcg_at_k(groups, logged["item_click_n"].fillna(0), truth, 10, gain="linear")
        # The truth's own order scored on the logged labels: below 1 (and possibly below popularity)
        # because clicks were drawn at positions the logging policy chose.
        out["rank.truth_order_ndcg_at_10"] = M.ndcg_at_k(groups, truth, grades, 10)

    # rerank: the final lists against the rank stage's own top-k, both scored on the logged labels
    item_index, vectors = item_vectors_of(inputs.table("recall", "item_vectors"))
    category = items.set_index(S.ITEM_ID)[S.CATEGORY]
    k = config.rerank.k
    final = inputs.table("rerank", "lists")
    ranked = _top_lists(inputs.table("rank", "candidates"), k)
    for prefix, lists in (("rerank", final), ("rerank.before", ranked)):
        judged = lists.merge(test_labels[[S.REQUEST_ID, S.ITEM_ID, "grade"]], on=ID_COLUMNS, how="left").fillna({"grade": 0})
        judged = judged[judged[S.REQUEST_ID].isin(positives[S.REQUEST_ID])]
        out[f"{prefix}.ndcg_at_{k}"] = M.ndcg_at_k(judged[S.REQUEST_ID], -judged["position"], judged["grade"], k)
        out[f"{prefix}.ild_at_{k}"] = M.intra_list_distance(lists, vectors, item_index, k)
        out[f"{prefix}.category_coverage_at_{k}"] = M.category_coverage(lists, category, k)
        if oracle is not None:
            context = lists[ID_COLUMNS].merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]], on=S.REQUEST_ID, how="left")
            out[f"{prefix}.true_relevance_at_{k}"] = float(np.nanmean(oracle(context)))
    return _evaluation_result(out, inputs, config)


def _evaluation_result(metrics: dict[str, float], inputs: StageInputs, config: Config) -> StageResult:
    """The evaluate stage's output: the metrics table and the report (Markdown + figure)."""
    from pipeline.report import PLOT_FILE, build_report

    metrics = {k: float(v) for k, v in metrics.items()}
    selection = inputs.table("rank", "selection")
    text, figure = build_report(f"rankpipe evaluation: {config.dataset.name}", metrics, inputs.table("rank", "importance"), selection,
                                inputs.table("rank", "calibration"))
    table = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    return StageResult({"metrics": table}, {}, files={"report.md": text.encode(), PLOT_FILE: figure})


# --------------------------------------------------------------------------------------- promote
def decide_promotion(challenger: float, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """The promotion gate: a first model always wins; later ones must beat the champion by more than ``min_improvement``."""
    if champion is None:
        return True, "no champion yet"
    if not np.isfinite(challenger):
        return False, "challenger metric is not finite"
    if challenger > champion + min_improvement:
        return True, f"challenger {challenger:.4f} > champion {champion:.4f} + {min_improvement}"
    return False, f"challenger {challenger:.4f} <= champion {champion:.4f} + {min_improvement}"


def promote(inputs: StageInputs, config: Config) -> StageResult:
    """Register the ranker; move alias ``champion`` only if it beats the champion on this test split.

    The champion is re-scored on this run's test lists (same split, same labels), so the comparison
    never trusts a number measured on other data.
    """
    registry = inputs.extras["registry"]
    logged = inputs.table("rank", "test_logged")
    metric = config.promote.metric
    if metric != "ndcg_at_10":
        raise ValueError(f"promote.metric must be 'ndcg_at_10'. Got {metric!r} instead.")
    challenger = M.ndcg_at_k(logged[S.REQUEST_ID], logged["score"], logged["grade"], 10)
    name = config.promote.model_name or f"rankpipe-{config.dataset.name}"
    champion_ranker = registry.load_champion(name)
    champion_score, note = None, ""
    if champion_ranker is not None:
        missing = [c for c in champion_ranker.feature_names_ if c not in logged.columns]
        if missing:
            note = f"champion needs features {missing[:3]} this run does not compute; kept it"
            champion_score = float("inf")
        else:
            champion_per_request = M.ndcg_per_group(logged[S.REQUEST_ID], champion_ranker.predict(logged), logged["grade"], 10)
            champion_score = float(np.nanmean(champion_per_request))
            challenger_per_request = M.ndcg_per_group(logged[S.REQUEST_ID], logged["score"], logged["grade"], 10)
            # Logged beside the gate so a reader can tell a real win from noise on this split.
            delta, low, high = M.paired_bootstrap_ci(challenger_per_request, champion_per_request, seed=config.seed)
    promoted, reason = decide_promotion(challenger, champion_score, config.promote.min_improvement)
    version = registry.register(name, inputs.model_dir("rank", "ranker"), promoted,
                                {"test_ndcg_at_10": f"{challenger:.6f}", "decision": note or reason})
    metrics = {"promoted": promoted, "challenger_ndcg_at_10": challenger, "version": version}
    if champion_score is not None and np.isfinite(champion_score):
        metrics.update(champion_ndcg_at_10=champion_score, delta_ndcg_at_10=delta, delta_ci95_low=low, delta_ci95_high=high)
    decision = pd.DataFrame([{"model_name": name, "version": int(version), "promoted": promoted, "reason": note or reason,
                              "challenger_ndcg_at_10": challenger, "champion_ndcg_at_10": champion_score}])
    return StageResult({"decision": decision}, metrics)


# --------------------------------------------------------------------------------------- suggest
def _register_suggester(inputs: StageInputs, config: Config, suggester, metrics: dict[str, float]) -> int | None:
    """Register the suggester in MLflow (``rankpipe-suggest-<dataset>``, alias champion) when tracking is on."""
    import tempfile
    from pathlib import Path

    registry = inputs.extras.get("registry")
    if registry is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        suggester.save(tmp)
        tags = {k: f"{v:.6f}" for k, v in metrics.items() if k.endswith("mrr_all")}
        return registry.register_suggester(f"rankpipe-suggest-{config.dataset.name}", Path(tmp), tags)


def suggest(inputs: StageInputs, config: Config) -> StageResult:
    """Query suggestion from the search log: prefix completion + the character model (blend weight
    chosen on valid searches), next-query refinements from sessions and pre-search suggestions per
    user, fitted on train searches and judged on test searches; the suggester is registered in MLflow.

    A log without queries (MovieLens) yields no suggester and says so in its metrics.
    """
    from generative.sessions import NextQuerySuggester, PreSearchSuggester
    from generative.suggester import QuerySuggester
    from generative.train import fit_query_models, list_mrr, sample_queries, tune_and_judge

    requests, events, items = inputs.table("prepare", "requests"), inputs.table("prepare", "events"), inputs.table("prepare", "items")
    searches = requests[requests[S.QUERY].notna() & (requests[S.QUERY].astype("str").str.strip() != "")]
    train = searches[searches["split"] == "train"]
    if train.empty:
        return StageResult({}, {"n_train_searches": 0})
    cfg = config.suggest
    prefix, lm = fit_query_models(train[S.QUERY], train[S.TS], cfg.half_life_days, cfg.epochs, cfg.dim, cfg.layers, cfg.max_len, config.seed)
    by_split = {part: searches.loc[searches["split"] == part, S.QUERY] for part in ("valid", "test")}
    weight, metrics = tune_and_judge(prefix, lm, by_split["valid"], by_split["test"], cfg.eval_queries, config.seed)

    next_query = NextQuerySuggester(cfg.half_life_days).fit(train)
    clicks = events[events[S.EVENT].isin(POSITIVE_EVENTS) & events[S.REQUEST_ID].isin(train[S.REQUEST_ID])]
    presearch = PreSearchSuggester(cfg.half_life_days).fit(train, clicks, items)
    test = searches[searches["split"] == "test"].sort_values([S.SESSION_ID, S.TS], kind="stable")
    # Next query: consecutive different queries within a test session.
    following = test[S.QUERY].shift(-1)
    step = (test[S.SESSION_ID].shift(-1) == test[S.SESSION_ID]) & (following != test[S.QUERY])
    steps = sample_queries(pd.Series(np.flatnonzero(step.to_numpy())), cfg.eval_queries, config.seed)
    previous, target = test[S.QUERY].to_numpy()[steps], following.to_numpy()[steps]
    metrics.update({f"next_query.{k}": v for k, v in list_mrr([next_query.suggest(q) for q in previous], pd.Series(normalize_queries(pd.Series(target)))).items()})
    # Pre-search: each test session's first query, for the user, from her train history.
    first = test.drop_duplicates(S.SESSION_ID)
    first = first.iloc[sample_queries(pd.Series(np.arange(len(first))), cfg.eval_queries, config.seed).to_numpy()]
    targets = normalize_queries(first[S.QUERY])
    metrics.update({f"presearch.{k}": v for k, v in list_mrr([presearch.suggest(u) for u in first[S.USER_ID]], targets).items()})
    metrics.update({f"presearch_popular.{k}": v for k, v in list_mrr([presearch.suggest(None)] * len(first), targets).items()})
    suggester = QuerySuggester(prefix, lm, weight, next_query, presearch)
    metrics.update({"n_train_searches": len(train), "n_distinct_train_queries": len(prefix.counts())})
    version = _register_suggester(inputs, config, suggester, metrics)
    if version is not None:
        metrics["registered_version"] = version
    return StageResult({}, metrics, {"suggester": suggester})


def suggest_queries(inputs: StageInputs, config: Config) -> StageResult:
    """Query suggestion on query lists without time (WANDS, ESCI, Natural Questions): a seeded split
    of each source's distinct queries (70% train, 10% valid, 20% test); one suggester fitted on all
    sources' training queries, judged per source and overall; registered in MLflow."""
    from generative.evaluate import best_blend_weight, compare, pool, prefix_pairs, score_lists
    from generative.suggester import QuerySuggester
    from generative.train import fit_query_models, sample_queries

    queries = inputs.table("prepare", S.QUERIES)
    family = queries[S.SOURCE].astype("str").str.split(":").str[0]
    parts = {}
    for name in sorted(family.unique()):
        distinct = pd.Series(normalize_queries(queries.loc[family == name, S.QUERY]).unique())
        distinct = distinct[distinct != ""].reset_index(drop=True)
        order = np.random.default_rng(config.seed).permutation(len(distinct))
        n_test, n_valid = int(round(0.2 * len(distinct))), int(round(0.1 * len(distinct)))
        parts[name] = {"test": distinct.iloc[order[:n_test]], "valid": distinct.iloc[order[n_test:n_test + n_valid]],
                       "train": distinct.iloc[order[n_test + n_valid:]]}
    train = pd.concat([p["train"] for p in parts.values()], ignore_index=True)
    if train.empty:
        raise S.ContractError(S.QUERIES, S.QUERY, "non-empty queries to learn suggestions from", "none")
    cfg = config.suggest
    prefix, lm = fit_query_models(train, None, cfg.half_life_days, cfg.epochs, cfg.dim, cfg.layers, cfg.max_len, config.seed)
    valid = prefix_pairs(pd.concat([sample_queries(p["valid"], cfg.eval_queries, config.seed) for p in parts.values()], ignore_index=True))
    weight = best_blend_weight(score_lists(prefix, lm, valid), valid["target"])
    judged, metrics = [], {"blend_weight": weight, "n_train_queries": len(train)}
    for name, part in parts.items():
        pairs = prefix_pairs(sample_queries(part["test"], cfg.eval_queries, config.seed))
        lists = score_lists(prefix, lm, pairs)
        judged.append((lists, pairs["target"]))
        for suggester, summary in compare(lists, pairs["target"], weight).items():
            metrics.update({f"{name}.{suggester}.{k}": v for k, v in summary.items()})
    for suggester, summary in compare(*pool(judged), weight).items():
        metrics.update({f"{suggester}.{k}": v for k, v in summary.items()})
    model = QuerySuggester(prefix, lm, weight)
    version = _register_suggester(inputs, config, model, metrics)
    if version is not None:
        metrics["registered_version"] = version
    return StageResult({}, metrics, {"suggester": model})


# ------------------------------------------------------------------------- prepare-only datasets
def prepare_tables(inputs: StageInputs, config: Config) -> StageResult:
    """Store a dataset's validated tables as they are (catalogues, query lists, fixtures) for the stages that read them."""
    tables = {**inputs.dataset.tables, **inputs.dataset.oracle}
    return StageResult(dict(tables), {f"n_{name}": len(table) for name, table in tables.items()})


# ---------------------------------------------------------------------------- learning to rank
LTR_ID, LTR_LABEL = "qid", "label"


def prepare_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """Train/valid/test lists of a ready feature table: the file's own valid split, else a seeded
    ``split.valid_fraction`` of the training queries; the test file stays the test split."""
    tables = inputs.dataset.tables
    train = tables["ltr_train"].copy()
    if "ltr_valid" in tables:
        valid = tables["ltr_valid"]
        train["split"], valid = "train", valid.assign(split="valid")
        train = pd.concat([train, valid], ignore_index=True)
    else:
        qids = train[LTR_ID].unique()
        rng = np.random.default_rng(config.seed)
        n_valid = max(1, int(round(len(qids) * config.split.valid_fraction)))
        held_out = rng.choice(qids, size=n_valid, replace=False)
        train["split"] = np.where(train[LTR_ID].isin(held_out), "valid", "train")
    test = tables["ltr_test"].assign(split="test")
    metrics = {f"n_{split}_queries": int(frame.loc[frame["split"] == split, LTR_ID].nunique())
               for split, frame in (("train", train), ("valid", train), ("test", test))}
    return StageResult({"train": train, "test": test}, metrics)


def _as_lists(frame: pd.DataFrame) -> pd.DataFrame:
    """Rename an LTR table to the funnel's list columns (request_id, item_id, grade)."""
    out = frame.rename(columns={LTR_LABEL: "grade"})
    out.insert(0, S.REQUEST_ID, frame[LTR_ID].astype("str"))
    out.insert(1, S.ITEM_ID, pd.Series(np.arange(len(frame)), index=frame.index).astype("str"))
    return out.drop(columns=[LTR_ID])


def rank_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """Fit the configured ranker on the training lists (early stopping on valid) and score the test file."""
    data = inputs.table("prepare", "train")
    test = _as_lists(inputs.table("prepare", "test"))
    feature_names = [c for c in data.columns if c.startswith("f_")]
    train, valid = data[data["split"] == "train"], data[data["split"] == "valid"]
    ranker = ranker_from_config(config)
    started = time.perf_counter()
    ranker.fit(train[feature_names], train[LTR_LABEL].to_numpy(), train[LTR_ID].to_numpy(),
               valid[feature_names], valid[LTR_LABEL].to_numpy(), valid[LTR_ID].to_numpy())
    train_seconds = time.perf_counter() - started
    test_logged = test.assign(score=ranker.predict(test[feature_names]).astype(np.float64))
    calibration_metrics, reliability = _calibrate(ranker, config, valid[feature_names], valid[LTR_LABEL], test[feature_names], test["grade"])
    if ranker.calibrator_ is not None:
        test_logged["probability"] = ranker.calibrator_.predict(test_logged["score"].to_numpy())
    importance = ranker.feature_importance()
    metrics = {"train_rows": len(train), "train_seconds": train_seconds, "trees": ranker.best_iteration_,
               f"valid_ndcg_at_{config.rank.eval_at}": ranker.valid_score_, **calibration_metrics}
    return StageResult({"test_logged": test_logged, "importance": importance.rename_axis("feature").reset_index(name="gain"),
                        "calibration": reliability,
                        "selection": pd.DataFrame({c: pd.Series(dtype="str") for c in ("feature", "reason", "detail")})},
                       metrics, {"ranker": ranker})


def evaluate_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """NDCG@{1,3,5,10}, MRR and AUC of the ranker on the test file's lists."""
    logged = inputs.table("rank", "test_logged")
    groups, scores, grades = logged[S.REQUEST_ID], logged["score"], logged["grade"]
    out = {f"rank.ndcg_at_{k}": M.ndcg_at_k(groups, scores, grades, k) for k in (1, 3, 5, 10)}
    # No users in an LTR file: GAUC is per list (query), weighted by its rows.
    out.update({"rank.mrr": M.mrr(groups, scores, grades), "rank.auc": M.auc(scores, grades), "rank.gauc": M.gauc(groups, scores, grades)})
    return _evaluation_result(out, inputs, config)
