"""What a run tells the terminal while it works: ``[stage k/n name, elapsed, ETA]``.

The ETA comes from the last run of the same data in the same work directory: each finished
stage's seconds are kept in ``<workdir>/timings.json`` under the dataset's source (the synthetic
world's shape, or a file dataset's location), so a smoke world never sets the full world's ETA.
Without an earlier run the ETA says so rather than guessing.

On a terminal a live line (a tqdm bar without a bar, so it shares the screen with the components'
own bars) ticks every half second with the elapsed time, the ETA and the step the stage is on; in
a log (CI, cron, Airflow) the same facts come as one line when each stage starts and ends.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from rankpipe.pipeline.logs import get_logger

TIMINGS_FILE = "timings.json"
log = get_logger(__name__)


def clock(seconds: float) -> str:
    """``83`` → ``1:23``; ``3723`` → ``1:02:03``."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def read_timings(workdir: Path, source: str) -> dict[str, float]:
    """The seconds each stage took in the last run of ``source`` under ``workdir`` ({} when none ran)."""
    path = Path(workdir) / TIMINGS_FILE
    try:
        return {k: float(v) for k, v in json.loads(path.read_text()).get(source, {}).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # no earlier run, or a file a crash left unreadable: no ETA, never a failed run


def record_timing(workdir: Path, source: str, stage: str, seconds: float) -> None:
    """Keep ``stage``'s seconds for ``source`` (the file is replaced whole: concurrent runs never read half of it)."""
    path = Path(workdir) / TIMINGS_FILE
    try:
        everything = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        everything = {}
    everything.setdefault(source, {})[stage] = round(seconds, 2)
    partial = path.with_name(f".{TIMINGS_FILE}.tmp-{uuid.uuid4().hex[:8]}")
    partial.write_text(json.dumps(everything, indent=1, sort_keys=True))
    partial.replace(path)


class RunProgress:
    """The progress of one run over ``stages`` (the ones it will execute, in order)."""

    def __init__(self, workdir: Path, source: str, stages: list[str], total: int, enabled: bool = True):
        self.workdir, self.source, self.stages, self.total, self.enabled = Path(workdir), source, list(stages), total, enabled
        self.expected = read_timings(workdir, source)
        self.started = time.perf_counter()
        self._stage: str | None = None
        self._finished = False  # the current stage is done (its remaining time is 0, not its record minus elapsed)
        self._index = 0
        self._stage_started = 0.0
        self._step = ""
        self._bar = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._redirect = None
        self._beside: dict[str, float] = {}  # stage -> when it started in a second process

    # --------------------------------------------------------------------------- facts
    def eta(self) -> float | None:
        """Seconds left, from the last run's stage times; None when a stage still to run has no record.
        A stage computing beside the others (:meth:`beside`) overlaps them: the run ends when the
        later of it and the stages in this process does."""
        now, beside = time.perf_counter(), dict(self._beside)  # a copy: the ticker thread asks while the run's thread updates it
        todo, in_stage = self.stages, 0.0
        if self._stage is not None:
            todo = self.stages[self.stages.index(self._stage) + 1:]
            if not self._finished:
                if self._stage not in self.expected:
                    return None
                since = beside.get(self._stage, self._stage_started)
                in_stage = max(self.expected[self._stage] - (now - since), 0.0)
        if any(s not in self.expected for s in todo + list(beside)):
            return None
        here = in_stage + sum(self.expected[s] for s in todo if s not in beside)
        return max([here] + [self.expected[s] - (now - since) for s, since in beside.items() if s != self._stage])

    def line(self) -> str:
        """``[stage 3/9 recall, elapsed 1:23, ETA 2:10]`` (plus the current step, when the stage names one)."""
        eta = self.eta()
        eta_text = f"ETA {clock(eta)}" if eta is not None else "no ETA (no earlier run of this data here)"
        step = f" {self._step}" if self._step else ""
        return f"[stage {self._index}/{self.total} {self._stage}, elapsed {clock(time.perf_counter() - self.started)}, {eta_text}]{step}"

    # --------------------------------------------------------------------------- events
    def start(self, stage: str, index: int) -> None:
        """``stage`` (the ``index``-th of the graph's ``total``) begins."""
        self._stage, self._index, self._stage_started, self._step, self._finished = stage, index, time.perf_counter(), "", False
        if not self.enabled:
            return
        if self._bar is None:
            # disable=None: a live line only on a terminal; logs get the start and end lines alone.
            self._bar = tqdm(total=None, bar_format="{desc}", position=0, leave=False, disable=None)
            if not self._bar.disable:
                # rankpipe's own log lines go above the live line instead of through it.
                self._redirect = logging_redirect_tqdm(loggers=[get_logger()])
                self._redirect.__enter__()
                self._ticker = threading.Thread(target=self._tick, name="rankpipe-progress", daemon=True)
                self._ticker.start()
        if self._bar.disable:  # a log: the start line; a terminal has the live line instead
            log.info(self.line())
        self._refresh()

    def beside(self, stage: str) -> None:
        """``stage`` started in a second process (:mod:`rankpipe.pipeline.beside`); its turn here will only wait for it."""
        self._beside[stage] = time.perf_counter()

    def step(self, text: str) -> None:
        """The stage moved on to ``text`` (e.g. ``channel item2vec``): shown beside the elapsed time."""
        self._step = text
        self._refresh()

    def done(self, stage: str, seconds: float, where: str = "") -> None:
        """``stage`` finished in ``seconds`` (``where``: e.g. ``in a second process``): say so, and keep its time for the next run's ETA."""
        try:
            record_timing(self.workdir, self.source, stage, seconds)
        except OSError:
            pass  # a read-only work directory costs the next run its ETA, not this run
        self._finished = True
        self._beside.pop(stage, None)
        if self.enabled:
            self._step = ""
            eta = self.eta()
            log.info(f"  {stage:<9} done in {seconds:.1f}s{' ' + where if where else ''} (elapsed {clock(time.perf_counter() - self.started)}"
                     + (f", ETA {clock(eta)})" if eta is not None else ")"))

    def close(self) -> None:
        """Stop the live line (idempotent)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    # --------------------------------------------------------------------------- terminal
    def _refresh(self) -> None:
        if self._bar is not None and not self._bar.disable:
            self._bar.set_description_str(self.line(), refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._refresh()
