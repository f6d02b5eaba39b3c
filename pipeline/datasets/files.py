"""Reading published text formats with errors that name the file, the line and what was wrong."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline.schema import ConfigError, ContractError


def read_text(path: Path, encoding: str = "utf-8", hint: str = "") -> str:
    """The file decoded as ``encoding``; ContractError naming the line of the first invalid byte
    (``hint`` is added to it), ConfigError for an encoding Python does not know."""
    if not path.exists():
        raise ContractError(path.name, None, f"a file {path}", "no such file")
    raw = path.read_bytes()
    try:
        return raw.decode(encoding)
    except LookupError:
        raise ConfigError(f"dataset.encoding must be a text encoding Python knows (utf-8, latin-1, cp1252, ...). Got {encoding!r} instead.") from None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        name = "UTF-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        raise ContractError(path.name, None, f"{name} text", f"bytes that are not {name} at line {line} ({exc.reason}){hint}") from None


ENCODING_HINT = "; if the file is in another encoding, name it: --set dataset.encoding=latin-1 (MovieLens 100k's u.item is latin-1)"


def read_delimited(path: Path, columns: list[str], sep: str = ",", header: bool = True, required: list[str] | None = None,
                   encoding: str = "utf-8") -> pd.DataFrame:
    """A delimited file as strings, checked for the expected header and for truncated rows.

    ``required`` (default: all ``columns``) must hold a value on every row; the rest may be empty.
    ``encoding``: the file's text encoding (``dataset.encoding``).
    Returns a frame of string columns plus ``_line`` (the 1-based line number in the file).
    """
    text = read_text(path, encoding, ENCODING_HINT)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if header else None, names=None if header else columns,
                            dtype=str, keep_default_na=False, quoting=0 if sep == "," else 3, on_bad_lines="error", engine="c")
    except pd.errors.ParserError as exc:
        raise ContractError(path.name, None, f"{len(columns)} {sep!r}-separated fields per line", str(exc).strip()) from None
    if header and list(frame.columns[: len(columns)]) != columns:
        raise ContractError(path.name, None, f"a header starting with {columns}", f"{list(frame.columns)}")
    frame["_line"] = np.arange(len(frame)) + (2 if header else 1)
    required = columns if required is None else required
    empty = frame[required].eq("").any(axis=1)
    if empty.any():
        first = frame[empty].iloc[0]
        raise ContractError(path.name, None, f"a value in each of {required}", f"{int(empty.sum())} truncated or empty rows, first at line {first['_line']}",
                            frame.loc[empty, ["_line"] + required])
    return frame


def numeric(frame: pd.DataFrame, column: str, file: str, integer: bool = False) -> pd.Series:
    """``frame[column]`` as numbers; ContractError with the lines of values that are not."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (integer & (values != values.round()))
    if bad.any():
        first = frame[bad].iloc[0]
        kind = "integers" if integer else "numbers"
        raise ContractError(file, column, kind, f"{int(bad.sum())} other values, first {first[column]!r} at line {first['_line']}",
                            frame.loc[bad, ["_line", column]])
    return values.astype(np.int64) if integer else values.astype(np.float64)


def read_jsonl(path: Path) -> list[dict]:
    """One JSON object per line; ContractError naming the first line that is not one."""
    records = []
    for number, line in enumerate(read_text(path).splitlines(), 1):  # records, parsed by json in C
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ContractError(path.name, None, "one JSON object per line", f"invalid JSON at line {number}: {exc.msg}") from None
        if not isinstance(record, dict):
            raise ContractError(path.name, None, "one JSON object per line", f"a {type(record).__name__} at line {number}")
        records.append(record)
    if not records:
        raise ContractError(path.name, None, "at least one record", "an empty file")
    return records


def files_fingerprint(paths: list[Path]) -> str:
    """Hash of the paths, sizes and modification times of the files that exist."""
    parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths if p.exists()]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
