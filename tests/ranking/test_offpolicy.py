"""Off-policy estimates on simulated position-biased clicks, where the truth is known exactly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rankpipe.ranking.offpolicy import PositionClickModel, counterfactual_clicks, estimate

TRUE_THETA = 1.0 / np.arange(1, 11) ** 0.8


def _log(seed: int, n_requests: int = 20000, n_items: int = 300, list_size: int = 10):
    """A logging policy that shows 10 items per request in a noisy popularity order, so the same
    (context, item) lands at many positions; clicks drawn from the PBM with known θ and γ."""
    rng = np.random.default_rng(seed)
    gamma = rng.beta(2, 5, n_items)
    popularity = rng.zipf(1.6, n_items).astype(float)
    request = np.repeat(np.arange(n_requests), list_size)
    item = np.concatenate([rng.choice(n_items, list_size, replace=False, p=popularity / popularity.sum()) for _ in range(n_requests)])
    score = np.log(popularity[item]) + rng.normal(size=len(item))
    order = np.lexsort((-score, request))
    request, item = request[order], item[order]
    position = np.tile(np.arange(1, list_size + 1), n_requests)
    click = rng.random(len(item)) < TRUE_THETA[position - 1] * gamma[item]
    frame = pd.DataFrame({"request_id": request.astype(str), "query": np.where(request % 3 == 0, "q", None), "item_id": item.astype(str),
                          "position": position, "click": click.astype(np.int8)})
    return frame, pd.Series(gamma, index=np.arange(n_items).astype(str))


def test_the_examination_curve_is_recovered_from_the_log_alone():
    log, _ = _log(0)
    model = PositionClickModel().fit(log)
    assert model.examination_.iloc[0] == 1.0
    assert np.allclose(model.examination_.to_numpy(), TRUE_THETA, rtol=0.08)
    assert model.examination(np.array([1, 50])).tolist() == [1.0, model.examination_.iloc[-1]]  # past the deepest position: its θ


def test_ips_is_unbiased_for_a_reordering_and_dr_equals_it_there():
    log, gamma = _log(1)
    model = PositionClickModel().fit(log)
    reversed_lists = log.assign(position=11 - log["position"])[["request_id", "item_id", "position"]]  # the worst order for the head
    per_request = counterfactual_clicks(reversed_lists, log, model)
    assert np.allclose(per_request["ips"], per_request["dr"]) and (per_request["covered"] == 1).all()
    table = estimate(per_request, seed=0).set_index("estimator")
    truth = float((TRUE_THETA[reversed_lists["position"] - 1] * reversed_lists["item_id"].map(gamma)).sum() / log["request_id"].nunique())
    assert table.loc["ips", "ci_low"] <= truth <= table.loc["ips", "ci_high"]
    assert table.loc["snips", "estimate"] == pytest.approx(table.loc["ips", "estimate"])


def test_items_never_shown_are_ips_blind_spot_and_snips_and_dr_fill_it():
    log, _ = _log(2, n_requests=1500)
    model = PositionClickModel().fit(log)
    first = log[log["position"] == 1]
    lists = pd.concat([first[["request_id", "item_id"]].assign(position=1),
                       first[["request_id"]].assign(item_id="never-shown", position=2)], ignore_index=True)
    per_request = counterfactual_clicks(lists, log, model)
    assert per_request["covered"].between(0.5, 0.75).all()  # θ_1 / (θ_1 + θ_2)
    table = estimate(per_request).set_index("estimator")
    assert table.loc["snips", "estimate"] > table.loc["ips", "estimate"] and table.loc["dr", "estimate"] > table.loc["ips", "estimate"]


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="empty"):
        PositionClickModel().fit(pd.DataFrame({"query": [], "item_id": [], "position": [], "click": []}))
    with pytest.raises(ValueError, match="1-based positions"):
        PositionClickModel().fit(pd.DataFrame({"query": ["q"], "item_id": ["a"], "position": [0], "click": [1]}))
