"""Merging the channels' lists into one candidate list per request: interleave by rank, noisy-OR of
per-channel hit rates, a logistic regression or a LightGBM classifier on which channels found a
candidate and where; the method chosen by cross-validation on held-out requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.stats

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.schema import check_fitted
from rankpipe.ranking.compiled import tree_predict


def rank_bucket(rank: np.ndarray) -> np.ndarray:
    """log2 buckets of 1-based ranks: 1 → 0, 2-3 → 1, 4-7 → 2, …"""
    return np.floor(np.log2(np.maximum(np.asarray(rank), 1))).astype(np.int16)


def channel_hit_rates(channel_lists: dict[str, pd.DataFrame], positives: pd.DataFrame, prior_strength: float = 50.0,
                      credible_low: float = 0.1) -> pd.DataFrame:
    """How often each channel's candidate at each rank bucket is a positive, on held-out requests.

    Each bucket's rate has a Beta posterior centred on the channel's overall rate (a prior of
    ``prior_strength`` pseudo-trials); ``hit_rate`` is its ``credible_low`` quantile, made
    non-increasing with depth so a sparse deep bucket never outranks the channel's own head.

    Args:
        channel_lists: channel name → its retrieved lists (request_id, item_id, rank) for the held-out requests.
        positives: (request_id, item_id) positives of those requests.

    Returns:
        channel, bucket, hits, trials, hit_rate.
    """
    positive_keys = positives[[S.REQUEST_ID, S.ITEM_ID]].drop_duplicates().assign(_hit=1)
    frames = []
    for name, found in channel_lists.items():
        if found.empty:
            continue
        judged = found[[S.REQUEST_ID, S.ITEM_ID, S.RANK]].merge(positive_keys, on=[S.REQUEST_ID, S.ITEM_ID], how="left")
        judged["bucket"] = rank_bucket(judged[S.RANK].to_numpy())
        stats = judged.groupby("bucket")["_hit"].agg(hits="sum", trials="size").reset_index()
        frames.append(stats.assign(channel=name))
    if not frames:
        return pd.DataFrame({S.CHANNEL: pd.Series(dtype="str"), "bucket": pd.Series(dtype=np.int16), "hits": [], "trials": [], "hit_rate": []})
    table = pd.concat(frames, ignore_index=True)
    # A thin bucket shrinks toward its own channel's overall rate: a weak channel's sparse deep
    # buckets must not borrow the strong channels' hits.
    by_channel = table.groupby(S.CHANNEL)[["hits", "trials"]].transform("sum")
    channel_rate = (by_channel["hits"] + 1) / (by_channel["trials"] + 2)  # Laplace: a channel with no hits still has a proper prior
    alpha = table["hits"] + prior_strength * channel_rate
    beta = table["trials"] - table["hits"] + prior_strength * (1 - channel_rate)
    # The merge ranks by a lower credible bound, not the mean: a candidate from a well-measured
    # channel is only displaced by one whose advantage the held-out data actually shows.
    table["hit_rate"] = scipy.stats.beta.ppf(credible_low, alpha, beta)
    table = table.sort_values([S.CHANNEL, "bucket"])
    table["hit_rate"] = table.groupby(S.CHANNEL)["hit_rate"].cummin()
    return table[[S.CHANNEL, "bucket", "hits", "trials", "hit_rate"]].reset_index(drop=True)


def _stack(channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int]) -> pd.DataFrame:
    """Every channel's list cut at its quota, stacked with ``channel``, ``priority`` (order in
    ``quotas``), and integer codes ``_request`` and ``_candidate`` (one per (request_id, item_id),
    numbered in order of appearance), so merging never hashes id strings twice."""
    stacked = pd.concat([channel_lists[name].loc[lambda f, q=quota: f[S.RANK] <= q].assign(channel=name, priority=priority)
                         for priority, (name, quota) in enumerate(quotas.items())], ignore_index=True)
    request, _ = pd.factorize(stacked[S.REQUEST_ID])
    item, items = pd.factorize(stacked[S.ITEM_ID])
    stacked["_request"] = request
    # Factorizing the pair as one int64 is ~10x faster than factorizing a MultiIndex of two string columns.
    stacked["_candidate"] = pd.factorize(request.astype(np.int64) * max(len(items), 1) + item)[0]
    return stacked


def _by_channel(stacked: pd.DataFrame, channels, column: str) -> dict[str, np.ndarray]:
    """channel → (candidates,) float32 of ``column`` where that channel listed the candidate, NaN elsewhere
    (indexed by the ``_candidate`` codes of :func:`_stack`; a channel lists an item once per request)."""
    candidate = stacked["_candidate"].to_numpy()
    # Integer codes of the channel column: comparing millions of Python strings once per channel cost seconds.
    codes, names = pd.factorize(stacked[S.CHANNEL])
    code_of = {str(name): code for code, name in enumerate(names)}
    values = stacked[column].to_numpy(dtype=np.float32) if column in stacked else np.full(len(stacked), np.nan, dtype=np.float32)
    n = int(candidate.max()) + 1 if len(candidate) else 0
    out = {}
    for name in channels:
        mine = codes == code_of.get(name, -2)  # -2: a channel that listed nothing matches no row (factorize's codes are >= -1)
        out[name] = np.full(n, np.nan, dtype=np.float32)
        out[name][candidate[mine]] = values[mine]
    return out


def _candidate_hits(stacked: pd.DataFrame, candidate: np.ndarray, positives: pd.DataFrame, method: str) -> np.ndarray:
    """Whether each candidate (by code) is a positive; an error naming ``method`` when there is nothing to learn from."""
    first = stacked.iloc[np.unique(candidate, return_index=True)[1]][[S.REQUEST_ID, S.ITEM_ID]]  # one row per code, in code order
    hit = pd.MultiIndex.from_frame(first).isin(pd.MultiIndex.from_frame(positives[[S.REQUEST_ID, S.ITEM_ID]]))
    if hit.all() or not hit.any():
        raise ValueError(f"recall.merge {method}: the held-out lists need both positives and non-positives; got {int(hit.sum())} "
                         f"positives among {len(hit)} candidates")
    return hit


class LearnedMerge:
    """A logistic regression of "this candidate is a positive" on which channels found it and at what
    rank (one indicator per channel × half-octave rank bucket), fitted on held-out requests.

    Unlike :func:`channel_hit_rates`' noisy-OR, it learns how much a second channel adds when the
    two find the same items (correlated channels add little), so the merged head beats the best
    single channel's. Indicators not seen in fitting are ignored.
    """

    def __init__(self, regularization: float = 1.0):
        self.regularization = regularization

    def _design(self, stacked: pd.DataFrame) -> tuple[object, np.ndarray, np.ndarray]:
        """(candidates × indicators sparse matrix, candidate code per stacked row, indicator names of the columns)."""
        import scipy.sparse as sp

        candidate = stacked["_candidate"].to_numpy()
        # Half-octave buckets (1, 2, 3, 4-5, 6-7, 8-11, …): finer than the calibrated merge's octaves,
        # which left the merged top 100 below the best channel's on the default world (0.7634 vs 0.7684;
        # half-octaves 0.7707); the regression pools evidence across buckets, so thin ones are fine.
        bucket = np.floor(2 * np.log2(np.maximum(stacked[S.RANK].to_numpy(), 1))).astype(np.int16)
        names = stacked[S.CHANNEL].astype("str").to_numpy(dtype=object) + "@" + bucket.astype(str).astype(object)
        columns = self.columns_ if hasattr(self, "columns_") else pd.Index(np.unique(names))
        col = columns.get_indexer(names)
        keep = col >= 0
        matrix = sp.csr_matrix((np.ones(int(keep.sum())), (candidate[keep], col[keep])), shape=(candidate.max() + 1 if len(candidate) else 0, len(columns)))
        matrix.data[:] = 1.0  # a channel lists an item once; guard against duplicates anyway
        return matrix, candidate, columns

    def fit(self, channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> "LearnedMerge":
        """Fit on held-out requests' lists (``channel_lists``, cut at ``quotas``) and their (request_id, item_id) positives."""
        from sklearn.linear_model import LogisticRegression

        stacked = _stack(channel_lists, quotas)
        matrix, candidate, self.columns_ = self._design(stacked)
        self.model_ = LogisticRegression(C=self.regularization, max_iter=2000).fit(matrix, _candidate_hits(stacked, candidate, positives, "learned"))
        return self

    def candidate_scores(self, stacked: pd.DataFrame) -> np.ndarray:
        """P(positive) of each stacked row's candidate (equal for the rows of one candidate)."""
        check_fitted(self, "model_", "candidate_scores")
        if stacked.empty:
            return np.zeros(0)
        matrix, candidate, _ = self._design(stacked)
        return self.model_.predict_proba(matrix)[:, 1][candidate]

    def save(self, directory: Path) -> None:
        """``learned_merge.json``: the regularization, the indicator columns and the fitted coefficients."""
        check_fitted(self, "model_", "save")
        S.write_json({"regularization": self.regularization, "columns": self.columns_.tolist(), "coef": self.model_.coef_.tolist(),
                      "intercept": self.model_.intercept_.tolist(), "classes": self.model_.classes_.tolist()}, directory / "learned_merge.json")

    @classmethod
    def load(cls, directory: Path) -> "LearnedMerge":
        """The merge :meth:`save` wrote: a logistic regression rebuilt from its coefficients."""
        from sklearn.linear_model import LogisticRegression

        state = S.read_json(directory / "learned_merge.json")
        merge = cls(state["regularization"])
        merge.columns_ = pd.Index(state["columns"])
        model = LogisticRegression(C=merge.regularization, max_iter=2000)
        model.coef_, model.intercept_ = np.asarray(state["coef"]), np.asarray(state["intercept"])
        model.classes_, model.n_features_in_ = np.asarray(state["classes"]), len(merge.columns_)
        merge.model_ = model
        return merge

    def summary(self) -> pd.DataFrame:
        """The fitted log-odds per indicator: channel, bucket (floor(2 log2 rank)), coefficient (the run's ``recall.calibration`` table)."""
        check_fitted(self, "model_", "summary")
        channel, bucket = zip(*(c.rsplit("@", 1) for c in self.columns_))
        return pd.DataFrame({S.CHANNEL: list(channel), "bucket": np.array(bucket, dtype=np.int16), "coefficient": self.model_.coef_[0]})


