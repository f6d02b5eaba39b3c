"""Table validation: a dataset adapter's tables checked against the data contract
(:data:`~rankpipe.pipeline.schema.SCHEMAS`) and normalised (ids as strings, timestamps as naive UTC
``datetime64[us]`` by :func:`~rankpipe.pipeline.schema.parse_timestamps`, numbers typed), with
errors that name the table, the column and the rows. Only the adapters read tables, so only they
import this; the contract's names and the one timestamp rule stay in ``pipeline/schema.py``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from rankpipe.pipeline.schema import (
    ContractError,
    EVENT,
    EVENTS,
    EVENT_TYPES,
    GRADE,
    ITEMS,
    ITEM_ID,
    JUDGMENTS,
    MAX_TS,
    MIN_TS,
    OPTIONAL_COLUMNS,
    POSITION,
    PRICE,
    REQUEST_ID,
    SCHEMAS,
    TS,
    USERS,
    USER_ID,
    VALUE,
    parse_timestamps,
)


@dataclass(frozen=True)
class _Kind:
    """How a contract column is checked: the Arrow type family it must belong to."""

    name: str

    def accepts(self, dtype: pa.DataType) -> bool:
        if self.name == "string":
            if pa.types.is_dictionary(dtype):
                dtype = dtype.value_type
            # A column of nulls only (pandas writes all-None columns to Parquet as type null): a
            # nullable column takes it, a required id is then refused for its nulls, by name.
            return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype)
        if self.name == "float":
            return pa.types.is_floating(dtype) or pa.types.is_integer(dtype) or pa.types.is_null(dtype)
        if self.name == "int":  # whole floats too (checked row by row): pandas writes an int column with a gap as float64
            return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype)
        if self.name == "timestamp":
            # ISO strings are accepted and parsed; anything unparsable is reported row by row.
            return pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype)
        raise AssertionError(self.name)


def _kind(dtype: pa.DataType) -> _Kind:
    kinds = (("string", pa.types.is_string), ("float", pa.types.is_floating), ("int", pa.types.is_integer), ("timestamp", pa.types.is_timestamp))
    return _Kind(next(name for name, is_kind in kinds if is_kind(dtype)))


def _arrow_type_of(series: pd.Series) -> pa.DataType:
    try:
        return pa.array(series.iloc[:1000], from_pandas=True).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.binary()  # mixed python objects: reported as the wrong type


def validate_table(name: str, table: pd.DataFrame | pa.Table, derived: tuple[str, ...] | frozenset[str] = (), whole: bool = True,
                   ts_format: str | None = None) -> pd.DataFrame:
    """Check ``table`` against the contract of table ``name`` and return a normalised copy.

    Args:
        name: one of ``items``, ``users``, ``events``, ``judgments``, ``queries``.
        table: a pandas DataFrame or an Arrow table with at least the contract's required columns;
            further attribute columns pass through untouched.
        derived: required columns the caller derives afterwards (an interaction log's
            ``session_id``): they may be absent (added as nulls) or null, and are type-checked.
        whole: ``table`` is the whole table, so the checks across rows (:func:`check_rows`) run
            too; False for one file of several, whose caller checks the rows once they are joined.
        ts_format: the strftime format of string timestamps (``dataset.ts_format``); None: ISO-8601
            only (:func:`parse_timestamps`).

    Returns:
        A new DataFrame: ids as strings, timestamps as ``datetime64[us]``, numeric columns as
        float64/Int32, optional columns added as nulls when absent.

    Raises:
        ContractError: the table is empty, a column is missing or mistyped, an id is null (or an
            item or user id repeated), a timestamp is unparsable or out of range, an event type is
            unknown, a price or event value is infinite (or a price negative), a position is
            negative or two items share one position of a request. Positions counted from 0 are
            shifted to 1-based, with a warning.
    """
    if name not in SCHEMAS:
        raise ContractError(name, None, f"one of {sorted(SCHEMAS)}", f"unknown table '{name}'")
    frame = table.to_pandas() if isinstance(table, pa.Table) else table.copy()
    if len(frame) == 0:
        raise ContractError(name, None, "at least one row", "an empty table")
    schema = SCHEMAS[name]
    optional = OPTIONAL_COLUMNS.get(name, set()) | set(derived)
    for field in schema:
        col = field.name
        if col not in frame.columns:
            if col in optional:
                frame[col] = pd.Series(None, index=frame.index, dtype=_pandas_dtype(field.type))
                continue
            raise ContractError(name, col, f"a column '{col}' of type {field.type}", f"no such column (columns: {list(frame.columns)})")
        kind = _kind(field.type)
        found_type = _arrow_type_of(frame[col])
        if not kind.accepts(found_type):
            raise ContractError(name, col, f"{kind.name} values ({field.type})", f"type {found_type}", frame[[col]].head(5))
        if kind.name == "string":
            if not field.nullable and col not in derived:
                _check_not_null(name, col, frame)
            frame[col] = frame[col].astype("str")
        elif kind.name == "timestamp":
            frame[col] = _parse_timestamps(name, col, frame, required=not field.nullable, ts_format=ts_format)
        elif kind.name == "float":
            frame[col] = frame[col].astype("float64")
        elif kind.name == "int":
            values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
            broken = ~np.isnan(values) & ((values != np.round(values)) | (np.abs(values) >= 2**31))
            if broken.any():
                raise ContractError(name, col, f"whole numbers ({field.type})", f"{int(broken.sum())} other values", frame[broken])
            frame[col] = frame[col].astype("Float64").astype("Int32")
    if name == EVENTS:
        unknown = ~frame[EVENT].isin(EVENT_TYPES)
        if unknown.any():
            raise ContractError(name, EVENT, f"one of {list(EVENT_TYPES)}", f"{int(unknown.sum())} rows with other values", frame[unknown])
    if name == ITEMS:
        _check_finite(name, PRICE, frame, "finite prices >= 0 (null: unknown)", low=0.0)
    if name == EVENTS:
        # Any finite value is taken as given (a rating on any scale: dataset.rating_threshold says what counts as liked).
        _check_finite(name, VALUE, frame, "finite values (null: none)")
    if name == JUDGMENTS:
        negative = frame[GRADE] < 0
        if negative.any():
            raise ContractError(name, GRADE, "grades >= 0", f"{int(negative.sum())} negative grades", frame[negative])
    return check_rows(name, frame) if whole else frame


def check_rows(name: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The checks of a validated table ``name`` that look across its rows: ids unique in ``items`` and
    ``users``; in ``events``, positions >= 1 and one item per position of a request. Returns ``frame``,
    its positions shifted to 1-based when the log counts from 0 (:func:`_check_positions`)."""
    if name in (ITEMS, USERS):
        _check_unique(name, ITEM_ID if name == ITEMS else USER_ID, frame)
    if name == EVENTS:
        _check_positions(frame)
    return frame


