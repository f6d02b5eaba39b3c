"""Batch scoring: the champion funnel (or any registered or saved one) applied to new requests.

``rankpipe score`` and the Python API come here: find the funnel (a registry URI, a saved funnel
directory, or the dataset's one champion (``rankpipe-<dataset>-<source>@champion``) in the work directory's MLflow), build or read the
requests, score them, and write the lists as Parquet without ever leaving a half-written file or
partition behind.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import uuid
from pathlib import Path

import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.files import read_text
from rankpipe.pipeline.rundir import check_writable
from rankpipe.pipeline.schema import ConfigError
from rankpipe.ranking.funnel import LIST_COLUMNS, Funnel, empty_list_frame, validate_requests

FEED_SPEC = re.compile(r"^active:(\d+)d$")
SEARCH_SPEC = re.compile(r"^top:(\d+)$")
ANONYMOUS = "anonymous"  # the user of a head-query request: nobody in particular (the unknown-user fallbacks serve it)


def champion_uri(client, dataset: str) -> str:
    """``models:/<name>@champion`` of the one registered funnel of ``dataset`` that has a champion
    (``rankpipe-<dataset>-<source>``); a ConfigError when there is none, or several (one per data
    source: a smoke run's small world beside the full one), naming them."""
    names = sorted(m.name for m in client.search_registered_models(filter_string=f"name LIKE 'rankpipe-{dataset}-%'")
                   if "champion" in (m.aliases or {}))
    if not names:
        raise ConfigError(f"no registered funnel of dataset {dataset!r} has a champion in this work directory: run `rankpipe run` first, "
                          "or pass --model-uri")
    if len(names) > 1:
        raise ConfigError(f"several registered funnels of dataset {dataset!r} have a champion ({', '.join(names)}: one per data source); "
                          f"pass --model-uri models:/<name>@champion")
    return f"models:/{names[0]}@champion"


def funnel_directory(model_uri: str | None, workdir: str | Path, dataset: str = "synthetic") -> Path:
    """The local directory holding the funnel ``model_uri`` names: ``models:/…`` or ``runs:/…`` (read
    from the work directory's MLflow store unless ``MLFLOW_TRACKING_URI`` is set; a registered one is
    downloaded from the registry first), or a directory a funnel was saved in (a run's
    ``promote/funnel``); by default the dataset's champion (:func:`champion_uri`)."""
    uri = model_uri or "champion"
    if model_uri and "://" not in uri and not uri.startswith("models:/"):
        path = Path(uri)
        if not (path / "funnel.json").exists():
            raise ConfigError(f"--model-uri {uri}: not a registered model URI nor a directory holding funnel.json")
        return path
    import mlflow
    from mlflow.exceptions import MlflowException

    uri_of_store = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(workdir).resolve() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri_of_store)
    mlflow.set_registry_uri(uri_of_store)  # models:/ URIs resolve in the registry, which keeps its own URI once set
    if model_uri is None:
        uri = champion_uri(mlflow.MlflowClient(), dataset)
    try:
        local = Path(mlflow.artifacts.download_artifacts(uri))
    except MlflowException as error:
        raise ConfigError(f"model {uri}: not found in the registry ({str(error).splitlines()[0]}); run `rankpipe run` first, "
                          "or pass --model-uri") from None
    data = local / mlflow.models.Model.load(str(local)).flavors["python_function"]["data"]
    if not (data / "funnel.json").exists():
        raise ConfigError(f"model {uri} is a registered ranker, not a funnel: it was registered before funnels were (re-run `rankpipe run`)")
    return data


_WORKER_FUNNELS: dict[tuple[str, str | None], Funnel] = {}  # in each Dask worker process: the funnels it has loaded


def _worker_funnel(directory: str, cutoff: str | None) -> Funnel:
    """The funnel a worker loads once and keeps (per directory and cutoff)."""
    key = (directory, cutoff)
    if key not in _WORKER_FUNNELS:
        funnel = Funnel.load(directory)
        _WORKER_FUNNELS[key] = funnel.until(pd.Timestamp(cutoff)) if cutoff else funnel
    return _WORKER_FUNNELS[key]


