"""Fuzzing the ``tables`` adapter (issue 25): hypothesis breaks a small valid log and catalogue (columns
dropped or retyped, nulls, repeated rows, unicode and empty ids, extreme numbers and times) and
writes them as Parquet files. Each example must end in success or in the contract's exit-2 error
(ContractError / ConfigError), never in a traceback from inside the adapter, prepare or features."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, given, reject, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.pipeline import stages
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.datasets import get_adapter

pytestmark = pytest.mark.slow

N_ITEMS, N_REQUESTS = 8, 12


def _valid_tables() -> dict[str, pd.DataFrame]:
    """A log the contract accepts: 12 requests of 4 users over two days, three items shown in each
    (slots 1-3) and the first clicked (every third one bought); a catalogue of 8 items."""
    rows = []
    for r in range(N_REQUESTS):
        ts = pd.Timestamp("2026-03-01 08:00") + pd.Timedelta(hours=4 * r)
        user, query = f"u{r % 4}", ("red shirt" if r % 2 else None)
        for slot in range(3):
            item = f"i{(r + slot) % N_ITEMS}"
            rows.append((ts, user, f"s{r}", item, "impression", np.nan, f"r{r}", query, slot + 1))
        rows.append((ts + pd.Timedelta(seconds=30), user, f"s{r}", f"i{r % N_ITEMS}", "click", np.nan, f"r{r}", query, 1))
        if r % 3 == 0:
            rows.append((ts + pd.Timedelta(seconds=60), user, f"s{r}", f"i{r % N_ITEMS}", "purchase", 19.9, f"r{r}", query, 1))
    events = pd.DataFrame(rows, columns=[S.TS, S.USER_ID, S.SESSION_ID, S.ITEM_ID, S.EVENT, S.VALUE, S.REQUEST_ID, S.QUERY, S.POSITION])
    items = pd.DataFrame({S.ITEM_ID: [f"i{j}" for j in range(N_ITEMS)], S.TITLE: [f"shirt {j}" for j in range(N_ITEMS)],
                          S.CATEGORY: ["tops>shirts", "tops", "shoes"] * 2 + ["bags", "bags>small"], S.BRAND: ["acme", None] * 4,
                          S.PRICE: np.linspace(5, 50, N_ITEMS), S.CREATED_AT: pd.Timestamp("2026-01-01")})
    return {S.EVENTS: events, S.ITEMS: items}


ODD_STRINGS = st.sampled_from(["", " ", "é", "红色衬衫", "🙂", "\x00", "a" * 300, "None", "nan", "i0", "u0", "r0", "../x", "tops>>", ">"])
ODD_NUMBERS = st.sampled_from([0, -1, 1, 2**31 - 1, -(2**31), 2**40, 1e308, -1e308, np.inf, -np.inf, np.nan, 0.5, -0.0])
ODD_TIMES = st.sampled_from(["1970-01-01", "1800-01-01", "2099-12-31", "2100-01-02", "2026-03-01T08:00:00+05:00", "yesterday", ""])


@st.composite
def broken_tables(draw) -> dict[str, pd.DataFrame]:
    """The valid tables with one to three breakages drawn at random."""
    tables = {name: frame.copy() for name, frame in _valid_tables().items()}
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from([S.EVENTS, S.ITEMS]))
        frame = tables[name]
        if frame.empty or not len(frame.columns):  # emptied by an earlier breakage: nothing left to break
            continue
        column = draw(st.sampled_from(list(frame.columns)))
        rows = draw(st.lists(st.integers(0, len(frame) - 1), min_size=1, max_size=5, unique=True))
        kind = draw(st.sampled_from(["drop", "retype", "nulls", "repeat", "strings", "numbers", "times", "shuffle", "empty"]))
        if kind == "drop":
            frame = frame.drop(columns=[column])
        elif kind == "retype":
            target = draw(st.sampled_from(["int", "float", "str", "bool", "category"]))
            try:
                frame[column] = {"int": lambda c: pd.factorize(c)[0], "float": lambda c: pd.factorize(c)[0] + 0.5,
                                 "str": lambda c: c.astype(str), "bool": lambda c: pd.factorize(c)[0] % 2 == 0,
                                 "category": lambda c: c.astype("category")}[target](frame[column])
            except (TypeError, ValueError):
                reject()
        elif kind == "nulls":
            frame[column] = frame[column].astype(object)
            frame.loc[frame.index[rows], column] = None
        elif kind == "repeat":
            frame = pd.concat([frame, frame.iloc[rows]], ignore_index=True)
        elif kind in ("strings", "numbers", "times"):
            values = draw(st.lists({"strings": ODD_STRINGS, "numbers": ODD_NUMBERS, "times": ODD_TIMES}[kind],
                                   min_size=len(rows), max_size=len(rows)))
            frame[column] = frame[column].astype(object)
            frame.loc[frame.index[rows], column] = pd.Series(values, index=frame.index[rows], dtype=object)
        elif kind == "shuffle":
            frame = frame.sample(frac=1.0, random_state=draw(st.integers(0, 100))).reset_index(drop=True)
        else:  # a table with its columns but no row
            frame = frame.iloc[:0]
        tables[name] = frame
    return tables


def _write(tables: dict[str, pd.DataFrame], directory: Path) -> None:
    """Parquet files as a user's tool would write them; a frame pyarrow cannot store is no file at all."""
    for name, frame in tables.items():
        try:
            frame.to_parquet(directory / f"{name}.parquet")
        except (pa.ArrowException, ValueError, TypeError, OverflowError):
            reject()


@settings(max_examples=500, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(broken_tables())
def test_broken_tables_end_in_a_contract_error_or_a_run(tables):
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _write(tables, directory)
        config = load_config(None, [], dataset="tables", data_path=str(directory))
        try:
            dataset = get_adapter("tables").load(config.dataset, config.seed)
            prepared = stages.prepare(stages.StageInputs(None, None, dataset), config)
            outputs = {("prepare", name): table for name, table in prepared.tables.items()}
            features = stages.features(stages.StageInputs(lambda stage, name: outputs[(stage, name)], None), config)
        except (S.ContractError, S.ConfigError) as error:
            event(f"refused: {type(error).__name__} on {getattr(error, 'column', None) or 'the table'}")  # --hypothesis-show-statistics
            return  # the CLI's exit 2, with the table, column and rows named
        event("ran")
        assert len(features.tables["logged"]) == len(prepared.tables["labels"])
