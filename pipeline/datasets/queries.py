"""The ``queries`` adapter: real query lists as a query log (and graded judgments where given).

PATH is a directory holding any of these layouts (or a parent directory of several):

- WANDS ``query.csv``: tab-separated ``query_id, query, query_class``;
- ESCI ``*_queryset.json`` (``querySetQueries[].queryText``) and ``*_judgments.json``
  (``judgmentRatings[].{query, ratings[].{docId, rating}}``, ratings 100/10/1/0 = E/S/C/I → grades 3/2/1/0);
- Natural Questions ``*.jsonl`` with a ``question`` field.

Output: ``queries`` (query, source, and the source's class where it has one) and ``judgments``.
The lists carry no time; the suggestion stage splits them at random.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table
from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.datasets.files import files_fingerprint, read_delimited, read_jsonl, read_text
from rankpipe.pipeline.graphs import QUERY_LISTS, names
from rankpipe.pipeline.schema import ConfigError

ESCI_GRADES = {100.0: 3, 10.0: 2, 1.0: 1, 0.0: 0}


def _wands(path: Path, encoding: str) -> pd.DataFrame:
    raw = read_delimited(path, ["query_id", "query", "query_class"], sep="\t", required=["query_id", "query"], encoding=encoding)
    return pd.DataFrame({S.QUERY: raw["query"], S.SOURCE: "wands", "query_class": raw["query_class"].replace("", None)})


def _json(path: Path) -> dict:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise S.ContractError(path.name, None, "a JSON document", f"invalid JSON at line {exc.lineno}: {exc.msg}") from None


def _esci_queries(path: Path) -> pd.DataFrame:
    doc = _json(path)
    entries = doc.get("querySetQueries")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("queryText"), str) for e in entries):
        raise S.ContractError(path.name, "querySetQueries", "a list of {queryText: string}", f"{type(entries).__name__}")
    return pd.DataFrame({S.QUERY: [e["queryText"] for e in entries], S.SOURCE: "esci"})


def _esci_judgments(path: Path) -> pd.DataFrame:
    doc = _json(path)
    entries = doc.get("judgmentRatings")
    if not isinstance(entries, list):
        raise S.ContractError(path.name, "judgmentRatings", "a list of {query, ratings}", f"{type(entries).__name__}")
    frame = pd.json_normalize(entries, record_path="ratings", meta="query")
    missing = [c for c in ("docId", "rating", "query") if c not in frame]
    if missing:
        raise S.ContractError(path.name, missing[0], "ratings with docId and rating under each query", f"no {missing[0]!r}")
    value = pd.to_numeric(frame["rating"], errors="coerce")
    grade = value.map(ESCI_GRADES)
    if grade.isna().any():
        bad = frame[grade.isna()]
        raise S.ContractError(path.name, "rating", f"one of {sorted(ESCI_GRADES)}", f"{len(bad)} other values, first {bad['rating'].iloc[0]!r} for query {bad['query'].iloc[0]!r}", bad)
    return pd.DataFrame({S.QUERY: frame["query"].astype("str"), S.ITEM_ID: S.id_strings(frame["docId"], path.name, "docId"), S.GRADE: grade.astype(np.int32)})


def _questions(path: Path) -> pd.DataFrame:
    records = read_jsonl(path)
    questions = [r.get("question") for r in records]
    bad = [i for i, q in enumerate(questions, 1) if not isinstance(q, str) or not q.strip()]
    if bad:
        raise S.ContractError(path.name, "question", "a non-empty 'question' string on every line", f"{len(bad)} lines without one, first at line {bad[0]}")
    return pd.DataFrame({S.QUERY: questions, S.SOURCE: "nq:" + path.stem})


def _sources(root: Path) -> list[Path]:
    patterns = ("query.csv", "*_queryset.json", "*_judgments.json", "*.jsonl")
    return sorted({p for pattern in patterns for p in list(root.glob(pattern)) + list(root.glob(f"*/{pattern}"))})


class QueriesAdapter:
    """Query lists (WANDS, ESCI, Natural Questions) as a query log, with ESCI's graded judgments."""

    name = "queries"
    description = "query lists: WANDS query.csv, ESCI queryset/judgments json, Natural Questions jsonl"
    graph = QUERY_LISTS
    stages = names(QUERY_LISTS)

    def _files(self, config: DatasetConfig) -> list[Path]:
        if not config.path:
            raise ConfigError("dataset 'queries' needs --path: a directory of query lists (WANDS, ESCI, Natural Questions)")
        files = _sources(Path(config.path))
        if not files:
            raise S.ContractError(config.path, None, "query.csv, *_queryset.json, *_judgments.json or *.jsonl files", "none")
        return files

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        return files_fingerprint(self._files(config))

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        queries, judgments = [], []
        for path in self._files(config):
            if path.name == "query.csv":
                queries.append(_wands(path, config.encoding))
            elif path.name.endswith("_queryset.json"):
                queries.append(_esci_queries(path))
            elif path.name.endswith("_judgments.json"):
                judgments.append(_esci_judgments(path))
            else:
                queries.append(_questions(path))
        tables = {}
        if queries:
            tables[S.QUERIES] = validate_table(S.QUERIES, pd.concat(queries, ignore_index=True))
        if judgments:
            tables[S.JUDGMENTS] = validate_table(S.JUDGMENTS, pd.concat(judgments, ignore_index=True))
        return Dataset(self.name, tables)
