"""Evaluation protocols (``evaluate.protocol``): which interactions a run holds out and scores.

- ``time`` (the default): the run's own split by time. Whole requests are train, valid or test;
  the test requests' positive items are what their lists are scored against.
- ``leave_last_out``: each user's last positive interaction, by time, is held out (RecBole's and
  SASRec's protocol; users with one interaction keep it).
- ``random_75_25``: a seeded random quarter of each user's positive interactions (rounded down)
  is held out (Microsoft Recommenders' benchmark table).

Under the last two, every event of a held-out (user, item) pair leaves the log before the run's
split. No stage sees them. The funnel is then fitted as usual, and the evaluate stage ranks all
items for one request per held-out user: under ``leave_last_out`` at the held-out item's own time
(the user's next item, point in time), under ``random_75_25`` at the end of the log.

The merge and the ranker learn from validation requests asked the way the protocol asks
(:func:`protocol_shaped`): under ``leave_last_out`` each is asked at its last positive event, for that item.
Under ``random_75_25`` they are asked for an inner random quarter of the train period's positives
(:func:`inner_holdout`), which the channels are fitted without and the requests' histories lack.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import ConfigError
from rankpipe.pipeline.stages.base import in_process

PROTOCOLS = ("time", "leave_last_out", "random_75_25")
HOLDOUT_COLUMNS = [S.USER_ID, S.ITEM_ID, S.TS]


def check_protocol(protocol: str) -> None:
    """ConfigError for an ``evaluate.protocol`` that is not one of :data:`PROTOCOLS`."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"evaluate.protocol must be one of {list(PROTOCOLS)}. Got {protocol!r} instead.")


def held_out_interactions(events: pd.DataFrame, protocol: str, seed: int) -> pd.DataFrame:
    """The (user_id, item_id, ts) positive interactions ``protocol`` holds out of ``events`` (in time
    order; ties keep the log's order), one row per (user, item): its first positive event.

    ``leave_last_out``: each user's last; ``random_75_25``: ``floor(n / 4)`` of each user's ``n``,
    drawn with ``seed``.
    """
    check_protocol(protocol)
    if protocol == "time":
        raise ValueError("the time protocol holds nothing out: its test split is whole requests")
    positives = S.positive_history(events).drop_duplicates([S.USER_ID, S.ITEM_ID]).reset_index(drop=True)
    order = np.lexsort((np.arange(len(positives)), positives[S.TS].to_numpy(), positives[S.USER_ID].to_numpy()))
    by_user = positives.iloc[order].reset_index(drop=True)
    users = by_user[S.USER_ID].to_numpy()
    n_of_user = by_user.groupby(S.USER_ID, sort=False)[S.ITEM_ID].transform("size").to_numpy()
    if protocol == "leave_last_out":
        last = np.r_[users[1:] != users[:-1], True]
        held = last & (n_of_user > 1)
    else:
        draw = np.random.default_rng(seed).random(len(by_user))
        place = pd.Series(draw).groupby(users, sort=False).rank(method="first").to_numpy()  # a random order within each user
        held = place <= np.floor(n_of_user / 4)
    out = by_user.loc[held, HOLDOUT_COLUMNS]
    return out.sort_values(S.TS, kind="stable").reset_index(drop=True)


def without_pairs(events: pd.DataFrame, held_out: pd.DataFrame) -> pd.DataFrame:
    """``events`` less every event of a held-out (user_id, item_id) pair (impressions included, so no
    feature or channel learns the pair was shown either)."""
    pairs = pd.MultiIndex.from_frame(held_out[[S.USER_ID, S.ITEM_ID]])
    keep = ~pd.MultiIndex.from_frame(events[[S.USER_ID, S.ITEM_ID]]).isin(pairs)
    return events[keep].reset_index(drop=True)