class GBDTMerge:
    """A LightGBM classifier of "this candidate is a positive" on every channel's rank and score for
    it (missing where that channel did not find it) and how many channels found it, fitted on
    held-out requests.

    Beyond :class:`LearnedMerge`'s rank indicators it sees the channels' own scores, which carry
    what ranks hide (a popularity candidate's tier: the query's clicks or the global list; how far
    an embedding match is from the next), and it learns interactions between channels. On the
    default world at quota 200 per channel its merged top 100 found 0.786 of the test positives,
    against 0.768 for the best channel (two_tower) and 0.768 for the logistic merge.

    Small, slow and coarse-leaved by default: fitted on 1,000 requests (half of the held-out set,
    as in :func:`choose_merge`), 300 trees of 31 leaves at 0.05 fell to the logistic merge's level
    (0.764), while these settings kept 0.780 (0.786 on 2,000 requests). Half the trees at twice the
    rate would halve the cost of scoring every candidate of every request (~11 s of the default
    world's recall stage), but lost 0.0015 / 0.0045 / 0.0048 of merged recall@100 on seeds 42-44.
    """

    def __init__(self, n_estimators: int = 200, learning_rate: float = 0.03, num_leaves: int = 15,
                 min_child_samples: int = 500, seed: int = 0):
        self.n_estimators, self.learning_rate, self.num_leaves = n_estimators, learning_rate, num_leaves
        self.min_child_samples, self.seed = min_child_samples, seed

    def _design(self, stacked: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """(one row per candidate: ``<channel>_rank``, ``<channel>_score``, ``n_channels``; candidate code per stacked row)."""
        candidate = stacked["_candidate"].to_numpy()
        ranks, scores = _by_channel(stacked, self.channels_, S.RANK), _by_channel(stacked, self.channels_, S.SCORE)
        design = pd.DataFrame({f"{name}_{value}": table[name] for name in self.channels_
                               for value, table in ((S.RANK, ranks), (S.SCORE, scores))})
        design["n_channels"] = design[[f"{c}_rank" for c in self.channels_]].notna().sum(axis=1).astype(np.float32)
        return design, candidate

    def fit(self, channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> "GBDTMerge":
        """Fit on held-out requests' lists (``channel_lists``, cut at ``quotas``) and their (request_id, item_id) positives."""
        import lightgbm as lgb

        stacked = _stack(channel_lists, quotas)
        self.channels_ = list(quotas)
        design, candidate = self._design(stacked)
        hit = _candidate_hits(stacked, candidate, positives, "gbdt")
        # The booster alone is kept: its predict is the classifier's P(positive), and it saves as LightGBM text.
        self.booster_ = lgb.LGBMClassifier(n_estimators=self.n_estimators, learning_rate=self.learning_rate, num_leaves=self.num_leaves,
                                           min_child_samples=self.min_child_samples, random_state=self.seed, deterministic=True,
                                           force_row_wise=True, verbose=-1).fit(design, hit).booster_
        return self

    def candidate_scores(self, stacked: pd.DataFrame) -> np.ndarray:
        """P(positive) of each stacked row's candidate (equal for the rows of one candidate)."""
        check_fitted(self, "booster_", "candidate_scores")
        if stacked.empty:  # no channel found anything: nothing to score (LightGBM refuses an empty frame)
            return np.zeros(0)
        design, candidate = self._design(stacked)
        return tree_predict(self.booster_, design)[candidate]  # compiled trees where they pay (ranking.compiled)

    def summary(self) -> pd.DataFrame:
        """feature, gain: what the merge leans on (the run's ``recall.calibration`` table)."""
        check_fitted(self, "booster_", "summary")
        gain = self.booster_.feature_importance(importance_type="gain")
        return pd.DataFrame({"feature": self.booster_.feature_name(), "gain": gain}).sort_values("gain", ascending=False, ignore_index=True)

    def save(self, directory: Path) -> None:
        """``gbdt_merge.txt`` (the LightGBM model as text) and ``gbdt_merge.json`` (hyperparameters, channels)."""
        check_fitted(self, "booster_", "save")
        self.booster_.save_model(str(directory / "gbdt_merge.txt"))
        S.write_json({"params": S.get_params(self),
                      "channels": self.channels_}, directory / "gbdt_merge.json")

    @classmethod
    def load(cls, directory: Path) -> "GBDTMerge":
        """The merge :meth:`save` wrote."""
        import lightgbm as lgb

        meta = S.read_json(directory / "gbdt_merge.json")
        merge = cls(**meta["params"])
        merge.channels_, merge.booster_ = list(meta["channels"]), lgb.Booster(model_file=str(directory / "gbdt_merge.txt"))
        return merge


MERGES = ("gbdt", "learned", "calibrated", "interleave")


def fit_merge(method: str, held_out: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> dict:
    """The keyword arguments of :func:`merge_candidates` for ``method``, fitted on held-out lists and their positives."""
    if method == "gbdt":
        return {"learned": GBDTMerge().fit(held_out, quotas, positives)}
    if method == "learned":
        return {"learned": LearnedMerge().fit(held_out, quotas, positives)}
    if method == "calibrated":
        return {"hit_rates": channel_hit_rates(held_out, positives)}
    if method == "interleave":
        return {}
    raise ValueError(f"merge method must be one of {list(MERGES)}. Got {method!r} instead.")


def choose_merge(held_out: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame, k: int,
                 ks: tuple[int, ...], seed: int = 0) -> tuple[str, dict[str, float]]:
    """The merge that finds the most held-out positives, by 2-fold cross-validation over the held-out requests.

    Each method is fitted on one half and scored on the other (mean recall at each of ``ks`` within
    the merged top ``k``), then the halves swap. A learned merge wins with plenty of held-out
    requests; on a few hundred the calibrated one's shrinkage can win, and this picks per run
    rather than per guess.

    Returns:
        (the best method, {method: its mean cross-validated recall}).
    """
    from rankpipe.ranking.metrics import recall_at_ks

    requests = pd.Index(pd.unique(pd.concat([frame[S.REQUEST_ID] for frame in held_out.values()], ignore_index=True)))
    fold = np.random.default_rng(seed).permutation(len(requests)) % 2
    scores: dict[str, list[float]] = {m: [] for m in MERGES}
    for f in (0, 1):
        fit_ids, eval_ids = requests[fold != f], requests[fold == f]
        fit_lists = {n: frame[frame[S.REQUEST_ID].isin(fit_ids)] for n, frame in held_out.items()}
        eval_lists = {n: frame[frame[S.REQUEST_ID].isin(eval_ids)] for n, frame in held_out.items()}
        eval_positives = positives[positives[S.REQUEST_ID].isin(eval_ids)]
        for method in MERGES:
            try:
                fitted = fit_merge(method, fit_lists, quotas, positives[positives[S.REQUEST_ID].isin(fit_ids)])
            except ValueError:  # e.g. a half without positives: the method can't be judged on it
                continue
            merged = merge_candidates(eval_lists, quotas, k, **fitted)
            cuts = [cut for cut in ks if cut <= k]
            at = recall_at_ks(merged, eval_positives, cuts) if cuts else {}
            scores[method].append(float(np.mean([recall for recall, _ in at.values()])) if at else float("nan"))
    means = {m: float(np.mean(v)) if v and np.isfinite(v).all() else float("nan") for m, v in scores.items()}
    judged = {m: v for m, v in means.items() if np.isfinite(v)}
    return (max(judged, key=judged.get) if judged else "interleave"), means


def merge_candidates(channel_lists: dict[str, pd.DataFrame], quotas: dict[str, int], k: int,
                     hit_rates: pd.DataFrame | None = None, learned: LearnedMerge | GBDTMerge | None = None) -> pd.DataFrame:
    """Merge channel lists (each capped at its quota), dedupe, keep the first ``k`` per request.

    With ``learned`` (a fitted :class:`GBDTMerge` or :class:`LearnedMerge`), lists are ordered by its P(positive). With
    ``hit_rates`` (see :func:`channel_hit_rates`), a candidate's merge score is the chance that at
    least one channel that found it is right, ``1 - prod(1 - p(channel, rank))``, and lists are
    ordered by it: channels that find more positives on held-out requests get more of the head.
    Without either, channels are interleaved by rank. Channel order in ``quotas`` breaks ties.

    Returns:
        request_id, item_id, rank (1-based merged rank), channel (the strongest channel that found
        it), merge_score, ``<channel>_score`` per channel (NaN when that channel did not return it).
    """
    stacked = _stack(channel_lists, quotas)
    if learned is not None:
        stacked[S.MERGE_SCORE] = learned.candidate_scores(stacked)
        key_first, key_second = -stacked[S.MERGE_SCORE].to_numpy(), np.zeros(len(stacked))
    elif hit_rates is not None and len(hit_rates):
        lookup = hit_rates.set_index([S.CHANNEL, "bucket"])["hit_rate"]
        keys = pd.MultiIndex.from_arrays([stacked[S.CHANNEL].to_numpy(), rank_bucket(stacked[S.RANK].to_numpy())])
        p = lookup.reindex(keys).to_numpy(dtype=np.float64)
        p = np.nan_to_num(p, nan=0.0)  # a channel never seen on held-out requests earns no head slots
        # log P(every channel that found it is wrong), summed per candidate
        log_all_wrong = np.bincount(stacked["_candidate"].to_numpy(), weights=np.log1p(-np.clip(p, 0.0, 1.0 - 1e-9)))
        stacked[S.MERGE_SCORE] = 1.0 - np.exp(log_all_wrong[stacked["_candidate"].to_numpy()])
        key_first, key_second = -stacked[S.MERGE_SCORE].to_numpy(), -p
    else:
        stacked[S.MERGE_SCORE] = np.nan
        key_first, key_second = stacked[S.RANK].to_numpy(), np.zeros(len(stacked))
    request_codes, candidate = stacked["_request"].to_numpy(), stacked["_candidate"].to_numpy()
    order = np.lexsort((stacked["priority"].to_numpy(), stacked[S.RANK].to_numpy(), key_second, key_first, request_codes))
    # The first row of each candidate in that order is its best (duplicated() hashes, where np.unique would sort millions of codes).
    first_rows = order[~pd.Series(candidate[order]).duplicated().to_numpy()]
    first_request = request_codes[first_rows]
    group_start = np.r_[0, np.flatnonzero(first_request[1:] != first_request[:-1]) + 1]  # rows are grouped by request
    rank = np.arange(len(first_rows)) - np.repeat(group_start, np.diff(np.r_[group_start, len(first_rows)])) + 1
    kept = first_rows[rank <= k]
    merged = stacked.iloc[kept][[S.REQUEST_ID, S.ITEM_ID, S.CHANNEL, S.MERGE_SCORE]].reset_index(drop=True)
    merged.insert(2, S.RANK, rank[rank <= k].astype(np.int32))
    for name, score in _by_channel(stacked, quotas, S.SCORE).items():
        merged[f"{name}_score"] = score[candidate[kept]]
    return merged


class CandidateMerge:
    """The fitted merge, applied to any requests' channel lists: ``method`` (one of :data:`MERGES`)
    fitted on held-out lists (:func:`fit_merge`), the quotas it was fitted with, and the merged
    list length ``k``. Saves as plain files (``merge.json`` plus the method's own: LightGBM text,
    JSON coefficients, or a Parquet table of hit rates)."""

    def __init__(self, method: str = "interleave", k: int = 200):
        self.method, self.k = method, k

    def fit(self, held_out: dict[str, pd.DataFrame], quotas: dict[str, int], positives: pd.DataFrame) -> "CandidateMerge":
        """Fit on held-out requests' channel lists and their (request_id, item_id) positives (nothing to fit for ``interleave``)."""
        self.quotas_ = dict(quotas)
        self.fitted_ = fit_merge(self.method, held_out, quotas, positives) if self.method != "interleave" else {}
        return self

    def merge(self, channel_lists: dict[str, pd.DataFrame], k: int | None = None) -> pd.DataFrame:
        """The merged lists (:func:`merge_candidates`) of ``channel_lists``, cut at the fitted quotas and ``k`` (default: the merge's)."""
        check_fitted(self, "fitted_", "merge")
        return merge_candidates(channel_lists, self.quotas_, self.k if k is None else k, **self.fitted_)

    def summary(self) -> pd.DataFrame | None:
        """What the fitted merge leans on (the recall stage's ``calibration`` table); None for ``interleave``."""
        check_fitted(self, "fitted_", "summary")
        if "learned" in self.fitted_:
            return self.fitted_["learned"].summary()
        return self.fitted_.get("hit_rates")

    def save(self, directory: str | Path) -> None:
        """Write ``merge.json`` and the fitted method's files into ``directory``."""
        check_fitted(self, "fitted_", "save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if "learned" in self.fitted_:
            self.fitted_["learned"].save(directory)
        elif "hit_rates" in self.fitted_:
            S.write_frame(self.fitted_["hit_rates"], directory / "hit_rates.parquet")
        S.write_json({"method": self.method, "k": self.k, "quotas": self.quotas_}, directory / "merge.json")

    @classmethod
    def load(cls, directory: str | Path) -> "CandidateMerge":
        """The merge :meth:`save` wrote."""
        directory = Path(directory)
        meta = S.read_json(directory / "merge.json")
        merge = cls(meta["method"], meta["k"])
        merge.quotas_ = {name: int(quota) for name, quota in meta["quotas"].items()}
        readers = {"gbdt": lambda: {"learned": GBDTMerge.load(directory)}, "learned": lambda: {"learned": LearnedMerge.load(directory)},
                   "calibrated": lambda: {"hit_rates": S.read_frame(directory / "hit_rates.parquet")}, "interleave": dict}
        merge.fitted_ = readers[merge.method]()
        return merge
