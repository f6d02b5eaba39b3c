"""The pieces of the prepare stage that both engines run: the local stage (:mod:`.prepare`) on the
whole log, the Dask one (:mod:`.prepare_dask`) per partition."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.stages.base import StageResult

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