def protocol_shaped(requests: pd.DataFrame, labels: pd.DataFrame, events: pd.DataFrame, protocol: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(``requests``, ``labels``) asked the way ``protocol`` asks: what the merge and the ranker learn
    from must be the question the protocol scores.

    ``leave_last_out`` asks for a user's next item given everything before it, so each request is
    moved to the time of its last positive event, and only the items of that event stay positive;
    the request's earlier positives are now history (before its time), no longer labels. A request
    without a positive is unchanged. Under ``time`` and ``random_75_25`` both come back as they are.
    """
    check_protocol(protocol)
    if protocol != "leave_last_out" or requests.empty:
        return requests, labels
    asked = events[S.REQUEST_ID].isin(requests[S.REQUEST_ID]) & events[S.EVENT].isin(S.POSITIVE_EVENTS)
    positives = in_process(events.loc[asked, [S.REQUEST_ID, S.ITEM_ID, S.TS]])  # the Dask engine's log: only these rows come here
    last = positives.groupby(S.REQUEST_ID, sort=False)[S.TS].transform("max")
    earlier = positives.loc[positives[S.TS] < last, [S.REQUEST_ID, S.ITEM_ID]]
    earlier = earlier[~pd.MultiIndex.from_frame(earlier).isin(pd.MultiIndex.from_frame(positives.loc[positives[S.TS] == last, [S.REQUEST_ID, S.ITEM_ID]]))]
    at = positives.groupby(S.REQUEST_ID, sort=False)[S.TS].max()
    moved = requests.assign(**{S.TS: at.reindex(requests[S.REQUEST_ID]).fillna(requests.set_index(S.REQUEST_ID)[S.TS]).to_numpy()})
    history_now = pd.MultiIndex.from_frame(labels[[S.REQUEST_ID, S.ITEM_ID]]).isin(pd.MultiIndex.from_frame(earlier))
    return moved, labels[~history_now].reset_index(drop=True)


INNER_PREFIX = "inner:"  # the request ids of :func:`inner_holdout`'s requests, one per user


def inner_holdout(events: pd.DataFrame, at: pd.Timestamp, n_users: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """``random_75_25``'s question asked inside the train period, for the merge and the ranker to learn from.

    Of up to ``n_users`` users (seeded) with at least four positive items before ``at``, a random
    quarter of those items is held out (as :func:`held_out_interactions` holds the protocol's out
    of the whole log), and each user gets one request at ``at`` whose positives are exactly them.
    Whoever fits on the events before ``at`` must not see these pairs (:func:`without_pairs`), and
    the requests' histories must lack them, or the channels would find what they were fitted on.

    Returns:
        (requests: request_id ``inner:<user>``, user_id, ts = ``at``, query null, split ``valid``;
        labels: request_id, item_id, grade, the pair's best grade before ``at``;
        pairs: the held-out user_id, item_id, ts).
    """
    before = events[(events[S.TS] < at).to_numpy()]
    positives = S.positive_history(before).drop_duplicates([S.USER_ID, S.ITEM_ID])
    per_user = positives.groupby(S.USER_ID, sort=True)[S.ITEM_ID].size()
    eligible = per_user.index[per_user.to_numpy() >= 4].to_numpy()
    if len(eligible) > n_users:
        eligible = np.sort(np.random.default_rng(seed).choice(eligible, n_users, replace=False))
    pairs = held_out_interactions(before[before[S.USER_ID].isin(eligible).to_numpy()], "random_75_25", seed + 1)
    users = pd.Series(pd.unique(pairs[S.USER_ID]), dtype="str")
    requests = pd.DataFrame({S.REQUEST_ID: INNER_PREFIX + users, S.USER_ID: users, S.TS: pd.Series([at] * len(users), dtype=before[S.TS].dtype),
                             S.QUERY: pd.Series(None, index=users.index, dtype="str"), S.SPLIT: S.VALID})
    held = pd.MultiIndex.from_frame(pairs[[S.USER_ID, S.ITEM_ID]])
    graded = before[pd.MultiIndex.from_frame(before[[S.USER_ID, S.ITEM_ID]]).isin(held)]
    graded = graded.assign(**{S.GRADE: S.label_grades(graded[S.EVENT])}).groupby([S.USER_ID, S.ITEM_ID], sort=False)[S.GRADE].max().reset_index()
    labels = pd.DataFrame({S.REQUEST_ID: INNER_PREFIX + graded[S.USER_ID].astype("str"), S.ITEM_ID: graded[S.ITEM_ID],
                           S.GRADE: graded[S.GRADE].to_numpy(dtype=np.int8)})
    return requests, labels, pairs.reset_index(drop=True)
