"""Stage graphs: which stage functions run, in what order, on what inputs, for a kind of dataset.

A dataset adapter names its graph: event logs feed the whole funnel; a ready LTR feature table
enters at the rank stage; catalogues, query lists and fixtures are validated and stored for the
stages that read them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageSpec:
    """A node of a stage graph: its name, the function in ``pipeline.stages`` that computes it,
    its upstream stages and the config sections in its fingerprint. ``beside``: on the local engine,
    the stage starts in a second process when the run reaches the stage named here (one that leaves
    a core idle; :mod:`rankpipe.pipeline.beside`) instead of waiting for its own turn."""

    name: str
    function: str
    needs: tuple[str, ...]
    config_keys: tuple[str, ...]
    beside: str | None = None


FUNNEL = (
    StageSpec("prepare", "prepare", (), ("split", "dataset.rating_threshold", "dataset.requests", "dataset.session_gap_minutes",
                                         "dataset.sampled_impressions", "evaluate.protocol", "seed")),
    StageSpec("features", "features", ("prepare",), ("features", "split")),
    StageSpec("recall", "recall", ("prepare",), ("recall", "evaluate.recall_ks", "seed", "device")),
    StageSpec("rank", "rank", ("prepare", "features", "recall"), ("rank", "features", "recall.item2vec.history", "seed")),
    StageSpec("rerank", "rerank", ("prepare", "rank", "recall"), ("rerank", "seed", "device", "recall.item2vec.history")),
    StageSpec("evaluate", "evaluate", ("prepare", "features", "recall", "rank", "rerank"), ("evaluate", "rerank", "dataset.synthetic", "seed",
                                                                                       "device")),
    StageSpec("promote", "promote", ("prepare", "features", "recall", "rank", "rerank"), ("promote", "dataset", "split", "seed", "device")),
    StageSpec("suggest", "suggest", ("prepare",), ("suggest", "seed", "dataset", "promote"), beside="evaluate"),
    StageSpec("report", "report", ("evaluate", "promote"), ("evaluate", "promote")),
)

LEARNING_TO_RANK = (
    StageSpec("prepare", "prepare_ltr", (), ("split", "seed")),
    StageSpec("rank", "rank_ltr", ("prepare",), ("rank", "seed")),
    StageSpec("evaluate", "evaluate_ltr", ("rank",), ()),
    StageSpec("promote", "promote_ltr", ("rank",), ("promote", "dataset", "split", "seed")),
)

TABLES_ONLY = (StageSpec("prepare", "prepare_tables", (), ()),)

QUERY_LISTS = (StageSpec("prepare", "prepare_tables", (), ()),
               StageSpec("suggest", "suggest_queries", ("prepare",), ("suggest", "seed", "dataset", "promote")))

FUNNEL_STAGES = tuple(s.name for s in FUNNEL)


def direct_needs(graph: tuple[StageSpec, ...]) -> dict[str, tuple[str, ...]]:
    """Each stage's upstream stages less those reached through another of them (the transitive
    reduction): the edges a scheduler draws, so ``rank`` waits for ``features`` and ``recall`` and
    not again for ``prepare``, which both of them wait for."""
    needs = {spec.name: set(spec.needs) for spec in graph}

    def above(stage: str) -> set[str]:
        out: set[str] = set()
        for name in needs[stage]:
            out |= {name} | above(name)
        return out

    return {spec.name: tuple(n for n in spec.needs if not any(n in above(m) for m in spec.needs if m != n)) for spec in graph}


def names(graph: tuple[StageSpec, ...]) -> tuple[str, ...]:
    """Stage names of a graph, in run order."""
    return tuple(s.name for s in graph)
