"""The prepare stage on the Dask engine: the event log stays on the workers.

The result is the local stage's, row for row and in the same order: each piece below is the local
one's per-partition part (:mod:`.prepare_parts`), and a global row order stands in for pandas' stable sorts.

- The events are put in time order by ``(ts, kind, file row)``, which is what the local stable sort
  by time of "other events, then the ratings' impressions, then their clicks" gives. A log already
  in time order (checked per partition and across partition bounds) is not shuffled at all.
- The requests are the first event of each request id: per partition, then across partitions in
  order, here (a request table is one row per list, small beside the log).
- The labels are grouped per partition, in the order of each pair's first event (the local
  group-by's order). A request whose events straddle a partition bound is labelled here, from its
  few rows, and each of its pairs joins the partition of its first event. No shuffle.

The events and labels come back as Dask DataFrames, which the runner writes as partitioned Parquet
from the workers; requests and items are pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.engine import Engine, frame_on, partition_bounds, with_row_numbers
from rankpipe.pipeline.stages.base import ID_COLUMNS, StageResult
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

if TYPE_CHECKING:  # the config imports every component; the workers running this module's tasks need none
    from rankpipe.pipeline.config import Config

_FILE_ROW, _KIND, _ROW = "_rankpipe_file_row", "_rankpipe_kind", "_rankpipe_row"


def _bounds(frame: dd.DataFrame) -> list[int]:
    """:func:`~rankpipe.pipeline.engine.partition_bounds` of ``frame``'s partitions (one pass to count them)."""
    return partition_bounds(frame.map_partitions(len).compute().to_numpy())


