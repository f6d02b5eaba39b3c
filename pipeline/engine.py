"""Execution engines: where a stage's heavy work runs (``engine.name``: ``local`` or ``dask``).

``local`` is one process (pandas, numpy, the compiled kernels on all cores). ``dask`` runs on a
Dask cluster: a running scheduler named by ``engine.scheduler``, or a ``LocalCluster`` started for
the run.

What runs on Dask so far:

- reading and validating a ``tables`` dataset's events, a partition per file
  (:meth:`~rankpipe.pipeline.datasets.tables.TablesAdapter.load_on`), and the prepare stage on them
  (:mod:`rankpipe.pipeline.stages.prepare_dask`), whose events and labels the runner writes from the
  workers as directories of Parquet files (:func:`~rankpipe.pipeline.schema.write_frame`);
- the ``features`` stage on the events as the workers read them (:meth:`StageInputs.frame
  <rankpipe.pipeline.stages.base.StageInputs.frame>`): the builder's history enriched per
  partition, its priors and position CTRs counted there, the history saved by the workers;
- the point-in-time count statistics, of the training rows and of the rank stage's candidates
  (:func:`count_features_on_dask`). For each family of count groups (item, user, query), events
  and requests are shuffled by the entity key with Dask's shuffle, so every event of a key lands in
  the partition of every request that reads it; each partition puts its events back in time order
  and runs the compiled kernel through the same :func:`~rankpipe.features.stats.count_features` the
  local engine calls. A key's statistics depend only on that key's events, in time order, so the
  result is the local engine's, bit for bit;
- the LightGBM rankers' final model (:func:`lightgbm_trainer`, ``lightgbm.dask``, lists whole within
  a partition). Its Dask interface has no early stopping, so the tree count is still chosen in this
  process on at most ``engine.sample_lists`` training lists. Distributed LightGBM bins each worker's
  data, so the model is close to, not identical with, the local one;
- the XGBoost rankers' training, early stopping included (:func:`xgboost_trainer`, ``xgboost.dask``,
  lists whole within a partition); distributed XGBoost merges the workers' quantile sketches, so the
  model is close to, not identical with, the local one;
- batch scoring (:func:`rankpipe.pipeline.scoring.score_to`).

The engine is in no stage's fingerprint, so a run started on one engine resumes on the other.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rankpipe.features.stats import COUNT_GROUPS, CountGroup, count_features, statistic_columns
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.logs import get_logger
from rankpipe.pipeline.schema import ConfigError

if TYPE_CHECKING:  # the config package imports every component (torch among them); the workers that run this module's tasks need none
    from rankpipe.pipeline.config import EngineConfig

ENGINES = ("local", "dask")
_ROW = "_rankpipe_row"  # a request's position in the whole request table, carried through a partition
_ORDER = "_rankpipe_order"  # an event's position in the time-ordered history, to restore that order after a shuffle
log = get_logger(__name__)


def check_engine_config(engine: EngineConfig) -> None:
    """ConfigError naming the ``engine`` key that is wrong, before anything runs."""
    if engine.name not in ENGINES:
        raise ConfigError(f"engine.name must be one of {list(ENGINES)}. Got {engine.name!r} instead.")
    if engine.name == "local" and engine.scheduler:
        raise ConfigError(f"engine.scheduler ({engine.scheduler!r}) is only used with engine.name=dask; set --engine dask too.")
    S.check_bounds(engine, "engine.")  # workers, partitions and the samples: EngineConfig.BOUNDS


@dataclass
class Engine:
    """An open engine: ``client`` is the Dask client (None on the local engine)."""

    name: str
    client: Any = None
    partitions: int = 1

    @property
    def distributed(self) -> bool:
        """Whether work is sent to a Dask cluster."""
        return self.client is not None

    def read_frame(self, path):
        """A Parquet table (a file or a partitioned directory) where this engine works on it: on
        Dask a Dask DataFrame the workers read, in order, in at most ``partitions`` pieces; else
        the whole table in this process."""
        if not self.distributed:
            return S.read_frame(path)
        import dask
        import dask.dataframe as dd

        with dask.config.set({"dataframe.convert-string": False}):  # the dtypes pandas reads: str, not string[pyarrow]
            frame = dd.read_parquet(str(path))
        # A log of one file per day has many small partitions, and each step's tasks (a shuffle's:
        # inputs × outputs) cost more than their rows: neighbours are joined, the order kept.
        return frame.repartition(npartitions=self.partitions) if frame.npartitions > self.partitions else frame


LOCAL = Engine("local")


@contextlib.contextmanager
def open_engine(config: EngineConfig) -> Iterator[Engine]:
    """The engine ``config`` names, open for the duration of the block (a LocalCluster is shut down after).

    Raises:
        ConfigError: Dask is not installed, or no scheduler answers at ``engine.scheduler``.
    """
    check_engine_config(config)
    if config.name == "local":
        yield LOCAL
        return
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("engine.name=dask needs Dask: pip install -e '.[dask]'") from None
    cluster = None
    if config.scheduler:
        try:
            import dask

            # Dask's own connect timeout (30 s unless DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT says otherwise).
            client = Client(config.scheduler, timeout=dask.config.get("distributed.comm.timeouts.connect"))
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"engine.scheduler: no Dask scheduler answered at {config.scheduler!r} ({exc})") from None
    else:
        workers = config.workers or min(4, os.cpu_count() or 1)
        # Worker processes are spawned, not forked: a fork after LightGBM, torch or faiss have loaded
        # OpenMP hangs (libgomp). One thread each, so the kernel's own threads don't oversubscribe.
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               memory_limit=config.memory_limit or "auto")
        client = Client(cluster)
    n_workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    log.info(f"  engine    dask: {n_workers} workers at {client.scheduler.address}")
    try:
        yield Engine("dask", client, config.partitions or 4 * n_workers)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def counter_of(engine: Engine | None):
    """What computes the count statistics on ``engine``: None (the builder's own, in this process)
    on the local engine, else :func:`count_features_on_dask` bound to it."""
    if engine is None or not engine.distributed:
        return None
    return functools.partial(count_features_on_dask, engine)


def _key_families(groups: tuple[CountGroup, ...]) -> dict[str, tuple[CountGroup, ...]]:
    """Count groups by their first key: groups sharing it (user, user × category and user × top
    category; query and query × item) are counted in one partitioning, since every event of a
    (user, category) pair has that user."""
    families: dict[str, list[CountGroup]] = {}
    for group in groups:
        families.setdefault(group.keys[0], []).append(group)
    return {key: tuple(members) for key, members in families.items()}


def _hashed_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """``frame`` with each of ``keys`` replaced by the 64-bit hash of its text (null stays null), the
    same for events and requests whatever their string dtype. The kernel counts by key identity
    alone, so its statistics are unchanged (two keys sharing a hash, about one chance in 10^7 at
    10^6 keys, would pool), while the shuffles move integers instead of strings."""
    hashed = {}
    for key in keys:
        values = frame[key]
        codes = pd.util.hash_pandas_object(values.astype("str"), index=False).to_numpy()
        hashed[key] = pd.arrays.IntegerArray(codes, values.isna().to_numpy())
    return frame.assign(**hashed)


def partition_bounds(lengths) -> list[int]:
    """From the partitions' row counts: the global row number of each partition's first row, then
    the number of rows, so partition ``i`` holds rows ``[bounds[i], bounds[i + 1])``."""
    return np.concatenate([[0], np.cumsum(np.asarray(lengths, dtype=np.int64))]).tolist()


def with_row_numbers(frame, bounds: list[int], column: str):
    """``frame`` (a Dask DataFrame) with ``column``: each row's position in the whole frame, counted
    across partitions in order (``bounds``: :func:`partition_bounds` of its partitions)."""
    return frame.map_partitions(_numbered, bounds, column, meta={**frame.dtypes.to_dict(), column: np.int64})


def _numbered(part: pd.DataFrame, bounds: list[int], column: str, partition_info=None) -> pd.DataFrame:
    start = bounds[partition_info["number"]] if partition_info else 0
    return part.assign(**{column: np.arange(start, start + len(part), dtype=np.int64)})


def _in_order_with_row_numbers(frame, column: str):
    """:func:`with_row_numbers`, after checking in the same pass over the partitions that ``ts``
    never goes back."""
    import dask

    summary = frame[[S.TS]].map_partitions(_partition_summary, meta={"rows": np.int64, "first": "datetime64[us]", "last": "datetime64[us]",
                                                                      "ordered": bool}).compute()
    filled = summary[summary["rows"] > 0]
    if not (filled["ordered"].all() and (filled["first"].to_numpy()[1:] >= filled["last"].to_numpy()[:-1]).all()):
        raise ValueError("count_features_on_dask: the history must be in time order (see enrich_history)")
    with dask.config.set({"dataframe.convert-string": False}):
        return with_row_numbers(frame, partition_bounds(summary["rows"]), column)


def _partition_summary(part: pd.DataFrame) -> pd.DataFrame:
    ts = part[S.TS]
    return pd.DataFrame({"rows": [len(part)], "first": [ts.min()], "last": [ts.max()], "ordered": [ts.is_monotonic_increasing]}).astype(
        {"first": "datetime64[us]", "last": "datetime64[us]"})


def _keyed(frame, key: str, partitions: int):
    """The rows of ``frame`` that have ``key``, shuffled by it into ``partitions`` (rows without one
    are in no statistic; a request without one gets NaN, as :func:`count_features` gives it, so they
    need not travel). The task-based shuffle: on these few partitions it is quicker than P2P."""
    return frame[frame[key].notnull()].shuffle(on=key, npartitions=partitions, shuffle_method="tasks")


def _count_partition(events: pd.DataFrame, requests: pd.DataFrame, windows_days, groups, half_lives_days, position_ctr) -> pd.DataFrame:
    """One key partition on a worker: the kernel over its events, put back in time order, for its
    requests (``_ROW``: their positions in the whole request table)."""
    names = [name for g in groups for name in _names_of(g, windows_days, half_lives_days)]
    if len(requests) == 0:
        return pd.DataFrame({_ROW: np.zeros(0, np.int64), **{name: np.zeros(0, np.float32) for name in names}})
    events = events.sort_values(_ORDER).reset_index(drop=True)
    counts = count_features(events, requests.reset_index(drop=True), windows_days, groups, half_lives_days, position_ctr)
    return pd.DataFrame({_ROW: requests[_ROW].to_numpy(np.int64), **counts})


def count_features_on_dask(engine: Engine, history, pairs: pd.DataFrame, windows_days: tuple[int, ...],
                           groups: tuple[CountGroup, ...] = COUNT_GROUPS, half_lives_days: tuple[int, ...] = (),
                           position_ctr: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """:func:`~rankpipe.features.stats.count_features` computed on ``engine``'s cluster; the same
    columns, values and order (see the module docstring). ``history`` (in time order) is a Dask
    DataFrame, e.g. a stage's partitioned table read by the workers, or a pandas one, sent to them.

    Keys travel as 64-bit hashes (:func:`_hashed_keys`). For each family of count groups, events and
    requests are shuffled on the workers by the family's key (Dask's shuffle), each partition's
    events are put back in time order by their row number, and the kernel runs per partition; only
    the statistics come back here.
    """
    import dask
    import dask.dataframe as dd

    if not engine.distributed:
        return count_features(history, pairs, windows_days, groups, half_lives_days, position_ctr)
    with dask.config.set({"dataframe.convert-string": False}):
        if isinstance(history, pd.DataFrame):
            history = frame_on(engine, history)
        elif history.npartitions < engine.partitions:  # e.g. one file written by the local engine: spread it over the workers
            history = history.repartition(npartitions=engine.partitions)
        keys = sorted({k for g in groups for k in g.keys})
        history = _in_order_with_row_numbers(history, _ORDER)
        history = history.map_partitions(_hashed_keys, keys, meta=_hashed_keys(history._meta, keys))
        pairs = pairs.reset_index(drop=True)
        all_requests = _hashed_keys(pairs[[S.TS, *keys]], keys).assign(**{_ROW: np.arange(len(pairs), dtype=np.int64)})
        all_requests = frame_on(engine, all_requests).persist()  # sent once, read by every family
        out: dict[str, np.ndarray] = {}
        for key, family in _key_families(groups).items():
            columns = sorted({S.TS, *(k for g in family for k in g.keys)})
            # The event columns the kernel reads: ts and event always, position for COEC.
            event_columns = [c for c in dict.fromkeys([*columns, S.EVENT, S.POSITION]) if c in history.columns]
            events = _keyed(history[[*event_columns, _ORDER]], key, engine.partitions)
            requests = _keyed(all_requests[[*columns, _ROW]], key, engine.partitions)
            names = [name for g in family for name in _names_of(g, windows_days, half_lives_days)]
            meta = pd.DataFrame({_ROW: np.zeros(0, np.int64), **{name: np.zeros(0, np.float32) for name in names}})
            counted = dd.map_partitions(_count_partition, events, requests, windows_days, family, half_lives_days, position_ctr,
                                        meta=meta, align_dataframes=False).compute()
            keyed = int(pairs[key].notna().sum())
            if len(counted) != keyed:
                raise RuntimeError(f"count_features_on_dask: {len(counted)} rows came back for {keyed} keyed requests (key {key})")
            rows = counted[_ROW].to_numpy()
            for name in names:
                filled = np.full(len(pairs), np.nan, dtype=np.float32)
                filled[rows] = counted[name].to_numpy()
                out[name] = filled
    # The local engine's column order: group by group as declared.
    return {name: out[name] for g in groups for name in _names_of(g, windows_days, half_lives_days)}


def _names_of(group: CountGroup, windows_days, half_lives_days) -> list[str]:
    return [name for name, *_ in statistic_columns(group, windows_days, half_lives_days)]


def even_parts(total: int, parts: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``parts`` contiguous pieces of ``range(total)`` whose sizes differ by at most one."""
    bounds = np.linspace(0, total, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def frame_on(engine: Engine, frame: pd.DataFrame):
    """``frame`` as a Dask DataFrame on ``engine``'s workers: ``engine.partitions`` contiguous parts,
    in order, sent as data (a graph that embeds a large frame is slow to build and to ship)."""
    import dask.dataframe as dd

    parts = [frame.iloc[a:b] for a, b in even_parts(len(frame), max(1, min(engine.partitions, len(frame))))]
    futures = engine.client.scatter(parts, hash=False)
    return dd.from_delayed(futures, meta=frame.iloc[:0], verify_meta=False)


def _lightgbm_logs_to_logging() -> None:
    """Send LightGBM's Python-side messages ("Finding random open ports for workers") to the
    ``lightgbm`` logger, which :mod:`.logs` holds at WARNING. (The workers' C++ network lines,
    "[LightGBM] [Info] Trying to bind port", still print: LightGBM keeps its log callback per
    thread, and the training thread is Dask's.)"""
    import logging

    import lightgbm

    logger = logging.getLogger("lightgbm")
    if not any(isinstance(f, _RoutineLightGBMNotes) for f in logger.filters):
        logger.addFilter(_RoutineLightGBMNotes())
    lightgbm.register_logger(logger)


class _RoutineLightGBMNotes:
    """Drops the warning lightgbm.dask gives on every fit that it sets each worker's threads itself."""

    def filter(self, record) -> bool:
        message = record.getMessage()
        return not (message.startswith("Parameter ") and message.endswith(" will be ignored."))


def lightgbm_trainer(engine: Engine):
    """A final-model trainer for the LightGBM rankers (:meth:`LambdaRankRanker.train_final_with`):
    ``lightgbm.dask`` over the cluster's workers, each list kept whole within one partition (a
    query group must not straddle two workers). Returns ``trainer(params, X, y, sizes, rounds)``."""

    def train(params: dict, X: pd.DataFrame, y: np.ndarray, sizes: np.ndarray, rounds: int):
        from lightgbm.dask import DaskLGBMRanker

        X_dask, y_dask, group, _ = _whole_lists_on(engine, X, y, sizes)
        _lightgbm_logs_to_logging()
        # No eval set in the final fit, so no metric; eval_at as a param would be warned about on every worker.
        lightgbm_params = {k: v for k, v in params.items() if k not in ("seed", "metric", "eval_at")}
        model = DaskLGBMRanker(client=engine.client, n_estimators=rounds, random_state=params.get("seed"), **lightgbm_params)
        model.fit(X_dask, y_dask, group=group)
        return model.to_local().booster_

    return train


def _whole_lists_on(engine: Engine, X: pd.DataFrame, y: np.ndarray, sizes: np.ndarray):
    """``(X, y, list sizes, list id of each row)`` as Dask collections of the same partitions, each
    holding whole lists (a list must not straddle two workers), in order. Sent as data rather than
    embedded in the graph; lightgbm.dask and xgboost.dask zip a partition's pieces and place them on
    one worker."""
    import dask.array as da
    import dask.dataframe as dd

    sizes = np.asarray(sizes)
    row_start = np.concatenate([[0], np.cumsum(sizes)])
    X = X.reset_index(drop=True)
    parts = [(X.iloc[row_start[g]:row_start[h]], pd.Series(np.asarray(y)[row_start[g]:row_start[h]]), sizes[g:h],
              np.repeat(np.arange(g, h), sizes[g:h]))
             for g, h in even_parts(len(sizes), max(1, min(engine.partitions, len(sizes))))]
    futures = [engine.client.scatter(list(part), hash=False) for part in parts]
    X_dask = dd.from_delayed([f[0] for f in futures], meta=X.iloc[:0], verify_meta=False)
    y_dask = dd.from_delayed([f[1] for f in futures], meta=pd.Series(dtype=np.asarray(y).dtype), verify_meta=False)
    group = da.concatenate([da.from_delayed(f[2], shape=(len(p[2]),), dtype=sizes.dtype) for f, p in zip(futures, parts)])
    list_ids = da.concatenate([da.from_delayed(f[3], shape=(len(p[3]),), dtype=np.int64) for f, p in zip(futures, parts)])
    return X_dask, y_dask, group, list_ids


def xgboost_trainer(engine: Engine):
    """A trainer for the XGBoost rankers (:meth:`XGBoostRanker.train_with`): ``xgboost.dask`` over
    the cluster's workers, each list whole within a partition, with early stopping on the validation
    lists as XGBoost does it here. Returns ``trainer(params, train, rounds, valid, early_stopping_rounds)``."""

    def train(params: dict, train_lists: tuple, rounds: int, valid_lists: tuple | None, early_stopping_rounds: int | None):
        import xgboost.dask as xgb_dask

        def matrix(X, labels, sizes):
            X_dask, y_dask, _, list_ids = _whole_lists_on(engine, X, labels, sizes)
            return xgb_dask.DaskDMatrix(engine.client, X_dask, y_dask, qid=list_ids)

        evals = [(matrix(*valid_lists), "valid")] if valid_lists is not None else None
        out = xgb_dask.train(engine.client, params, matrix(*train_lists), num_boost_round=rounds, evals=evals,
                             early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
        return out["booster"]

    return train


def block_mapper(engine: Engine):
    """``map_blocks(function, blocks, **shared) -> list`` on the cluster: ``shared`` sent to every
    worker once, one task per block, results in the blocks' order (for the channels' row blocks,
    e.g. :meth:`ItemCFRecall.compute_rows_with`)."""

    def map_blocks(function, blocks: list, **shared) -> list:
        sent = {name: engine.client.scatter(value, broadcast=True, hash=False) for name, value in shared.items()}
        return engine.client.gather(engine.client.map(function, blocks, pure=False, **sent))

    return map_blocks
