"""The recall stage on the tiny world: merged lists within k, only test requests, nothing launched later, every fitted part saved."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from worlds import TINY_WORLD

from rankpipe.pipeline import schema as S
from rankpipe.pipeline import stages
from rankpipe.pipeline.config import ConfigError, load_config
from rankpipe.ranking.recall import CHANNELS, load_channel
from rankpipe.ranking.recall.base import RecallChannel, load_ids, ranked_lists, save_ids
from rankpipe.ranking.recall.merge import CandidateMerge


def test_candidates_are_test_requests_within_k_and_already_launched(tiny_funnel, tiny_config):
    candidates, requests = tiny_funnel.tables[("recall", "candidates")], tiny_funnel.tables[("prepare", "requests")]
    test_ids = set(requests.loc[requests[S.SPLIT] == S.TEST, S.REQUEST_ID])
    assert set(candidates[S.REQUEST_ID]) <= test_ids
    assert candidates.groupby(S.REQUEST_ID).size().max() <= tiny_config.recall.k
    assert not candidates.duplicated([S.REQUEST_ID, S.ITEM_ID]).any()
    items = tiny_funnel.tables[("prepare", "items")].set_index(S.ITEM_ID)[S.CREATED_AT]
    asked = requests.set_index(S.REQUEST_ID)[S.TS]
    created = items.reindex(candidates[S.ITEM_ID]).to_numpy()
    assert not (pd.notna(created) & (created > asked.reindex(candidates[S.REQUEST_ID]).to_numpy())).any()
    assert set(tiny_funnel.tables[("recall", "channels")][S.CHANNEL]) == set(tiny_config.recall.quotas)


def test_the_saved_channels_and_merge_rebuild_the_stage_lists(tiny_funnel, tiny_config):
    requests = tiny_funnel.tables[("prepare", "requests")]
    test = requests[requests[S.SPLIT] == S.TEST].head(50)
    events = tiny_funnel.tables[("prepare", "events")]
    history = S.positive_history(events)
    channel_lists = tiny_funnel.tables[("recall", "channels")]
    lists = {}
    for name in tiny_config.recall.quotas:
        channel = load_channel(tiny_funnel.model_dir("recall", f"channel_{name}"), device="cpu")
        lists[name] = channel.retrieve(test, max(tiny_config.recall.k, max(tiny_config.evaluate.recall_ks)), history)
        logged = channel_lists[(channel_lists[S.CHANNEL] == name) & channel_lists[S.REQUEST_ID].isin(test[S.REQUEST_ID])]
        # The stage dropped items launched after the request; nothing else differs.
        assert set(zip(logged[S.REQUEST_ID], logged[S.ITEM_ID])) <= set(zip(lists[name][S.REQUEST_ID], lists[name][S.ITEM_ID]))
    stage_lists = {n: channel_lists[(channel_lists[S.CHANNEL] == n) & channel_lists[S.REQUEST_ID].isin(test[S.REQUEST_ID])].drop(columns=S.CHANNEL)
                   for n in tiny_config.recall.quotas}
    merged = CandidateMerge.load(tiny_funnel.model_dir("recall", "merge")).merge(stage_lists)
    expected = tiny_funnel.tables[("recall", "candidates")]
    expected = expected[expected[S.REQUEST_ID].isin(test[S.REQUEST_ID])].reset_index(drop=True)
    pd.testing.assert_frame_equal(merged.reset_index(drop=True), expected, check_dtype=False)


class NewestItemsRecall(RecallChannel):
    """A toy channel: the ``k`` most recently launched items, the same list for every request. All a
    new channel needs is this class (in its own file, ``ranking/recall/<name>.py``) and one line in
    ``ranking/recall/__init__.py``'s CHANNEL_CLASSES (here, in a test, an entry in the CHANNELS it builds)."""

    def __init__(self, boost: float = 1.0):
        self.boost = boost

    def fit(self, train_events: pd.DataFrame, items: pd.DataFrame) -> "NewestItemsRecall":
        self.newest_ = items.sort_values([S.CREATED_AT, S.ITEM_ID], ascending=[False, True], na_position="last")[S.ITEM_ID].to_numpy()
        return self

    def retrieve(self, requests: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        top = self.newest_[:k]
        ordered = pd.DataFrame({S.REQUEST_ID: np.repeat(requests[S.REQUEST_ID].to_numpy(), len(top)), S.ITEM_ID: np.tile(top, len(requests)),
                                S.SCORE: np.tile(self.boost * np.arange(len(top), 0, -1, dtype=np.float32), len(requests))})
        return ranked_lists(ordered, k)

    def _save_state(self, directory) -> None:
        save_ids(self.newest_, directory / "newest.parquet")

    def _load_state(self, directory, device) -> None:
        self.newest_ = load_ids(directory / "newest.parquet")


def test_a_new_channel_is_one_class_and_one_registry_line(tiny_funnel, monkeypatch):
    monkeypatch.setitem(CHANNELS, "newest", NewestItemsRecall)  # the registry line
    config = load_config(None, TINY_WORLD + ["recall.quotas={item2vec: 30, newest: 20}"])
    result = stages.recall(tiny_funnel.inputs(), config)
    channels = result.tables["channels"]
    assert set(channels[S.CHANNEL]) == {"item2vec", "newest"}
    merged = result.tables["candidates"]
    assert (merged[S.CHANNEL] == "newest").any()
    assert merged[merged[S.CHANNEL] == "newest"].groupby(S.REQUEST_ID).size().max() <= 20  # its quota
    assert isinstance(result.models["channel_newest"], NewestItemsRecall)
    with pytest.raises(ConfigError, match="unknown channel"):  # without the registry line it is refused, naming it
        monkeypatch.delitem(CHANNELS, "newest")
        stages.recall(tiny_funnel.inputs(), config)


def test_channels_fitted_on_the_rows_dask_sends_equal_channels_fitted_on_the_whole_log(tiny_funnel, tiny_config):
    """On Dask the recall stage receives, per partition, the positives, each request's first event and
    the last event before each fit's end (``channel_rows``), not the log: every channel fitted on
    them, and each snapshot before a cut, must be the channel fitted on the whole log."""
    from rankpipe.pipeline.stages.base import channel_rows, train_end
    from rankpipe.pipeline.stages.recall import snapshot_cuts
    from rankpipe.ranking.recall import make_channels

    events, items = tiny_funnel.tables[("prepare", "events")], tiny_funnel.tables[("prepare", "items")]
    requests, labels = tiny_funnel.tables[("prepare", "requests")], tiny_funnel.tables[("prepare", "labels")]
    config = load_config(None, TINY_WORLD + ["recall.ranker_snapshots=2"])
    cuts = snapshot_cuts(config, requests, labels)
    assert len(cuts) == 3 and cuts[-1] == train_end(requests)
    # An impression outside any list a second before each cut: the last event there, neither a positive
    # nor a request's first event, and the time the channels fitted before that cut decay their counts to.
    stray = events[events[S.EVENT] == "impression"].head(len(cuts)).assign(**{S.REQUEST_ID: None, S.TS: [c - pd.Timedelta(seconds=1) for c in cuts]})
    events = pd.concat([events, stray]).sort_values(S.TS, kind="stable").reset_index(drop=True)
    # Partition bounds that cut through requests (a request's events in two parts), as day files would.
    bounds = [0, 1000, len(events) // 3, len(events) // 2 + 7, len(events)]
    sent = pd.concat([channel_rows(events.iloc[a:b], cuts) for a, b in zip(bounds[:-1], bounds[1:])], ignore_index=True)
    assert len(sent) < 0.5 * len(events)  # most of the log (impressions) stays on the workers
    test = requests[requests[S.SPLIT] == S.TEST].head(200)
    history = S.positive_history(events)
    pd.testing.assert_frame_equal(S.positive_history(sent).reset_index(drop=True), history.reset_index(drop=True))
    for cut in cuts:
        whole = make_channels(config.recall, config.seed, "cpu")
        part = make_channels(config.recall, config.seed, "cpu")
        for name in ("popularity", "itemcf", "item2vec", "two_tower"):
            whole[name].fit(events[events[S.TS] < cut], items)
            part[name].fit(sent[sent[S.TS] < cut], items)
            pd.testing.assert_frame_equal(part[name].retrieve(test, 20, history), whole[name].retrieve(test, 20, history), obj=f"{name} before {cut}")