def _check_unique(table: str, column: str, frame: pd.DataFrame) -> None:
    """One row per id: a second row for an id would make every join on it ambiguous."""
    repeated = frame[column].duplicated(keep=False).to_numpy()
    if repeated.any():
        n = int(frame[column].duplicated().sum())
        raise ContractError(table, column, "unique ids (one row per id)", f"{n} repeated ids", frame[repeated].sort_values(column))


def _check_finite(table: str, column: str, frame: pd.DataFrame, expected: str, low: float | None = None) -> None:
    """Nulls pass (an unknown value); infinities, and values below ``low``, do not."""
    values = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isnan(values) & (~np.isfinite(values) | (values < low if low is not None else False))
    if bad.any():
        raise ContractError(table, column, expected, f"{int(bad.sum())} other values", frame[bad])


def _check_positions(frame: pd.DataFrame) -> None:
    """Positions are 1-based slots (1: the top), one item per slot within a request. A log whose
    smallest position is 0 counts from 0, as many logging systems do: it is shifted by one (and said
    so). A negative slot, or two items in one slot of a request, is an error."""
    position = frame[POSITION].to_numpy(dtype=np.float64, na_value=np.nan)
    known = ~np.isnan(position)
    if not known.any():
        return
    negative = position < 0  # NaN compares False
    if negative.any():
        raise ContractError(EVENTS, POSITION, "positions >= 1 (1: the top slot; a log counting from 0 is shifted)",
                            f"{int(negative.sum())} negative positions", frame[negative])
    if position[known].min() == 0:
        logging.getLogger(__name__).warning("table 'events', column 'position': the smallest position is 0, so the log counts slots "
                                            "from 0; every position is shifted by one (1: the top slot)")
        frame[POSITION] = frame[POSITION] + 1
    shown = frame.loc[known & frame[REQUEST_ID].notna().to_numpy(), [REQUEST_ID, POSITION, ITEM_ID]].drop_duplicates()
    clash = shown.duplicated([REQUEST_ID, POSITION], keep=False).to_numpy()
    if clash.any():
        rows = shown[clash].sort_values([REQUEST_ID, POSITION])
        raise ContractError(EVENTS, POSITION, "one item per position within a request",
                            f"{rows[REQUEST_ID].nunique()} requests with two or more items at one position", rows)


def _pandas_dtype(dtype: pa.DataType) -> str:
    if pa.types.is_string(dtype):
        return "str"
    if pa.types.is_floating(dtype):
        return "float64"
    if pa.types.is_integer(dtype):
        return "Int32"
    return "datetime64[us]"


def _check_not_null(table: str, column: str, frame: pd.DataFrame) -> None:
    nulls = frame[column].isna() | frame[column].astype("str").str.len().eq(0)
    if nulls.any():
        raise ContractError(table, column, "non-null, non-empty ids", f"{int(nulls.sum())} null or empty values", frame[nulls])


def _parse_timestamps(table: str, column: str, frame: pd.DataFrame, required: bool, ts_format: str | None = None) -> pd.Series:
    parsed = parse_timestamps(frame[column], table, column, ts_format, frame)
    if required and parsed.isna().any():
        raise ContractError(table, column, "a timestamp on every row", f"{int(parsed.isna().sum())} null timestamps", frame[parsed.isna()])
    low = MIN_TS.get(column, MIN_TS[TS])
    out_of_range = parsed.notna() & ((parsed < low) | (parsed >= MAX_TS))
    if out_of_range.any():
        raise ContractError(
            table, column, f"timestamps in [{low.date()}, {MAX_TS.date()})", f"{int(out_of_range.sum())} out of range", frame[out_of_range]
        )
    return parsed


def empty_like_schema(name: str) -> pd.DataFrame:
    """An empty frame with the contract columns of table ``name`` (used for optional tables)."""
    return pd.DataFrame({f.name: pd.Series(dtype=_pandas_dtype(f.type)) for f in SCHEMAS[name]})
