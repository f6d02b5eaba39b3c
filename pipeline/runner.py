"""The runner: stage graph, fingerprints, atomic stage outputs, skip/resume, tracking.

A run lives in ``<workdir>/runs/<run_id>/``: ``config.yaml``, one directory per stage holding its
tables as Parquet, its models in native formats and ``_SUCCESS.json`` (fingerprint, metrics,
timing), and ``metrics.json`` (all ``stage.metric`` values). A stage's fingerprint hashes the code,
its config sections and its upstream fingerprints (the dataset's for ``prepare``); a stage whose
``_SUCCESS.json`` carries the same fingerprint is skipped, so a crashed run resumes at the stage that
failed. A stage writes into a temporary directory renamed into place only when complete.

Writing a stage's outputs overlaps the next stage's computation (one writer thread; pyarrow
releases the GIL while encoding), and MLflow is imported in the background while the dataset is
generated and validated; a stage that needs files on disk waits for them, and a run never ends
(or fails) with a write still pending.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import shutil
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rankpipe.pipeline import beside as B
from rankpipe.pipeline import schema as S
from rankpipe.pipeline import stages as stage_functions
from rankpipe.pipeline.config import Config, ConfigError, config_hash, flatten, save_config
from rankpipe.pipeline.datasets import get_adapter
from rankpipe.pipeline.engine import LOCAL, check_engine_config, open_engine
from rankpipe.pipeline.graphs import FUNNEL_STAGES, names
from rankpipe.pipeline.locks import FileLock, LockSet
from rankpipe.pipeline.logs import get_logger
from rankpipe.pipeline.progress import RunProgress
from rankpipe.pipeline.rundir import RUN_ID, absolute_workdir, check_run_id, check_writable, code_version  # noqa: F401 (callers import them from here)

log = get_logger(__name__)

STAGE_NAMES = FUNNEL_STAGES  # the full funnel, for callers that run the default graph


def _section(config: Config, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


@dataclass
class RunSummary:
    """What a run did and where it left things."""

    run_id: str
    run_dir: Path
    metrics: dict[str, Any]
    executed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    mlflow_run_id: str | None = None
    tracking_uri: str | None = None

    @property
    def report(self) -> Path | None:
        """The evaluation report of the run, when the evaluate stage wrote one."""
        path = self.run_dir / "evaluate" / "report.md"
        return path if path.exists() else None

    @property
    def html_report(self) -> Path | None:
        """The run's self-contained HTML report, when the report stage wrote one."""
        path = self.run_dir / "report" / "report.html"
        return path if path.exists() else None


