"""One rule at each edge where input comes in: timestamps are ISO-8601 or a declared format, ids stay
text, an input directory never yields one file twice, a config file is refused (never half-read) when
it repeats a key, holds NaN, an integer no library takes, bytes that are not UTF-8 or a value too big
to quote, and a log with nothing to learn from stops with a sentence before any stage is written."""

from __future__ import annotations

import logging
import os

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table
from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.datasets import get_adapter
from rankpipe.pipeline.schema import ConfigError
from rankpipe.pipeline.scoring import check_output, read_requests
from rankpipe.pipeline.stages.prepare_parts import check_learnable


def _events(ts) -> pd.DataFrame:
    n = len(ts)
    return pd.DataFrame({S.REQUEST_ID: [f"r{i}" for i in range(n)], S.SESSION_ID: "s", S.USER_ID: "u", S.ITEM_ID: "i", S.TS: ts,
                         S.EVENT: "click"})


def test_day_first_dates_are_never_guessed_and_are_read_when_declared():
    ambiguous = ["05/03/2026", "06/03/2026"]  # every day <= 12: pandas would read them month first
    with pytest.raises(S.ContractError, match="ISO-8601") as error:
        validate_table(S.EVENTS, _events(ambiguous))
    assert error.value.column == S.TS and "dataset.ts_format" in str(error.value)
    read = validate_table(S.EVENTS, _events(ambiguous), ts_format="%d/%m/%Y")
    assert list(read[S.TS]) == [pd.Timestamp("2026-03-05"), pd.Timestamp("2026-03-06")]


def test_iso_times_with_offsets_are_one_instant_in_utc():
    read = validate_table(S.EVENTS, _events(["2026-03-05T10:00:00+02:00", "2026-03-05T08:00:00Z", "2026-03-05 08:00:00"]))
    assert read[S.TS].nunique() == 1 and read[S.TS].iloc[0] == pd.Timestamp("2026-03-05 08:00")


def test_the_tables_adapter_reads_a_declared_ts_format_and_a_link_back_is_refused(tmp_path):
    events = _events(["05/03/2026 10:00", "06/03/2026 11:30"]).drop(columns=[S.REQUEST_ID])
    (tmp_path / "events.parquet").mkdir()
    events.to_parquet(tmp_path / "events.parquet" / "part-0.parquet")
    pd.DataFrame({S.ITEM_ID: ["i"], S.TITLE: ["a film"], S.CATEGORY: ["c"]}).to_parquet(tmp_path / "items.parquet")
    adapter = get_adapter("tables")
    config = load_config(None, ['dataset.ts_format="%d/%m/%Y %H:%M"'], dataset="tables", data_path=str(tmp_path)).dataset
    read = adapter.load(config, 0).tables[S.EVENTS]
    assert sorted(read[S.TS].dt.month.unique()) == [3]  # day first, as declared
    os.symlink(tmp_path / "events.parquet", tmp_path / "events.parquet" / "again")  # a link back to itself
    with pytest.raises(S.ContractError, match="reached as"):
        adapter.load(config, 0)


