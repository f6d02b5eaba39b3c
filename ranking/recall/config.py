"""The ``recall`` config section: channels and quotas, the merge, the faiss index, and each learned
channel's own subsection (``recall.item2vec``, ``recall.two_tower``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from rankpipe.pipeline.schema import AT_LEAST_ONE, DAY_SPAN, NON_NEGATIVE, POSITIVE, Bound


@dataclass(frozen=True)
class IndexConfig:
    """The faiss index every embedding channel searches: a factory string (Flat, IVF4096,Flat, HNSW32,
    IVF1024,PQ16, …) and the search-time knobs of the kinds that have them."""

    factory: str = "Flat"
    nprobe: int = 32  # IVF: inverted lists scanned per query
    ef_search: int = 128  # HNSW: candidate list size

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"nprobe": AT_LEAST_ONE, "ef_search": AT_LEAST_ONE}


@dataclass(frozen=True)
class Item2VecConfig:
    """gensim skip-gram over sessions of positive events; scores add ``popularity_weight`` × a popularity prior."""

    dims: int = 32
    window: int = 5
    negative: int = 5
    # Items seen fewer times get near-random vectors that crowd real neighbours out of the top-K
    # (default world recall@100: 0.202 at 1, 0.224 at 3; 20 epochs instead of 8: 0.254).
    min_count: int = 3
    epochs: int = 20
    history: int = 5
    # A search's query vector (queries are tokens of the sessions) counts this many times the user's
    # history; 0 trains on items alone. Default world recall@100: 0.621 at 0, 0.703 at 1, 0.713 at 2,
    # 0.716 at 4 (searches 0.600 → 0.819 at 2; browsing requests unchanged).
    query_weight: float = 2.0
    # Weight of the popularity prior added to the cosine; None: chosen per run on the validation
    # requests from ranking.recall.base.PRIOR_WEIGHTS (default world recall@100: 0.254 at 0, 0.621 at 1).
    popularity_weight: float | None = None

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"dims": AT_LEAST_ONE, "window": AT_LEAST_ONE, "negative": NON_NEGATIVE, "min_count": AT_LEAST_ONE,
                                             "epochs": AT_LEAST_ONE, "history": AT_LEAST_ONE, "query_weight": NON_NEGATIVE,
                                             "popularity_weight": NON_NEGATIVE}


@dataclass(frozen=True)
class TwoTowerConfig:
    """Two-tower retrieval (torch): in-batch softmax with log-Q correction; scores add ``popularity_weight`` × a popularity prior."""

    dims: int = 32
    hidden: int = 64
    history: int = 10
    epochs: int = 5
    batch_size: int = 1024
    learning_rate: float = 0.003
    temperature: float = 0.05
    # None: chosen per run on the validation requests. The log-Q-corrected towers need no prior on
    # the default world (recall@100 0.763 at 0, 0.733 at 1) but do on MovieLens (0.120 at 0, 0.169 at 1).
    popularity_weight: float | None = None

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"dims": AT_LEAST_ONE, "hidden": AT_LEAST_ONE, "history": AT_LEAST_ONE, "epochs": AT_LEAST_ONE,
                                             "batch_size": AT_LEAST_ONE, "learning_rate": POSITIVE, "temperature": POSITIVE,
                                             "popularity_weight": NON_NEGATIVE}


@dataclass(frozen=True)
class EASEConfig:
    """EASE (closed form, ranking/recall/ease.py): the L2 weight λ and the largest catalogue it inverts (items x items, dense)."""

    l2: float = 500.0
    max_items: int = 20_000

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"l2": POSITIVE, "max_items": AT_LEAST_ONE}


@dataclass(frozen=True)
class ALSConfig:
    """Implicit-feedback ALS (ranking/recall/factors.py), ``implicit``'s defaults: factors, L2 weight, confidence of a positive, sweeps."""

    factors: int = 100
    regularization: float = 0.01
    alpha: float = 1.0
    iterations: int = 15

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"factors": AT_LEAST_ONE, "regularization": NON_NEGATIVE, "alpha": POSITIVE,
                                             "iterations": AT_LEAST_ONE}


@dataclass(frozen=True)
class BPRConfig:
    """BPR (ranking/recall/factors.py), ``implicit``'s defaults: factors, SGD step, L2 weight, epochs."""

    factors: int = 100
    learning_rate: float = 0.01
    regularization: float = 0.01
    iterations: int = 100

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"factors": AT_LEAST_ONE, "learning_rate": POSITIVE, "regularization": NON_NEGATIVE,
                                             "iterations": AT_LEAST_ONE}


@dataclass(frozen=True)
class RecallConfig:
    """Channels, their quotas (channel name → max candidates) and how their lists are merged."""

    # 200 each: at 100 every channel's candidates 101-200 were out of reach, and the merged top 200
    # fell below two_tower's own (default world 0.815 vs 0.829; at 200 with the gbdt merge, 0.834).
    quotas: Mapping[str, int] = field(default_factory=lambda: {"bm25": 200, "itemcf": 200, "item2vec": 200, "two_tower": 200, "popularity": 200})
    k: int = 200
    popularity_half_life_days: float = 7.0
    # Scopes of the popularity channel, in order of preference (ranking/recall/popularity.py):
    # query (items clicked after the same query), category (of the user's last positive item), global.
    popularity_scopes: tuple[str, ...] = ("query", "global")
    itemcf_half_life_days: float = 30.0
    # gbdt: LightGBM on every channel's rank and score for the candidate, fitted on validation requests;
    # learned: a logistic regression on (channel, rank bucket) indicators, fitted likewise;
    # calibrated: per-channel hit rates combined by noisy-OR; interleave: round-robin by rank;
    # auto: whichever finds more validation positives in 2-fold cross-validation.
    merge: str = "auto"
    calibration_requests: int = 2000  # validation requests sampled to fit the learned / calibrated merge
    # > 0: the ranker also sees which channels found each pair and at what rank (recall_<channel>_rank),
    # train rows from this many channel refits before cuts of the train period (see pipeline/stages/recall.py, _logged_channel_ranks).
    ranker_snapshots: int = 0
    # The business rule that no list offers an item its user already had a positive event for (films,
    # books); the ranker then learns and scores without them, as the protocols judge (their lists always leave them out).
    exclude_seen: bool = False
    index: IndexConfig = field(default_factory=IndexConfig)
    item2vec: Item2VecConfig = field(default_factory=Item2VecConfig)
    two_tower: TwoTowerConfig = field(default_factory=TwoTowerConfig)
    ease: EASEConfig = field(default_factory=EASEConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    bpr: BPRConfig = field(default_factory=BPRConfig)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"quotas": Bound(0, nonempty=True), "k": AT_LEAST_ONE, "popularity_half_life_days": DAY_SPAN,
                                             "itemcf_half_life_days": DAY_SPAN, "calibration_requests": NON_NEGATIVE,
                                             "ranker_snapshots": NON_NEGATIVE}
