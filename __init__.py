"""rankpipe: an offline multi-stage ranking pipeline for search and recommendation.

The Python API, for a notebook or another scheduler (the CLI ``rankpipe`` calls the same)::

    import rankpipe

    config = rankpipe.load_config(overrides=["rank.model=xgb_ndcg"])   # defaults < YAML file < overrides
    summary = rankpipe.run(config, workdir="rankpipe-work", run_id="nightly")
    summary.metrics["evaluate.rank.ndcg_at_10"], summary.report

Packages, bottom to top (an import only points down; see ARCHITECTURE.md):
``rankpipe.pipeline.schema`` (the data contract) → ``rankpipe.features``, ``rankpipe.ranking``,
``rankpipe.generative`` (components with their own config dataclasses) → ``rankpipe.pipeline``
(config composition, dataset adapters, stages, runner, tracking, CLI).

Importing ``rankpipe`` imports nothing heavy: each function loads what it needs when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # pragma: no cover - types only
    from rankpipe.pipeline.config import Config
    from rankpipe.pipeline.runner import RunSummary

__version__ = "0.1.0"
__all__ = ["__version__", "load_config", "run"]


def load_config(config_file: str | Path | None = None, overrides: Sequence[str] = (), dataset: str | None = None,
                data_path: str | None = None) -> "Config":
    """The resolved run config: defaults, then the dataset adapter's own defaults, an optional YAML
    file, then ``a.b=value`` overrides (as ``--set``), then the ``dataset`` / ``data_path`` shortcuts.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, an unreadable file.
    """
    from rankpipe.pipeline.config import load_config as _load

    return _load(config_file, list(overrides), dataset, data_path)


def run(config: "Config | None" = None, workdir: str | Path = "rankpipe-work", run_id: str | None = None, until: str | None = None,
        progress: bool = True, track: bool = True) -> "RunSummary":
    """Run the funnel (or ``until`` one stage and the stages it needs) for ``config`` (default: the
    embedded synthetic world) into ``<workdir>/runs/<run_id>``; a run id that exists resumes.

    Returns:
        The :class:`~rankpipe.pipeline.runner.RunSummary`: metrics, executed / skipped stages, the
        report's path and the MLflow run.

    Raises:
        ContractError / ConfigError: bad input, raised before anything is written.
    """
    from rankpipe.pipeline.config import Config
    from rankpipe.pipeline.runner import Runner

    return Runner(config if config is not None else Config(), workdir, run_id, progress=progress, track=track).run(until)
