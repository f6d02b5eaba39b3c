"""The pieces of the prepare stage that both engines run: the local stage (:mod:`.prepare`) on the
whole log, the Dask one (:mod:`.prepare_dask`) per partition."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.stages.base import StageResult, in_process

if TYPE_CHECKING:  # the config imports every component; the workers running this module's tasks need none
    from rankpipe.pipeline.config import Config


def derived_interactions(events: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """:func:`~.prepare.interactions_from_ratings` before its sort by time: other events, then the ratings'
    impressions, then their clicks (``events`` itself when there is no rating)."""
    is_rating = (events[S.EVENT] == "rating").to_numpy()
    if not is_rating.any():
        return events
    ratings = events[is_rating]
    if ratings[S.VALUE].isna().any():
        missing = ratings[ratings[S.VALUE].isna()]
        raise S.ContractError(S.EVENTS, S.VALUE, "a rating value on every rating event", f"{len(missing)} ratings without a value", missing)
    liked = ratings[ratings[S.VALUE] >= threshold]
    return pd.concat([events[~is_rating], ratings.assign(**{S.EVENT: "impression"}), liked.assign(**{S.EVENT: "click"})], ignore_index=True)


REQUEST_COLUMNS = [S.REQUEST_ID, S.USER_ID, S.SESSION_ID, S.TS, S.QUERY]


def split_requests(requests: pd.DataFrame, config: Config) -> pd.DataFrame:
    """``requests`` (in time order) with their ``split``: the last ``split.test_fraction`` are test,
    the ``split.valid_fraction`` before them valid, the rest train."""
    n = len(requests)
    n_test = int(round(n * config.split.test_fraction))
    n_valid = int(round(n * config.split.valid_fraction))
    if n - n_test - n_valid < 1 or n_test < 1:
        raise S.ContractError(S.EVENTS, S.REQUEST_ID, "enough requests for a train/valid/test split", f"{n} requests")
    split = np.full(n, "train", dtype=object)
    split[n - n_test - n_valid : n - n_test] = "valid"
    split[n - n_test :] = "test"
    requests[S.SPLIT] = pd.Series(split, dtype="str")
    return requests


def graded_events(in_request: pd.DataFrame) -> pd.DataFrame:
    """The events of lists that carry a label (impression … purchase), with their ``grade``."""
    graded = in_request[in_request[S.EVENT].isin(list(S.LABEL_GRADES))]
    return graded.assign(grade=S.label_grades(graded[S.EVENT]))


def unknown_items_error(n_unknown: int, rows: pd.DataFrame) -> S.ContractError:
    """The error for events whose item is not in the items table."""
    return S.ContractError(S.EVENTS, S.ITEM_ID, "item ids present in the items table", f"{n_unknown} events with unknown items", rows)


NO_REQUESTS = (S.EVENTS, S.REQUEST_ID, "request ids on the events shown in lists", "no event with a request_id")


def prepared(requests: pd.DataFrame, labels, events, n_events: int, items: pd.DataFrame, oracle: dict) -> StageResult:
    """The prepare stage's result (``labels`` and ``events`` may be Dask DataFrames, written as partitioned Parquet)."""
    tables = {"requests": requests, "labels": labels, "events": events, "items": items, **oracle}
    metrics = {"n_events": n_events, "n_items": len(items), "n_requests": len(requests),
               **{f"n_{s}_requests": int((requests[S.SPLIT] == s).sum()) for s in S.SPLITS}}
    return StageResult(tables, metrics)


def check_learnable(events: pd.DataFrame, requests: pd.DataFrame, labels: pd.DataFrame, items: pd.DataFrame) -> None:
    """ContractError, before any stage is written, for a log the funnel cannot learn from: no positive
    event (click, cart, purchase) in the training or the validation period, or every positive on an item launched
    after it (``created_at`` later than the event: nothing the funnel may recommend then). Events on
    items before their launch are otherwise only counted in the log: a catalogue's dates are often rough."""
    positive_requests = in_process(labels.loc[labels[S.GRADE] > 0, S.REQUEST_ID].unique())  # on Dask: computed, a small set
    for split, period, why in ((S.TRAIN, "training period", "to learn from"),
                               (S.VALID, "validation period", "for early stopping, the merge and calibration; a longer log or a larger "
                                                             "split.valid_fraction gives it some")):
        asked = requests.loc[requests[S.SPLIT] == split, S.REQUEST_ID]
        if not asked.isin(positive_requests).any():
            raise S.ContractError(S.EVENTS, S.EVENT, f"positive events ({', '.join(S.POSITIVE_EVENTS)}) in the {period}, {why}",
                                  f"none in the {len(asked):,} {split} requests")
    if S.CREATED_AT not in items or items[S.CREATED_AT].isna().all():
        return
    positive_events = in_process(events.loc[events[S.EVENT].isin(S.POSITIVE_EVENTS), [S.ITEM_ID, S.TS]])
    launched = items.set_index(S.ITEM_ID)[S.CREATED_AT].reindex(positive_events[S.ITEM_ID]).to_numpy()
    early = ~pd.isna(launched) & (positive_events[S.TS].to_numpy() < launched)
    if early.all():
        raise S.ContractError(S.ITEMS, S.CREATED_AT, "items launched by the time of their events (created_at at or before them)",
                              f"every one of the {len(early):,} positive events is on an item launched later, so no item could be "
                              f"recommended when it was wanted (first: {positive_events[S.ITEM_ID].iloc[0]!r} at {positive_events[S.TS].iloc[0]}, "
                              f"launched {launched[0]})")
    if early.any():
        logging.getLogger(__name__).warning("table 'items', column 'created_at': %d of %d positive events are on an item before its "
                                            "created_at; the funnel never offers an item before it is launched", int(early.sum()), len(early))
