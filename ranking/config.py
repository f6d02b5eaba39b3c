"""The ``rank`` and ``rerank`` config sections.

``rank`` holds what every ranker shares (which model, the NDCG cut-off, calibration, ablation and
selection) and one subsection per ranker family, whose keys are the family's ``__init__``
parameters: ``rank.lightgbm`` (lambdarank, rank_xendcg, lgb_binary), ``rank.xgboost`` (xgb_ndcg,
xgb_pairwise, xgb_binary), ``rank.sklearn`` (random_forest, adaboost, gbdt_lr) and ``rank.neural``
(deepfm, dcnv2, din, esmm). A key set away from its default that the chosen ranker does not take is an
error (:func:`rankpipe.ranking.rankers.ranker_params`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from rankpipe.pipeline.schema import AT_LEAST_ONE, DAY_SPAN, NON_NEGATIVE, POSITIVE, UNIT_INTERVAL, Bound


@dataclass(frozen=True)
class BoostedTreesRankConfig:
    """What the LightGBM and XGBoost rankers share: leaf-wise trees, early stopping on the validation
    lists, then a refit on train + valid."""

    num_leaves: int = 31
    # Patience is measured in learning distance (step × rounds): 0.05 / 30 (1.5) let early stopping
    # on noisy validation NDCG keep 1-5 trees for some seeds (MovieLens NDCG@10 0.8476-0.8625).
    # 0.05 / 50 (2.5) has more of it than 0.02 / 100 (2.0) at a third of the trees: on the default
    # world's rank inputs, oracle NDCG@10 0.9157 / 0.9138 / 0.9155 against 0.9149 / 0.9137 / 0.9131
    # (seeds 42-44; the fit 36-57 s instead of 88-98 s, and prediction ~2.5x cheaper); on MovieLens
    # 0.8639 / 0.8587 / 0.8603 against 0.8591 / 0.8608 / 0.8637 (mean −0.0002).
    learning_rate: float = 0.05
    n_estimators: int = 800
    early_stopping_rounds: int = 50
    feature_fraction: float = 0.9
    refit: bool = True  # after early stopping picks the tree count, refit on train + valid

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"num_leaves": Bound(2), "learning_rate": POSITIVE, "n_estimators": AT_LEAST_ONE,
                                             "early_stopping_rounds": AT_LEAST_ONE, "feature_fraction": Bound(0, 1, low_open=True)}


@dataclass(frozen=True)
class LightGBMRankConfig(BoostedTreesRankConfig):
    """LightGBM rankers (``lambdarank``, ``rank_xendcg``, ``lgb_binary``)."""

    min_data_in_leaf: int = 50
    # >= 2: the tree count is chosen by k-fold cross-validation over the training lists and the model
    # is a bag of the refit and the fold models (LambdaRankRanker); 0: early stopping on the
    # validation lists. The letor adapter sets 5: a small LTR file's carve-out is too few lists.
    cv_folds: int = 0
    # Each tree sees half the features and, drawn anew each round, half the rows (bagging_fraction 1:
    # all rows). On the default world's rank inputs (seeds 42-44) oracle NDCG@10 0.9141 / 0.9153 /
    # 0.9132 against 0.9157 / 0.9138 / 0.9155 with every row and 0.9 of the features (mean -0.0008),
    # the fit 19-31 s instead of 34-58 s, with fewer trees to score (136-266 against 215-295).
    # MovieLens (seeds 42, 43): NDCG@10 0.8624 / 0.8596 against 0.8639 / 0.8587. The letor adapter keeps every row.
    feature_fraction: float = 0.5
    bagging_fraction: float = 0.5

    BOUNDS: ClassVar[Mapping[str, Bound]] = {**BoostedTreesRankConfig.BOUNDS, "min_data_in_leaf": NON_NEGATIVE, "cv_folds": NON_NEGATIVE,
                                             "bagging_fraction": Bound(0, 1, low_open=True)}


@dataclass(frozen=True)
class XGBoostRankConfig(BoostedTreesRankConfig):
    """XGBoost rankers (``xgb_ndcg``, ``xgb_pairwise``, ``xgb_binary``): leaf-wise trees like LightGBM's."""

    min_child_weight: float = 1.0  # a leaf's minimum hessian sum (XGBoost has no count-based minimum)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {**BoostedTreesRankConfig.BOUNDS, "min_child_weight": NON_NEGATIVE}


@dataclass(frozen=True)
class SklearnRankConfig:
    """The scikit-learn baselines (``random_forest``, ``adaboost``, ``gbdt_lr``)."""

    num_leaves: int = 31
    n_estimators: int = 800
    min_data_in_leaf: int = 50
    max_train_rows: int = 200_000  # a sample of the training rows above this (the baselines are slow)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"num_leaves": Bound(2), "n_estimators": AT_LEAST_ONE, "min_data_in_leaf": AT_LEAST_ONE,
                                             "max_train_rows": AT_LEAST_ONE}


@dataclass(frozen=True)
class NeuralRankConfig:
    """Neural CTR rankers (``deepfm``, ``dcnv2``, ``din``, ``esmm``): epochs at most, batch, Adam step,
    embedding size, quantile buckets per feature (each feature's sparse field), patience in epochs."""

    nn_epochs: int = 5
    nn_batch_size: int = 4096
    nn_learning_rate: float = 1e-3
    nn_embedding_dim: int = 16
    nn_buckets: int = 16
    nn_patience: int = 2
    nn_loss: str = "binary"  # binary (pointwise CTR), or listwise over each request: listnet, lambdaloss (NDCG-Loss2++)
    nn_history: int = 20  # din only: the user's last positive items it attends over
    nn_conversion_grade: int = 2  # esmm only: grades at or above this are conversions (cart, purchase)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"nn_epochs": AT_LEAST_ONE, "nn_batch_size": AT_LEAST_ONE, "nn_learning_rate": POSITIVE,
                                             "nn_embedding_dim": AT_LEAST_ONE, "nn_buckets": Bound(2), "nn_patience": AT_LEAST_ONE,
                                             "nn_history": AT_LEAST_ONE, "nn_conversion_grade": Bound(1, 3)}


