"""The point-in-time engine: one pass over time computes every windowed, decayed and recency statistic.

Events and requests are walked together in time order. Per entity key the engine keeps running
state: all-time sums, sums inside each trailing window (events enter when the walk passes them and
leave when they fall out of ``[t - window, t)``), exponentially decayed sums, and the time of the
last event. A request reads its key's state before any event at or after its own time has been
added, so no statistic can see the future. The cost is O(events + requests) per key group after one
time sort, against O(log events) binary searches per request per statistic for a sort-and-search
engine; it runs as compiled code (numba), one thread per key group.

The engine only sees integer arrays: key codes, slot codes, times. :mod:`features.stats` turns
declared feature specs into those arrays, so a partition-wise engine (Dask) can run the same specs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

KINDS = ("total", "window", "decay", "since")
NEVER = np.iinfo(np.int64).min  # "no event yet" in the last-event-time state


@dataclass(frozen=True)
class Column:
    """One output statistic: ``kind`` of slot ``slot`` for key group ``group``.

    kind: ``total`` (sum over all history), ``window`` (sum over ``[t - seconds, t)``), ``decay``
    (sum of weights × 2^(−age / seconds), ``seconds`` being the half-life) or ``since`` (seconds
    since the slot's last event, NaN if none).
    """

    group: int
    slot: int
    kind: str
    seconds: int = 0


class GroupState:
    """One key group's running state between chunks of requests (see :func:`_walk_group`)."""

    def __init__(self, n_keys: int, n_slots: int, n_windows: int, n_taus: int):
        size = n_keys * n_slots
        # One row per (key, slot) holding [total, each window, each decay]: an event touches one cache line, not one per array.
        self.sums = np.zeros((size, 1 + n_windows + n_taus), dtype=np.float64)
        self.last = np.full(size, NEVER, dtype=np.int64)
        self.cursor = np.zeros(1 + n_windows, dtype=np.int64)  # next event to add, then per window the oldest event inside it

    def copy(self) -> "GroupState":
        """An independent copy: walking on from it leaves this state as it is."""
        out = GroupState.__new__(GroupState)
        out.sums, out.last, out.cursor = self.sums.copy(), self.last.copy(), self.cursor.copy()
        return out


@numba.njit(cache=True, nogil=True)
def _walk_group(ev_t, ev_type, ev_weight, ev_code, type_slots, slot_weighted, sums, last, cursor,
                q_t, q_rows, q_code, col_slot, col_kind, col_param, windows_us, taus_us, need, out, out_cols, out_at):
    """Advance one key group's state through the requests ``q_rows`` (ascending time), writing
    ``out[out_cols[c], out_at[k]]`` for the k-th of them (see the module docstring)."""
    n_slots = slot_weighted.shape[0]
    n_windows, n_taus = windows_us.shape[0], taus_us.shape[0]
    ev = cursor[0]
    n_events = ev_t.shape[0]
    for k in range(q_rows.shape[0]):
        row = q_rows[k]
        t = q_t[row]
        while ev < n_events and ev_t[ev] < t:  # strictly before the request
            code = ev_code[ev]
            if code >= 0 and ev_type[ev] >= 0:
                for j in range(type_slots.shape[1]):
                    s = type_slots[ev_type[ev], j]
                    if s < 0:
                        break
                    w = ev_weight[ev] if slot_weighted[s] else 1.0
                    idx = code * n_slots + s
                    if need[s, 0]:
                        sums[idx, 0] += w
                    if need[s, 1]:
                        for x in range(n_windows):
                            sums[idx, 1 + x] += w
                    if need[s, 2]:
                        for x in range(n_taus):
                            if last[idx] != NEVER:
                                sums[idx, 1 + n_windows + x] *= np.exp2(-(ev_t[ev] - last[idx]) / taus_us[x])
                            sums[idx, 1 + n_windows + x] += w
                    last[idx] = ev_t[ev]
            ev += 1
        for x in range(n_windows):  # events older than t - window leave it
            start = t - windows_us[x]
            lag = cursor[1 + x]
            while lag < ev and ev_t[lag] < start:
                code = ev_code[lag]
                if code >= 0 and ev_type[lag] >= 0:
                    for j in range(type_slots.shape[1]):
                        s = type_slots[ev_type[lag], j]
                        if s < 0:
                            break
                        if need[s, 1]:
                            sums[code * n_slots + s, 1 + x] -= ev_weight[lag] if slot_weighted[s] else 1.0
                lag += 1
            cursor[1 + x] = lag
        code = q_code[row]
        for c in range(col_slot.shape[0]):
            if code < 0:
                out[out_cols[c], out_at[k]] = np.nan
                continue
            idx = code * n_slots + col_slot[c]
            kind = col_kind[c]
            if kind == 0:
                out[out_cols[c], out_at[k]] = sums[idx, 0]
            elif kind == 1:
                out[out_cols[c], out_at[k]] = sums[idx, 1 + col_param[c]]
            elif kind == 2:
                if last[idx] == NEVER:
                    out[out_cols[c], out_at[k]] = 0.0
                else:
                    out[out_cols[c], out_at[k]] = sums[idx, 1 + n_windows + col_param[c]] * np.exp2(-(t - last[idx]) / taus_us[col_param[c]])
            else:
                out[out_cols[c], out_at[k]] = np.nan if last[idx] == NEVER else (t - last[idx]) / 1e6
    cursor[0] = ev


def walk(event_us: np.ndarray, event_type: np.ndarray, event_weight: np.ndarray, event_codes: list[np.ndarray],
         n_keys: list[int], type_slots: np.ndarray, slot_weighted: np.ndarray,
         request_us: np.ndarray, request_codes: list[np.ndarray], columns: list[Column], threads: int = 2,
         chunk_rows: int | None = None, start: "WalkSnapshot | None" = None):
    """Every statistic in ``columns`` for every request.

    Args:
        event_us: (M,) int64 event times in microseconds, ascending.
        event_type: (M,) int8 event type code (row of ``type_slots``), -1 to ignore the event.
        event_weight: (M,) float32 weight, used by weighted slots (e.g. expected clicks for COEC).
        event_codes / request_codes: per key group, (M,) / (N,) int32 key codes; -1 = no key
            (a request with no key gets NaN). Codes must be < that group's ``n_keys``.
        type_slots: (types, J) int16, the slots each event type adds to, -1 padded.
        slot_weighted: (S,) bool, whether a slot sums ``event_weight`` instead of 1.
        request_us: (N,) int64 request times in microseconds, any order.
        columns: the statistics to compute.
        threads: key groups run in parallel on this many threads.
        chunk_rows: None: return one (len(columns), N) float32 array, requests in their given
            order. A number: yield ``(rows, values)`` per chunk of at most that many requests in
            time order, ``rows`` their (k,) positions and ``values`` (len(columns), k), so the
            caller can write each chunk out and memory stays flat however many requests there are.
        start: a :func:`snapshot` of the same events and columns to walk on from, instead of from the
            first event: every request must then be at or after its time (only the events from there
            on are read). The snapshot itself is left as it was.
    """
    if len(event_us) > 1 and np.any(event_us[1:] < event_us[:-1]):
        raise ValueError("walk: event_us must be ascending; sort the events by time first")
    if start is None:
        plans = _plans(n_keys, type_slots, slot_weighted, columns)
    else:
        if len(request_us) and request_us.min() < start.at_us:
            raise ValueError("walk: a snapshot serves requests at or after its time only; walk earlier ones from the first event")
        plans = {group: (state.copy(), *rest) for group, (state, *rest) in start.plans.items()}
    chunks = _walk_chunks(plans, event_us, event_type, event_weight, event_codes, request_us, request_codes, columns, threads,
                          chunk_rows or max(len(request_us), 1))
    if chunk_rows is not None:
        return chunks
    (rows, values), = chunks  # one chunk holding every request, already in their given order
    return values


class WalkSnapshot:
    """Every key group's running state once the walk has reached ``at_us`` (see :func:`snapshot`)."""

    def __init__(self, at_us: int, plans: dict):
        self.at_us, self.plans = at_us, plans


def snapshot(at_us: int, event_us: np.ndarray, event_type: np.ndarray, event_weight: np.ndarray, event_codes: list[np.ndarray],
             n_keys: list[int], type_slots: np.ndarray, slot_weighted: np.ndarray, columns: list[Column], threads: int = 2) -> WalkSnapshot:
    """The walk's state at time ``at_us``: every event before it added, every window trimmed to end
    there. :func:`walk` started from it gives, for any request at or after ``at_us``, exactly what a
    walk from the first event gives, reading only the events from ``at_us`` on (the state a feature
    store materialises at a cutoff). Arguments as :func:`walk`."""
    plans = _plans(n_keys, type_slots, slot_weighted, columns)
    no_key = [np.full(1, -1, dtype=np.int32) for _ in event_codes]  # a request that reads nothing, only moves the walk to at_us
    for _ in _walk_chunks(plans, event_us, event_type, event_weight, event_codes, np.array([at_us], dtype=np.int64), no_key, columns, threads, 1):
        pass
    return WalkSnapshot(int(at_us), plans)


def _time_constants(columns: list[Column]) -> tuple[list[int], list[int], np.ndarray, np.ndarray]:
    windows = sorted({c.seconds for c in columns if c.kind == "window"})
    taus = sorted({c.seconds for c in columns if c.kind == "decay"})
    return windows, taus, np.array([w * 1_000_000 for w in windows], dtype=np.int64), np.array([h * 1_000_000 for h in taus], dtype=np.float64)


def _plans(n_keys, type_slots, slot_weighted, columns) -> dict:
    """Per key group: its fresh state and the arrays that tell the kernel what to keep and write."""
    n_slots = len(slot_weighted)
    windows, taus, _, _ = _time_constants(columns)
    plans = {}
    for group in sorted({c.group for c in columns}):
        mine = [i for i, c in enumerate(columns) if c.group == group]
        # State only for the slots this group reads: a group counting clicks alone keeps one slot, not five.
        used = sorted({columns[i].slot for i in mine})
        local = np.full(n_slots, -1, dtype=np.int16)
        local[used] = np.arange(len(used))
        group_type_slots = np.full(type_slots.shape, -1, dtype=np.int16)
        for row in range(type_slots.shape[0]):
            kept = [local[s] for s in type_slots[row] if s >= 0 and local[s] >= 0]
            group_type_slots[row, : len(kept)] = kept
        need = np.zeros((len(used), 3), dtype=np.bool_)
        for i in mine:
            if columns[i].kind != "since":
                need[local[columns[i].slot], KINDS.index(columns[i].kind)] = True
        params = [windows.index(columns[i].seconds) if columns[i].kind == "window" else
                  taus.index(columns[i].seconds) if columns[i].kind == "decay" else 0 for i in mine]
        plans[group] = (GroupState(n_keys[group], len(used), len(windows), len(taus)), group_type_slots, slot_weighted[used],
                        np.array([local[columns[i].slot] for i in mine], dtype=np.int64),
                        np.array([KINDS.index(columns[i].kind) for i in mine], dtype=np.int64),
                        np.array(params, dtype=np.int64), need, np.array(mine, dtype=np.int64))
    return plans


def _walk_chunks(plans, event_us, event_type, event_weight, event_codes, request_us, request_codes, columns, threads, chunk_rows):
    from concurrent.futures import ThreadPoolExecutor

    _, _, windows_us, taus_us = _time_constants(columns)
    in_order = len(request_us) < 2 or not np.any(request_us[1:] < request_us[:-1])
    q_order = np.arange(len(request_us)) if in_order else np.argsort(request_us, kind="stable")
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # the kernel releases the GIL
        whole = chunk_rows >= len(q_order)
        for start in range(0, max(len(q_order), 1), chunk_rows):
            rows = q_order[start : start + chunk_rows]
            out = np.empty((len(columns), len(rows)), dtype=np.float32)
            out_at = rows if whole else np.arange(len(rows))  # one chunk: write straight into the requests' order

            def run_group(group: int) -> None:
                state, group_type_slots, weighted, slots, kinds, params, need, out_cols = plans[group]
                _walk_group(event_us, event_type, event_weight, event_codes[group], group_type_slots, weighted,
                            state.sums, state.last, state.cursor,
                            request_us, rows, request_codes[group], slots, kinds, params, windows_us, taus_us, need, out, out_cols, out_at)

            list(pool.map(run_group, plans))
            yield rows, out
