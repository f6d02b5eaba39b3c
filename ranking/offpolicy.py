"""Counterfactual estimates of a new list policy's clicks, from a position-biased click log.

The click model is the position-based model (PBM): a user examines the slot at position ``p`` with
probability ``θ_p`` and clicks an examined item with its attractiveness ``γ`` for the request, so
``P(click) = θ_p · γ``. The examination probabilities are not logged; :class:`PositionClickModel`
estimates them from the log alone by intervention harvesting (Agarwal et al., WSDM 2019): the same
item shown at different positions for the same context is what separates ``θ`` from
``γ``, so it needs a logging policy whose order varies.

Given ``θ``, the expected clicks of a new list ``L`` for a logged request are ``Σ_k θ_k · γ(L_k)``,
and a logged click of item ``i`` at position ``p`` is an unbiased estimate of ``θ_p · γ(i)``. Three
estimators (:func:`counterfactual_clicks`), per request, then averaged with a bootstrap CI:

- ``ips``: ``Σ_{k: L_k logged} θ_k / θ_p(L_k) · click(L_k)``. Unbiased when every item of the new list
  was shown in the logged list (a reordering of it, as the ranker's lists of logged requests are); an
  item the log never showed for that request counts as no click, so otherwise it is low.
- ``snips``: IPS self-normalized by the share of the new list's examination ``Σ θ_k`` that falls on
  logged items (a ratio of means): it assumes the unlogged items are as attractive as the logged
  ones. Equal to IPS on a reordering.
- ``dr``: doubly robust: a direct model's ``θ_k · γ̂`` for every slot (γ̂ from the same
  fit, per (context, item), else per item, else the mean), corrected by ``θ_k / θ_p · (click − θ_p · γ̂)`` on
  logged items. Equal to IPS on a reordering; for unlogged items it is as good as ``γ̂``.

Under list effects the PBM does not hold (the synthetic world's ``satiation`` and ``cascade_stop``):
the estimates are then biased, and a report says which world it measured.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

ESTIMATORS = ("ips", "snips", "dr")


def _codes(values: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """(int64 code of each value, the distinct values in first-appearance order)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return codes.astype(np.int64), pd.Index(uniques)


def pair_keys(context: pd.Series, item: pd.Series) -> pd.Series:
    """One key per (context, item): a query's text (feed requests: no query) and the item id."""
    return context.fillna("").astype(str) + "\x1f" + item.astype(str)


class NotIdentifiable(ValueError):
    """The log cannot tell position from relevance: the logging policy never moved items across the
    slots (too few clicked (context, item) pairs shown at more than one position)."""


class PositionClickModel:
    """The PBM's examination by position, ``examination_`` (θ, θ_1 = 1), estimated by intervention
    harvesting, and the attractiveness ``γ`` of each (context, item) pair and each item of the log.

    θ: wherever the same (context, item) was shown at both positions ``k`` and ``k'`` (the logging
    policy's own variation moves items around), its click rates there estimate ``θ_k γ`` and
    ``θ_k' γ``; summed over those pairs (each weighted ``n_k n_k' / (n_k + n_k')``, so a pair seen
    once counts little) their ratio estimates ``θ_k' / θ_k`` (Agarwal et al., WSDM 2019, "all pairs").
    Every pair of positions gives one such ratio; ``log θ`` is their least-squares fit, weighted by the
    clicks behind each ratio. (EM over (context, item, position) on a log this sparse flattens θ: a
    pair seen once explains its click by its own γ.)

    γ: a pair's clicks over its expected examinations, ``Σ click / Σ θ_p``, shrunk towards its item's
    rate by ``prior_views`` examinations (and an item's towards the log's).
    """

    def __init__(self, prior_views: float = 5.0, min_clicks: float = 20.0):
        self.prior_views, self.min_clicks = prior_views, min_clicks

    def fit(self, logged: pd.DataFrame, context: str = "query", item: str = "item_id", position: str = "position",
            click: str = "click") -> PositionClickModel:
        """Fit on rows (context, item, position ≥ 1, click 0/1): one per shown slot."""
        if logged.empty:
            raise ValueError("the click log is empty: no shown slot to estimate position propensities from")
        p = logged[position].to_numpy(dtype=np.int64)
        if p.min() < 1:
            raise ValueError(f"column '{position}' must hold 1-based positions. Got {p.min()} instead.")
        c = logged[click].to_numpy(dtype=np.float64)
        pair, pairs = _codes(pair_keys(logged[context], logged[item]))
        n_pairs = len(pairs)
        n_pos = int(p.max())
        cell = pair * n_pos + (p - 1)
        views = np.bincount(cell, minlength=n_pairs * n_pos).reshape(n_pairs, n_pos).astype(np.float64)
        clicks = np.bincount(cell, weights=c, minlength=n_pairs * n_pos).reshape(n_pairs, n_pos)
        rate = np.divide(clicks, views, out=np.zeros_like(clicks), where=views > 0)
        rows, targets, weights = [], [], []
        for k in range(n_pos):
            for j in range(k + 1, n_pos):
                both = (views[:, k] > 0) & (views[:, j] > 0)
                w = views[both, k] * views[both, j] / (views[both, k] + views[both, j])
                at_k, at_j = float((w * rate[both, k]).sum()), float((w * rate[both, j]).sum())
                evidence = float(clicks[both, k].sum() + clicks[both, j].sum())
                if at_k > 0 and at_j > 0 and evidence >= self.min_clicks:
                    row = np.zeros(n_pos)
                    row[j], row[k] = 1.0, -1.0
                    rows.append(row), targets.append(np.log(at_j / at_k)), weights.append(evidence)
        log_theta = np.zeros(n_pos)
        reached = {0} | {int(np.flatnonzero(r > 0)[0]) for r in rows}
        if len(reached) < n_pos:
            missing = sorted(set(range(n_pos)) - reached)
            raise NotIdentifiable(f"positions {[m + 1 for m in missing]} share too few clicked (context, item) pairs with the others to "
                             "estimate their examination: the logging policy never moved items there")
        design, w = np.array(rows)[:, 1:], np.sqrt(np.array(weights))  # log θ_1 = 0: the first column drops out
        log_theta[1:] = np.linalg.lstsq(design * w[:, None], np.array(targets) * w, rcond=None)[0]
        theta = np.minimum(np.exp(log_theta), 1.0)
        self.examination_ = pd.Series(theta, index=pd.RangeIndex(1, n_pos + 1, name=position), name="examination")

        exposure = theta[p - 1]
        item_codes, item_ids = _codes(logged[item])
        n_items = len(item_ids)
        item_clicks = np.bincount(item_codes, weights=c, minlength=n_items)
        item_exposure = np.bincount(item_codes, weights=exposure, minlength=n_items)
        overall = float(c.sum() / exposure.sum())
        item_gamma = (item_clicks + self.prior_views * overall) / (item_exposure + self.prior_views)
        pair_item = np.zeros(n_pairs, dtype=np.int64)
        pair_item[pair] = item_codes
        pair_gamma = (np.bincount(pair, weights=c, minlength=n_pairs) + self.prior_views * item_gamma[pair_item]) / (
            np.bincount(pair, weights=exposure, minlength=n_pairs) + self.prior_views)
        self.pair_attractiveness_ = pd.Series(np.clip(pair_gamma, 0.0, 1.0), index=pairs)
        self.item_attractiveness_ = pd.Series(np.clip(item_gamma, 0.0, 1.0), index=item_ids)
        self.mean_attractiveness_ = min(overall, 1.0)
        return self

    def examination(self, position: np.ndarray) -> np.ndarray:
        """θ at 1-based ``position``; past the deepest logged position, the deepest one's."""
        theta = self.examination_.to_numpy()
        return theta[np.clip(np.asarray(position, dtype=np.int64), 1, len(theta)) - 1]

    def attractiveness(self, context: pd.Series, item: pd.Series) -> np.ndarray:
        """γ̂ for (context, item) rows: the pair's, else the item's, else the log's mean."""
        by_pair = self.pair_attractiveness_.reindex(pair_keys(context, item)).to_numpy()
        by_item = self.item_attractiveness_.reindex(item).to_numpy()
        return np.where(np.isfinite(by_pair), by_pair, np.where(np.isfinite(by_item), by_item, self.mean_attractiveness_))


