"""Interaction logs without request lists (ratings, clicks, carts, purchases: user, item, time, value)
turned into the funnel's requests: sessions from time gaps (or the log's own session ids), one
request per session, and, where the log shows no negatives at all, sampled impressions.

Shared by the ``tables`` adapter (``dataset.requests``) and the ``movielens`` adapter.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.schema import ConfigError, check_bounds

REQUEST_MODES = ("auto", "logged", "sessions")


def check_requests_config(config: DatasetConfig) -> None:
    """ConfigError for a ``dataset.requests``, ``session_gap_minutes`` or ``sampled_impressions`` out of range."""
    if config.requests not in REQUEST_MODES:
        raise ConfigError(f"dataset.requests must be one of {list(REQUEST_MODES)}. Got {config.requests!r} instead.")
    check_bounds(config, "dataset.")  # the numbers: DatasetConfig.BOUNDS (a DatasetConfig built in Python is not loaded)


def sessions_from_gaps(users: pd.Series, ts: pd.Series, gap: pd.Timedelta) -> np.ndarray:
    """Session ids ``<user>-<n>``: a user's activity splits wherever two events are more than ``gap`` apart.

    ``users`` and ``ts`` must be sorted by (user, ts).
    """
    u = users.to_numpy()
    t = ts.to_numpy()
    new = np.ones(len(u), dtype=bool)
    new[1:] = (u[1:] != u[:-1]) | ((t[1:] - t[:-1]) > np.timedelta64(gap))
    number = np.cumsum(new) - 1
    first_of_user = np.searchsorted(u, u, side="left")
    within_user = number - number[first_of_user]
    return (pd.Series(u, dtype="str") + "-" + pd.Series(within_user).astype("str")).to_numpy()


def requests_from_sessions(events: pd.DataFrame, gap: pd.Timedelta) -> pd.DataFrame:
    """``events`` with one request per session: the log's ``session_id`` where every event has one,
    else sessions cut from each user's events at gaps over ``gap``. Sorted by (user, ts); ties keep
    the log's order."""
    out = events.sort_values([S.USER_ID, S.TS], kind="stable").reset_index(drop=True)
    if out[S.SESSION_ID].isna().any():
        out[S.SESSION_ID] = sessions_from_gaps(out[S.USER_ID], out[S.TS], gap)
    out[S.REQUEST_ID] = out[S.SESSION_ID].astype("str")
    return out


def sampled_impressions(events: pd.DataFrame, item_ids: pd.Series, per_request: int, seed: int) -> pd.DataFrame:
    """``per_request`` impression events for each request of ``events``, at its first event's time,
    user and session: the unclicked items a ranker learns against when a log records no impressions.

    Each item is drawn (with ``seed``) in proportion to its positive events before the request,
    items popular then are drawn more often, as they would have been shown more. Negatives that are
    merely obscure would teach the ranker popularity and nothing else, and drawing from the whole log
    would leak later popularity into the features that count impressions. A request before any
    positive event draws uniformly from ``item_ids``. A draw that hits one of the request's own
    items, or repeats one, is dropped, not redrawn.
    """
    firsts = events.drop_duplicates(S.REQUEST_ID)[[S.REQUEST_ID, S.USER_ID, S.SESSION_ID, S.TS]].reset_index(drop=True)
    positives = events[events[S.EVENT].isin(S.POSITIVE_EVENTS)].sort_values(S.TS, kind="stable")
    rng = np.random.default_rng(seed)
    shape = (len(firsts), per_request)
    before = np.searchsorted(positives[S.TS].to_numpy(), firsts[S.TS].to_numpy(), side="left")  # positives strictly earlier
    past = np.floor(rng.random(shape) * before[:, None]).astype(np.int64)
    catalogue = item_ids.astype("str").to_numpy()
    uniform = catalogue[rng.integers(0, len(catalogue), size=shape)]
    past_items = positives[S.ITEM_ID].to_numpy(dtype=object)
    from_past = past_items[past] if len(past_items) else uniform  # past < before: in range wherever before > 0
    drawn = np.where(before[:, None] > 0, from_past, uniform)
    sampled = firsts.loc[firsts.index.repeat(per_request)].reset_index(drop=True)
    sampled[S.ITEM_ID] = drawn.ravel()
    sampled = sampled.drop_duplicates([S.REQUEST_ID, S.ITEM_ID])
    touched = pd.MultiIndex.from_frame(sampled[[S.REQUEST_ID, S.ITEM_ID]]).isin(pd.MultiIndex.from_frame(events[[S.REQUEST_ID, S.ITEM_ID]]))
    sampled = sampled[~touched]
    return sampled.assign(**{S.EVENT: "impression"}).reindex(columns=events.columns).astype(events.dtypes.to_dict())


def is_interaction_log(events: pd.DataFrame, config: DatasetConfig) -> bool:
    """Whether ``events`` gets its requests from sessions (``dataset.requests``; ``auto``: no event has a request_id)."""
    if config.requests == "auto":
        return bool(events[S.REQUEST_ID].isna().all())
    return config.requests == "sessions"


def as_requests(events: pd.DataFrame, items: pd.DataFrame, config: DatasetConfig, seed: int) -> tuple[pd.DataFrame, str]:
    """An interaction log's events with a request per session, plus sampled impressions when it has
    no impressions and no ratings (``dataset.sampled_impressions``); and a line for the run's log
    that says what was done."""
    gap = pd.Timedelta(minutes=config.session_gap_minutes)
    had_sessions = not events[S.SESSION_ID].isna().any()
    out = requests_from_sessions(events, gap)
    how = "its session_id column" if had_sessions else f"gaps over {config.session_gap_minutes:g} minutes"
    said = f"events: no request lists, so one request per session ({out[S.REQUEST_ID].nunique()} sessions, from {how})"
    if not out[S.EVENT].isin(("impression", "rating")).any() and config.sampled_impressions > 0:
        negatives = sampled_impressions(out, items[S.ITEM_ID], config.sampled_impressions, seed)
        out = pd.concat([out, negatives], ignore_index=True).sort_values([S.USER_ID, S.TS], kind="stable", ignore_index=True)
        said += (f"; no impressions or ratings, so {len(negatives)} impressions of items drawn by their popularity before each "
                 f"request ({config.sampled_impressions} per request, dataset.sampled_impressions) are the negatives")
    return out, said