class Runner:
    """Runs the stage graph for one config into ``<workdir>/runs/<run_id>``."""

    def __init__(self, config: Config, workdir: str | Path = "rankpipe-work", run_id: str | None = None,
                 progress: bool = True, track: bool = True):
        self.config = config
        check_writable(workdir, f"the work directory {workdir}")  # before anything is read or written
        self.workdir = Path(workdir)
        self.run_id = check_run_id(run_id) if run_id is not None else datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.run_dir = self.workdir / "runs" / self.run_id
        self.progress, self.track = progress, track
        self._cache: dict[tuple[str, str], pd.DataFrame] = {}
        self._pending: dict[str, Future] = {}
        self._stage_runs: dict[str, str] = {}  # stage -> its nested MLflow run id (this invocation's)
        self._dataset = None
        self._prepared = None  # (the prepare stage's result, its seconds) when run() computed it before writing anything
        self._engine = LOCAL
        self.current_stage: str | None = None  # the stage running now (what an interrupt names)
        self._progress = None
        self.adapter = get_adapter(config.dataset.name)
        self.graph = self.adapter.graph

    # ------------------------------------------------------------------------------ planning
    def fingerprints(self) -> dict[str, str]:
        """Fingerprint of every stage's output under the current code, config and data."""
        code = code_version()
        out: dict[str, str] = {}
        for spec in self.graph:
            parts = {"stage": spec.name, "code": code, "config": {k: config_hash(_section(self.config, k)) for k in spec.config_keys},
                     "upstream": {n: out[n] for n in spec.needs}}
            if spec.name == "prepare":
                parts["dataset"] = [self.config.dataset.name, self.adapter.fingerprint(self.config.dataset, self.config.seed)]
            out[spec.name] = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]
        return out

    def _with_upstream(self, stage: str) -> tuple[str, ...]:
        """``stage`` and every stage it needs, directly or not, in graph order."""
        needs = {spec.name: spec.needs for spec in self.graph}
        wanted, todo = set(), [stage]
        while todo:
            name = todo.pop()
            if name not in wanted:
                wanted.add(name)
                todo.extend(needs[name])
        return tuple(s for s in names(self.graph) if s in wanted)

    def _done(self, stage: str) -> dict[str, Any] | None:
        marker = self.run_dir / stage / "_SUCCESS.json"
        return json.loads(marker.read_text()) if marker.exists() else None

    def _current(self, stage: str, fingerprint: str) -> bool:
        """Whether ``stage`` is complete on disk with ``fingerprint`` (up to date)."""
        return (self._done(stage) or {}).get("fingerprint") == fingerprint

    # ------------------------------------------------------------------------------ IO
    def load_table(self, stage: str, name: str) -> pd.DataFrame:
        """An upstream table, from memory if produced in this process, else from its Parquet file."""
        key = (stage, name)
        if key not in self._cache:
            self._cache[key] = pq.read_table(self._table_path(stage, name)).to_pandas()  # a file, or a directory of them (a table written on Dask)
        return self._cache[key]

    def load_frame(self, stage: str, name: str):
        """An upstream table as the open engine works on it: on Dask, read by the workers from its
        files (a partitioned directory, partitions in order), unless this process holds it already;
        on the local engine, :meth:`load_table`."""
        if not self._engine.distributed or (stage, name) in self._cache:
            return self.load_table(stage, name)
        return self._engine.read_frame(self._table_path(stage, name))

    def _table_path(self, stage: str, name: str) -> Path:
        """Where ``stage`` wrote table ``name``, once its writes are done; KeyError when it wrote none."""
        self._wait(stage)
        path = self.run_dir / stage / f"{name}.parquet"
        if not path.exists():
            raise KeyError(f"{stage}.{name}")
        return path

    def model_dir(self, stage: str, name: str) -> Path:
        """Where ``stage`` saved model ``name`` (waits until that stage's outputs are on disk)."""
        self._wait(stage)
        return self.run_dir / stage / name

    def _wait(self, stage: str | None = None) -> None:
        """Block until the pending writes of ``stage`` (or of every stage) are done; re-raise their errors."""
        for name in [stage] if stage else list(self._pending):
            future = self._pending.pop(name, None)
            if future is not None:
                future.result()

    def _write_dask_tables(self, stage: str, result: stage_functions.StageResult) -> Path | None:
        """Write the stage's Dask tables now, from the workers, as directories of Parquet files in a
        new temporary stage directory (returned; None when there are none). They are written before
        the stage returns, since the cluster's data is the only copy; the rest follows in the writer."""
        partitioned = {name: table for name, table in result.tables.items() if not isinstance(table, pd.DataFrame)}
        if not partitioned:
            return None
        tmp = (self.run_dir / f".{stage}.tmp-{uuid.uuid4().hex[:8]}").absolute()
        tmp.mkdir(parents=True)
        try:
            for name, table in partitioned.items():
                S.write_frame(table, tmp / f"{name}.parquet")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return tmp

    def _write_stage(self, stage: str, result: stage_functions.StageResult, fingerprint: str, seconds: float, tmp: Path | None = None) -> None:
        final = self.run_dir / stage
        if tmp is None:
            tmp = self.run_dir / f".{stage}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir(parents=True)
        try:
            for name, table in result.tables.items():
                if isinstance(table, pd.DataFrame):  # the others are written already (_write_dask_tables)
                    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), tmp / f"{name}.parquet")
            for name, model in result.models.items():
                (tmp / name).mkdir()
                model.save(tmp / name)
            for name, content in result.files.items():
                (tmp / name).write_bytes(content)
            marker = {"stage": stage, "fingerprint": fingerprint, "seconds": round(seconds, 3),
                      "metrics": {k: (v if isinstance(v, (bool, str)) else float(v)) for k, v in result.metrics.items()},
                      "tables": sorted(result.tables), "models": sorted(result.models), "files": sorted(result.files),
                      "registered": sorted(r.model[1] for r in result.registrations if r.model[0] == stage),
                      "mlflow_run_id": self._stage_runs.get(stage)}
            (tmp / "_SUCCESS.json").write_text(json.dumps(marker, indent=2))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)  # atomic on one filesystem: a stage directory is either complete or absent
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def _say(self, text: str) -> None:
        if self.progress:
            log.info(text)

    # ------------------------------------------------------------------------------ running
    def run(self, until: str | None = None) -> RunSummary:
        """Run (or skip) ``until`` and the stages it needs (default: every stage). Returns the summary.

        Raises:
            ContractError / ConfigError: bad input; raised before anything is written.
        """
        stage_functions.check_config(self.config)
        check_engine_config(self.config.engine)
        stage_names = names(self.graph)
        if until is not None and until not in stage_names:
            raise ConfigError(f"dataset '{self.config.dataset.name}' runs the stages {list(stage_names)}; there is no stage {until!r}")
        wanted = self._with_upstream(until) if until else stage_names
        fingerprints = self.fingerprints()
        todo = [s for s in wanted if not self._current(s, fingerprints[s])]
        summary = RunSummary(self.run_id, self.run_dir, {})
        if not todo:
            summary.skipped = list(wanted)
            for stage in wanted:
                self._say(f"  {stage:<9} skipped (up to date)")
            summary.metrics = self._collect_metrics(self._reported(wanted, fingerprints))
            summary.mlflow_run_id = self._read_mlflow_id()
            return summary

        importer = None
        if self.track:
            # Importing MLflow takes seconds; do it while the data loads. The store itself is only
            # opened after validation, so bad input still leaves nothing behind.
            importer = threading.Thread(target=importlib.import_module, args=("rankpipe.pipeline.tracking",), daemon=True)
            importer.start()
        engine_scope = contextlib.ExitStack()
        try:
            self._engine = engine_scope.enter_context(open_engine(self.config.engine))
            if "prepare" in todo:
                # Load and validate before creating anything: bad input leaves no trace.
                started = time.perf_counter()
                load_on = getattr(self.adapter, "load_on", None)
                if self._engine.distributed and load_on is not None:  # the log is read and checked on the workers, and stays there
                    self._dataset = load_on(self._engine, self.config.dataset, self.config.seed)
                else:
                    self._dataset = self.adapter.load(self.config.dataset, self.config.seed)
                self._say(f"  dataset   {self.config.dataset.name} loaded and validated in {time.perf_counter() - started:.1f}s")
                # The prepare stage computes here, before the run directory or the MLflow run exist:
                # its split and id checks judge the input, and bad input must leave nothing behind.
                spec = next(s for s in self.graph if s.name == "prepare")
                started = time.perf_counter()
                inputs = stage_functions.StageInputs(self.load_table, self.model_dir, self._dataset, engine=self._engine, load_frame=self.load_frame)
                self._prepared = (getattr(stage_functions, spec.function)(inputs, self.config), time.perf_counter() - started)
                self._dataset = None  # only prepare reads it; on Dask it holds the workers' copy of the log
            if importer is not None:
                importer.join()
            return self._run_stages(wanted, todo, fingerprints, summary)
        finally:
            engine_scope.close()
            self._engine, self._dataset, self._prepared = LOCAL, None, None  # the cluster is gone; nothing may reach for its client after the run

    def _run_stages(self, wanted: tuple[str, ...], todo: list[str], fingerprints: dict[str, str], summary: RunSummary) -> RunSummary:
        """Run the stages of ``todo`` in ``wanted``'s order on the open engine, tracked when enabled."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        save_config(self.config, self.run_dir / "config.yaml")
        tracker = None
        if self.track:
            from rankpipe.pipeline.tracking import Tracker

            with FileLock(self.workdir / ".locks" / "mlflow-store.lock"):  # two first runs at once would both create its tables
                tracker = Tracker(self.workdir)
            summary.tracking_uri = tracker.tracking_uri
            with FileLock(self.run_dir / ".mlflow.lock"):  # one parent run per run id, whoever opens it first
                summary.mlflow_run_id = tracker.start(f"{self.config.dataset.name}:{self.run_id}", self._read_mlflow_id(), flatten(self.config))
                (self.run_dir / "mlflow.json").write_text(json.dumps({"run_id": summary.mlflow_run_id, "tracking_uri": tracker.tracking_uri}))
        ok = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rankpipe-writer")
        from rankpipe.pipeline.promotion import source_fingerprint

        self._progress = RunProgress(self.workdir, f"{self.config.dataset.name}-{source_fingerprint(self.config)}",
                                     [s for s in wanted if s in todo], len(wanted), self.progress)
        beside: dict[str, B.BesideStage] = {}  # stages computing in a second process (pipeline/beside.py)
        try:
            for index, stage in enumerate(wanted, 1):
                if stage not in todo:
                    summary.skipped.append(stage)
                    self._say(f"  {stage:<9} skipped (up to date)")
                    continue
                spec = next(s for s in self.graph if s.name == stage)
                self._start_beside(stage, todo, fingerprints, beside)
                self.current_stage = stage
                self._progress.start(stage, index)
                computed_beside = stage in beside and self._finish_beside(beside[stage], fingerprints[stage])
                beside.pop(stage, None)  # only now: a run stopped while it waits still ends the process (finally, below)
                if computed_beside or self._execute(spec, fingerprints[stage], tracker):
                    summary.executed.append(stage)
                else:
                    summary.skipped.append(stage)
            self.current_stage = None
            self._progress.close()
            self._wait()
            if tracker is not None:
                for stage in wanted:  # a crashed invocation's completed stages too: their outputs were never logged
                    with FileLock(self.run_dir / f".{stage}.lock"):
                        tracker.log_stage_outputs(self.run_dir / stage, self._done(stage))
            summary.metrics = self._collect_metrics(self._reported(wanted, fingerprints))
            # Tasks of one scheduled run may finish together (the DAG's branches): each replaces the
            # file whole, so a reader never sees half of one and half of another.
            partial = self.run_dir / f".metrics.json.tmp-{uuid.uuid4().hex[:8]}"
            partial.write_text(json.dumps(summary.metrics, indent=2, sort_keys=True))
            partial.replace(self.run_dir / "metrics.json")
            if tracker is not None:
                tracker.log_metrics(summary.metrics)
                tracker.log_artifact(self.run_dir / "metrics.json")
                tracker.log_artifact(self.run_dir / "config.yaml")
            ok = True
        finally:
            for side in beside.values():  # the run failed or was interrupted before their turn: they must not outlive it
                side.stop()
            try:
                self._progress.close()
                self._wait()  # a failed stage still leaves the stages before it complete on disk
            finally:
                self._writer.shutdown(wait=True)
                if tracker is not None:
                    tracker.end(ok)
        return summary

    def _start_beside(self, trigger: str, todo: list[str], fingerprints: dict[str, str], beside: dict) -> None:
        """Start in a second process each stage to run that the graph puts beside ``trigger``, once its inputs are on disk."""
        if not self.config.engine.beside or self._engine.distributed:
            return
        elapsed = time.perf_counter() - self._progress.started
        for spec in self.graph:
            if (spec.beside == trigger and spec.name in todo and spec.name not in beside
                    and B.worth_a_process(self._progress.expected.get(spec.name), elapsed)):
                for need in spec.needs:
                    self._wait(need)
                if all(self._current(n, fingerprints[n]) for n in spec.needs):
                    beside[spec.name] = B.start(self.workdir, self.run_dir, self.run_id, spec.name, fingerprints[spec.name], self.track)
                    self._progress.beside(spec.name)
                    self._say(f"  {spec.name:<9} started beside {trigger}, in a second process")

    def _finish_beside(self, side: B.BesideStage, fingerprint: str) -> bool:
        """Wait for a stage's second process; True when it completed the stage, else (said) False: this process computes it."""
        self._progress.step("waiting for its second process")
        status, marker = side.wait(), self._done(side.stage) or {}
        if status == 0 and marker.get("fingerprint") == fingerprint:
            self._progress.done(side.stage, marker["seconds"], "in a second process")
            return True
        log.warning(f"  {side.stage:<9} did not complete in its second process (exit status {status}; its output: {side.log_path}); "
                    "computing it here")
        return False

    def _execute(self, spec, fingerprint: str, tracker) -> bool:
        """Compute ``spec``'s stage and hand its outputs to the writer, holding the stage's lock until
        they are on disk (:mod:`~rankpipe.pipeline.locks`). False when another process running this
        run id completed the stage while this one waited for the lock: nothing to do."""
        stage = spec.name
        if stage == "promote" and tracker is None:
            raise RuntimeError("the promote stage needs MLflow tracking; run with tracking enabled or stop at 'evaluate'")
        lock = FileLock(self.run_dir / f".{stage}.lock")
        lock.acquire(on_wait=lambda holder: self._say(f"  {stage:<9} waiting: another process ({holder}) runs it for run id {self.run_id}"))
        # From a stage's first look at a champion to its alias move, that registered model is locked.
        registry_locks = LockSet(self.workdir / ".locks", "registry-", lambda name, holder: self._say(f"  waiting for the registry of {name}: {holder}"))
        try:
            if self._current(stage, fingerprint):
                self._say(f"  {stage:<9} skipped (completed by the other process)")
                self._prepared = None
                lock.release()
                return False
            for leftover in self.run_dir.glob(f".{stage}.tmp-*"):  # a killed writer's; no one else writes this stage now
                shutil.rmtree(leftover, ignore_errors=True)
            if tracker is not None:
                tracker.fail_stale_stages(self._read_mlflow_id(), stage)  # a killed run's nested run of this stage, left RUNNING
            self._execute_locked(spec, fingerprint, tracker, registry_locks)
            self._pending[stage].add_done_callback(lambda _: lock.release())  # held until the stage is on disk
            return True
        except BaseException:
            lock.release()
            raise
        finally:
            registry_locks.release()

    def _execute_locked(self, spec, fingerprint: str, tracker, registry_locks: LockSet) -> None:
        """:meth:`_execute`'s work once the stage's lock is held: the stage in its nested MLflow run, its
        registrations (each under its model's registry lock), its outputs handed to the writer."""
        stage = spec.name
        fn = getattr(stage_functions, spec.function)
        load_champion = None
        if tracker is not None:
            def load_champion(name: str):
                registry_locks.take(name)
                return tracker.load_champion(name)
        inputs = stage_functions.StageInputs(self.load_table, self.model_dir, self._dataset, load_champion, self._engine, self.load_frame,
                                             tracker.history if tracker is not None else None, self._progress.step)
        started = time.perf_counter()
        context = tracker.stage(stage, self._stage_params(spec)) if tracker is not None else contextlib.nullcontext()
        with context as stage_run:
            if stage_run is not None:
                self._stage_runs[stage] = stage_run
            if stage == "prepare" and self._prepared is not None:  # computed in run(), before anything was written
                result, seconds_before = self._prepared
                self._prepared, started = None, started - seconds_before
            else:
                result = fn(inputs, self.config)
            if tracker is not None:
                for registration in result.registrations:
                    registry_locks.take(registration.name)
                self._register(stage, result, tracker)
            written = self._write_dask_tables(stage, result)
            seconds = time.perf_counter() - started
            for name, table in result.tables.items():
                if isinstance(table, pd.DataFrame):  # a Dask table is read back from its files when asked for
                    self._cache[(stage, name)] = table
            self._pending[stage] = self._writer.submit(self._write_stage, stage, result, fingerprint, seconds, written)
            if tracker is not None:
                tracker.log_metrics({**{f"{stage}.{k}": v for k, v in result.metrics.items()}, **self._table_metrics(stage)})
        self._progress.done(stage, seconds)

    def _stage_params(self, spec) -> dict[str, Any]:
        """The config a stage ran with: its own sections (those in its fingerprint), flat."""
        out: dict[str, Any] = {}
        for key in spec.config_keys:
            value = _section(self.config, key)
            out.update(flatten(value, f"{key}.") if dataclasses.is_dataclass(value) else {key: value})
        return out

    def _register(self, stage: str, result: stage_functions.StageResult, tracker) -> None:
        """Carry out the registry writes a stage asked for (the stage itself stays pure): log each
        model as a python_function model, register a version, set its alias, and record the version
        as the stage metric the registration names. A model of this stage is saved to a temporary
        directory first (its stage directory is written after); an upstream one is read from disk."""
        import tempfile

        for registration in result.registrations:
            with tempfile.TemporaryDirectory() as tmp:
                owner, name = registration.model
                if owner == stage:
                    result.models[name].save(Path(tmp))
                    directory = Path(tmp)
                else:
                    directory = self.model_dir(owner, name)
                version = tracker.register(registration.kind, registration.name, directory, registration.alias, registration.tags,
                                           registration.description)
            result.metrics[registration.metric] = version
            log.debug(f"  registered {registration.name} version {version} ({registration.kind}, alias {registration.alias})")

    def _table_metrics(self, stage: str) -> dict[str, float]:
        if stage != "evaluate":
            return {}
        table = self.load_table("evaluate", "metrics")
        return dict(zip(table["metric"], table["value"]))

    def _reported(self, wanted: tuple[str, ...], fingerprints: dict[str, str]) -> tuple[str, ...]:
        """The stages whose metrics a run reports: those it was asked for, and every other stage of
        the run directory that is up to date. A run of one stage (``until``) with its upstream then
        still writes the run's whole metrics.json, as the last task of a DAG must."""
        return tuple(s for s in names(self.graph) if s in wanted or self._current(s, fingerprints[s]))

    def _collect_metrics(self, stages: tuple[str, ...]) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        for stage in stages:
            marker = self._done(stage) or {}
            metrics.update({f"{stage}.{k}": v for k, v in marker.get("metrics", {}).items()})
        if "evaluate" in stages and (self.run_dir / "evaluate" / "metrics.parquet").exists():
            metrics.update(self._table_metrics("evaluate"))
        return metrics

    def _read_mlflow_id(self) -> str | None:
        path = self.run_dir / "mlflow.json"
        return json.loads(path.read_text())["run_id"] if path.exists() else None
