"""The ``tables`` adapter: a user's own logs as Parquet named after the contract's tables.

``PATH/events.parquet`` and ``PATH/items.parquet`` are required, ``users.parquet`` and
``judgments.parquet`` optional. Each may be one file or a directory of Parquet files, as Spark and
Dask write them (``events.parquet/part-00000.parquet``, or hive partitions such as
``events.parquet/day=2026-03-01/part-0.parquet``, whose partition columns become columns); a
directory ``PATH/events/`` is read the same way. PATH may be a local directory or any URI pyarrow's
filesystems understand (``s3://…``, ``gs://…``, ``hdfs://…``).

Each file of a directory is checked against the contract on its own, so an error names the file it
is in; files are read in path order, which is the order ties in time keep.

An interaction log without request lists (user, item, ts, event: any of rating, click, cart,
purchase, with an optional value; no ``request_id``, ``session_id`` optional) is read too
(``dataset.requests``, :mod:`~rankpipe.pipeline.datasets.interactions`): one request per session,
sessions from time gaps unless the log has its own.
"""

from __future__ import annotations

import hashlib
import os

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import check_rows, validate_table
from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.datasets.interactions import as_requests, check_requests_config, is_interaction_log
from rankpipe.pipeline.graphs import FUNNEL, names
from rankpipe.pipeline.logs import get_logger
from rankpipe.pipeline.schema import ConfigError

log = get_logger(__name__)

REQUIRED = (S.EVENTS, S.ITEMS)
OPTIONAL = (S.USERS, S.JUDGMENTS)


def _filesystem(path: str | None) -> tuple[pafs.FileSystem, str]:
    if not path:
        raise ConfigError("dataset 'tables' needs --path: a directory (or URI) holding events.parquet and items.parquet")
    try:
        return pafs.FileSystem.from_uri(path)
    except (ValueError, TypeError):
        return pafs.LocalFileSystem(), path


class TablesAdapter:
    """Reads ``events``/``items`` (+ optional ``users``/``judgments``) Parquet files from a directory or URI."""

    name = "tables"
    description = "your own logs: a directory or URI of events/items[/users/judgments].parquet"
    graph = FUNNEL
    stages = names(FUNNEL)

    def _infos(self, config: DatasetConfig) -> tuple[pafs.FileSystem, str, dict[str, list[pafs.FileInfo]]]:
        """The Parquet files of each table present: ``[file]`` or a directory's files in path order."""
        fs, root = _filesystem(config.path)
        root = root.rstrip("/")
        found: dict[str, list[pafs.FileInfo]] = {}
        for name in REQUIRED + OPTIONAL:
            for path in (f"{root}/{name}.parquet", f"{root}/{name}"):
                info = fs.get_file_info(path)
                if info.type == pafs.FileType.File:
                    found[name] = [info]
                elif info.type == pafs.FileType.Directory:
                    files = [f for f in fs.get_file_info(pafs.FileSelector(path, recursive=True)) if _is_data_file(f, path)]
                    _refuse_files_reached_twice(name, files, fs)
                    if not files:
                        raise S.ContractError(name, None, f"Parquet files in the directory {path}", "none (an empty directory)")
                    found[name] = sorted(files, key=lambda f: f.path)
                else:
                    continue
                break
        for name in REQUIRED:
            if name not in found:
                raise S.ContractError(name, None, f"a file or directory {root}/{name}.parquet", "no such file")
        return fs, root, found

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        """Path, size and modification time of each file: cheap, and changes whenever a file is rewritten, added or removed."""
        _, root, found = self._infos(config)
        parts = [root] + [f"{n}:{i.path}:{i.size}:{i.mtime_ns}" for n, files in sorted(found.items()) for i in files]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        """Read and validate every table present, file by file; an interaction log gets its requests from sessions."""
        check_requests_config(config)
        fs, root, found = self._infos(config)
        derived = () if config.requests == "logged" else (S.SESSION_ID,)
        tables = {name: read_table(name, files, fs, root, derived if name == S.EVENTS else (), config.ts_format) for name, files in found.items()}
        return Dataset(self.name, {**tables, S.EVENTS: _with_requests(tables[S.EVENTS], tables[S.ITEMS], config, seed)})

    def load_on(self, engine, config: DatasetConfig, seed: int) -> Dataset:
        """:meth:`load` with ``events`` read and validated on ``engine``'s workers, where it stays
        (a Dask DataFrame, a partition per file); the other tables are small and come here."""
        check_requests_config(config)
        fs, root, found = self._infos(config)
        tables = {name: read_table(name, files, fs, root, ts_format=config.ts_format) for name, files in found.items() if name != S.EVENTS}
        if config.requests != "logged":
            # Sessions need each user's events in time order, across files: an interaction log is
            # cut into requests here (the whole log once in this process), then sent to the workers.
            first = read_file(S.EVENTS, found[S.EVENTS][0].path, fs, root, derived=(S.SESSION_ID,), ts_format=config.ts_format)
            if config.requests == "sessions" or first[S.REQUEST_ID].isna().all():
                import dask.dataframe as dd

                events = read_table(S.EVENTS, found[S.EVENTS], fs, root, (S.SESSION_ID,), config.ts_format)
                events = _with_requests(events, tables[S.ITEMS], config, seed)
                tables[S.EVENTS] = engine.client.persist(dd.from_pandas(events, npartitions=max(1, min(engine.partitions, len(events)))))
                return Dataset(self.name, tables)
        tables[S.EVENTS] = read_table_on(engine, S.EVENTS, found[S.EVENTS], fs, root, config.ts_format)
        return Dataset(self.name, tables)


