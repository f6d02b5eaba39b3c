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


def joint_codes(event_keys: list[np.ndarray], query_keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes for composite keys, shared between events and queries.

    Args:
        event_keys / query_keys: one array per key column (same column order in both).

    Returns:
        (event codes, query codes) as int64; -1 where any key part is null.
    """
    n_events = len(event_keys[0])
    combined = None
    null = None
    for ev, qu in zip(event_keys, query_keys):
        codes, uniques = pd.factorize(np.concatenate([np.asarray(ev, dtype=object), np.asarray(qu, dtype=object)]), use_na_sentinel=True)
        codes = codes.astype(np.int64)
        null = codes < 0 if null is None else null | (codes < 0)
        combined = codes if combined is None else combined * (len(uniques) + 1) + codes
    combined, _ = pd.factorize(combined)
    combined = np.where(null, -1, combined).astype(np.int64)
    return combined[:n_events], combined[n_events:]


class SortedEvents:
    """Events of one kind, sorted by (key code, second), ready for point-in-time counts."""

    def __init__(self, codes: np.ndarray, seconds: np.ndarray, origin: int, span: int):
        valid = codes >= 0
        self.origin, self.span = origin, span
        self.combined = np.sort(codes[valid] * span + (seconds[valid] - origin))

    def count_before(self, codes: np.ndarray, seconds: np.ndarray, window_s: int | None = None) -> np.ndarray:
        """Events with the same code in ``[t - window_s, t)`` (or ``(-inf, t)``), per query; -1 codes get 0."""
        valid = codes >= 0
        safe = np.where(valid, codes, 0)
        rel = np.clip(seconds - self.origin, 0, self.span - 1)
        hi = np.searchsorted(self.combined, safe * self.span + rel, side="left")
        low_t = np.zeros_like(rel) if window_s is None else np.clip(rel - window_s, 0, None)
        lo = np.searchsorted(self.combined, safe * self.span + low_t, side="left")
        return np.where(valid, hi - lo, 0)


def time_frame(*seconds: np.ndarray) -> tuple[int, int]:
    """(origin, span) covering all given second arrays, for :class:`SortedEvents`."""
    lo = min(int(s.min()) for s in seconds if len(s))
    hi = max(int(s.max()) for s in seconds if len(s))
    return lo, hi - lo + 2
