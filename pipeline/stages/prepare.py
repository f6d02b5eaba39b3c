"""The prepare stages: the time split and graded labels of an event log (``prepare``), a ready LTR
feature table's lists (``prepare_ltr``), and the validated tables of a catalogue or query list as
they are (``prepare_tables``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import ID_COLUMNS, StageInputs, StageResult


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
    if not events[S.TS].is_monotonic_increasing:  # prepare.events is the history, in time order (ties keep the file's order)
        events = events.sort_values(S.TS, kind="stable", ignore_index=True)
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
    requests[S.SPLIT] = pd.Series(split, dtype="str")

    graded = in_request[in_request[S.EVENT].isin(list(S.LABEL_GRADES))]
    labels = graded.assign(grade=S.label_grades(graded[S.EVENT])).groupby(ID_COLUMNS, sort=False, observed=True).agg(
        grade=(S.GRADE, "max"), position=(S.POSITION, "min")).reset_index()
    labels[S.GRADE] = labels[S.GRADE].astype(np.int8)

    tables = {"requests": requests, "labels": labels, "events": events, "items": items}
    tables.update(dataset.oracle)
    metrics = {"n_events": len(events), "n_items": len(items), "n_requests": n,
               **{f"n_{s}_requests": int((requests[S.SPLIT] == s).sum()) for s in S.SPLITS}}
    return StageResult(tables, metrics)


def prepare_tables(inputs: StageInputs, config: Config) -> StageResult:
    """Store a dataset's validated tables as they are (catalogues, query lists, fixtures) for the stages that read them."""
    tables = {**inputs.dataset.tables, **inputs.dataset.oracle}
    return StageResult(dict(tables), {f"n_{name}": len(table) for name, table in tables.items()})


LTR_ID, LTR_LABEL = "qid", "label"  # an LTR file's list id and graded label


def prepare_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """Train/valid/test lists of a ready feature table: the file's own valid split, else a seeded
    ``split.valid_fraction`` of the training queries; the test file stays the test split."""
    tables = inputs.dataset.tables
    train = tables["ltr_train"].copy()
    if "ltr_valid" in tables:
        valid = tables["ltr_valid"]
        train[S.SPLIT], valid = "train", valid.assign(split="valid")
        train = pd.concat([train, valid], ignore_index=True)
    else:
        qids = train[LTR_ID].unique()
        rng = np.random.default_rng(config.seed)
        n_valid = max(1, int(round(len(qids) * config.split.valid_fraction)))
        held_out = rng.choice(qids, size=n_valid, replace=False)
        train[S.SPLIT] = np.where(train[LTR_ID].isin(held_out), "valid", "train")
    test = tables["ltr_test"].assign(split="test")
    metrics = {f"n_{split}_queries": int(frame.loc[frame[S.SPLIT] == split, LTR_ID].nunique())
               for split, frame in (("train", train), ("valid", train), ("test", test))}
    return StageResult({"train": train, "test": test}, metrics)