def _refuse_files_reached_twice(name: str, files: list[pafs.FileInfo], fs: pafs.FileSystem) -> None:
    """ContractError when a local directory reaches one file by two paths (a link inside it, a link
    back to itself): the file would be read, and its events counted, twice or forty times."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return  # object stores have no links
    first_path: dict[tuple[int, int], str] = {}
    for info in files:
        stat = os.stat(info.path)
        key = (stat.st_dev, stat.st_ino)
        if key in first_path:
            raise S.ContractError(name, None, "each file of the table's directory reached once (links inside it are not followed twice)",
                                  f"one file reached as {first_path[key]} and as {info.path}; remove the link")
        first_path[key] = info.path


def _is_data_file(info: pafs.FileInfo, directory: str) -> bool:
    """A Parquet part file: not a directory, not a marker or hidden file (``_SUCCESS``, ``.crc``, ``_metadata``)."""
    relative = info.path[len(directory):].lstrip("/")
    return info.type == pafs.FileType.File and not any(part.startswith(("_", ".")) for part in relative.split("/"))


def _with_requests(events: pd.DataFrame, items: pd.DataFrame, config: DatasetConfig, seed: int) -> pd.DataFrame:
    """``events`` as read when its requests are logged; an interaction log's with a request per
    session (and sampled impressions), said in the run's log. A logged log must name its sessions."""
    if is_interaction_log(events, config):
        events, said = as_requests(events, items, config, seed)
        log.info("  dataset   %s", said)
        return validate_table(S.EVENTS, events)
    missing = events[S.SESSION_ID].isna()
    if missing.any():
        raise S.ContractError(S.EVENTS, S.SESSION_ID, "a session id on every event of a log with request lists "
                              "(or no request_id at all: an interaction log, dataset.requests=sessions)",
                              f"{int(missing.sum())} events without one", events[missing])
    return events


def read_table(name: str, files: list[pafs.FileInfo], fs: pafs.FileSystem, root: str, derived: tuple[str, ...] = (),
               ts_format: str | None = None) -> pd.DataFrame:
    """One contract table from its Parquet files, each validated on its own (errors name the file);
    hive partition directories (``day=2026-03-01``) become string columns, as Spark and Dask read them.
    ``derived``: required columns a file may lack (or leave null) because the adapter derives them;
    ``ts_format``: ``dataset.ts_format``."""
    if len(files) == 1:
        return read_file(name, files[0].path, fs, root, derived=derived, ts_format=ts_format)
    # Repeated ids and the positions' base are judged on the whole table, not file by file.
    return check_rows(name, pd.concat([read_file(name, info.path, fs, root, derived=derived, whole=False, ts_format=ts_format) for info in files],
                                        ignore_index=True))


def read_file(name: str, path: str, fs: pafs.FileSystem, root: str, columns: list[str] | None = None,
              derived: tuple[str, ...] = (), whole: bool = True, ts_format: str | None = None) -> pd.DataFrame:
    """One Parquet file of table ``name``, validated against the contract (``derived``: see
    :func:`read_table`); errors name the file.

    ``columns``: the columns a partitioned table has (its first file's); a file with others is a
    ContractError, since the Dask engine reads a table's files as partitions of one schema.
    ``whole``: as in :func:`~rankpipe.pipeline.datasets.validate.validate_table` (False: one file of several).
    """
    where = path[len(root):].lstrip("/")
    label = name if "/" not in where else f"{name} ({where})"
    try:
        table = pq.read_table(path, filesystem=fs)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise S.ContractError(label, None, "a readable Parquet file", f"{type(exc).__name__}: {exc}") from None
    for part in where.split("/")[1:-1]:  # the directories between the table's own and the file
        key, sep, value = part.partition("=")
        if sep and key not in table.column_names:
            table = table.append_column(key, pa.array([value] * table.num_rows, type=pa.string()))
    try:
        frame = validate_table(name, table, derived, whole, ts_format)
    except S.ContractError as exc:
        raise S.ContractError(label, exc.column, exc.expected, exc.found, exc.rows) from None
    if columns is not None and list(frame.columns) != columns:
        raise S.ContractError(label, None, f"the columns of the table's first file, {columns}", f"{list(frame.columns)}")
    return frame


def read_table_on(engine, name: str, files: list[pafs.FileInfo], fs: pafs.FileSystem, root: str, ts_format: str | None = None):
    """One contract table as a Dask DataFrame on ``engine``'s workers, one partition per file (in
    path order), each read and validated on a worker with the errors :func:`read_table` gives.

    The first file is read here too, for the table's columns and types. The partitions are
    persisted: reading and validation happen now, so bad input fails before the run writes anything,
    and the table stays in the workers' memory (spilled to their disks past ``engine.memory_limit``).
    """
    import dask
    import dask.dataframe as dd
    from dask.distributed import futures_of, wait

    first = read_file(name, files[0].path, fs, root, ts_format=ts_format)
    columns = list(first.columns)
    parts = [dask.delayed(read_file, pure=True)(name, info.path, fs, root, columns, ts_format=ts_format) for info in files]
    frame = engine.client.persist(dd.from_delayed(parts, meta=first.iloc[:0], verify_meta=False))
    wait(frame)
    for future in futures_of(frame):
        if future.status == "error":
            future.result()  # raises the worker's ContractError, which names the file
    return frame
