"""Stages that run beside the others: a second process for a stage whose inputs are ready while the
run is on stages that leave a core idle.

On the default world ``recall`` and ``rank`` keep both cores busy (LightGBM, torch and faiss thread
their work), but ``evaluate``, ``promote`` and ``report`` are pandas on one core, and ``suggest``
needs only ``prepare``. So when a run reaches the stage a graph names as a stage's ``beside``
(:class:`~rankpipe.pipeline.graphs.StageSpec`), that stage starts in a second process with one
thread: the same ``Runner.run(until=stage)`` with the same run id that an Airflow task of the stage
runs, so the stage lock, the MLflow parent run and the registry are shared exactly as between the
DAG's parallel tasks. When the run's own turn for it comes, it waits for that process and finds the
stage complete; if the process failed, the run says so and computes the stage itself.

Default world, 2 cores, two plain runs the same morning: 184.7 s with ``suggest`` beside ``evaluate``
(its 45 s at one thread, ~8 s to start, against ``evaluate`` + ``promote``'s 43 s), 215.3 s with
every stage in turn; its metrics are the same to the last digit. Started beside ``features`` instead, even at ``nice 10``, it slowed recall
by 13 s and rank by 5 s (195.9 s): their threaded parts want both cores.

Only on the local engine (a Dask run's stages already share the cluster) and with
``engine.beside`` on. The second process is ``python -m rankpipe.pipeline.beside_main WORKDIR RUN_ID
STAGE FINGERPRINT TRACK`` (:func:`start`): the run's ``config.yaml`` is its config, and it computes
nothing unless that config gives the stage the fingerprint the run expects.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# One thread each for the libraries of the second process: the first keeps both cores for the
# stages that can use them, and two OpenMP teams on two cores stall each other at every barrier.
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
# A second process costs ~4 s before it computes (interpreter, imports, the MLflow store): on a toy
# world (suggest 4 s) a run took 27 s with it against 23 s without. So a stage goes beside only when
# the last run of the same data took MIN_SECONDS for it, or, with no such record, when this run has
# already taken MIN_ELAPSED to reach the stage it would go beside (the data is not a toy).
MIN_SECONDS = 15.0
MIN_ELAPSED = 60.0


def worth_a_process(expected_seconds: float | None, elapsed: float) -> bool:
    """Whether a stage the last run of this data took ``expected_seconds`` for (None: no record) should
    start in a second process, ``elapsed`` seconds into this run."""
    return expected_seconds >= MIN_SECONDS if expected_seconds is not None else elapsed >= MIN_ELAPSED


@dataclass
class BesideStage:
    """A stage computing in a second process: the process and the file its output goes to."""

    stage: str
    process: subprocess.Popen
    log_path: Path

    def wait(self) -> int:
        """Block until the process exits; its exit status."""
        return self.process.wait()

    def stop(self) -> None:
        """End the process if it still runs (the run failed or was interrupted): it must not outlive the run."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start(workdir: Path, run_dir: Path, run_id: str, stage: str, fingerprint: str, track: bool) -> BesideStage:
    """Start ``stage`` (whose fingerprint in this run is ``fingerprint``) of run ``run_id`` in a second
    process; its output goes to ``<run_dir>/.<stage>.beside.log``."""
    log_path = run_dir / f".{stage}.beside.log"
    with open(log_path, "wb") as out:  # the child holds its own descriptor; this one closes at once
        process = subprocess.Popen([sys.executable, "-m", "rankpipe.pipeline.beside_main", str(Path(workdir).absolute()), run_id, stage,
                                    fingerprint, "1" if track else "0"], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **ONE_THREAD})
    return BesideStage(stage, process, log_path)
