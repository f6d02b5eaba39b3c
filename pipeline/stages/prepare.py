"""The prepare stages: the time split and graded labels of an event log (``prepare``), a ready LTR
feature table's lists (``prepare_ltr``), and the validated tables of a catalogue or query list as
they are (``prepare_tables``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.protocols import held_out_interactions, without_pairs
from rankpipe.pipeline.stages.base import ID_COLUMNS, StageInputs, StageResult
from rankpipe.pipeline.stages.prepare_parts import (
    NO_REQUESTS,
    REQUEST_COLUMNS,
    check_learnable,
    derived_interactions,
    graded_events,
    prepared,
    split_requests,
    unknown_items_error,
)


def interactions_from_ratings(events: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Events in funnel terms: each ``rating`` becomes an impression, plus a click when its value >= ``threshold``.

    Explicit feedback then flows through the same labels (a rated item is a shown item; a liked
    one a positive), features and recall channels as implicit feedback. Other events pass through.
    """
    out = derived_interactions(events, threshold)
    return events if out is events else out.sort_values(S.TS, kind="stable").reset_index(drop=True)


def prepare(inputs: StageInputs, config: Config) -> StageResult:
    """Split requests by time (whole requests on one side) and derive graded labels per (request, item).

    Under an ``evaluate.protocol`` that holds interactions out (:mod:`~rankpipe.pipeline.protocols`),
    they leave the log first and are kept as table ``holdout``.

    On the Dask engine the events stay on the workers (:func:`prepare_on_dask`); the result is the same.
    """
    engine = inputs.engine
    if engine is not None and engine.distributed:
        from rankpipe.pipeline.stages.prepare_dask import prepare_on_dask

        return prepare_on_dask(engine, inputs.dataset, config)
    dataset = inputs.dataset
    events = interactions_from_ratings(dataset.tables[S.EVENTS], config.dataset.rating_threshold)
    if not events[S.TS].is_monotonic_increasing:  # prepare.events is the history, in time order (ties keep the file's order)
        events = events.sort_values(S.TS, kind="stable", ignore_index=True)
    items = dataset.tables[S.ITEMS]
    holdout = {}
    if config.evaluate.protocol != "time":  # leave_last_out, random_75_25: those interactions leave the log before anything reads it
        held_out = held_out_interactions(events, config.evaluate.protocol, config.seed)
        events, holdout = without_pairs(events, held_out), {"holdout": held_out}
    in_request = events[events[S.REQUEST_ID].notna()]
    if in_request.empty:
        raise S.ContractError(*NO_REQUESTS)
    known = events[S.ITEM_ID].isin(items[S.ITEM_ID])
    if not known.all():
        raise unknown_items_error(int((~known).sum()), events[~known])

    requests = split_requests(in_request.drop_duplicates(S.REQUEST_ID)[REQUEST_COLUMNS].reset_index(drop=True), config)
    labels = graded_events(in_request).groupby(ID_COLUMNS, sort=False, observed=True).agg(
        grade=(S.GRADE, "max"), position=(S.POSITION, "min")).reset_index()
    labels[S.GRADE] = labels[S.GRADE].astype(np.int8)
    check_learnable(events, requests, labels, items)
    users = {S.USERS: dataset.tables[S.USERS]} if S.USERS in dataset.tables else {}  # their attributes slice the promotion report
    return prepared(requests, labels, events, len(events), items, {**dataset.oracle, **holdout, **users})


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
