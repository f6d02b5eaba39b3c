"""The ranker contract over every registered ranker, parameters from the signature, and feature ablation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.ranking.rankers import RANKERS, make_ranker


def _ltr_data(seed):
    rng = np.random.default_rng(seed)
    n_groups, size = 120, 8
    X = pd.DataFrame(rng.normal(size=(n_groups * size, 4)), columns=list("abcd"))
    y = np.clip(np.round(X["a"] + 0.5 * rng.normal(size=len(X)) + 1), 0, 3).astype(int)
    return X, y.to_numpy(), np.repeat(np.arange(n_groups), size)


def _small_ranker(name, **params):
    """``name`` with the small-test ``params`` it takes (each family takes a different subset)."""
    takes = RANKERS[name].param_names()
    return make_ranker(name, **{k: v for k, v in params.items() if k in takes})


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_params_come_from_the_init_signature(name):
    import inspect

    cls = RANKERS[name]
    signature = list(inspect.signature(cls.__init__).parameters)[1:]
    assert list(cls.param_names()) == signature
    ranker = cls()
    assert ranker.get_params() == {p: inspect.signature(cls.__init__).parameters[p].default for p in signature}
    assert type(ranker)(**ranker.get_params()).get_params() == ranker.get_params()
    with pytest.raises(ValueError, match="does not take"):
        make_ranker(name, not_a_parameter=1)


def test_a_family_key_the_ranker_does_not_take_is_a_config_error():
    from rankpipe.pipeline.config import ConfigError, load_config
    from rankpipe.ranking.rankers import ranker_params

    din = load_config(None, ["rank.model=din", "rank.neural.nn_history=7"]).rank
    assert ranker_params(din, 0, "cpu")["nn_history"] == 7
    # deepfm shares the neural section but has no history: set, it is refused, not dropped.
    with pytest.raises(ConfigError, match="rank.neural.nn_history is set, but rank.model=deepfm does not take it"):
        ranker_params(load_config(None, ["rank.model=deepfm", "rank.neural.nn_history=7"]).rank, 0, "cpu")
    assert "nn_history" not in ranker_params(load_config(None, ["rank.model=deepfm"]).rank, 0, "cpu")
    # A key of another family's section is not this ranker's either, and no other section is read.
    params = ranker_params(load_config(None, ["rank.model=xgb_ndcg", "rank.lightgbm.num_leaves=7"]).rank, 0, "cpu")
    assert params["num_leaves"] == 31 and "min_data_in_leaf" not in params


def test_lightgbm_bagging_reaches_the_booster_and_changes_the_trees():
    from rankpipe.pipeline.config import load_config
    from rankpipe.ranking.rankers import ranker_params

    assert ranker_params(load_config(None, []).rank, 0, "cpu")["bagging_fraction"] == 0.5
    X, y, groups = _ltr_data(0)
    fitted = {fraction: make_ranker("lambdarank", n_estimators=20, bagging_fraction=fraction, progress=False).fit(X, y, groups)
              for fraction in (0.5, 1.0)}
    assert fitted[0.5].booster_.params["bagging_freq"] == 1 and fitted[1.0].booster_.params["bagging_freq"] == 0
    assert not np.allclose(fitted[0.5].predict(X), fitted[1.0].predict(X))  # rows were drawn: other trees


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_contract(name, tmp_path):
    X, y, g = _ltr_data(0)
    Xv, yv, gv = _ltr_data(1)
    ranker = _small_ranker(name, n_estimators=30, min_data_in_leaf=5, progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        ranker.predict(X)
    assert ranker.fit(X, y, g, Xv, yv, gv) is ranker
    scores = ranker.predict(Xv)
    assert scores.shape == (len(Xv),)
    again = _small_ranker(name, n_estimators=30, min_data_in_leaf=5, progress=False).fit(X, y, g, Xv, yv, gv)
    np.testing.assert_array_equal(again.predict(Xv), scores)  # deterministic with a seed
    ranker.save(tmp_path)
    loaded = type(ranker).load(tmp_path)
    np.testing.assert_allclose(loaded.predict(Xv), scores, rtol=0, atol=1e-12)
    assert ranker.feature_importance().index[0] == "a"  # the only informative feature
    with pytest.raises(ValueError, match="missing"):
        ranker.predict(Xv.drop(columns=["b"]))
    with pytest.raises(ValueError, match="rank.model"):
        make_ranker("nope")


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_ranker_does_not_learn_from_row_order(name):
    # Lists arrive sorted by their label (as logged lists arrive in the order shown, where position
    # predicts clicks), and the features carry no signal. Were ties broken by row order, every
    # tied model would score NDCG 1 on validation.
    rng = np.random.default_rng(3)
    n_groups, size = 200, 10
    y = np.tile(np.repeat([2, 1, 0], [1, 2, size - 3]), n_groups)
    X = pd.DataFrame({"noise": rng.integers(0, 2, n_groups * size).astype(float)})
    g = np.repeat(np.arange(n_groups), size)
    ranker = _small_ranker(name, n_estimators=20, min_data_in_leaf=5, progress=False).fit(X, y, g, X, y, g)
    assert ranker.valid_score_ < 0.7, ranker.valid_score_  # a random order scores about 0.55 here, row order 0.79


def test_feature_ablation_finds_the_informative_group():
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.stages.rank import feature_ablation, ranker_from_config
    from rankpipe.ranking.metrics import ndcg_at_k

    def lists(seed):
        X, y, g = _ltr_data(seed)
        return X.assign(grade=y, request_id=g.astype(str))

    train, valid, test = lists(0), lists(1), lists(2)
    config = load_config(None, ["rank.lightgbm.n_estimators=30", "rank.lightgbm.min_data_in_leaf=5"])
    groups = {"signal": ["a"], "noise": ["b", "c", "d"]}
    names = ["a", "b", "c", "d"]
    ranker = ranker_from_config(config, progress=False).fit(train[names], train["grade"].to_numpy(), train["request_id"].to_numpy(),
                                                            valid[names], valid["grade"].to_numpy(), valid["request_id"].to_numpy())
    full = ndcg_at_k(test["request_id"], ranker.predict(test[names]), test["grade"], 10)
    out = feature_ablation(config, train, valid, test, groups, full)
    assert out["ablation.noise.ndcg_at_10"] - out["ablation.noise.delta"] == pytest.approx(full)
    assert out["ablation.signal.delta"] < -0.05  # dropping the only informative feature hurts
    assert out["ablation.signal.delta"] < out["ablation.noise.delta"]


def test_cross_validated_lambdarank_bags_fold_models_and_scores_valid_out_of_fold(tmp_path):
    """rank.lightgbm.cv_folds: the tree count from the folds' mean curve, the refit on every list, a
    prediction that is half refit and half fold mean, the validation rows scored by the fold model
    that never saw them, and all of it back from disk."""
    from rankpipe.ranking.metrics import ndcg_at_k
    from rankpipe.ranking.rankers import LambdaRankRanker

    X, y, g = _ltr_data(0)
    Xv, yv, gv = _ltr_data(1)
    Xv.index += 10_000  # as the funnel's frames: validation rows keep their own index
    ranker = LambdaRankRanker(n_estimators=40, min_data_in_leaf=5, cv_folds=4, progress=False).fit(X, y, g, Xv, yv, gv + 1000)
    assert len(ranker.fold_boosters_) == 4 and 1 <= ranker.fold_boosters_[0][1] <= 40
    fold_mean = np.mean([b.predict(Xv, num_iteration=n) for b, n in ranker.fold_boosters_], axis=0)
    refit = ranker.booster_.predict(Xv, num_iteration=ranker.best_iteration_)
    np.testing.assert_allclose(ranker.predict(Xv), 0.5 * refit + 0.5 * fold_mean)
    held_out = ranker.held_out_scores(Xv)
    assert not np.allclose(held_out, fold_mean)  # each row from one fold model only
    assert ranker.valid_score_ == pytest.approx(ndcg_at_k(gv, held_out, yv, 10))
    assert ranker.calibrate(Xv, yv).predict_proba(Xv).shape == (len(Xv),)
    ranker.save(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("fold_*.txt")) == [f"fold_{k}.txt" for k in range(4)]
    loaded = LambdaRankRanker.load(tmp_path)
    np.testing.assert_allclose(loaded.predict(Xv), ranker.predict(Xv), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="needs at least as many lists"):
        LambdaRankRanker(cv_folds=4, progress=False).fit(X[:16], y[:16], g[:16])
    from rankpipe.pipeline.schema import ConfigError

    for bad in (1, -2, 2.5, True):
        with pytest.raises(ConfigError, match="rank.lightgbm.cv_folds must be 0"):
            LambdaRankRanker(cv_folds=bad)
