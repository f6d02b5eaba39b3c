"""One ``rankpipe`` logger for what the pipeline says, and the libraries' chatter kept out of the way.

Every module logs under ``rankpipe`` (``logging.getLogger(__name__)`` of a rankpipe module is a
child of it). :func:`setup` is called by the entry points (the CLI, the Airflow tasks), never on
import: a library must not configure the logging of the program that imports it.

Libraries that log at INFO what a user never needs (gensim's epoch lines, faiss's probes for
``swigfaiss_avx512``, MLflow's and alembic's database set-up, Dask's worker start-up) are held at
WARNING unless ``verbose``. Call :func:`setup` before importing them: faiss logs while it loads.
"""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "rankpipe"
NOISY_LIBRARIES = ("gensim", "faiss", "mlflow", "alembic", "numba", "distributed", "dask", "urllib3", "matplotlib",
                   "sentence_transformers", "torch", "lightgbm", "xgboost", "fsspec", "filelock", "httpx", "git")
_HANDLER_NAME = "rankpipe-stderr"


class _StderrHandler(logging.StreamHandler):
    """Plain lines to whatever ``sys.stderr`` is at the time of each record (a test may swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ sets it; the property always answers sys.stderr
        pass


def get_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """The ``rankpipe`` logger, or its child ``name`` (a module's ``__name__``)."""
    return logging.getLogger(name)


def quiet_libraries(verbose: bool = False) -> None:
    """Hold the noisy libraries at WARNING (at INFO with ``verbose``).

    MLflow sets its own logger's level when it is imported (from ``MLFLOW_LOGGING_LEVEL``), which
    would undo ours where it is imported later, so the variable is set too (unless the user set it).
    """
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    for name in NOISY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
    # Dask's shuffle service warns each time a finished shuffle is torn down: routine, not a problem.
    logging.getLogger("distributed.shuffle").setLevel(logging.INFO if verbose else logging.ERROR)


def setup(verbose: bool = False, quiet: bool = False, handler: bool = True) -> logging.Logger:
    """Configure the ``rankpipe`` logger for a program's entry point and return it.

    Args:
        verbose: DEBUG for rankpipe, and the libraries' INFO lines too.
        quiet: only warnings and errors (``--quiet``).
        handler: write plain lines to stderr. False where a host already collects the log
            records through the root logger (an Airflow task): rankpipe then only sets levels.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    quiet_libraries(verbose)
    existing = [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]
    if handler and not existing:
        stream = _StderrHandler(sys.stderr)
        stream.set_name(_HANDLER_NAME)
        stream.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(stream)
        logger.propagate = False  # the terminal gets each line once, whatever the root logger does
    elif not handler:
        for h in existing:
            logger.removeHandler(h)
        logger.propagate = True
    return logger
