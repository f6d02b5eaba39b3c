"""The promote stages: the promotion gate, judged on this run's test lists, and the fitted funnel (or, for a
ready feature table, the ranker) handed to the runner to register."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config, to_dict
from rankpipe.pipeline.stages.base import Registration, StageInputs, StageResult, recall_depth
from rankpipe.ranking import metrics as M
from rankpipe.ranking.funnel import Funnel
from rankpipe.ranking.rankers import load_ranker
from rankpipe.ranking.recall import load_channel
from rankpipe.ranking.recall.merge import CandidateMerge
from rankpipe.ranking.rerank import RerankChain


def decide_promotion(challenger: float, champion: float | None, min_improvement: float) -> tuple[bool, str]:
    """The promotion gate: a first model always wins; later ones must beat the champion by more than ``min_improvement``."""
    if champion is None:
        return True, "no champion yet"
    if not np.isfinite(challenger):
        return False, "challenger metric is not finite"
    if challenger > champion + min_improvement:
        return True, f"challenger {challenger:.4f} > champion {champion:.4f} + {min_improvement}"
    return False, f"challenger {challenger:.4f} <= champion {champion:.4f} + {min_improvement}"


def _judge(inputs: StageInputs, config: Config) -> tuple[str, bool, dict, pd.DataFrame, dict[str, str]]:
    """The gate shared by both promote stages: the rank stage's ranker against the registered
    champion's, both scored on this run's test lists (same split, same labels), so the comparison
    never trusts a number measured on other data.

    Returns:
        (registered model name, promoted, metrics, the decision table, the version's tags)
    """
    if inputs.load_champion is None:
        raise RuntimeError("the promote stage needs the model registry (MLflow tracking); run with tracking enabled or stop at 'evaluate'")
    logged = inputs.table("rank", "test_logged")
    metric = config.promote.metric
    if metric != "ndcg_at_10":
        raise ValueError(f"promote.metric must be 'ndcg_at_10'. Got {metric!r} instead.")
    challenger = M.ndcg_at_k(logged[S.REQUEST_ID], logged[S.SCORE], logged[S.GRADE], 10)
    name = config.promote.model_name or f"rankpipe-{config.dataset.name}"
    champion_ranker = inputs.load_champion(name)
    champion_score, note = None, ""
    if champion_ranker is not None:
        missing = [c for c in champion_ranker.feature_names_ if c not in logged.columns]
        if missing:
            note = f"champion needs features {missing[:3]} this run does not compute; kept it"
            champion_score = float("inf")
        else:
            champion_per_request = M.ndcg_per_group(logged[S.REQUEST_ID], champion_ranker.predict(logged), logged[S.GRADE], 10)
            champion_score = float(np.nanmean(champion_per_request))
            challenger_per_request = M.ndcg_per_group(logged[S.REQUEST_ID], logged[S.SCORE], logged[S.GRADE], 10)
            # Logged beside the gate so a reader can tell a real win from noise on this split.
            delta, low, high = M.paired_bootstrap_ci(challenger_per_request, champion_per_request, seed=config.seed)
    promoted, reason = decide_promotion(challenger, champion_score, config.promote.min_improvement)
    metrics = {"promoted": promoted, "challenger_ndcg_at_10": challenger}
    if champion_score is not None and np.isfinite(champion_score):
        metrics.update(champion_ndcg_at_10=champion_score, delta_ndcg_at_10=delta, delta_ci95_low=low, delta_ci95_high=high)
    # The registered version is in the stage's metrics (``version``) once the runner has written it.
    decision = pd.DataFrame([{"model_name": name, "promoted": promoted, "reason": note or reason,
                              "challenger_ndcg_at_10": challenger, "champion_ndcg_at_10": champion_score}])
    return name, promoted, metrics, decision, {"test_ndcg_at_10": f"{challenger:.6f}", "decision": note or reason}


def fitted_funnel(inputs: StageInputs, config: Config) -> Funnel:
    """The run's whole fitted funnel, read back from its stages' files: every channel, the merge, the
    feature builder, the ranker and its calibrator, the reranker."""
    return Funnel({channel: load_channel(inputs.model_dir("recall", f"channel_{channel}"), config.device) for channel in config.recall.quotas},
                  CandidateMerge.load(inputs.model_dir("recall", "merge")), FeatureBuilder.load(inputs.model_dir("features", "builder")),
                  load_ranker(inputs.model_dir("rank", "ranker")), RerankChain.load(inputs.model_dir("rerank", "reranker")),
                  depth=recall_depth(config), n_last=config.recall.item2vec.history, config=to_dict(config))


def promote(inputs: StageInputs, config: Config) -> StageResult:
    """Judge the funnel's ranker against the champion's (:func:`_judge`) and ask the runner to register
    the whole fitted funnel (:class:`~rankpipe.ranking.funnel.Funnel`: every channel, the merge, the
    feature builder, the ranker and its calibrator, the reranker, read back from their stages' files)
    as ``rankpipe-<dataset>``: alias ``champion`` only if it passes the gate, else ``challenger``.
    The new version's number becomes metric ``version``."""
    name, promoted, metrics, decision, tags = _judge(inputs, config)
    funnel = fitted_funnel(inputs, config)
    registration = Registration("funnel", name, ("promote", "funnel"), "champion" if promoted else "challenger", tags, metric="version")
    return StageResult({"decision": decision}, metrics, {"funnel": funnel}, registrations=[registration])


def promote_ltr(inputs: StageInputs, config: Config) -> StageResult:
    """:func:`promote` for a ready feature table: there is no recall or feature builder, so the ranker
    alone is registered (served by ``rankpipe.ranking.registry_model``)."""
    name, promoted, metrics, decision, tags = _judge(inputs, config)
    registration = Registration("ranker", name, ("rank", "ranker"), "champion" if promoted else "challenger", tags, metric="version")
    return StageResult({"decision": decision}, metrics, registrations=[registration])
