"""Text tokens for English and Chinese, and query × item text match.

English (and any Latin script) splits into lowercase words; CJK runs become their characters plus
character bigrams, the usual choice when no word segmenter is available. Tokenizing runs once per
distinct text (items, distinct queries), never per event.
"""

from __future__ import annotations

import re
import unicodedata

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

_WORD = re.compile(r"[^\W\u4e00-\u9fff]+|[\u4e00-\u9fff]+", re.UNICODE)
_CJK = re.compile(r"[\u4e00-\u9fff]")


def normalize_text(text: str) -> str:
    """NFKC (full-width → half-width), lowercase, collapse whitespace."""
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def tokenize(text: str) -> list[str]:
    """Words for Latin text; characters and bigrams for CJK runs. ``'红色衬衫 red'`` → 红 色 衬 衫 红色 色衬 衬衫 red."""
    tokens: list[str] = []
    for run in _WORD.findall(normalize_text(text or "")):
        if _CJK.match(run):
            tokens.extend(run)
            tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
        else:
            tokens.append(run)
    return tokens


TEXT_ATTRIBUTES = ("tags", "description")


def item_text(items: pd.DataFrame) -> pd.Series:
    """The searchable text of each item: title, category path words, and ``tags``/``description`` when the catalogue has them."""
    text = items["title"].fillna("") + " " + items["category"].fillna("").str.replace(">", " ", regex=False)
    for column in TEXT_ATTRIBUTES:
        if column in items:
            text = text + " " + items[column].fillna("")
    return text


def token_matrix(texts: pd.Series, vocabulary_from: pd.Series | None = None) -> tuple[sp.csr_matrix, CountVectorizer]:
    """Binary document × token matrix; the vocabulary is fitted on ``vocabulary_from`` (default: ``texts``)."""
    vectorizer = CountVectorizer(analyzer=tokenize, binary=True, dtype=np.float32)
    vectorizer.fit((vocabulary_from if vocabulary_from is not None else texts).tolist())
    return vectorizer.transform(texts.tolist()).tocsr(), vectorizer


def tfidf_matrix(texts: pd.Series) -> tuple[sp.csr_matrix, TfidfVectorizer]:
    """L2-normalised TF-IDF rows over :func:`tokenize` tokens."""
    vectorizer = TfidfVectorizer(analyzer=tokenize, sublinear_tf=True, dtype=np.float32)
    return vectorizer.fit_transform(texts.tolist()).tocsr(), vectorizer


def query_coverage(query_codes: np.ndarray, item_codes: np.ndarray, query_tokens: sp.csr_matrix, item_tokens: sp.csr_matrix) -> np.ndarray:
    """Share of each query's distinct tokens found in the item's text, per (query, item) row.

    Args:
        query_codes: (N,) row index into ``query_tokens``, -1 for no query (result NaN).
        item_codes: (N,) row index into ``item_tokens``.

    Returns:
        float32 (N,) in [0, 1], NaN where there is no query.
    """
    has_query = query_codes >= 0
    out = np.full(len(query_codes), np.nan, dtype=np.float32)
    if not has_query.any():
        return out
    q = query_tokens[query_codes[has_query]]
    i = item_tokens[item_codes[has_query]]
    overlap = np.asarray(q.multiply(i).sum(axis=1)).ravel()
    length = np.asarray(q.sum(axis=1)).ravel()
    out[has_query] = np.where(length > 0, overlap / np.maximum(length, 1), 0.0)
    return out