def _score_partition(directory: str, cutoff: str | None, requests: pd.DataFrame, allow_past: bool, k: int | None) -> pd.DataFrame:
    """One partition of requests scored on a worker."""
    return _worker_funnel(directory, cutoff).score(requests, allow_past=allow_past, k=k)


def _score_partition_to(directory: str, cutoff: str | None, requests: pd.DataFrame, allow_past: bool, k: int | None,
                        path: str) -> tuple[int, int]:
    """One partition of requests scored on a worker and written there to ``path`` (in SCORE_CHUNK
    pieces, so a worker's memory holds one); returns (rows, requests that got a list)."""
    funnel, rows, served = _worker_funnel(directory, cutoff), 0, 0
    with _ParquetStream(Path(path)) as stream:
        for a, b in chunk_bounds(len(requests), SCORE_CHUNK) or [(0, 0)]:
            lists = funnel.score(requests.iloc[a:b], allow_past=allow_past, k=k)
            stream.write(lists)
            rows, served = rows + len(lists), served + lists[S.REQUEST_ID].nunique()
    return rows, served


def _check_k(k: int | None) -> None:
    if k is not None and k < 1:
        raise ConfigError(f"--k must be at least 1. Got {k} instead.")


def _map_partitions(engine, function, directory, requests: pd.DataFrame, allow_past: bool, k: int | None, cutoff, *extra):
    """Futures of ``function(directory, cutoff, part, allow_past, k, *extra_i)`` over even partitions of ``requests`` on the cluster."""
    from rankpipe.pipeline.engine import even_parts

    n = max(1, min(engine.partitions, len(requests)))
    chunks = engine.client.scatter([requests.iloc[a:b] for a, b in even_parts(len(requests), n)], hash=False)  # data, not graph
    stamp = None if cutoff is None else pd.Timestamp(cutoff).isoformat()
    extra = [[values[i] for i in range(n)] for values in extra]
    return engine.client.map(function, [str(Path(directory).resolve())] * n, [stamp] * n, chunks, [allow_past] * n, [k] * n, *extra, pure=False)


def score_to(engine, funnel: Funnel, directory: str | Path, requests: pd.DataFrame, out: str | Path, partition: str | None = None,
             allow_past: bool = False, k: int | None = None, cutoff: pd.Timestamp | None = None) -> tuple[Path, int, int]:
    """``funnel.score(requests)`` on ``engine``, written as Parquet a chunk at a time, so memory holds
    one chunk's candidates and lists however many requests there are (a million users' feed
    included): to ``out`` (one file, a row group per chunk), or with ``partition`` (e.g.
    ``date=2026-12-01``) to ``out/<partition>/part-<i>.parquet``, replacing that partition whole.
    Nothing half-written is ever visible: the file or partition appears whole, or not at all, and a
    retried task replaces its own output.

    On a Dask cluster the requests are scored as a map over their partitions, each worker loading the
    funnel from ``directory`` (which its workers must be able to read) once and keeping it; with
    ``partition`` each worker also writes its own part files there (``out`` must be a path the
    workers share). Requests are scored independently, so the lists are the same on either engine.
    ``funnel`` is the same funnel (``until(cutoff)`` applied), used here to check the requests before
    any work is sent.

    Returns:
        (the file or partition directory written, rows written, requests that got a list).
    """
    requests = validate_requests(requests, funnel.cutoff, allow_past)  # bad requests: the clear error, before any work
    _check_k(k)
    with _ListsOutput(Path(out), partition) as output:
        if engine.distributed and partition is not None:
            n = max(1, min(engine.partitions, len(requests)))
            paths = [str(output.part(i)) for i in range(n)]
            for rows, served in engine.client.gather(_map_partitions(engine, _score_partition_to, directory, requests, allow_past, k, cutoff, paths)):
                output.rows, output.served = output.rows + rows, output.served + served
        elif engine.distributed:  # one file: the workers' lists come here, and are written as one
            futures = _map_partitions(engine, _score_partition, directory, requests, allow_past, k, cutoff)
            output.write(pd.concat(engine.client.gather(futures), ignore_index=True))
        else:
            for a, b in chunk_bounds(len(requests), SCORE_CHUNK) or [(0, 0)]:
                output.write(funnel.score(requests.iloc[a:b], allow_past=True, k=k))
    return output.path, output.rows, output.served


