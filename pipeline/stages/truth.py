"""The synthetic world's truth, for the stages that score against it (evaluate, promote): None on
any dataset that does not know it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.config import Config
from rankpipe.pipeline.stages.base import StageInputs


def oracle(inputs: StageInputs) -> Callable[[pd.DataFrame], np.ndarray] | None:
    """True relevance for (user_id, query, item_id, ts) rows when the dataset knows it (the synthetic world)."""
    try:
        tables = [inputs.table("prepare", n) for n in ("oracle_users", "oracle_items", "oracle_queries")]
    except KeyError:
        return None
    from rankpipe.pipeline.datasets.synthetic import true_relevance

    return lambda pairs: true_relevance(*tables, pairs)


def list_value(inputs: StageInputs, config: Config) -> Callable[[pd.DataFrame], pd.DataFrame] | None:
    """Expected clicks and purchases of whole lists under the synthetic world's own user model
    (:func:`~rankpipe.pipeline.datasets.synthetic.expected_list_value`), when the dataset knows it."""
    try:
        tables = [inputs.table("prepare", n) for n in ("oracle_users", "oracle_items", "oracle_queries")]
    except KeyError:
        return None
    from rankpipe.pipeline.datasets.synthetic import expected_list_value

    world = config.dataset.synthetic
    requests = inputs.table("prepare", "requests")[[S.REQUEST_ID, S.USER_ID, S.QUERY, S.TS]]

    def value(lists: pd.DataFrame) -> pd.DataFrame:
        shown = lists[[S.REQUEST_ID, S.ITEM_ID, S.POSITION]].merge(requests, on=S.REQUEST_ID, how="left")
        return expected_list_value(*tables, shown, world.satiation, world.cascade_stop).set_index(S.REQUEST_ID)

    return value
