"""Advisory file locks that keep processes sharing one work directory out of each other's way.

Runs share a work directory: the Airflow DAG runs independent stages of one run id at once, a user
may start a second run beside a scheduled one, or start the same run id twice. The runner takes:

- ``runs/<run id>/.<stage>.lock`` while a stage computes and writes: a second process wanting the
  same stage waits, then finds it complete and skips it, so no stage is computed or registered twice;
- ``runs/<run id>/.mlflow.lock`` while the run's MLflow parent run is opened or resumed: one parent
  run per run id;
- ``.locks/mlflow-store.lock`` while the local SQLite store is opened (created, the first time);
- ``.locks/registry-<name>.lock`` from a stage's first look at ``<name>@champion`` until its
  registration and alias move are done: the champion a gate judges against is the one it replaces.

Locks are POSIX ``flock`` locks on open files: the kernel releases them when their process ends, a
``kill -9`` included, so none is ever stale. Where ``fcntl`` is missing (Windows) they do nothing.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the locks become no-ops
    fcntl = None


class FileLock:
    """An exclusive lock on the file ``path`` (created with its folder when missing), held from
    :meth:`acquire` to :meth:`release`. The file names its holder (pid, since when) for the message of
    whoever waits. Usable as a context manager (waiting)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._handle = None

    def acquire(self, on_wait: Callable[[str], None] | None = None) -> None:
        """Take the lock, waiting as long as another process holds it; ``on_wait(holder)`` is called
        once first when it has to wait (``holder``: what the lock file says of its holder)."""
        if fcntl is None or self._handle is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open until release()
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if on_wait is not None:
                    handle.seek(0)
                    on_wait(handle.read().strip() or "another process")
                fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
            handle.flush()
        except BaseException:
            handle.close()
            raise
        self._handle = handle

    def release(self) -> None:
        """Let the lock go (closing the file releases it); a no-op when not held."""
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class LockSet:
    """Locks ``<folder>/<prefix><name>.lock`` taken by name as a task goes (each once), released together."""

    def __init__(self, folder: Path, prefix: str, on_wait: Callable[[str, str], None] | None = None):
        self.folder, self.prefix, self.on_wait = Path(folder), prefix, on_wait
        self.held: dict[str, FileLock] = {}

    def take(self, name: str) -> None:
        """Hold the lock of ``name`` from now on (waiting for it; ``on_wait(name, holder)`` says so)."""
        if name not in self.held:  # a name is any string (promote.model_name): only safe characters reach the path
            self.held[name] = FileLock(self.folder / f"{self.prefix}{re.sub(r'[^A-Za-z0-9._-]', '_', name)}.lock")
            self.held[name].acquire(None if self.on_wait is None else lambda holder: self.on_wait(name, holder))

    def release(self) -> None:
        """Let every lock go."""
        for lock in self.held.values():
            lock.release()
        self.held.clear()