def counterfactual_clicks(lists: pd.DataFrame, logged: pd.DataFrame, model: PositionClickModel, request: str = "request_id",
                          item: str = "item_id", position: str = "position", context: str = "query") -> pd.DataFrame:
    """Per request of ``lists`` (request, item, new 1-based position): the three estimates' per-request
    terms (see the module docstring) and ``covered``, the share of the list's examination on items the
    log showed for that request. ``logged``: (request, context, item, position, click) per shown slot
    of the same requests."""
    slots = lists[[request, item, position]].merge(logged[[request, item, context, position, "click"]].rename(columns={position: "_logged_at"}),
                                                   on=[request, item], how="left")
    theta_new = model.examination(slots[position].to_numpy())
    seen = slots["_logged_at"].notna().to_numpy()
    theta_logged = model.examination(np.where(seen, slots["_logged_at"].fillna(1).to_numpy(), 1))
    click = slots["click"].fillna(0).to_numpy(dtype=np.float64)
    request_context = logged.drop_duplicates(request).set_index(request)[context]
    gamma = model.attractiveness(slots[request].map(request_context), slots[item])
    ips = np.where(seen, theta_new / theta_logged * click, 0.0)
    dr = theta_new * gamma + np.where(seen, theta_new / theta_logged * (click - theta_logged * gamma), 0.0)
    frame = pd.DataFrame({request: slots[request].to_numpy(), "ips": ips, "dr": dr, "_covered": np.where(seen, theta_new, 0.0), "_mass": theta_new})
    out = frame.groupby(request, sort=False).sum()
    out["covered"] = out.pop("_covered") / out.pop("_mass")
    return out


def estimate(per_request: pd.DataFrame, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Mean expected clicks per request by each estimator, with a bootstrap percentile interval over
    requests: estimator, estimate, ci_low, ci_high, requests."""
    ips, dr, covered = (per_request[c].to_numpy(dtype=np.float64) for c in ("ips", "dr", "covered"))
    n = len(ips)
    if n == 0:
        raise ValueError("no request to estimate over")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    tail = (1 - level) / 2
    rows = []
    for name, point, resampled in (("ips", ips.mean(), ips[draws].mean(axis=1)),
                                   ("snips", ips.sum() / max(covered.sum(), 1e-12), ips[draws].sum(axis=1) / np.maximum(covered[draws].sum(axis=1), 1e-12)),
                                   ("dr", dr.mean(), dr[draws].mean(axis=1))):
        rows.append({"estimator": name, "estimate": float(point), "ci_low": float(np.quantile(resampled, tail)),
                     "ci_high": float(np.quantile(resampled, 1 - tail)), "requests": n})
    return pd.DataFrame(rows)