POPULATIONS = ("candidates", "logged", "both")  # what rank.population may name


@dataclass(frozen=True)
class RankConfig:
    """The fine ranker: a registered model name, what every ranker shares, and one section per family."""

    model: str = "lambdarank"
    eval_at: int = 10
    # What the ranker learns from (pipeline/stages/rank.py): "candidates", the recall candidates of
    # validation requests the merge did not learn from, labelled by what the user then did (the
    # population it ranks); "logged", the logged train lists; "both".
    population: str = "candidates"
    candidate_requests: int = 4000  # at most this many requests' candidates (recall.k each) to learn from
    # Scores → P(grade > 0), fitted on the validation rows (ranking/calibration.py): platt, isotonic or none.
    calibration: str = "platt"
    ablation: bool = False  # also retrain without each feature group and report test NDCG@10 (slow: one fit per group)
    # Feature groups the ranker does not see (item, user, query, query_item, user_category,
    # user_top_category, item_attributes, context, text_match, dense_text, embedding).
    drop_groups: tuple[str, ...] = ()
    # Feature selection before the final fit (ranking/selection.py): correlation pruning, zero gain,
    # and null importance from selection_null_runs fits on labels shuffled within each list.
    selection: bool = False
    selection_correlation: float = 0.98
    selection_null_runs: int = 3
    lightgbm: LightGBMRankConfig = field(default_factory=LightGBMRankConfig)
    xgboost: XGBoostRankConfig = field(default_factory=XGBoostRankConfig)
    sklearn: SklearnRankConfig = field(default_factory=SklearnRankConfig)
    neural: NeuralRankConfig = field(default_factory=NeuralRankConfig)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"eval_at": AT_LEAST_ONE, "candidate_requests": AT_LEAST_ONE, "selection_correlation": Bound(0, 1, low_open=True), "selection_null_runs": AT_LEAST_ONE}


@dataclass(frozen=True)
class MMRRerankConfig:
    """``mmr``: relevance weight λ in [0, 1] (1 keeps the ranker's order)."""

    relevance_weight: float = 0.8

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"relevance_weight": UNIT_INTERVAL}


@dataclass(frozen=True)
class DPPRerankConfig:
    """``dpp``: θ in [0, 1] trading relevance (1 keeps the ranker's order) for diversity, and the
    similarity the kernel measures: ``attributes`` (same category, same brand), ``embedding`` (item2vec cosine) or ``both``."""

    theta: float = 0.9
    similarity: str = "attributes"

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"theta": UNIT_INTERVAL}


@dataclass(frozen=True)
class PRMRerankConfig:
    """``prm``: the list transformer's size and training (ranking/rerank/prm.py)."""

    top_n: int = 20
    dim: int = 32
    heads: int = 2
    layers: int = 1
    dropout: float = 0.1
    epochs: int = 8
    batch_size: int = 256  # lists
    learning_rate: float = 1e-3
    patience: int = 2
    loss: str = "softmax"  # list-wise softmax on clicks, or bce
    max_train_lists: int = 100_000
    train_order: str = "shown"  # the training lists as shown, or as the ranker orders them (ranked)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"top_n": Bound(2), "dim": AT_LEAST_ONE, "heads": AT_LEAST_ONE, "layers": AT_LEAST_ONE,
                                             "dropout": Bound(0, 1, high_open=True), "epochs": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE,
                                             "learning_rate": POSITIVE, "patience": AT_LEAST_ONE, "max_train_lists": AT_LEAST_ONE}


@dataclass(frozen=True)
class RulesRerankConfig:
    """``rules``: filters, dedupe, scatter (at most ``max_per_window`` of one category/brand in any
    ``window`` slots) and a pinned fresh slot (ranking/rerank/rules.py)."""

    scatter_by: str = "category"  # category, brand, or "" (off)
    window: int = 4
    max_per_window: int = 2
    dedupe_by: str = ""  # title, brand, or "" (off)
    fresh_within: int = 0  # at least one item launched within fresh_days among the first n slots (0: off)
    fresh_days: float = 14.0
    exclude_categories: tuple[str, ...] = ()  # category prefixes never shown

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"window": AT_LEAST_ONE, "max_per_window": AT_LEAST_ONE, "fresh_within": NON_NEGATIVE, "fresh_days": DAY_SPAN}


@dataclass(frozen=True)
class RerankConfig:
    """The rerankers applied in turn (``chain``, names from ``rankpipe rerankers``) to each request's
    top ``pool`` candidates, the final list length ``k``, and one section per reranker."""

    chain: tuple[str, ...] = ("mmr",)
    pool: int = 50
    k: int = 10
    mmr: MMRRerankConfig = field(default_factory=MMRRerankConfig)
    dpp: DPPRerankConfig = field(default_factory=DPPRerankConfig)
    prm: PRMRerankConfig = field(default_factory=PRMRerankConfig)
    rules: RulesRerankConfig = field(default_factory=RulesRerankConfig)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"pool": AT_LEAST_ONE, "k": AT_LEAST_ONE}  # and k <= pool: ranking.rerank.check_rerank_config
