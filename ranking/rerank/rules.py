"""Business rules on the final lists: filters, dedupe, category/brand scatter (打散) and a pinned fresh slot.

Each rule is what merchandisers ask of a feed or a result page:

- ``exclude_categories``: items whose category starts with one of these never appear (a filter).
- ``dedupe_by`` (``title`` or ``brand``): only the first item of each title / brand stays in a list.
- ``scatter_by`` (``category`` or ``brand``) with ``window`` w and ``max_per_window`` m: at most m
  items of one category (brand) in any w consecutive slots.
- ``fresh_within`` n with ``fresh_days``: at least one item launched within ``fresh_days`` of the
  request among the first n slots.

The first ``k`` slots are filled greedily, best current position first: each slot takes the first
remaining item that keeps every rule given the slots above it. Fallback, when no remaining item can
keep a rule at a slot: the pinned fresh slot wins over scatter (the slot where the pin falls due
takes the first fresh item even if it breaks scatter), and when scatter cannot be kept the slot takes
the first remaining item; the rule gives way at that slot only, and holds again below it. Filters and
dedupe always hold. Slots below ``k`` keep their order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.ranking.rerank.base import ListGrid, RerankData, Reranker, attribute_codes

SCATTER_KEYS = ("category", "brand")
DEDUPE_KEYS = ("title", "brand")


def rule_picks(keys: np.ndarray, fresh: np.ndarray, present: np.ndarray, k: int, window: int, max_per_window: int,
               fresh_within: int) -> np.ndarray:
    """(R, k) slots the rules pick, in order (module docstring); -1 when a list runs out.

    Args:
        keys: (R, P) scatter key codes (distinct negative codes never collide); fresh: (R, P) bool;
        present: (R, P) real slots, in their current order; window / max_per_window: the scatter rule
        (max_per_window >= window switches it off); fresh_within: the pin (0 off).
    """
    n, width = keys.shape
    picks = np.full((n, k), -1, dtype=np.int64)
    picked_keys = np.full((n, k), np.iinfo(np.int64).min, dtype=np.int64)  # matches no real or stand-in key
    available = present.copy()
    has_fresh = np.zeros(n, dtype=bool)
    # The pin falls due at the last slot it covers that the list can fill.
    due = np.minimum(np.minimum(fresh_within, present.sum(axis=1)), k) - 1
    rows = np.arange(n)
    for step in range(min(k, width)):  # a loop over list positions, not over requests
        candidates = available
        if fresh_within:
            pin = (~has_fresh) & (step == due) & (available & fresh).any(axis=1)
            candidates = np.where(pin[:, None], available & fresh, available)
        recent = picked_keys[:, max(0, step - window + 1):step]  # (R, ≤ w−1) keys of the slots above within the window
        repeats = (recent[:, :, None] == keys[:, None, :]).sum(axis=1)  # (R, P)
        keeps = candidates & (repeats < max_per_window)
        allowed = np.where(keeps.any(axis=1)[:, None], keeps, candidates)
        best = allowed.argmax(axis=1)  # the first allowed slot: the best in the current order
        ok = allowed[rows, best]
        picks[ok, step] = best[ok]
        picked_keys[ok, step] = keys[rows[ok], best[ok]]
        has_fresh |= ok & fresh[rows, best]
        available[rows[ok], best[ok]] = False
    return picks


class RulesReranker(Reranker):
    """Business rules: filters, dedupe, category/brand scatter (打散), a pinned fresh slot.

    See the module docstring; ``fit`` keeps the catalogue's attributes the rules read."""

    name = "rules"

    def __init__(self, scatter_by: str = "category", window: int = 4, max_per_window: int = 2, dedupe_by: str = "",
                 fresh_within: int = 0, fresh_days: float = 14.0, exclude_categories: tuple[str, ...] = ()):
        if scatter_by not in ("", *SCATTER_KEYS):
            raise ValueError(f"rerank.rules.scatter_by must be one of {['', *SCATTER_KEYS]} ('' off). Got {scatter_by!r} instead.")
        if dedupe_by not in ("", *DEDUPE_KEYS):
            raise ValueError(f"rerank.rules.dedupe_by must be one of {['', *DEDUPE_KEYS]} ('' off). Got {dedupe_by!r} instead.")
        if window < 1 or max_per_window < 1:
            raise ValueError(f"rerank.rules.window and max_per_window must be >= 1. Got {window} and {max_per_window} instead.")
        if fresh_within < 0 or fresh_days <= 0:
            raise ValueError(f"rerank.rules.fresh_within must be >= 0 and fresh_days > 0. Got {fresh_within} and {fresh_days} instead.")
        self.scatter_by, self.window, self.max_per_window, self.dedupe_by = scatter_by, window, max_per_window, dedupe_by
        self.fresh_within, self.fresh_days, self.exclude_categories = fresh_within, fresh_days, tuple(exclude_categories)

    def _columns(self) -> list[str]:
        wanted = [self.scatter_by, self.dedupe_by, S.CATEGORY if self.exclude_categories else "", S.CREATED_AT if self.fresh_within else ""]
        return sorted({c for c in wanted if c})

    def fit(self, data: RerankData) -> RulesReranker:
        """Keep the catalogue columns the rules read (item_id and category, brand, title, created_at as used)."""
        missing = [c for c in self._columns() if c not in data.items]
        if missing:
            raise S.ContractError("items", missing[0], f"a {missing[0]!r} column for the rerank rules ({self.get_params()})",
                                  f"columns {list(data.items.columns)}")
        self.items_ = data.items[[S.ITEM_ID, *self._columns()]].drop_duplicates(S.ITEM_ID).reset_index(drop=True)
        return self

    def rerank(self, lists: pd.DataFrame, k: int, history: pd.DataFrame | None = None) -> pd.DataFrame:
        """Filtered and deduped lists, the first ``k`` slots under the scatter and pin rules."""
        S.check_fitted(self, "items_", "rerank")
        attributes = self.items_.set_index(S.ITEM_ID).reindex(lists[S.ITEM_ID].to_numpy())
        if self.exclude_categories:  # filters first: an excluded item never hides a duplicate of itself
            keep = ~attributes[S.CATEGORY].fillna("").str.startswith(self.exclude_categories).to_numpy()
            lists, attributes = lists[keep].reset_index(drop=True), attributes[keep].reset_index(drop=True)
        if self.dedupe_by:  # the first of each title / brand in the current order stays
            in_order = np.lexsort((lists[S.POSITION].to_numpy(), pd.factorize(lists[S.REQUEST_ID])[0]))
            key = pd.DataFrame({"r": lists[S.REQUEST_ID].to_numpy()[in_order], "v": attributes[self.dedupe_by].to_numpy()[in_order]})
            repeated = np.zeros(len(lists), dtype=bool)
            repeated[in_order] = key.duplicated().to_numpy() & key["v"].notna().to_numpy()
            lists, attributes = lists[~repeated].reset_index(drop=True), attributes[~repeated].reset_index(drop=True)
        grid = ListGrid.of(lists)
        if self.scatter_by:
            keys, max_per_window = grid.values(attribute_codes(attributes[self.scatter_by]), -1), self.max_per_window
        else:
            keys, max_per_window = np.zeros(grid.rows.shape, dtype=np.int64), self.window  # m >= w: never binds
        fresh = np.zeros(grid.rows.shape, dtype=bool)
        if self.fresh_within:
            if S.TS not in lists:
                raise S.ContractError("lists", S.TS, "the request time (rerank.rules.fresh_within dates freshness from it)",
                                      f"columns {list(lists.columns)}")
            age = pd.to_datetime(lists[S.TS]).to_numpy() - attributes[S.CREATED_AT].to_numpy()
            fresh = grid.values(age <= np.timedelta64(int(self.fresh_days * 86_400), "s"), False)
        picks = rule_picks(keys, fresh, grid.present, k, self.window, max_per_window, self.fresh_within)
        return grid.reordered(lists, picks)

    def _save_state(self, directory: Path) -> None:
        S.check_fitted(self, "items_", "save")
        S.write_frame(self.items_, directory / "items.parquet")

    def _load_state(self, directory: Path) -> None:
        self.items_ = S.read_frame(directory / "items.parquet")