SCORE_CHUNK = 5_000  # requests scored and written at once by score_to in this process


def chunk_bounds(n: int, size: int) -> list[tuple[int, int]]:
    """[start, end) bounds of consecutive chunks of at most ``size`` of ``n`` rows."""
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def feed_requests(funnel: Funnel, spec: str, at: pd.Timestamp | None = None) -> pd.DataFrame:
    """One feed request (no query) per user with any event in the last N days of the funnel's log
    (``spec`` ``active:<N>d``), timed at ``at`` (default: the funnel's cutoff)."""
    match = FEED_SPEC.match(spec)
    if not match:
        raise ConfigError(f"--users expects active:<N>d, e.g. active:7d. Got {spec!r} instead.")
    at = funnel.cutoff if at is None else pd.Timestamp(at)
    history = funnel.builder.history_
    recent = history.loc[history[S.TS] > funnel.cutoff - pd.Timedelta(days=int(match.group(1))), S.USER_ID]
    users = pd.Series(recent.astype("str").unique()).sort_values(ignore_index=True)
    return pd.DataFrame({S.REQUEST_ID: "feed:" + users, S.USER_ID: users, S.TS: at, S.QUERY: pd.Series(None, index=users.index, dtype="str")})


def search_requests(funnel: Funnel, spec: str, at: pd.Timestamp | None = None) -> pd.DataFrame:
    """One search request for each of the N most frequent queries of the funnel's log (``spec``
    ``top:<N>``), by an anonymous user, timed at ``at`` (default: the funnel's cutoff)."""
    match = SEARCH_SPEC.match(spec)
    if not match:
        raise ConfigError(f"--queries expects top:<N>, e.g. top:10000. Got {spec!r} instead.")
    at = funnel.cutoff if at is None else pd.Timestamp(at)
    history = funnel.builder.history_
    queries = history.loc[history[S.QUERY].notna() & (history[S.EVENT] == "impression"), S.QUERY].astype("str").str.strip()
    top = queries[queries != ""].value_counts().head(int(match.group(1)))
    n = len(top)
    return pd.DataFrame({S.REQUEST_ID: [f"search:{i:06d}" for i in range(1, n + 1)], S.USER_ID: [ANONYMOUS] * n, S.TS: [at] * n,
                         S.QUERY: top.index.to_numpy()})


