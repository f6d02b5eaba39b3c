"""Compiled tree inference: a LightGBM booster turned into native code (treelite + tl2cgen), same scores, faster.

LightGBM's ``predict`` walks its trees through a general interpreter; tl2cgen writes the trees out
as C, one ``if`` per split, and gcc compiles them. On the default world's models that is 2 to 3.5
times faster, with identical scores (``benchmarks/bench_score.py`` measures it in its run; a test
checks the scores equal LightGBM's).

A compile takes one to two seconds, so a booster is compiled the first time one call scores at
least :data:`MIN_ROWS` rows (a batch job's, not a test's or a single request's); from then on every
call uses the library. The library is cached in the user's own cache directory
(``$RANKPIPE_CACHE`` or ``~/.cache/rankpipe/compiled``), named by a hash of the model's text and the
compilers' versions, and never beside the model: a model directory may be a shared or downloaded
artefact, and loading native code found there would run whatever was put there. Without treelite,
tl2cgen or a C compiler, or with ``RANKPIPE_COMPILED_TREES=0``, LightGBM predicts, and the log says
why once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np
import pandas as pd

MIN_ROWS = 50_000
COMPILED_ENV = "RANKPIPE_COMPILED_TREES"  # "0": never compile
CACHE_ENV = "RANKPIPE_CACHE"

log = logging.getLogger(__name__)
_LOCK = threading.Lock()
_PREDICTORS: dict[str, object] = {}  # model hash -> loaded predictor (a library loads once per process)
_WHY_NOT: list[str] = []  # the reason compiling is off in this process, once known


def cache_dir() -> Path:
    """Where compiled libraries are kept: ``$RANKPIPE_CACHE/compiled`` or ``~/.cache/rankpipe/compiled``."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "rankpipe"
    return Path(root) / "compiled"


def tree_predict(booster, X, num_iteration: int | None = None) -> np.ndarray:
    """``booster.predict(X, num_iteration=num_iteration)``, through the booster's compiled library where
    there is one (or the batch is large enough to pay for compiling it; see the module docstring).

    Args:
        booster: a ``lightgbm.Booster``.
        X: the rows to score (a DataFrame or an array; columns by position, as LightGBM reads them).
        num_iteration: the trees to use (``None``: LightGBM's default, the best iteration or all).
    """
    predictor = _predictor(booster, num_iteration, len(X)) if _numeric(X) else None
    if predictor is None:
        return booster.predict(X, num_iteration=num_iteration)
    import tl2cgen

    matrix = np.ascontiguousarray(X.to_numpy() if isinstance(X, pd.DataFrame) else np.asarray(X))
    if matrix.dtype not in (np.float32, np.float64):
        matrix = matrix.astype(np.float64)
    if len(matrix) == 0:
        return np.zeros(0)
    out = predictor.predict(tl2cgen.DMatrix(matrix, dtype="float32" if matrix.dtype == np.float32 else "float64"))
    return np.asarray(out, dtype=np.float64).reshape(len(matrix))


def _numeric(X) -> bool:
    """Whether LightGBM would read ``X`` as plain numbers (a categorical column has its own encoding there)."""
    if isinstance(X, pd.DataFrame):
        return all(pd.api.types.is_float_dtype(t) or pd.api.types.is_integer_dtype(t) or pd.api.types.is_bool_dtype(t) for t in X.dtypes)
    return np.issubdtype(np.asarray(X).dtype, np.number)


def _model_text_and_key(booster, num_iteration: int | None) -> tuple[str, str]:
    """The booster's model text for ``num_iteration`` trees and its library's name, computed once per booster and count."""
    held = getattr(booster, "_rankpipe_compiled_key", None)
    if held is None or held[0] != num_iteration:
        text = booster.model_to_string(num_iteration=num_iteration)  # None: the best iteration, as predict
        held = (num_iteration, text, _key(text))
        booster._rankpipe_compiled_key = held  # a serialisation and a hash per booster, not per call
    return held[1], held[2]


def _predictor(booster, num_iteration: int | None, rows: int):
    """The loaded compiled predictor of ``booster`` (compiling it when ``rows`` pays for it), or None."""
    if os.environ.get(COMPILED_ENV, "1") == "0" or _WHY_NOT:
        return None
    if getattr(booster, "params", {}).get("objective", "").startswith("multiclass"):
        return None  # one score per row is what the callers read
    text, key = _model_text_and_key(booster, num_iteration)
    with _LOCK:
        if key in _PREDICTORS:
            return _PREDICTORS[key]
        library = cache_dir() / f"{key}.so"
        if not library.exists() and rows < MIN_ROWS:
            return None
        try:
            import tl2cgen

            if not library.exists():
                _compile(text, library)
            _PREDICTORS[key] = tl2cgen.Predictor(str(library), nthread=_threads())
        except Exception as error:  # no treelite/tl2cgen, no C compiler, or a failed compile: LightGBM predicts
            _WHY_NOT.append(f"{type(error).__name__}: {error}")
            log.warning("compiled trees are off in this process (%s); LightGBM predicts", _WHY_NOT[0].splitlines()[0][:200])
            return None
        return _PREDICTORS[key]


def _threads() -> int:
    """The threads OpenMP allows this process now: tl2cgen refuses more than ``omp_get_max_threads``,
    which torch or a thread limit may have lowered below the core count."""
    from threadpoolctl import threadpool_info

    allowed = [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "openmp"]
    return max(1, min(allowed)) if allowed else max(1, os.cpu_count() or 1)


def _key(text: str) -> str:
    import platform

    try:
        from importlib.metadata import version

        versions = f"{version('treelite')}/{version('tl2cgen')}"
    except Exception:  # not installed: the compile fails with its own reason
        versions = "none"
    return hashlib.sha256(f"{versions}|{platform.machine()}|{text}".encode()).hexdigest()[:32]


def _compile(text: str, library: Path) -> None:
    """Compile the model ``text`` into ``library``, written atomically (a half-written library is never loaded)."""
    import treelite
    import tl2cgen

    library.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log.info("compiling %d trees with tl2cgen into %s", text.count("\nTree="), library)
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        model_file = Path(work) / "model.txt"
        model_file.write_text(text)
        model = treelite.frontend.load_lightgbm_model(str(model_file))
        partial = Path(work) / library.name
        said = io.StringIO()
        with contextlib.redirect_stdout(said):  # tl2cgen prints its progress lines; they belong in the debug log, not the user's terminal
            tl2cgen.export_lib(model, toolchain="gcc", libpath=str(partial), params={"parallel_comp": max(os.cpu_count() or 1, 2)},
                               nthread=_threads())
        log.debug("tl2cgen: %s", said.getvalue().strip())
        os.replace(partial, library)
