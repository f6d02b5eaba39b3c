"""The recall stage: fit every channel on the train period, retrieve for test requests, merge."""

from __future__ import annotations

import time

import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.engine import block_mapper
from rankpipe.pipeline.protocols import inner_holdout, protocol_shaped, without_pairs
from rankpipe.pipeline.stages.base import StageInputs, StageResult, channel_events, recall_depth, train_end
from rankpipe.ranking.recall import MERGES, choose_merge, make_channels
from rankpipe.ranking.funnel import recall_candidates
from rankpipe.ranking.recall.base import RecallChannel, launched_by_request, tune_popularity_weight
from rankpipe.ranking.recall.merge import CandidateMerge
from rankpipe.ranking.recall.ranker_features import channel_rank_features


def channels_on(engine, config: Config) -> dict[str, RecallChannel]:
    """The configured channels, unfitted; on a Dask engine the ones that can compute in blocks
    (itemCF's similarity rows) are told to do it on the cluster, and the ones that train in one
    process (item2vec) learn from at most ``engine.sample_sessions`` sessions."""
    channels = make_channels(config.recall, config.seed, config.device)
    if engine is not None and engine.distributed:
        for channel in channels.values():
            if hasattr(channel, "compute_rows_with"):
                channel.compute_rows_with(block_mapper(engine))
            if hasattr(channel, "max_sessions"):
                channel.max_sessions = config.engine.sample_sessions
    return channels


def _logged_channel_ranks(config: Config, channels: dict[str, RecallChannel], test_lists: pd.DataFrame, labels: pd.DataFrame,
                          requests: pd.DataFrame, events: pd.DataFrame, items: pd.DataFrame, history: pd.DataFrame,
                          cuts: list[pd.Timestamp], engine=None) -> pd.DataFrame:
    """``recall_<channel>_rank`` features (:func:`~rankpipe.ranking.recall.ranker_features.channel_rank_features`) for every logged
    pair, each from channels fitted before its request's time.

    A channel fitted on the train period has seen the very clicks the ranker trains on and would
    tell it where they are. So test requests use the stage's own lists (``test_lists``: every
    channel's, stacked with ``channel``) and validation requests the
    same channels (both fitted before them), while train requests use ``recall.ranker_snapshots``
    refits on the events before evenly spaced cuts of the train period, each serving the requests
    up to the next cut (``cuts``: :func:`snapshot_cuts`). Train requests before the first cut get
    NaN: unknown, not "not found".
    """
    quotas = dict(config.recall.quotas)
    logged = requests[requests[S.REQUEST_ID].isin(labels[S.REQUEST_ID].unique())]  # unique: pandas builds a Python set of the values
    train, valid = logged[logged[S.SPLIT] == S.TRAIN], logged[logged[S.SPLIT] == S.VALID]
    found = [test_lists]
    found += [launched_by_request(channel.retrieve(valid, quotas[name], history), valid, items).assign(channel=name)
              for name, channel in channels.items()]
    for cut, until in zip(cuts[:-1], cuts[1:]):
        served = train[(train[S.TS] >= cut) & (train[S.TS] < until)]
        for name, snapshot in channels_on(engine, config).items():
            snapshot.fit(events[events[S.TS] < cut], items)
            if hasattr(channels[name], "popularity_weight"):  # the weight tuned for the full-period channel
                snapshot.popularity_weight = channels[name].popularity_weight
            found.append(launched_by_request(snapshot.retrieve(served, quotas[name], history), served, items).assign(channel=name))
    covered = pd.Index(logged.loc[(logged[S.SPLIT] != S.TRAIN) | (logged[S.TS] >= cuts[0]), S.REQUEST_ID])
    pairs = labels[[S.REQUEST_ID, S.ITEM_ID]].reset_index(drop=True)
    return pd.concat([pairs, channel_rank_features(pd.concat(found, ignore_index=True), pairs, quotas, covered)], axis=1)


def snapshot_cuts(config: Config, requests: pd.DataFrame, labels: pd.DataFrame) -> list[pd.Timestamp]:
    """The ``recall.ranker_snapshots`` evenly spaced cuts of the train period's logged requests, then
    its end: the snapshot fitted before each cut serves the train requests up to the next one."""
    n = config.recall.ranker_snapshots
    train = requests[(requests[S.SPLIT] == S.TRAIN) & requests[S.REQUEST_ID].isin(labels[S.REQUEST_ID].unique())]
    start, end = train[S.TS].min(), train_end(requests)
    return [start + (end - start) * j / (n + 1) for j in range(1, n + 1)] + [end]


