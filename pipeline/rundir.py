"""Naming and finding runs: the run id (a directory under ``<workdir>/runs``), the work directory a
scheduled job may use, and the code version every stage's fingerprint hashes."""

from __future__ import annotations

import hashlib
import re
import tempfile
from pathlib import Path

from rankpipe.pipeline.schema import ConfigError

PACKAGES = ("pipeline", "features", "ranking", "generative")


# A run id names one directory under <workdir>/runs: no separators, no "..", nothing hidden or option-like.
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is a valid run id, else a ConfigError saying what a run id may hold.

    A run id arrives from the command line, from Airflow's ``--conf`` and from scripts, and becomes
    a path component: ``../x`` would put the run outside ``runs/`` and ``a/b`` would nest it.
    """
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise ConfigError(f"run id {run_id!r}: a run id names a directory under <workdir>/runs: 1 to 100 letters, digits, '.', '_' "
                          "or '-', not starting with '.' or '-'")
    return run_id


def code_version() -> str:
    """Hash of every source file of the rankpipe packages: any code change invalidates stage outputs."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def absolute_workdir(workdir: str) -> Path:
    """``workdir`` as an absolute local path (``/srv/rankpipe`` or ``file:///srv/rankpipe``).

    A scheduled job must not depend on the directory its worker happens to start in: a relative
    work directory there is a ConfigError, as is a remote URI, which the runner cannot write yet.
    """
    text = str(workdir or "").strip()
    text = text.removeprefix("file://")
    if "://" in text:
        raise ConfigError(f"workdir must be a local absolute path or a file:// URI (runs are written by the local filesystem). Got {workdir!r} instead.")
    if not text or not Path(text).is_absolute():
        raise ConfigError(f"workdir must be an absolute path (e.g. /srv/rankpipe), not one relative to the worker's directory. Got {workdir!r} instead.")
    return Path(text)


def check_writable(folder: str | Path, what: str) -> None:
    """ConfigError naming ``what`` (e.g. ``--workdir X``) unless ``folder`` is, or can be made, a folder
    this process may write in: the nearest existing path above it must be a folder that takes a file
    (a real probe: permission bits say nothing for root, or for a read-only or special file system).
    Nothing is created."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise ConfigError(f"{what}: {existing} is a file, so the folder cannot be made")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        raise ConfigError(f"{what}: cannot write in {existing} ({exc.strerror or exc})") from None
