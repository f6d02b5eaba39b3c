"""Execution engines: where a stage's heavy work runs (``engine.name``: ``local`` or ``dask``).

``local`` is one process (pandas, numpy, the compiled kernels on all cores). ``dask`` runs on a
Dask cluster: a running scheduler named by ``engine.scheduler``, or a ``LocalCluster`` started for
the run.

What runs on Dask so far:

- reading and validating a ``tables`` dataset's events, a partition per file
  (:meth:`~rankpipe.pipeline.datasets.tables.TablesAdapter.load_on`), and the prepare stage on them
  (:mod:`rankpipe.pipeline.stages.prepare_dask`), whose events and labels the runner writes from the
  workers as directories of Parquet files (:func:`write_partitioned`);
- the point-in-time count statistics of the ``features`` stage and of the rank stage's candidates
  (:func:`count_features_on_dask`). Events and requests are partitioned by the entity key of each
  family of count groups (item, user, query), so every event of a key lands in the partition of
  every request that reads it; each partition runs the compiled kernel through the same
  :func:`~rankpipe.features.stats.count_features` the local engine calls, and the pieces are put
  back in the requests' order. A key's statistics depend only on that key's events, in time order,
  so the result is the local engine's, bit for bit;
- the LightGBM rankers' final model (:func:`lightgbm_trainer`, ``lightgbm.dask``, lists whole within
  a partition). Its Dask interface has no early stopping, so the tree count is still chosen in this
  process on at most ``engine.sample_lists`` training lists. Distributed LightGBM bins each worker's
  data, so the model is close to, not identical with, the local one;
- the XGBoost rankers' training, early stopping included (:func:`xgboost_trainer`, ``xgboost.dask``,
  lists whole within a partition); distributed XGBoost merges the workers' quantile sketches, so the
  model is close to, not identical with, the local one;
- batch scoring (:func:`rankpipe.pipeline.scoring.score_on`).

The engine is in no stage's fingerprint, so a run started on one engine resumes on the other.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rankpipe.features.stats import COUNT_GROUPS, CountGroup, count_features, statistic_columns
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import EngineConfig
from rankpipe.pipeline.logs import get_logger
from rankpipe.pipeline.schema import ConfigError

ENGINES = ("local", "dask")
_ROW = "_rankpipe_row"  # a request's position in the whole request table, carried through a partition
log = get_logger(__name__)


def check_engine_config(engine: EngineConfig) -> None:
    """ConfigError naming the ``engine`` key that is wrong, before anything runs."""
    if engine.name not in ENGINES:
        raise ConfigError(f"engine.name must be one of {list(ENGINES)}. Got {engine.name!r} instead.")
    if engine.name == "local" and engine.scheduler:
        raise ConfigError(f"engine.scheduler ({engine.scheduler!r}) is only used with engine.name=dask; set --engine dask too.")
    for key in ("workers", "partitions", "sample_lists"):
        value = getattr(engine, key)
        if value is not None and value < 1:
            raise ConfigError(f"engine.{key} must be at least 1 (or unset for the default). Got {value} instead.")


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


def _partition_of(values: pd.Series, partitions: int) -> np.ndarray:
    """The key partition of each row: a hash of its key's text, the same for events and requests."""
    hashed = pd.util.hash_pandas_object(values.astype("str"), index=False).to_numpy()
    return (hashed % np.uint64(partitions)).astype(np.int64)


def _by_partition(frame: pd.DataFrame, key: str, partitions: int) -> list[np.ndarray]:
    """For each key partition, the positions of ``frame``'s rows in it, in their original order.
    Rows without a key are in none: no statistic counts them, and a request without one gets NaN
    (as :func:`count_features` gives it), so they need not travel."""
    part = _partition_of(frame[key], partitions)
    part[frame[key].isna().to_numpy()] = partitions  # past the last partition: left out
    order = np.argsort(part, kind="stable")  # stable: events stay in time order within a partition
    bounds = np.searchsorted(part[order], np.arange(partitions + 1))
    return [order[a:b] for a, b in itertools.pairwise(bounds)]


def _count_partition(history: pd.DataFrame, pairs: pd.DataFrame, rows: np.ndarray, windows_days, groups, half_lives_days,
                     position_ctr) -> pd.DataFrame:
    """One key partition on a worker: the kernel over its events (in time order) for its requests,
    whose positions in the whole request table are ``rows``."""
    counts = count_features(history.reset_index(drop=True), pairs.reset_index(drop=True), windows_days, groups, half_lives_days, position_ctr)
    return pd.DataFrame({_ROW: rows, **counts})


def count_features_on_dask(engine: Engine, history: pd.DataFrame, pairs: pd.DataFrame, windows_days: tuple[int, ...],
                           groups: tuple[CountGroup, ...] = COUNT_GROUPS, half_lives_days: tuple[int, ...] = (),
                           position_ctr: pd.DataFrame | None = None) -> dict[str, np.ndarray]:
    """:func:`~rankpipe.features.stats.count_features` computed on ``engine``'s cluster; the same
    columns, values and order (see the module docstring). ``history`` must be in time order.

    The log is in this process already (the stages' tables are pandas), so the shuffle by key is
    done here, in one pass: each key partition's events and requests are sent to the cluster as data
    and counted there, and results are filled in as partitions finish.
    """
    from dask.distributed import as_completed

    if not engine.distributed:
        return count_features(history, pairs, windows_days, groups, half_lives_days, position_ctr)
    if not history[S.TS].is_monotonic_increasing:
        raise ValueError("count_features_on_dask: the history must be in time order (see enrich_history)")
    n = engine.partitions
    out: dict[str, np.ndarray] = {}
    for key, family in _key_families(groups).items():
        columns = sorted({S.TS, *(k for g in family for k in g.keys)})
        # The event columns the kernel reads: ts and event always, position for COEC.
        event_columns = [c for c in dict.fromkeys([*columns, S.EVENT, S.POSITION]) if c in history.columns]
        events, requests = history[event_columns], pairs[columns]
        tasks = []
        for event_rows, request_rows in zip(_by_partition(events, key, n), _by_partition(requests, key, n)):
            if len(request_rows) == 0:
                continue
            sent = engine.client.scatter([events.iloc[event_rows], requests.iloc[request_rows], request_rows], hash=False)
            tasks.append(engine.client.submit(_count_partition, *sent, windows_days, family, half_lives_days, position_ctr, pure=False))
        names = [name for g in family for name in _names_of(g, windows_days, half_lives_days)]
        filled = {name: np.full(len(pairs), np.nan, dtype=np.float32) for name in names}
        seen = 0
        for task in as_completed(tasks):
            part = task.result()
            rows = part[_ROW].to_numpy()
            seen += len(rows)
            for name in names:
                filled[name][rows] = part[name].to_numpy()
            task.release()
        if seen != int(requests[key].notna().sum()):
            raise RuntimeError(f"count_features_on_dask: {seen} rows came back for {int(requests[key].notna().sum())} keyed requests (key {key})")
        out.update(filled)
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


PART_NAME = "part-{:05d}.parquet"  # zero-padded, so path order (how readers list a directory) is partition order


def write_partitioned(frame, path) -> None:
    """A Dask DataFrame as a directory of Parquet files, one per partition, written by the workers
    (``path`` must be one they can reach: a shared or object-store path, or local with a LocalCluster)."""
    frame.to_parquet(str(path), write_index=False, name_function=PART_NAME.format, write_metadata_file=False)


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
