"""The data contract: every kind of bad input is named precisely."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table


def _events(**changes):
    frame = pd.DataFrame({
        "ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:01"]), "user_id": ["u1", "u2"], "session_id": ["s1", "s2"],
        "item_id": ["i1", "i2"], "event": ["impression", "click"], "value": [None, None], "request_id": ["r1", "r2"],
        "query": [None, "red shirt"], "position": [1, 2],
    })
    for column, values in changes.items():
        if values is None:
            frame = frame.drop(columns=[column])
        else:
            frame[column] = values
    return frame


def test_valid_events_are_normalised_and_input_untouched():
    raw = _events(ts=["2026-01-01T10:00:00", "2026-01-01T10:01:00"])
    out = validate_table("events", raw)
    assert str(out["ts"].dtype) == "datetime64[us]"
    assert out["position"].dtype == "Int32"
    assert raw["ts"].dtype == object or str(raw["ts"].dtype) == "str"  # the input is not modified


def test_optional_columns_are_added():
    out = validate_table("events", _events(value=None, query=None, position=None, request_id=None))
    assert {"value", "query", "position", "request_id"} <= set(out.columns)
    assert out["query"].isna().all()


@pytest.mark.parametrize(
    "changes, column, expected",
    [
        ({"user_id": None}, "user_id", "no such column"),
        ({"item_id": [1, 2]}, "item_id", "type int64"),
        ({"item_id": ["i1", None]}, "item_id", "null or empty"),
        ({"session_id": ["s1", ""]}, "session_id", "null or empty"),
        ({"ts": ["2026-01-01", "not a time"]}, "ts", "unparsable"),
        ({"ts": pd.to_datetime(["1970-01-01", "2026-01-01"])}, "ts", "out of range"),
        ({"ts": [1, 2]}, "ts", "type int64"),
        ({"event": ["impression", "like"]}, "event", "other values"),
        ({"value": ["a", "b"]}, "value", "string"),
    ],
)
def test_bad_events_name_table_column_and_rows(changes, column, expected):
    with pytest.raises(S.ContractError) as info:
        validate_table("events", _events(**changes))
    err = info.value
    assert err.table == "events" and err.column == column
    assert expected in str(err)
    assert "table 'events'" in str(err) and f"column '{column}'" in str(err)


def test_offending_rows_are_shown_at_most_five():
    frame = pd.concat([_events()] * 6, ignore_index=True)
    frame["event"] = "bogus"
    with pytest.raises(S.ContractError) as info:
        validate_table("events", frame)
    assert len(info.value.rows) == 5
    assert "offending rows (first 5)" in str(info.value)


def test_empty_table_and_arrow_input():
    with pytest.raises(S.ContractError, match="empty table"):
        validate_table("items", pd.DataFrame({"item_id": [], "title": [], "category": []}))
    table = pa.table({"item_id": ["a"], "title": ["t"], "category": ["x>y"]})
    out = validate_table("items", table)
    assert list(out["item_id"]) == ["a"] and out["price"].isna().all()


def test_unknown_table():
    with pytest.raises(S.ContractError, match="unknown table"):
        validate_table("clicks", pd.DataFrame({"a": [1]}))


def test_null_typed_columns_from_parquet_are_nulls_where_the_contract_allows_them(tmp_path):
    """pandas writes an all-None column to Parquet as type null: a nullable column (request_id,
    query, brand) reads as nulls; a required id of nulls only is refused for its nulls, not its type."""
    import pyarrow.parquet as pq

    _events(request_id=[None, None], query=[None, None]).to_parquet(tmp_path / "events.parquet")
    table = pq.read_table(tmp_path / "events.parquet")
    assert pa.types.is_null(table.schema.field("request_id").type)
    events = validate_table("events", table)
    assert str(events["request_id"].dtype) == "str" and events["request_id"].isna().all() and events["query"].isna().all()
    items = pd.DataFrame({"item_id": ["a", "b"], "title": ["t", "u"], "category": ["x>y", "x"], "brand": [None, None]})
    items.to_parquet(tmp_path / "items.parquet")
    assert validate_table("items", pq.read_table(tmp_path / "items.parquet"))["brand"].isna().all()
    _events(user_id=[None, None]).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(S.ContractError, match="column 'user_id': expected non-null, non-empty ids; found 2 null or empty values"):
        validate_table("events", pq.read_table(tmp_path / "bad.parquet"))
