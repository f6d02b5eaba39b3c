"""Prefix completion: the most popular logged queries that start with what the user typed.

Queries are normalized (:mod:`generative.normalize`) and counted with exponential time decay (a
query typed ``half_life_days`` before the end of the log counts half). The index is a sorted array
of the distinct queries: the queries starting with a prefix are one contiguous range, found by two
binary searches; the top-k of a range is precomputed for the short prefixes whose ranges are long,
so no lookup scans more than ``scan_limit`` entries.

For prefixes no logged query starts with, the classic fallback for rare prefixes (Mitra & Craswell,
"Query Auto-Completion for Rare Prefixes", CIKM 2015): keep the typed text up to its last, partial
word and complete that word with the log's popular query *suffixes* (the last one, two or three
words of logged queries) that start with it. Chinese is written without spaces, so for a CJK tail
the partial "word" is its last one to three characters.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.generative.normalize import is_cjk, normalize_queries, normalize_query

_END = "\U0010ffff"  # sorts after any character a query holds


class SortedCounts:
    """Distinct strings in sorted order with a weight each; ``top(prefix, k)`` = heaviest strings starting with ``prefix``."""

    def __init__(self, strings: pd.Series, weights: np.ndarray, k: int, scan_limit: int = 256):
        grouped = pd.Series(np.asarray(weights, dtype=np.float64)).groupby(np.asarray(strings, dtype=object)).sum()
        self.strings = grouped.index.to_numpy(dtype=object)
        self.weights = grouped.to_numpy()
        self.k, self.scan_limit = k, scan_limit
        self.total = float(self.weights.sum())
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        # Precompute the long ranges: every prefix of every string whose range exceeds scan_limit.
        for length in range(0, 1 + max((len(s) for s in self.strings), default=0)):
            heads = pd.Series(self.strings).str[:length]
            long = heads.value_counts()
            long = long[long > scan_limit].index
            for head in long:
                self._cache[head] = self._scan(head)
            if len(long) == 0:
                break

    def _range(self, prefix: str) -> tuple[int, int]:
        return int(np.searchsorted(self.strings, prefix, "left")), int(np.searchsorted(self.strings, prefix + _END, "left"))

    def _scan(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self._range(prefix)
        w = self.weights[lo:hi]
        top = np.argsort(-w, kind="stable")[: self.k] if hi - lo > self.k else np.argsort(-w, kind="stable")
        return self.strings[lo:hi][top], w[top]

    def top(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """(strings, weights) of the ``k`` heaviest strings starting with ``prefix``, heaviest first."""
        cached = self._cache.get(prefix)
        return cached if cached is not None else self._scan(prefix)

    def weight_of(self, prefix: str) -> float:
        """Total weight of the strings starting with ``prefix``."""
        lo, hi = self._range(prefix)
        return float(self.weights[lo:hi].sum())


_CJK_START = r"^[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff]"


def word_suffixes(queries: pd.Series, max_words: int = 3) -> tuple[pd.Series, np.ndarray]:
    """(suffix, row of its query) for the last 1..``max_words`` words of each query, and for a
    last word in CJK script its last 1..3 characters (Chinese has no spaces between words)."""
    words = queries.str.split(" ")
    out, rows = [], []
    for n in range(1, max_words + 1):
        has = words.str.len() > n  # the whole query is not its own suffix (the prefix lookup finds it)
        out.append(words[has].str[-n:].str.join(" "))
        rows.append(np.flatnonzero(has.to_numpy()))
    last = words.str[-1]
    for n in (1, 2, 3):
        cut = last.str[-n:]
        cjk = ((last.str.len() > n) & cut.str.contains(_CJK_START, regex=True)).to_numpy()
        out.append(cut[cjk])
        rows.append(np.flatnonzero(cjk))
    return pd.concat(out, ignore_index=True), np.concatenate(rows)


class PrefixCompleter:
    """Most popular completions with time-decayed counts, plus the rare-prefix suffix fallback (module docstring).

    ``fit(queries, ts)``; ``suggest(prefix, k)`` → list of (query, score) with scores in (0, 1]:
    the share of the prefix's decayed count (fallback candidates are scaled down by ``fallback_weight``).
    """

    def __init__(self, half_life_days: float = 14.0, fallback_weight: float = 0.1, k: int = 10, max_suffix_words: int = 3):
        self.half_life_days, self.fallback_weight, self.k, self.max_suffix_words = half_life_days, fallback_weight, k, max_suffix_words

    def fit(self, queries: pd.Series, ts: pd.Series | None = None) -> "PrefixCompleter":
        """Index a query log: ``queries`` (raw text), ``ts`` their times (None: every query counts 1)."""
        normalized = normalize_queries(pd.Series(queries).reset_index(drop=True))
        weight = np.ones(len(normalized))
        if ts is not None:
            t = pd.to_datetime(pd.Series(ts).reset_index(drop=True))
            age_days = ((t.max() - t).dt.total_seconds() / 86400.0).to_numpy()
            weight = 0.5 ** (age_days / self.half_life_days)
        keep = (normalized != "").to_numpy()
        return self.fit_counts(normalized[keep], weight[keep])

    def fit_counts(self, queries: pd.Series, weights: np.ndarray) -> "PrefixCompleter":
        """Index already normalized queries with their (decayed) counts; repeats are summed."""
        queries = pd.Series(queries).reset_index(drop=True)
        if len(queries) == 0:
            raise ValueError("PrefixCompleter.fit: the query log holds no non-empty query")
        self.queries_ = SortedCounts(queries, np.asarray(weights, dtype=np.float64), self.k)
        # Suffixes of the distinct queries, each weighted by its query's decayed count.
        suffixes, rows = word_suffixes(pd.Series(self.queries_.strings), self.max_suffix_words)
        self.suffixes_ = SortedCounts(suffixes, self.queries_.weights[rows], self.k)
        return self

    def counts(self) -> pd.DataFrame:
        """The index as a table (query, weight): what :meth:`fit_counts` rebuilds it from."""
        return pd.DataFrame({"query": self.queries_.strings.astype(str), "weight": self.queries_.weights})

    def seen(self, prefix: str) -> bool:
        """Whether some logged query starts with the (normalized) prefix."""
        return self.queries_.weight_of(normalize_query(prefix)) > 0

    def suggest(self, prefix: str, k: int | None = None) -> list[tuple[str, float]]:
        """Up to ``k`` completions of ``prefix``, best first, as (normalized query, score)."""
        return [(query, score) for query, score, _ in self.completions(prefix, k)]

    def completions(self, prefix: str, k: int | None = None) -> list[tuple[str, float, str]]:
        """:meth:`suggest` with where each came from: ``log`` (a logged query that starts with the
        prefix) or ``log endings`` (the rare-prefix fallback: the typed head + a popular logged suffix)."""
        k = k or self.k
        typed = normalize_query(prefix)
        strings, weights = self.queries_.top(typed)
        total = weights.sum()
        out = [(s, float(w / total), "log") for s, w in zip(strings[:k], weights[:k])] if total > 0 else []
        if len(out) < k and typed:
            seen = {s for s, _, _ in out}
            for candidate, score in self._fallback(typed, prefix.endswith(" ")):
                if candidate not in seen and len(out) < k:
                    seen.add(candidate)
                    out.append((candidate, self.fallback_weight * score, "log endings"))
        return out

    def _fallback(self, typed: str, ends_with_space: bool) -> list[tuple[str, float]]:
        """Head of the typed text + popular logged suffixes that start with its partial last word (longest tail first)."""
        cut = typed.rfind(" ") + 1
        tails = [] if ends_with_space else [cut]
        last = typed[cut:]
        tails += [len(typed) - n for n in (3, 2, 1) if len(last) > n and is_cjk(last[-n])]
        out: list[tuple[str, float]] = []
        for start in tails:
            head, tail = typed[:start], typed[start:]
            strings, weights = self.suffixes_.top(tail)
            total = weights.sum()
            out += [(head + s, float(w / total)) for s, w in zip(strings, weights)] if total > 0 else []
            if out:
                break
        if ends_with_space:  # a finished word: the popular suffixes may follow it
            strings, weights = self.suffixes_.top("")
            out += [(f"{typed} {s}", float(w / max(weights.sum(), 1e-12))) for s, w in zip(strings, weights)]
        return out
