"""The ``tables`` adapter: a user's own logs as Parquet files named after the contract's tables.

``PATH/events.parquet`` and ``PATH/items.parquet`` are required, ``users.parquet`` and
``judgments.parquet`` optional. PATH may be a local directory or any URI pyarrow's filesystems
understand (``s3://…``, ``gs://…``, ``hdfs://…``).
"""

from __future__ import annotations

import hashlib

import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.graphs import FUNNEL, names
from rankpipe.pipeline.schema import ConfigError

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

    def _infos(self, config: DatasetConfig) -> tuple[pafs.FileSystem, str, dict[str, pafs.FileInfo]]:
        fs, root = _filesystem(config.path)
        root = root.rstrip("/")
        names = REQUIRED + OPTIONAL
        infos = fs.get_file_info([f"{root}/{n}.parquet" for n in names])
        found = {n: info for n, info in zip(names, infos) if info.type == pafs.FileType.File}
        for name in REQUIRED:
            if name not in found:
                raise S.ContractError(name, None, f"a file {root}/{name}.parquet", "no such file")
        return fs, root, found

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        """Path, size and modification time of each file: cheap, and changes whenever a file is rewritten."""
        _, root, found = self._infos(config)
        parts = [root] + [f"{n}:{i.size}:{i.mtime_ns}" for n, i in sorted(found.items())]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        """Read and validate every table present."""
        fs, root, found = self._infos(config)
        tables = {}
        for name in found:
            try:
                table = pq.read_table(f"{root}/{name}.parquet", filesystem=fs)
            except Exception as exc:  # pyarrow raises several types for corrupt files
                raise S.ContractError(name, None, "a readable Parquet file", f"{type(exc).__name__}: {exc}") from None
            tables[name] = S.validate_table(name, table)
        return Dataset(self.name, tables)
