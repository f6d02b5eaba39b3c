"""Point-in-time lookups: key codes shared by events and requests, and each request's slice of a key's past.

:class:`SortedEvents` sorts the events once by a combined ``(key code, time)`` integer; a request's
events strictly before its time are one contiguous slice found by two binary searches (used to read
a user's recent items). The windowed statistics run in :mod:`features.engine`.

Times here are whole seconds, floored: flooring can only move an event to an earlier or equal
second, and equal seconds are excluded, so an event at or after the request time is never read.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def to_seconds(ts: pd.Series | np.ndarray) -> np.ndarray:
    """Timestamps (datetime64 of any unit) → int64 seconds since the epoch, floored."""
    values = np.asarray(ts, dtype="datetime64[us]").astype(np.int64)
    return np.floor_divide(values, 1_000_000)


def _arrow(values) -> pa.Array | pa.ChunkedArray:
    """One key column as Arrow, without copying Arrow-backed pandas data (chunks are kept, not combined)."""
    array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(pd.Series(values), from_pandas=True)
    return array.cast(array.type.value_type) if pa.types.is_dictionary(array.type) else array  # categoricals: their values


def _codes(array, dictionary: pa.Array, missing: int) -> np.ndarray:
    """Position of each value in ``dictionary`` (int32); ``missing`` where absent or null."""
    if array.type != dictionary.type:
        array = array.cast(dictionary.type)
    codes = pc.fill_null(pc.index_in(array, value_set=dictionary), missing).to_numpy(zero_copy_only=False)
    return codes if codes.flags.writeable else codes.copy()


@numba.njit(cache=True, nogil=True, inline="always")
def _find(keys, key, mask):
    """The slot holding ``key`` in an open-addressing table, or the empty slot (-1) where it would go."""
    h = key * -7046029254386353131  # Fibonacci hashing (2^64 / golden ratio, as int64); wraps by design
    slot = (h ^ (h >> 29)) & mask
    while keys[slot] != -1 and keys[slot] != key:
        slot = (slot + 1) & mask
    return slot


@numba.njit(cache=True, nogil=True)
def _dense_pairs(first, second, width, table_bits):
    """Dense codes for (first, second) pairs by open addressing; -1 where either part is -1.

    Returns (codes, the table's keys, the table's codes, number of codes), so lookups reuse the table.
    """
    mask = (1 << table_bits) - 1
    keys = np.full(1 << table_bits, -1, dtype=np.int64)
    values = np.full(1 << table_bits, -1, dtype=np.int32)
    out = np.empty(first.shape[0], dtype=np.int32)
    n = 0
    for i in range(first.shape[0]):
        if first[i] < 0 or second[i] < 0:
            out[i] = -1
            continue
        key = first[i] * width + second[i]
        slot = _find(keys, key, mask)
        if keys[slot] == -1:
            keys[slot] = key
            values[slot] = n
            n += 1
        out[i] = values[slot]
    return out, keys, values, n


@numba.njit(cache=True, nogil=True)
def _lookup_pairs(first, second, width, keys, values, spare):
    """Codes of request pairs in a table from :func:`_dense_pairs`; ``spare`` for pairs no event has."""
    mask = keys.shape[0] - 1
    out = np.empty(first.shape[0], dtype=np.int32)
    for i in range(first.shape[0]):
        if first[i] < 0 or second[i] < 0:
            out[i] = -1
            continue
        key = first[i] * width + second[i]
        slot = _find(keys, key, mask)
        out[i] = values[slot] if keys[slot] == key else spare
    return out


def _dictionary(event_values) -> pa.Array | None:
    """The distinct non-null values of one event key column (Arrow's hash kernels, no Python objects); None when every value is null."""
    ev = _arrow(event_values)
    if pa.types.is_null(ev.type) or ev.null_count == len(ev):
        return None
    return pc.unique(ev).drop_null()


def _column_codes(values, dictionary: pa.Array | None) -> np.ndarray:
    """int32 codes of one key column in ``dictionary``: -1 for null, the spare ``len(dictionary)`` for a value it lacks."""
    array = _arrow(values)
    null = array.is_null().to_numpy(zero_copy_only=False)
    if dictionary is None:
        return np.where(null, -1, 0).astype(np.int32)
    codes = _codes(array, dictionary, len(dictionary))
    codes[null] = -1
    return codes.astype(np.int32)


class KeyColumn:
    """One key column of a table of events, coded once: ``events`` (int32 codes, -1 for null) and
    ``size`` (codes are below it); :meth:`codes` codes any other rows' values the same way, a value
    no event has getting the spare code ``size - 1``, which no event carries (zero counts, not unknown)."""

    def __init__(self, event_values):
        self.dictionary = _dictionary(event_values)  # built from the events only (Arrow's hash kernels, no Python objects)
        self.events = _column_codes(event_values, self.dictionary)
        self.size = len(self.dictionary) + 1 if self.dictionary is not None else 1

    def codes(self, values) -> np.ndarray:
        """int32 codes of ``values`` (see the class docstring)."""
        return _column_codes(values, self.dictionary)


class EventKeys:
    """A (possibly composite) key over :class:`KeyColumn` parts: ``events`` (int32 codes, -1 where
    any part is null) and ``size``. Composite keys are numbered densely by open addressing over their
    parts' codes, once; :meth:`codes` looks other rows' part codes up in the same table, a pair no
    event has getting the spare code ``size - 1``."""

    def __init__(self, parts: list[KeyColumn]):
        codes, size, self.tables = parts[0].events, parts[0].size, []
        for part in parts[1:]:
            second, width = part.events, part.size
            distinct_at_most = min(int(np.count_nonzero((codes >= 0) & (second >= 0))), max(int(codes.max(initial=0)) + 1, 1) * width)
            table_bits = max(4, int(np.ceil(np.log2(max(distinct_at_most, 1) * 2))))  # load factor <= 0.5
            codes, keys, values, n = _dense_pairs(codes, second, width, table_bits)
            self.tables.append((keys, values, width, n))
            size = n + 1
        self.events, self.size = codes.astype(np.int32), size

    def codes(self, part_codes: list[np.ndarray]) -> np.ndarray:
        """int32 codes of rows whose parts :meth:`KeyColumn.codes` coded (in the parts' order)."""
        codes = part_codes[0]
        for second, (keys, values, width, n) in zip(part_codes[1:], self.tables):
            codes = _lookup_pairs(codes, second, width, keys, values, n)
        return codes.astype(np.int32)


def first_rows(keys: "KeyColumn | EventKeys") -> np.ndarray:
    """(size - 1,) the first event row holding each code of ``keys`` (every code below the spare one
    is held by some row): what reads a per-row column by code."""
    first = np.zeros(keys.size - 1, dtype=np.int64)
    rows = np.flatnonzero(keys.events >= 0)[::-1]  # reversed: a code's first row is written last, and wins
    first[keys.events[rows]] = rows
    return first


def shared_codes(event_keys: list, request_keys: list) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes for (possibly composite) keys, shared between events and requests
    (:class:`EventKeys` over the events' :class:`KeyColumn` parts, applied to the requests).

    Args:
        event_keys / request_keys: one column (Series, array or Arrow array) per key part, same order in both.

    Returns:
        (event codes, request codes, n_keys): int32 arrays, -1 where any key part is null; a
        request key no event has gets a code no event carries (zero counts, not unknown).
    """
    parts = [KeyColumn(values) for values in event_keys]
    keys = EventKeys(parts)
    return keys.events, keys.codes([part.codes(values) for part, values in zip(parts, request_keys)]), keys.size


def joint_codes(event_keys: list, query_keys: list) -> tuple[np.ndarray, np.ndarray]:
    """:func:`shared_codes` without the key count, as int64 (for :class:`SortedEvents`)."""
    ev, rq, _ = shared_codes(event_keys, query_keys)
    return ev.astype(np.int64), rq.astype(np.int64)


_ONCE: dict[tuple, tuple[list, object]] = {}


def once_per(owners: tuple, key: tuple, build):
    """``build()``, computed once while every one of ``owners`` lives and reused on the next call with
    the same owners (by identity) and ``key``: what a fitted funnel derives from its fixed history
    and catalogue (key codes, sorted events, a walk's snapshot) is built on its first request, not
    on each. The owners are treated as immutable, as the funnel's are; the entry goes with the
    first of them to be collected."""
    import weakref

    entry = (tuple(id(owner) for owner in owners), key)
    held = _ONCE.get(entry)
    if held is not None and all(ref() is owner for ref, owner in zip(held[0], owners)):
        return held[1]
    value = build()

    def drop(ref, entry=entry) -> None:  # only the entry this reference belongs to: a later one may reuse the ids
        if ref in _ONCE.get(entry, ((), None))[0]:
            del _ONCE[entry]

    _ONCE[entry] = ([weakref.ref(owner, drop) for owner in owners], value)
    return value


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


def time_frame(*seconds: np.ndarray) -> tuple[int, int]:
    """(origin, span) covering all given second arrays, for :class:`SortedEvents`."""
    lo = min(int(s.min()) for s in seconds if len(s))
    hi = max(int(s.max()) for s in seconds if len(s))
    return lo, hi - lo + 2