def recall(inputs: StageInputs, config: Config) -> StageResult:
    """Fit every channel on the train period, retrieve for test requests, merge with quotas.

    Unless ``recall.merge`` is ``interleave``, the channels also retrieve for a sample of
    validation requests; which channels found the positives there, and at what rank, orders the
    merged lists (:class:`~rankpipe.ranking.recall.merge.CandidateMerge`: a LightGBM or logistic
    merge, or per-channel hit rates combined by noisy-OR). ``auto`` picks the method by 2-fold
    cross-validation on those requests (:func:`~rankpipe.ranking.recall.merge.choose_merge`). Under
    ``evaluate.protocol=random_75_25`` those requests are the protocol's own question asked inside
    the train period (:func:`~rankpipe.pipeline.protocols.inner_holdout`), and the channels are
    fitted without the pairs it holds out; the stage saves them (``shaped_*``) for the ranker.
    Every channel and the merge are saved as the stage's models (plain files).
    """
    requests, items, labels = inputs.table("prepare", "requests"), inputs.table("prepare", "items"), inputs.table("prepare", "labels")
    # The channels read positives, request times and the last event before each fit's end: on Dask only those rows come here.
    cuts = snapshot_cuts(config, requests, labels)  # [train end] without snapshots
    events = channel_events(inputs, cuts)
    train_events = events[events[S.TS] < train_end(requests)]
    test_requests = requests[requests[S.SPLIT] == S.TEST]
    valid_requests = requests[requests[S.SPLIT] == S.VALID]
    # The merge learns from at most half the validation requests: the ranker learns from candidates of the others.
    merge_share = min(config.recall.calibration_requests, (len(valid_requests) + 1) // 2)
    if len(valid_requests) > merge_share:
        valid_requests = valid_requests.sample(merge_share, random_state=config.seed)
    history = S.positive_history(events)
    asked_history, fit_events, tables = history, train_events, {}
    if config.evaluate.protocol == "random_75_25":
        # Asked as the protocol asks: for a random quarter of each user's past, which the channels are
        # fitted without and the requests' histories lack (protocols.inner_holdout); the ranker learns
        # from the requests the merge does not.
        shaped, shaped_labels, pairs = inner_holdout(events, train_end(requests), config.recall.calibration_requests + config.rank.candidate_requests,
                                                     config.seed)
        fit_events, asked_history = without_pairs(train_events, pairs), S.positive_history(without_pairs(events, pairs))
        tables.update(shaped_requests=shaped, shaped_labels=shaped_labels, shaped_pairs=pairs)
        valid_requests = shaped.sample(min(config.recall.calibration_requests, (len(shaped) + 1) // 2), random_state=config.seed)
        valid_labels = shaped_labels
    else:
        valid_requests, valid_labels = protocol_shaped(valid_requests, labels, events, config.evaluate.protocol)  # asked as the protocol asks
    calibrate = config.recall.merge != "interleave" and len(valid_requests) > 0
    channels = channels_on(inputs.engine, config)
    depth = recall_depth(config)
    valid_positives = valid_labels[valid_labels[S.REQUEST_ID].isin(valid_requests[S.REQUEST_ID]) & (valid_labels[S.GRADE] > 0)]
    untuned = {"item2vec": config.recall.item2vec.popularity_weight is None, "two_tower": config.recall.two_tower.popularity_weight is None}
    held_out, timings, tuned = {}, {}, {}
    for name, channel in channels.items():
        started = time.perf_counter()
        inputs.step(f"channel {name}")
        channel.fit(fit_events, items)
        if untuned.get(name) and len(valid_positives):
            tried = tune_popularity_weight(channel, valid_requests, valid_positives, asked_history, config.recall.quotas[name])
            tuned.update({f"{name}_prior_recall.{w:g}": r for w, r in tried.items()})
            tuned[f"{name}_popularity_weight"] = channel.popularity_weight
        if calibrate:
            held_out[name] = launched_by_request(channel.retrieve(valid_requests, config.recall.quotas[name], asked_history), valid_requests, items)
        timings[f"{name}_seconds"] = time.perf_counter() - started
    quotas, method, merge_metrics = dict(config.recall.quotas), config.recall.merge, {}
    inputs.step("merge")
    if calibrate and method == "auto":
        method, cv = choose_merge(held_out, quotas, valid_positives, config.recall.k, config.evaluate.recall_ks, config.seed)
        merge_metrics = {f"merge_cv.{m}.recall": v for m, v in cv.items()}
    elif not calibrate:
        method = "interleave"  # nothing held out to learn from
    merge = CandidateMerge(method, config.recall.k).fit(held_out, quotas, valid_positives)
    if merge.summary() is not None:
        tables["calibration"] = merge.summary()
    # The test requests' candidates come the way the fitted funnel recalls any request (exclude_seen included).
    started = time.perf_counter()
    inputs.step("test candidates")
    merged, channel_lists = recall_candidates(channels, merge, test_requests, depth, history, items, exclude_seen=config.recall.exclude_seen)
    timings["test_candidates_seconds"] = time.perf_counter() - started
    # The requests the merge learned from: the ranker's candidate requests are drawn from the others.
    tables.update(candidates=merged, channels=channel_lists,
                  merge_requests=pd.DataFrame({S.REQUEST_ID: pd.Series(valid_requests[S.REQUEST_ID].to_numpy() if calibrate else [], dtype="str")}))
    # Every fitted part, saved as plain files: each channel (recall/channel_<name>/) and the merge (recall/merge/).
    models = {f"channel_{name}": channel for name, channel in channels.items()}
    models["merge"] = merge
    if "item2vec" in channels:
        i2v = channels["item2vec"]
        vectors = pd.DataFrame(i2v.vectors_, columns=[f"v{j}" for j in range(i2v.vectors_.shape[1])])
        vectors.insert(0, S.ITEM_ID, pd.Series(i2v.item_index_.to_numpy(), dtype="str"))
        tables["item_vectors"] = vectors
    if config.recall.ranker_snapshots > 0:
        started = time.perf_counter()
        inputs.step(f"{config.recall.ranker_snapshots} channel snapshots for the ranker")
        tables["logged_ranks"] = _logged_channel_ranks(config, channels, channel_lists, labels, requests, events, items, history, cuts, inputs.engine)
        timings["ranker_snapshots_seconds"] = time.perf_counter() - started
    metrics = {"candidates_per_request": float(merged.groupby(S.REQUEST_ID).size().mean()), **timings, **tuned, **merge_metrics,
               **{f"merge_is_{m}": float(m == method) for m in MERGES}}
    if "two_tower" in channels:
        metrics["two_tower_train_loss"] = channels["two_tower"].train_loss_
    return StageResult(tables, metrics, models)
