"""The prepare stages on tiny tables: the time split keeps a request whole, labels are the strongest event."""

from __future__ import annotations

import pandas as pd
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline import stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.datasets import Dataset


def _events(rows):
    frame = pd.DataFrame(rows, columns=[S.TS, S.USER_ID, S.SESSION_ID, S.ITEM_ID, S.EVENT, S.REQUEST_ID, S.POSITION, S.VALUE])
    return frame.assign(**{S.TS: pd.to_datetime(frame[S.TS]), S.QUERY: None})


ITEMS = pd.DataFrame({S.ITEM_ID: ["a", "b", "c"], S.TITLE: ["A", "B", "C"], S.CATEGORY: ["x", "x", "y"], S.CREATED_AT: pd.NaT})


def _prepare(events, *overrides):
    config = load_config(None, ["split.valid_fraction=0.2", "split.test_fraction=0.2", *overrides])
    dataset = Dataset("tiny", {S.EVENTS: events, S.ITEMS: ITEMS})
    return stages.prepare(stages.StageInputs(None, None, dataset), config)


def test_requests_split_by_time_whole_and_labels_take_the_strongest_event():
    rows = []
    for r in range(10):  # request r at day r: impressions of a and b, a click and a purchase on a
        day = f"2026-01-{r + 1:02d}"
        rows += [(day, f"u{r % 3}", f"s{r}", "a", "impression", f"r{r}", 1, None), (day, f"u{r % 3}", f"s{r}", "b", "impression", f"r{r}", 2, None),
                 (day, f"u{r % 3}", f"s{r}", "a", "click", f"r{r}", 1, None), (day, f"u{r % 3}", f"s{r}", "a", "purchase", f"r{r}", 1, None)]
    result = _prepare(_events(rows))
    requests, labels = result.tables["requests"], result.tables["labels"]
    assert requests[S.SPLIT].tolist() == [S.TRAIN] * 6 + [S.VALID] * 2 + [S.TEST] * 2  # by time: the last 20% test
    assert (requests.groupby(S.SPLIT)[S.TS].max()[S.TRAIN] < requests.groupby(S.SPLIT)[S.TS].min()[S.VALID])
    grades = labels.set_index([S.REQUEST_ID, S.ITEM_ID])[S.GRADE]
    assert grades[("r0", "a")] == S.LABEL_GRADES["purchase"] and grades[("r0", "b")] == 0
    assert result.metrics["n_test_requests"] == 2 and result.metrics["n_requests"] == 10


def test_ratings_become_impressions_and_liked_ratings_clicks():
    rows = [(f"2026-01-{d:02d}", "u", f"s{d}", "a", "rating", f"r{d}", None, 4.5 if d % 2 else 2.0) for d in range(1, 11)]
    labels = _prepare(_events(rows), "dataset.rating_threshold=4.0").tables["labels"]
    assert labels.set_index(S.REQUEST_ID)[S.GRADE].to_dict() == {f"r{d}": 1 if d % 2 else 0 for d in range(1, 11)}


def test_too_few_requests_for_a_split_is_a_contract_error():
    rows = [("2026-01-01", "u", "s", "a", "impression", "r0", 1, None)]
    with pytest.raises(S.ContractError, match="enough requests"):
        _prepare(_events(rows))


def test_prepare_on_the_tiny_world(tiny_funnel):
    requests = tiny_funnel.tables[("prepare", "requests")]
    assert set(requests[S.SPLIT]) == set(S.SPLITS) and requests[S.REQUEST_ID].is_unique
    order = requests.sort_values(S.TS, kind="stable")[S.SPLIT].map({s: i for i, s in enumerate(S.SPLITS)})
    assert order.is_monotonic_increasing  # train < valid < test in time
