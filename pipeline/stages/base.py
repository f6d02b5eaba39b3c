"""What every stage shares: its inputs (lazy upstream tables), its result, the registrations it asks
the runner for, and the helpers over the prepare stage's tables.

A stage is a pure function ``stage(inputs, config) -> StageResult``: tables and config in; tables,
metrics and models out. IO, caching, tracking and registry writes are the runner's
(:mod:`rankpipe.pipeline.runner`): a stage that wants a model registered says so with a
:class:`Registration`, and the runner writes it and records the version as the named metric.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S

ID_COLUMNS = [S.REQUEST_ID, S.ITEM_ID]


@dataclass(frozen=True)
class Registration:
    """A model the runner registers in the MLflow model registry once the stage has run.

    ``model`` is ``(stage, name)``: a model of this stage's own result, or one an upstream stage saved.
    ``kind`` is ``ranker`` (served by ``rankpipe.ranking.registry_model``) or ``suggester``
    (``rankpipe.generative.registry_model``); ``alias`` is the alias the new version takes; the
    version number becomes the stage metric ``metric``.
    """

    kind: str
    name: str
    model: tuple[str, str]
    alias: str
    tags: dict[str, str]
    metric: str
    description: str = ""


@dataclass(frozen=True)
class Champion:
    """The registry's ``name@champion``: the local directory of its saved model (a funnel, a ranker or a
    suggester, each in its own format), its version number and its tags (``data_fingerprint``,
    ``train_end``, the promotion decision)."""

    directory: Any
    version: int
    tags: dict[str, str]


@dataclass
class StageResult:
    """What a stage hands back to the runner."""

    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # name -> object with save(directory)
    files: dict[str, bytes] = field(default_factory=dict)  # name -> content (reports, plots)
    registrations: list[Registration] = field(default_factory=list)


@dataclass
class StageInputs:
    """Lazy access to upstream outputs: ``inputs.table("prepare", "requests")``.

    ``load_champion(name)`` reads ``name@champion`` from the registry as a :class:`Champion` (None when
    there is none, or when the run is not tracked); reading is all a stage may do with the registry.
    ``engine`` is the open :class:`~rankpipe.pipeline.engine.Engine` (None: this process);
    ``frame(stage, name)`` gives a table as that engine works on it.
    """

    load_table: Callable[[str, str], pd.DataFrame]
    model_dir: Callable[[str, str], Any]
    dataset: Any = None  # the loaded Dataset, for prepare only
    load_champion: Callable[[str], Any] | None = None
    engine: Any = None
    load_frame: Callable[[str, str], Any] | None = None
    # (dataset, metric names, how many) -> the last finished tracked runs of that dataset (run_id, metrics…)
    load_history: Callable[[str, tuple[str, ...], int], pd.DataFrame] | None = None
    on_step: Callable[[str], None] | None = None  # the runner's progress line: which step a long stage is on

    def step(self, text: str) -> None:
        """Tell the run's progress line what this stage is doing now (e.g. ``channel item2vec``); a no-op outside a run."""
        if self.on_step is not None:
            self.on_step(text)

    def table(self, stage: str, name: str) -> pd.DataFrame:
        """The upstream table ``stage.name``, whole, in this process; KeyError when that stage did not write it."""
        return self.load_table(stage, name)

    def optional_table(self, stage: str, name: str) -> pd.DataFrame | None:
        """:meth:`table`, or None when that stage did not write it (a dataset without users, a run without a champion)."""
        try:
            return self.load_table(stage, name)
        except KeyError:
            return None

    def frame(self, stage: str, name: str):
        """The upstream table ``stage.name`` where the engine works on it: on Dask a Dask DataFrame
        the workers read (so this process never holds it), else the pandas one :meth:`table` gives."""
        return (self.load_frame or self.load_table)(stage, name)


def in_process(frame) -> pd.DataFrame:
    """``frame`` here: a Dask DataFrame or Series computed (for what is small by then, e.g. the
    positive events), a pandas or numpy value as it is."""
    return frame.compute() if hasattr(frame, "compute") else frame


def positive_events(inputs: StageInputs) -> pd.DataFrame:
    """The log's positive events (:data:`~rankpipe.pipeline.schema.POSITIVE_EVENTS`), every column, in
    log order: what the history, the cold items and the query suggester read. On Dask the workers
    filter the log and this process receives these rows only."""
    events = inputs.frame("prepare", "events")
    positive = events[events[S.EVENT].isin(S.POSITIVE_EVENTS)]
    return positive if isinstance(positive, pd.DataFrame) else positive.compute().reset_index(drop=True)


def positive_history(inputs: StageInputs) -> pd.DataFrame:
    """:func:`~rankpipe.pipeline.schema.positive_history` of the prepared log, (user_id, item_id, ts); on
    Dask the workers filter the log and send these three columns only."""
    return in_process(S.positive_history(inputs.frame("prepare", "events")))


def channel_events(inputs: StageInputs, cuts: list[pd.Timestamp]) -> pd.DataFrame:
    """The rows of the log the recall channels read, in log order: the positive events, each request's
    first event (its time, which two_tower's training takes) and the last event before each of
    ``cuts`` (a channel fitted on ``events[ts < cut]`` decays its counts to that event's time).

    Every channel fitted on these rows equals the one fitted on the whole log. The local engine
    passes the whole log (it is in memory already); on Dask the workers pick the rows
    (:func:`channel_rows`) and this process never holds the rest.
    """
    events = inputs.frame("prepare", "events")
    if isinstance(events, pd.DataFrame):
        return events
    return events.map_partitions(channel_rows, list(cuts), meta=events._meta).compute().reset_index(drop=True)


def channel_rows(events: pd.DataFrame, cuts: list[pd.Timestamp]) -> pd.DataFrame:
    """:func:`channel_events` on one part of a log in time order. A request's first event in this part
    is kept even when an earlier part holds an earlier one: an extra row that is no positive and
    not the last before a cut changes nothing a channel computes."""
    keep = events[S.EVENT].isin(S.POSITIVE_EVENTS) | (events[S.REQUEST_ID].notna() & ~events[S.REQUEST_ID].duplicated())
    ts = events[S.TS]
    for cut in cuts:
        before = ts < cut
        if before.any():
            keep |= before & (ts == ts[before].max())
    return events[keep.to_numpy()]


def train_end(requests: pd.DataFrame) -> pd.Timestamp:
    """The first timestamp after the train period (the earliest validation or test request)."""
    return requests.loc[requests[S.SPLIT] != S.TRAIN, S.TS].min()


def with_request_context(labels_or_candidates: pd.DataFrame, requests: pd.DataFrame) -> pd.DataFrame:
    """(request, item) rows with their request's user, query, time and split (inner join on request_id)."""
    return labels_or_candidates.merge(requests[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS, S.SPLIT]], on=S.REQUEST_ID, how="inner")


def recall_depth(config) -> int:
    """How many candidates each channel retrieves per request: the merged list length, or the deepest recall@K judged."""
    return max(config.recall.k, max(config.evaluate.recall_ks))


def item_vectors_of(table: pd.DataFrame) -> tuple[pd.Index, np.ndarray]:
    """(item id index, (I, D) float32 matrix) from a ``recall.item_vectors`` table."""
    return pd.Index(table[S.ITEM_ID].to_numpy()), table.drop(columns=[S.ITEM_ID]).to_numpy(dtype=np.float32)
