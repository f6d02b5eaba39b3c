"""The query-suggestion product as one saved model: prefix completion blended with the character
model (suggestions while typing), next-query refinements, and pre-search suggestions per user.

Saved as plain files (no pickle): ``prefix.parquet`` (the decayed query counts the prefix index is
rebuilt from), ``charlm.pt`` (state_dict + config + vocabulary, ``weights_only``), ``sessions.json``
(next-query and pre-search state) and ``suggester.json`` (blend weight, parameters).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rankpipe.generative.blend import blend_lists
from rankpipe.generative.charlm import CharLM
from rankpipe.generative.normalize import normalize_query
from rankpipe.generative.prefix import PrefixCompleter
from rankpipe.generative.sessions import NextQuerySuggester, PreSearchSuggester

POOL = 10  # candidates asked of each suggester whatever k (up to): the blend's scores do not depend on k
MIN_SHARE = 1e-3  # a suggestion a thousand times less likely than the first one is not shown


class QuerySuggester:
    """``suggest(prefix, user_id=None, k)``: an empty prefix with a user gives pre-search suggestions,
    anything else the blend of prefix completion and the model; ``next_queries(query, k)``: refinements."""

    def __init__(self, prefix: PrefixCompleter, lm: CharLM | None, generative_weight: float,
                 next_query: NextQuerySuggester | None = None, presearch: PreSearchSuggester | None = None):
        self.prefix, self.lm, self.generative_weight = prefix, lm, generative_weight
        self.next_query, self.presearch = next_query, presearch

    def suggest(self, prefix: str, user_id: str | None = None, k: int = 10) -> list[tuple[str, float]]:
        """Up to ``k`` (query, score), best first (see the class docstring)."""
        return [(query, score) for query, score, _ in self.explained(prefix, user_id, k)]

    def explained(self, prefix: str, user_id: str | None = None, k: int = 10) -> list[tuple[str, float, str]]:
        """:meth:`suggest` with each suggestion's source: ``log``, ``log endings`` (the rare-prefix
        fallback), ``model`` (the character model alone), ``log+model``, or ``pre-search``.

        A suggestion's score does not depend on ``k`` (up to ``POOL``): both suggesters are asked
        for the same ``max(k, POOL)`` candidates and the blend is cut to ``k`` after, so a query the
        model ranks 4th keeps its model share whether 3 or 10 are shown. Suggestions under
        ``MIN_SHARE`` of the best one's score are left out: a list that shows "black blanket" at 0.96
        gains nothing from "black blanket kettle" at 1e-8, which printed as 0.0000.
        """
        if not normalize_query(prefix) and user_id is not None and self.presearch is not None:
            return [(q, s, "pre-search") for q, s in self.presearch.suggest(user_id, k)]
        depth = max(k, POOL)
        found = self.prefix.completions(prefix, depth)
        lists, weights = [[(q, s) for q, s, _ in found]], [1.0 - self.generative_weight]
        sources = {q: src for q, _, src in found}
        if self.lm is not None and self.generative_weight > 0:
            generated = self.lm.suggest(prefix, depth)
            lists.append(generated)
            weights.append(self.generative_weight)
            for query, _ in generated:
                sources[query] = f"{sources[query]}+model" if query in sources else "model"
        blended = blend_lists(lists, weights, k)
        floor = MIN_SHARE * blended[0][1] if blended else 0.0
        return [(q, s, sources[q]) for q, s in blended if s > 0 and s >= floor]

    def next_queries(self, query: str, k: int = 10) -> list[tuple[str, float]]:
        """Queries users typed next after ``query`` (empty when the suggester has no session model)."""
        return self.next_query.suggest(query, k) if self.next_query is not None else []

    def save(self, directory: str | Path) -> None:
        """Write the files listed in the module docstring."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.prefix.counts().to_parquet(directory / "prefix.parquet", index=False)
        if self.lm is not None:
            self.lm.save(directory / "charlm.pt")
        sessions = {"next": self.next_query.to_dict() if self.next_query else None, "presearch": self.presearch.to_dict() if self.presearch else None}
        (directory / "sessions.json").write_text(json.dumps(sessions, ensure_ascii=False))
        meta = {"generative_weight": self.generative_weight, "half_life_days": self.prefix.half_life_days,
                "fallback_weight": self.prefix.fallback_weight, "max_suffix_words": self.prefix.max_suffix_words}
        (directory / "suggester.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "QuerySuggester":
        """The suggester :meth:`save` wrote."""
        directory = Path(directory)
        if not (directory / "suggester.json").exists():
            raise FileNotFoundError(f"{directory} holds no saved suggester (no suggester.json)")
        meta = json.loads((directory / "suggester.json").read_text())
        counts = pd.read_parquet(directory / "prefix.parquet")
        prefix = PrefixCompleter(meta["half_life_days"], meta["fallback_weight"], max_suffix_words=meta["max_suffix_words"])
        prefix.fit_counts(counts["query"], counts["weight"].to_numpy())
        lm = CharLM.load(directory / "charlm.pt") if (directory / "charlm.pt").exists() else None
        sessions = json.loads((directory / "sessions.json").read_text())
        return cls(prefix, lm, meta["generative_weight"],
                   NextQuerySuggester.from_dict(sessions["next"]) if sessions["next"] else None,
                   PreSearchSuggester.from_dict(sessions["presearch"]) if sessions["presearch"] else None)
