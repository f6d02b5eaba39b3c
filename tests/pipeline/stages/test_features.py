"""The features stage on the tiny world: one feature row per logged pair, float32, and a saved builder that reproduces them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.features.builder import FeatureBuilder
from rankpipe.pipeline import schema as S
from rankpipe.pipeline.stages.base import with_request_context


def test_one_row_per_logged_pair_and_the_builder_reproduces_them(tiny_funnel):
    logged, labels = tiny_funnel.tables[("features", "logged")], tiny_funnel.tables[("prepare", "labels")]
    assert len(logged) == len(labels)
    features = logged.drop(columns=[S.REQUEST_ID, S.ITEM_ID, S.SPLIT, S.GRADE])
    assert (features.dtypes == np.float32).all()
    builder = FeatureBuilder.load(tiny_funnel.model_dir("features", "builder"))
    sample = labels.sample(200, random_state=0)
    pairs = with_request_context(sample, tiny_funnel.tables[("prepare", "requests")])
    again = builder.transform(pairs)
    expected = logged.set_index([S.REQUEST_ID, S.ITEM_ID]).loc[pd.MultiIndex.from_frame(pairs[[S.REQUEST_ID, S.ITEM_ID]]), features.columns]
    np.testing.assert_array_equal(again.to_numpy(), expected.to_numpy())
    assert set(tiny_funnel.tables[("features", "priors")].columns) == {"group", "rate", "alpha", "beta"}
