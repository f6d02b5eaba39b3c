"""Encoders: fitted on train only, unseen and missing values handled, state saved as JSON and reloaded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.features.encoders import (
    MISSING,
    OUT_OF_VOCABULARY,
    Bucketize,
    Categorify,
    Clip,
    FillMissing,
    HashBuckets,
    NumericPreprocessor,
    Standardize,
    TargetEncode,
    encoder_from_dict,
    encoder_to_dict,
)
from rankpipe.features.stats import missing_policies
from rankpipe.pipeline.config import FeaturesConfig


def test_categorify_unseen_and_rare_values_share_the_oov_code():
    enc = Categorify(min_count=2).fit(["a", "a", "b", "c", "c", None])
    codes = enc.transform(pd.Series(["a", "b", "c", "zzz", None]))
    assert codes[1] == OUT_OF_VOCABULARY and codes[3] == OUT_OF_VOCABULARY  # "b" too rare, "zzz" unseen
    assert codes[4] == MISSING and codes[0] != codes[2] and min(codes[0], codes[2]) >= 2
    assert codes.max() < enc.cardinality


def test_hash_buckets_are_stable_and_in_range():
    enc = HashBuckets(n_buckets=8).fit([])
    values = pd.Series([f"user{i}" for i in range(500)] + [None])
    codes = enc.transform(values)
    assert codes[-1] == MISSING and codes[:-1].min() >= 1 and codes.max() <= 8
    assert np.array_equal(codes, HashBuckets(n_buckets=8).transform(values))  # no state, same buckets
    assert len(np.unique(codes[:-1])) == 8


def test_bucketize_and_clip_use_train_quantiles_only():
    train = np.arange(100, dtype=float)
    bucket = Bucketize(n_bins=4).fit(train)
    assert list(bucket.transform([-5.0, 10.0, 60.0, 1e9, np.nan])) == [1, 1, 3, 4, MISSING]
    clip = Clip(0.05, 0.95).fit(train)
    out = clip.transform([-1e6, 50.0, 1e6, np.nan])
    assert out[0] == pytest.approx(np.quantile(train, 0.05)) and out[1] == 50.0
    assert out[2] == pytest.approx(np.quantile(train, 0.95)) and np.isnan(out[3])


@pytest.mark.parametrize("encoder", [Bucketize(), Clip(), Standardize(), FillMissing("median"), FillMissing("zero")])
def test_all_null_training_column_does_not_break_encoders(encoder):
    encoder.fit(pd.Series([np.nan, np.nan]))
    out = encoder.transform(pd.Series([1.0, np.nan]))
    assert out.shape == (2,)
    assert not np.isnan(out[0])


def test_missing_value_policies():
    train = pd.Series([1.0, 3.0, np.nan, 5.0])
    assert np.isnan(FillMissing("keep").fit(train).transform([np.nan])[0])
    assert FillMissing("zero").fit(train).transform([np.nan])[0] == 0.0
    assert FillMissing("median").fit(train).transform([np.nan])[0] == 3.0
    ind = FillMissing("indicator").fit(train)
    assert ind.transform([np.nan, 2.0]).tolist() == [3.0, 2.0] and ind.indicator([np.nan, 2.0]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="policy"):
        FillMissing("guess").fit(train)


def test_text_column_given_to_a_numeric_encoder_names_the_encoder():
    with pytest.raises(TypeError, match="Standardize.*numeric"):
        Standardize().fit(pd.Series(["a", "b"]))


def test_unfitted_encoder_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        Categorify().transform(["a"])


def test_target_encoding_out_of_fold_never_sees_its_own_row():
    """A value seen once in train: its out-of-fold encoding cannot know its own target."""
    values = [f"v{i}" for i in range(200)]
    target = np.r_[np.ones(100), np.zeros(100)]
    enc = TargetEncode(n_folds=5, smoothing=1.0)
    oof = enc.fit_transform(values, target)
    # Each value is unique, so out of fold it is unseen and gets (roughly) the other folds' mean, near 0.5.
    assert np.all(np.abs(oof - 0.5) < 0.2)
    # In-sample (transform on train) would have leaked: value's own target pulled in.
    in_sample = enc.transform(values)
    assert in_sample[:100].mean() > 0.7 and in_sample[100:].mean() < 0.3
    assert enc.transform(["never-seen", None]).tolist() == [pytest.approx(0.5)] * 2


def test_target_encoding_folds_follow_groups():
    values = ["a", "a", "b", "b"]
    groups = ["r1", "r1", "r2", "r2"]
    oof = TargetEncode(n_folds=2, smoothing=0.0, seed=3).fit_transform(values, [1.0, 1.0, 0.0, 0.0], groups)
    # rows of one group always share a fold, so both "a" rows get the same encoding
    assert oof[0] == oof[1] and oof[2] == oof[3]


@given(st.lists(st.one_of(st.none(), st.sampled_from(["x", "y", "z", "红色"])), min_size=1, max_size=30),
       st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), min_size=1, max_size=30))
@settings(max_examples=40, deadline=None)
def test_json_round_trip_gives_identical_transforms(categories, numbers):
    cats, nums = pd.Series(categories, dtype=object), pd.Series(numbers, dtype=float)
    target = np.arange(len(cats)) % 2
    fitted = [Categorify().fit(cats), HashBuckets(64).fit(cats), TargetEncode().fit(cats, target),
              Bucketize(4).fit(nums), Clip().fit(nums), Standardize().fit(nums), FillMissing("keep").fit(nums), FillMissing("median").fit(nums)]
    for enc in fitted:
        reloaded = encoder_from_dict(json.loads(json.dumps(encoder_to_dict(enc))))
        data = nums if isinstance(enc, (Bucketize, Clip, Standardize, FillMissing)) else cats
        np.testing.assert_array_equal(enc.transform(data), reloaded.transform(data))


def test_unknown_encoder_type_in_a_file_is_refused():
    with pytest.raises(ValueError, match="unknown encoder type"):
        encoder_from_dict({"type": "os.system"})


def test_every_generated_feature_has_a_declared_missing_policy():
    policies = missing_policies(["item_click_n", "item_click_n_7d", "user_click_days_since", "query_ctr", "item_coec", "bm25",
                                 "item_price", "mystery"], FeaturesConfig())
    assert policies == {"item_click_n": "zero", "item_click_n_7d": "zero", "user_click_days_since": "indicator", "query_ctr": "median",
                        "item_coec": "median", "bm25": "zero", "item_price": "median", "mystery": "indicator"}


def test_numeric_preprocessor_fits_on_train_and_reloads_from_json():
    rng = np.random.default_rng(0)
    train = pd.DataFrame({"count": rng.poisson(3, 10_000).astype(float), "since": np.where(rng.random(10_000) < 0.3, np.nan, rng.exponential(5, 10_000))})
    train.loc[0, "count"] = 1e9  # an outlier train's quantiles clip
    test = pd.DataFrame({"count": [np.nan, 2.0, 1e12], "since": [np.nan, 1.0, 2.0]})
    prep = NumericPreprocessor({"count": "zero", "since": "indicator"}).fit(train)
    out = prep.transform(test)
    assert list(out.columns) == prep.output_columns == ["count", "since", "since_missing"]
    assert np.isfinite(out.to_numpy()).all() and out.dtypes.eq(np.float32).all()
    assert list(out["since_missing"]) == [1.0, 0.0, 0.0]
    assert out["count"].iloc[2] < 10  # clipped to train's 99.9th percentile, then standardized
    fitted = prep.transform(train)
    assert abs(fitted["count"].mean()) < 1e-3 and fitted["count"].std() == pytest.approx(1.0, abs=1e-2)
    reloaded = NumericPreprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    pd.testing.assert_frame_equal(reloaded.transform(test), out)
    with pytest.raises(ValueError, match=r"\['since'\]"):
        prep.transform(test.drop(columns=["since"]))
    with pytest.raises(RuntimeError, match="not fitted"):
        NumericPreprocessor({"count": "zero"}).transform(test)
    with pytest.raises(ValueError, match="'count': 'mean'"):
        NumericPreprocessor({"count": "mean"}).fit(train)
