"""Point-in-time counting: how many events of a key happened strictly before a moment.

The kernel sorts the events once by a combined ``(key code, time)`` integer and answers every query
with two binary searches, so counting N queries against M events costs O((N + M) log M) with no
Python loop over rows. Times are whole seconds, floored: flooring can only move an event to an
earlier or equal second, and equal seconds are excluded, so an event at or after the query time is
never counted (no leakage).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def to_seconds(ts: pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps (datetime64 of any unit) → int64 seconds since the epoch, floored."""
    values = np.asarray(ts, dtype="datetime64[us]").astype(np.int64)
    return np.floor_divide(values, 1_000_000)


def joint_codes(event_keys: list, query_keys: list) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for composite keys, shared between events and queries.

    Args:
        event_keys / query_keys: one Series (or array) per key column, same column order in both.
            Arrow-backed string Series are factorized without converting to Python objects.

    Returns:
        (event codes, query codes) as int64; -1 where any key part is null.
    """
    n_events = len(event_keys[0])
    combined = None
    null = None
    for ev, qu in zip(event_keys, query_keys):
        both = pd.concat([pd.Series(ev), pd.Series(qu)], ignore_index=True)
        codes, uniques = pd.factorize(both, use_na_sentinel=True)
        codes = np.asarray(codes, dtype=np.int64)
        null = codes < 0 if null is None else null | (codes < 0)
        combined = codes if combined is None else combined * (len(uniques) + 1) + codes
    if len(event_keys) > 1:
        combined, _ = pd.factorize(combined)  # dense codes keep code * span within int64
    combined = np.where(null, -1, combined).astype(np.int64)
    return combined[:n_events], combined[n_events:]


class SortedQueries:
    """Query rows sorted once by (key code, second): searching sorted needles walks memory in order,
    which is several times faster than searching the same needles in their original order."""

    def __init__(self, codes: np.ndarray, seconds: np.ndarray, origin: int, span: int):
        self.valid = codes >= 0
        self.origin, self.span = origin, span
        rel = np.clip(seconds - origin, 0, span - 1)
        keyed = np.where(self.valid, codes, 0) * span + rel
        self.order = np.argsort(keyed, kind="stable")
        self.keyed = keyed[self.order]  # sorted
        self.base = (np.where(self.valid, codes, 0) * span)[self.order]  # sorted-order start of each query's key

    def scatter(self, sorted_values: np.ndarray, fill: float = 0) -> np.ndarray:
        """Values computed in sorted order → original order; invalid (null-key) queries get ``fill``."""
        out = np.empty(len(self.order), dtype=sorted_values.dtype)
        out[self.order] = sorted_values
        out[~self.valid] = fill
        return out


class SortedEvents:
    """Events of one kind, sorted by (key code, second), ready for point-in-time counts.

    ``payload`` (optional, one value per event, e.g. the item each event touched) is kept in the
    same sorted order, so the events a query's :meth:`bounds` span can be read back.
    """

    def __init__(self, codes: np.ndarray, seconds: np.ndarray, origin: int, span: int, payload: np.ndarray | None = None):
        valid = codes >= 0
        self.origin, self.span = origin, span
        keyed = codes[valid] * span + (seconds[valid] - origin)
        if payload is None:
            self.combined, self.payload = np.sort(keyed), None  # counts need no order: plain sort is faster
        else:
            order = np.argsort(keyed, kind="stable")  # ties keep input order
            self.combined, self.payload = keyed[order], np.asarray(payload)[valid][order]

    def bounds(self, queries: "SortedQueries") -> tuple[np.ndarray, np.ndarray]:
        """Per query, in the queries' original order: [lo, hi) indexes of its key's events strictly before
        its time (lo = hi = 0 for a null key)."""
        hi = np.searchsorted(self.combined, queries.keyed, side="left")
        lo = np.searchsorted(self.combined, queries.base, side="left")
        return queries.scatter(lo), queries.scatter(hi)

    def count_before(self, codes: np.ndarray, seconds: np.ndarray, window_s: int | None = None) -> np.ndarray:
        """Events with the same code in ``[t - window_s, t)`` (or ``(-inf, t)``), per query; -1 codes get 0."""
        return self.counts_sorted(SortedQueries(codes, seconds, self.origin, self.span), (window_s,))[0]

    def counts_sorted(self, queries: "SortedQueries", windows_s: tuple[int | None, ...]) -> list[np.ndarray]:
        """:meth:`count_before` for several windows (None: all history) over queries sorted once."""
        hi = np.searchsorted(self.combined, queries.keyed, side="left")  # the same for every window
        out = []
        for window_s in windows_s:
            low = queries.base if window_s is None else np.maximum(queries.keyed - window_s, queries.base)  # never below the key's own start
            out.append(queries.scatter(hi - np.searchsorted(self.combined, low, side="left")))
        return out


def time_frame(*seconds: np.ndarray) -> tuple[int, int]:
    """(origin, span) covering all given second arrays, for :class:`SortedEvents`."""
    lo = min(int(s.min()) for s in seconds if len(s))
    hi = max(int(s.max()) for s in seconds if len(s))
    return lo, hi - lo + 2