def test_a_requests_csv_keeps_ids_as_text(tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text("request_id,user_id,ts,query\n001,0042,2026-03-05T10:00:00,\n002,7,2026-03-05,shoes\n", encoding="utf-8")
    requests = read_requests(path)
    assert list(requests[S.REQUEST_ID]) == ["001", "002"] and list(requests[S.USER_ID]) == ["0042", "7"]
    assert requests[S.QUERY].isna().iloc[0] and requests[S.QUERY].iloc[1] == "shoes"


def test_an_output_target_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        check_output(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_output(tmp_path / "file" / "lists.parquet")
    with pytest.raises(ConfigError, match="with --partition"):
        check_output(tmp_path / "file", "date=2026-12-01")
    check_output(tmp_path / "new" / "lists.parquet")  # a folder still to make is fine
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("text, message", [
    ("seed: 1\nrank:\n  model: lgbm_lambdarank\nseed: 2\n", "given twice"),
    ("dataset:\n  rating_threshold: .nan\n", "finite number"),
    ("recall:\n  popularity_half_life_days: .inf\n", "finite number"),
    ("seed: 99999999999\n", "within"),
    ("split:\n  valid_fraction: 0.1\n  valid_fraction: 0.3\n", "given twice"),
])
def test_a_config_file_is_refused_by_one_rule_per_kind(tmp_path, text, message):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_a_config_that_is_not_utf8_or_expands_hugely_gets_a_short_error(tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("seed: 1  # café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 at line 1"):
        load_config(latin)
    anchors = ["&a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("dataset:\n  path: [" + ", ".join(anchors) + "]\n", encoding="utf-8")  # ~400 bytes, 387M strings expanded
    with pytest.raises(ConfigError) as error:
        load_config(bomb)
    assert "dataset.path" in str(error.value) and len(str(error.value)) < 600


KEYS = ["seed", "device", "split.valid_fraction", "split.test_fraction", "dataset.rating_threshold", "dataset.ts_format", "recall.k",
        "recall.quotas", "recall.quotas.ease", "recall.merge", "rank.model", "rank.lightgbm.learning_rate", "rank.candidate_requests",
        "rerank.chain", "rerank.k", "evaluate.protocol", "promote.guardrails", "features.windows_days", "unknown", "rank.unknown"]
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def _nested(key: str, value):
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(st.tuples(st.sampled_from(KEYS), VALUES), max_size=4), anchor=st.booleans(), repeat=st.booleans())
def test_any_config_file_is_valid_or_a_config_error(tmp_path, entries, anchor, repeat):
    document: dict = {}
    for key, value in entries:
        node, parts = document, key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node.get(part, {}), dict) else {}
        node[parts[-1]] = value
    text = yaml.safe_dump(document, sort_keys=False)
    if anchor and entries:  # YAML features: an anchor reused under another key
        text = f"base: &base {yaml.safe_dump(entries[0][1], default_flow_style=True).strip()}\n" + text
    if repeat and entries:  # a key given twice
        text += yaml.safe_dump(_nested(*entries[0]), sort_keys=False)
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        config = load_config(path)
    except ConfigError as error:
        assert len(str(error)) < 2000  # quoted, not dumped
        return
    assert np.isfinite(config.dataset.rating_threshold) and abs(config.seed) < 2**31


def _labels(requests, grades):
    return pd.DataFrame({S.REQUEST_ID: requests[S.REQUEST_ID], S.ITEM_ID: "i", S.GRADE: grades})


def test_a_log_with_nothing_to_learn_from_stops_with_a_sentence(caplog):
    requests = pd.DataFrame({S.REQUEST_ID: ["a", "b", "v", "c"], S.SPLIT: [S.TRAIN, S.TRAIN, S.VALID, S.TEST]})
    events = pd.DataFrame({S.ITEM_ID: ["i", "i"], S.EVENT: ["click", "click"], S.TS: pd.to_datetime(["2026-01-01", "2026-01-05"])})
    items = pd.DataFrame({S.ITEM_ID: ["i"], S.CREATED_AT: pd.to_datetime(["2026-01-03"])})
    with pytest.raises(S.ContractError, match="positive events .* in the training period"):
        check_learnable(events, requests, _labels(requests, [0, 0, 1, 1]), items)
    with pytest.raises(S.ContractError, match="validation period"):
        check_learnable(events, requests, _labels(requests, [1, 0, 0, 1]), items)
    with caplog.at_level(logging.WARNING):
        check_learnable(events, requests, _labels(requests, [1, 0, 1, 0]), items)  # one of two clicks is before the launch: said
    assert "1 of 2 positive events" in caplog.text
    with pytest.raises(S.ContractError, match="launched later"):
        check_learnable(events, requests, _labels(requests, [1, 0, 1, 0]), items.assign(**{S.CREATED_AT: pd.Timestamp("2027-01-01")}))


def test_json_and_parquet_ids_are_read_as_written_or_refused():
    assert list(S.id_strings(pd.Series([7, 1078]), "f.json", "aid")) == ["7", "1078"]
    assert list(S.id_strings(pd.Series(["001", None]), "f.json", "docId").fillna("-")) == ["001", "-"]
    for bad in (pd.Series([1078.0, np.nan]), pd.Series([1.5]), pd.Series(["a", 3], dtype=object)):
        with pytest.raises(S.ContractError, match="ids written as strings or whole numbers") as error:
            S.id_strings(bad, "f.json", "aid")
        assert error.value.table == "f.json" and error.value.column == "aid"


@pytest.mark.parametrize("override", ["features.windows_days=[1, 2000000000]", "dataset.session_gap_minutes=1000000000000000", "recall.itemcf_half_life_days=1000000000.0",
                                      "dataset.synthetic.days=500000"])
def test_a_span_of_time_past_a_century_is_refused_at_load(override):
    # pandas' Timedelta ends near 292 years: such a window used to overflow in the features stage, after prepare was written
    with pytest.raises(ConfigError, match=r"expected a value in \[|expected a value in \("):
        load_config(None, [override])
