"""The feature builder: fitted once on the log, applied to any (request, item) pairs.

``fit(events, items, train_end)`` keeps the event history the counts read (with the items' keys
attached, :func:`~rankpipe.features.stats.enrich_history`), the catalogue, and what is learned on
the train period alone: the Beta priors of the smoothed rates and the CTR of each shown position
(for COEC). ``transform(pairs)`` is :func:`~rankpipe.features.stats.build_features` over them, so
training rows and scored candidates go through one function; each pair sees only the history before
its own ``ts``. ``save`` / ``load`` keep it as Parquet tables and JSON.

Fitted on a Dask DataFrame of events (the ``dask`` engine), the history stays on the cluster's
workers: enriched there, the priors and position CTRs counted there, the statistics computed there
by the engine's counter, and saved by them as a directory of Parquet files. :meth:`load` reads any
saved builder back whole by default, so a builder fitted on Dask scores in one process like any
other; given an engine's reader, it leaves the history on that engine's workers.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rankpipe.features.config import FeaturesConfig
from rankpipe.features.stats import build_features, count_features, enrich_history, fit_position_ctr, fit_priors
from rankpipe.pipeline import schema as S

BUILDER_FILE = "feature_builder.json"
TABLES = ("history", "items", "priors", "position_ctr")


class FeatureBuilder:
    """Point-in-time statistics, text match and item attributes for (request, item) pairs; see the module docstring.

    Args:
        windows_days / half_lives_days / dense_text / min_impressions_for_prior: as in
            :class:`~rankpipe.features.config.FeaturesConfig`.
    """

    def __init__(self, windows_days: tuple[int, ...] = (7,), half_lives_days: tuple[int, ...] = (7,), dense_text: bool = False,
                 min_impressions_for_prior: int = 20):
        self.windows_days, self.half_lives_days = windows_days, half_lives_days
        self.dense_text, self.min_impressions_for_prior = dense_text, min_impressions_for_prior

    @classmethod
    def from_config(cls, config: FeaturesConfig) -> "FeatureBuilder":
        """The builder the ``features`` config section describes."""
        return cls(tuple(config.windows_days), tuple(config.half_lives_days), config.dense_text, config.min_impressions_for_prior)

    def get_params(self) -> dict:
        """Hyperparameters as passed to ``__init__``."""
        return S.get_params(self)

    def config(self) -> FeaturesConfig:
        """The ``features`` section these hyperparameters make (what :func:`build_features` reads)."""
        return FeaturesConfig(windows_days=tuple(self.windows_days), half_lives_days=tuple(self.half_lives_days), dense_text=self.dense_text,
                              min_impressions_for_prior=self.min_impressions_for_prior)

    def fit(self, events, items: pd.DataFrame, train_end: pd.Timestamp) -> "FeatureBuilder":
        """Keep ``events`` (all of them: a pair only counts those before its own time) and ``items``;
        fit the priors and the position CTR on the events before ``train_end``. ``events`` may be a
        Dask DataFrame in time order (see the module docstring)."""
        self.history_ = _kept(enrich_history(events, items))
        self.items_ = items
        self.train_end_ = pd.Timestamp(train_end)
        self.priors_ = fit_priors(self.history_, self.train_end_, self.min_impressions_for_prior)
        self.position_ctr_ = fit_position_ctr(self.history_, self.train_end_)
        return self

    def transform(self, pairs: pd.DataFrame, counter=None) -> pd.DataFrame:
        """A float32 feature frame aligned with ``pairs`` (columns ts, user_id, item_id, query).

        ``counter``: what computes the count statistics (default
        :func:`~rankpipe.features.stats.count_features` in this process; an engine's runs it on a cluster).
        """
        S.check_fitted(self, "history_", "transform")
        if counter is None and not isinstance(self.history_, pd.DataFrame):
            raise ValueError("FeatureBuilder.transform: this builder's history is on a Dask cluster; pass that engine's counter "
                             "(rankpipe.pipeline.engine.counter_of(engine)), or load the saved builder, which reads it whole")
        return build_features(pairs, self.history_, self.items_, self.priors_, self.config(), self.position_ctr_, counter or count_features)

    def until(self, cutoff: pd.Timestamp) -> "FeatureBuilder":
        """The same fitted builder reading only the events at or before ``cutoff`` (scoring "as of" a day)."""
        S.check_fitted(self, "history_", "until")
        out = FeatureBuilder(**self.get_params())
        out.history_ = self.history_[self.history_[S.TS] <= cutoff].reset_index(drop=True)
        out.items_, out.train_end_, out.priors_, out.position_ctr_ = self.items_, self.train_end_, self.priors_, self.position_ctr_
        return out

    def without_pairs(self, pairs: pd.DataFrame) -> "FeatureBuilder":
        """The same fitted builder reading a history without any event of the (user_id, item_id)
        ``pairs``: the statistics of requests that must not know those interactions happened (the
        ``random_75_25`` protocol's inner holdout, which the ranker learns to find)."""
        S.check_fitted(self, "history_", "without_pairs")
        out = FeatureBuilder(**self.get_params())
        held = pd.MultiIndex.from_frame(pairs[[S.USER_ID, S.ITEM_ID]])
        out.history_ = self.history_[~pd.MultiIndex.from_frame(self.history_[[S.USER_ID, S.ITEM_ID]]).isin(held)].reset_index(drop=True)
        out.items_, out.train_end_, out.priors_, out.position_ctr_ = self.items_, self.train_end_, self.priors_, self.position_ctr_
        return out

    def save(self, directory: str | Path) -> None:
        """``feature_builder.json`` (hyperparameters, the train cutoff) and one Parquet file per fitted table."""
        S.check_fitted(self, "history_", "save")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name in TABLES:
            S.write_frame(getattr(self, f"{name}_"), directory / f"{name}.parquet")
        params = S.get_params(self)
        S.write_json({"params": {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()},
                      "train_end": self.train_end_.isoformat()}, directory / BUILDER_FILE)

    @classmethod
    def load(cls, directory: str | Path, read_history=S.read_frame) -> "FeatureBuilder":
        """The builder :meth:`save` wrote. ``read_history(path)`` reads its history: whole, here, by
        default; an engine's reader leaves it on a cluster (then transform with that engine's counter)."""
        directory = Path(directory)
        meta = S.read_json(directory / BUILDER_FILE)
        params = meta["params"]
        builder = cls(tuple(params["windows_days"]), tuple(params["half_lives_days"]), params["dense_text"], params["min_impressions_for_prior"])
        for name in TABLES:
            setattr(builder, f"{name}_", S.read_frame(directory / f"{name}.parquet") if name != "history" else
                    _kept(read_history(directory / "history.parquet")))
        builder.train_end_ = pd.Timestamp(meta["train_end"])
        return builder


def _kept(history):
    """A Dask history persisted in the workers' memory (the priors, the position CTRs, every count and
    save read it); a pandas one as it is."""
    return history if isinstance(history, pd.DataFrame) else history.persist()
