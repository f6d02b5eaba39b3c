"""Query normalization shared by every suggester, its index and its evaluation.

NFKC folds full-width letters, digits and punctuation to their half-width forms (ＡＢＣ１ → ABC1,
the ideographic space → space) and compatibility characters to their canonical ones; casefold
lowercases beyond ASCII (ß → ss); runs of whitespace become one space and the ends are trimmed.
Chinese characters pass through unchanged.
"""

from __future__ import annotations

import re
import unicodedata

import pandas as pd

_SPACES = re.compile(r"\s+")


def normalize_query(text: str) -> str:
    """One query, normalized (see the module docstring); ``None`` or NaN → ``""``."""
    if not isinstance(text, str):
        return ""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalize_queries(texts: pd.Series) -> pd.Series:
    """:func:`normalize_query` over a column, vectorized; missing values → ``""``."""
    out = texts.astype("string").fillna("").str.normalize("NFKC").str.casefold()
    return out.str.replace(_SPACES.pattern, " ", regex=True).str.strip().astype(object)


def is_cjk(char: str) -> bool:
    """A CJK ideograph (or kana / hangul): scripts written without spaces between words."""
    code = ord(char)
    return (0x2E80 <= code <= 0x9FFF) or (0xAC00 <= code <= 0xD7AF) or (0xF900 <= code <= 0xFAFF) or (0x20000 <= code <= 0x2FA1F)