def _interactions_part(part: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """A partition's events in funnel terms, each row tagged 0 (as logged), 1 (a rating's impression)
    or 2 (a liked rating's click): the order the local stage's concatenation puts them in."""
    out = derived_interactions(part, threshold)
    if out is part:
        return part.assign(**{_KIND: np.int8(0)})
    is_rating = (part[S.EVENT] == "rating").to_numpy()
    n_other, n_ratings = int((~is_rating).sum()), int(is_rating.sum())
    kind = np.full(len(out), 2, dtype=np.int8)
    kind[:n_other], kind[n_other:n_other + n_ratings] = 0, 1
    return out.assign(**{_KIND: kind})


def _order_summary(part: pd.DataFrame) -> pd.DataFrame:
    """Whether a partition is in time order with no derived rows, and its first and last time."""
    ts = part[S.TS]
    return pd.DataFrame({"ordered": [bool(ts.is_monotonic_increasing and (part[_KIND] == 0).all())],
                         "first": [ts.iloc[0] if len(ts) else pd.NaT], "last": [ts.iloc[-1] if len(ts) else pd.NaT]})


def _in_time_order(events: dd.DataFrame) -> bool:
    """Whether the partitions, read in order, are already the local stage's time order."""
    summary = events.map_partitions(_order_summary, meta={"ordered": bool, "first": "datetime64[us]", "last": "datetime64[us]"}).compute()
    summary = summary.dropna(subset=["first"])
    return bool(summary["ordered"].all() and (summary["last"].to_numpy()[:-1] <= summary["first"].to_numpy()[1:]).all())


def _first_of_each_request(part: pd.DataFrame) -> pd.DataFrame:
    in_request = part[part[S.REQUEST_ID].notna()]
    return in_request.drop_duplicates(S.REQUEST_ID)[REQUEST_COLUMNS]


def _graded_part(part: pd.DataFrame) -> pd.DataFrame:
    return graded_events(part[part[S.REQUEST_ID].notna()])[[*ID_COLUMNS, S.GRADE, S.POSITION, _ROW]]


def _label(graded: pd.DataFrame) -> pd.DataFrame:
    """The label of each (request, item) pair of ``graded`` rows, in the order of their first row, with that row's number."""
    return graded.groupby(ID_COLUMNS, sort=False, observed=True).agg(
        grade=(S.GRADE, "max"), position=(S.POSITION, "min"), **{_ROW: (_ROW, "min")}).reset_index()


def _graded_of(part: pd.DataFrame, request_ids) -> pd.DataFrame:
    """A partition's graded rows of the requests ``request_ids``."""
    graded = _graded_part(part)
    return graded[graded[S.REQUEST_ID].isin(request_ids)]


def _labels_part(part: pd.DataFrame, straddlers, straddling: pd.DataFrame, bounds: list[int], partition_info=None) -> pd.DataFrame:
    """A partition's labels: its own requests' pairs, plus the straddling requests' pairs whose first
    event is among its rows, in the order of their first events."""
    graded = _graded_part(part)
    own = _label(graded[~graded[S.REQUEST_ID].isin(straddlers)])
    number = partition_info["number"] if partition_info else 0
    start, stop = bounds[number], bounds[number + 1]
    joined = straddling[(straddling[_ROW] >= start) & (straddling[_ROW] < stop)]
    if len(joined):
        own = pd.concat([own, joined], ignore_index=True).sort_values(_ROW, kind="stable")
    return _tidy_labels(own)


def _tidy_labels(labels: pd.DataFrame) -> pd.DataFrame:
    return labels[[*ID_COLUMNS, S.GRADE, S.POSITION]].astype({S.GRADE: np.int8, S.POSITION: "Int32"}).reset_index(drop=True)


def prepare_on_dask(engine: Engine, dataset, config: Config) -> StageResult:
    """:func:`~rankpipe.pipeline.stages.prepare.prepare` with the events on ``engine``'s workers
    (a Dask DataFrame from the tables adapter, or a pandas one sent there in parts)."""
    with dask.config.set({"dataframe.convert-string": False}):  # keep pandas' own str columns, as the local stage writes them
        return _prepare(engine, dataset, config)


def _prepare(engine: Engine, dataset, config: Config) -> StageResult:
    client = engine.client
    items = dataset.tables[S.ITEMS]
    events = dataset.tables[S.EVENTS]
    if isinstance(events, pd.DataFrame):
        events = frame_on(engine, events)
    columns = list(events.columns)

    # The local stage's order: time, then the derived rows' kind, then the row's place in the files.
    events = with_row_numbers(events, _bounds(events), _FILE_ROW)
    events = events.map_partitions(_interactions_part, config.dataset.rating_threshold, meta={**events.dtypes.to_dict(), _KIND: np.int8})
    events = client.persist(events)
    if not _in_time_order(events):
        events = client.persist(events.sort_values([S.TS, _KIND, _FILE_ROW]))
    bounds = _bounds(events)  # the rows' numbers, the partitions' row ranges and the event count, from one pass
    events = with_row_numbers(events, bounds, _ROW)
    events = client.persist(events[[*columns, _ROW]])

    item_ids = items[S.ITEM_ID]
    unknown = events[~events[S.ITEM_ID].isin(item_ids)]
    firsts = events.map_partitions(_first_of_each_request, meta=events._meta[REQUEST_COLUMNS])
    n_unknown, firsts = dask.compute(unknown.map_partitions(len).sum(), firsts)
    if firsts.empty:  # checked first, as the local stage does: a log with both errors names the same one on either engine
        raise S.ContractError(*NO_REQUESTS)
    if n_unknown:
        raise unknown_items_error(int(n_unknown), unknown.head(5, npartitions=-1)[columns])
    requests = split_requests(firsts.drop_duplicates(S.REQUEST_ID).reset_index(drop=True), config)

    # Labels without a shuffle: a (request, item) pair's events are in one partition unless its
    # request straddles a partition bound. Those few requests (they show up first in more than one
    # partition) are labelled here and each pair goes back to the partition of its first event;
    # every partition then orders its pairs by their first event, the local group-by's order.
    straddlers = firsts.loc[firsts[S.REQUEST_ID].duplicated(keep=False), S.REQUEST_ID].unique()
    straddling = events.map_partitions(_graded_of, straddlers, meta=_graded_of(events._meta, straddlers)).compute()
    straddling = _label(straddling)
    labels = events.map_partitions(_labels_part, straddlers, straddling, bounds, meta=_tidy_labels(_label(_graded_part(events._meta))))
    check_learnable(events, requests, labels, items)  # before anything is written, as the local stage does
    return prepared(requests, labels, events[columns], bounds[-1], items, dataset.oracle)