def read_requests(path: str | Path) -> pd.DataFrame:
    """Requests from a Parquet or CSV file (request_id, user_id, ts[, query]). A CSV is read as text,
    so ids stay ids (``001`` is not ``1``) and times are parsed by the one timestamp rule; an empty
    field is a null."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--requests {path}: no such file")
    if path.suffix.lower() != ".csv":
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise S.ContractError(path.name, None, "a readable Parquet file (or a .csv)", f"{type(exc).__name__}: {exc}") from None
    text = read_text(path)
    try:
        return pd.read_csv(io.StringIO(text), dtype="str", keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise S.ContractError(path.name, None, "a CSV file with a header: request_id,user_id,ts[,query]", str(exc).strip()) from None


def check_partition(partition: str | None) -> None:
    """ConfigError unless ``partition`` is None or one directory name (``date=2026-12-01``): it must not leave ``--out``."""
    if partition is not None and ("/" in partition or "\\" in partition or partition.startswith(".") or not partition.strip()):
        raise ConfigError(f"--partition must be one directory name like date=2026-12-01. Got {partition!r} instead.")


def check_output(out: str | Path, partition: str | None = None) -> None:
    """ConfigError, before any scoring, when ``--out`` cannot take the lists: a file target that is an
    existing directory, a dataset directory (``partition``) that is a file, or a place this user
    cannot write (the nearest existing folder above it is read-only, or is a file)."""
    check_partition(partition)
    out = Path(out)
    if partition is None and out.is_dir():
        raise ConfigError(f"--out {out} is a directory; name the Parquet file to write (or add --partition to write a dataset there)")
    if partition is not None and out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; with --partition it must be the dataset's directory")
    check_writable(out if partition is not None else out.parent, f"--out {out}")


def _list_schema():
    import pyarrow as pa

    return pa.Schema.from_pandas(empty_list_frame(), preserve_index=False)


class _ParquetStream:
    """One Parquet file written a frame at a time (a row group each, the scored lists' schema), under
    a temporary name until it closes whole; a failure leaves nothing."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path, self.partial = path, path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        self.schema = _list_schema()
        self.writer = pq.ParquetWriter(str(self.partial), self.schema)

    def write(self, lists: pd.DataFrame) -> None:
        import pyarrow as pa

        self.writer.write_table(pa.Table.from_pandas(lists[list(LIST_COLUMNS)], schema=self.schema, preserve_index=False))

    def __enter__(self) -> "_ParquetStream":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            self.writer.close()
            if kind is None:
                os.replace(self.partial, self.path)
        finally:
            self.partial.unlink(missing_ok=True)


class _ListsOutput:
    """Where :func:`score_to` writes: one streamed file, or a partition's part files staged beside it
    and swapped in whole (renames are atomic), the previous attempt's partition set aside first."""

    def __init__(self, out: Path, partition: str | None):
        self.out, self.partition, self.rows, self.served, self.written = out, partition, 0, 0, 0
        if partition is None:
            out.parent.mkdir(parents=True, exist_ok=True)
            self.path, self.stream = out, _ParquetStream(out)
        else:
            check_partition(partition)
            self.path, self.staging, self.stream = out / partition, out / f".{partition}.tmp-{uuid.uuid4().hex[:8]}", None
            self.staging.mkdir(parents=True)

    def part(self, i: int) -> Path:
        """The ``i``-th part file of the staged partition."""
        return self.staging / f"part-{i:05d}.parquet"

    def write(self, lists: pd.DataFrame) -> None:
        """One chunk's lists: a row group of the file, or the partition's next part file."""
        if self.stream is not None:
            self.stream.write(lists)
        else:
            with _ParquetStream(self.part(self.written)) as stream:
                stream.write(lists)
        self.written += 1
        self.rows, self.served = self.rows + len(lists), self.served + lists[S.REQUEST_ID].nunique()

    def __enter__(self) -> "_ListsOutput":
        return self

    def __exit__(self, kind, error, trace) -> None:
        if self.stream is not None:
            self.stream.__exit__(kind, error, trace)
            return
        try:
            if kind is None:
                old = self.out / f".{self.partition}.old-{uuid.uuid4().hex[:8]}"
                if self.path.exists():
                    self.path.rename(old)  # the previous attempt's partition steps aside
                self.staging.rename(self.path)
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)


def score_feed_partition(workdir: str | Path, dataset: str, users: str, partition: str, model_uri: str | None = None) -> dict:
    """The DAG's ``score`` task: the champion funnel's feed lists for every active user (``users``,
    e.g. ``active:7d``), written to ``<workdir>/lists/feed/<partition>/part-0.parquet`` (replacing the
    partition whole, so a retry is idempotent). Returns what it did, for the task's XCom."""
    from rankpipe.pipeline.engine import LOCAL

    directory = funnel_directory(model_uri, workdir, dataset)
    funnel = Funnel.load(directory)
    requests = feed_requests(funnel, users)
    path, rows, _ = score_to(LOCAL, funnel, directory, requests, Path(workdir) / "lists" / "feed", partition)
    return {"requests": len(requests), "rows": rows, "path": str(path)}
