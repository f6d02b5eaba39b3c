"""Query suggestion: normalization, prefix completion and its fallback, the character model, blending, evaluation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rankpipe.generative.blend import BlendedSuggester, blend_lists
from rankpipe.generative.charlm import CharLM, CharLMConfig
from rankpipe.generative.evaluate import prefix_pairs, run_suggester, summarize, target_ranks
from rankpipe.generative.normalize import normalize_queries, normalize_query
from rankpipe.generative.prefix import PrefixCompleter

LOG = pd.Series(["red shoes"] * 5 + ["red shirt"] * 3 + ["blue shirt"] * 2 + ["running shoes"] * 4 + ["红色连衣裙"] * 3 + ["白色连衣裙"] * 2
                + ["wireless headphones"] * 2)


def test_normalization_folds_width_case_and_spaces_in_english_and_chinese():
    assert normalize_query("  ＲＥＤ　Ｓｈｏｅｓ  ") == "red shoes"  # full-width letters and the ideographic space
    assert normalize_query("Straße\tMAP") == "strasse map"
    assert normalize_query("红色　连衣裙！") == "红色 连衣裙!"  # Chinese kept, full-width punctuation folded
    assert normalize_query("ｉＰｈｏｎｅ１５") == "iphone15"
    assert normalize_query(None) == "" and normalize_query("   ") == ""
    assert normalize_queries(pd.Series(["ＡＢ  c", None, "红色"])).tolist() == ["ab c", "", "红色"]


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_normalization_is_idempotent_and_the_column_version_agrees(text):
    once = normalize_query(text)
    assert normalize_query(once) == once
    assert normalize_queries(pd.Series([text])).iloc[0] == once


def test_prefix_completion_orders_by_count_and_normalizes_the_typed_prefix():
    completer = PrefixCompleter().fit(LOG)
    assert [q for q, _ in completer.suggest("RED ", 5)][:2] == ["red shoes", "red shirt"]
    scores = dict(completer.suggest("red", 5))
    assert scores["red shoes"] == pytest.approx(5 / 8)  # the share of the prefix's count
    assert [q for q, _ in completer.suggest("红色", 3)][0] == "红色连衣裙"
    assert [q for q, _ in completer.suggest("", 2)] == ["red shoes", "running shoes"]  # empty: the most popular


def test_time_decay_prefers_recent_queries():
    log = pd.Series(["old query"] * 4 + ["new query"] * 2)
    ts = pd.Series(pd.to_datetime(["2026-01-01"] * 4 + ["2026-03-01"] * 2))
    assert [q for q, _ in PrefixCompleter(half_life_days=7).fit(log, ts).suggest("", 2)][0] == "new query"
    assert [q for q, _ in PrefixCompleter(half_life_days=1e9).fit(log, ts).suggest("", 2)][0] == "old query"


def test_unseen_prefixes_fall_back_to_popular_suffixes_in_english_and_chinese():
    completer = PrefixCompleter().fit(LOG)
    assert not completer.seen("green sh")
    assert [q for q, _ in completer.suggest("green sh", 3)] == ["green shoes", "green shirt"]  # shoes: 5 + 4, shirt: 3 + 2
    assert "粉色连衣裙" in [q for q, _ in completer.suggest("粉色连衣", 5)]  # the last Chinese characters as the partial word
    assert completer.suggest("zzz qqq", 5) == []  # nothing to complete with
    fallback = dict(completer.suggest("green sh", 3))
    assert max(fallback.values()) <= completer.fallback_weight  # ranked below any logged completion in a blend


def test_very_long_and_odd_prefixes_do_not_break_the_suggesters():
    completer = PrefixCompleter().fit(LOG)
    long = "red " * 500
    assert completer.suggest(long, 5) is not None
    lm = _tiny_lm()
    assert isinstance(lm.suggest(long, 5), list) and isinstance(lm.suggest("", 5), list)
    assert isinstance(lm.suggest("\x00\U0001F600", 3), list)  # characters the model never saw


def test_empty_log_is_a_clear_error():
    with pytest.raises(ValueError, match="no non-empty query"):
        PrefixCompleter().fit(pd.Series(["", "  "]))
    with pytest.raises(ValueError, match="no non-empty query"):
        CharLM(progress=False).fit(pd.Series([None]))


def _tiny_lm(seed: int = 0) -> CharLM:
    return CharLM(CharLMConfig(dim=32, layers=2, heads=2, max_len=24, dropout=0.0), epochs=60, batch_size=16,
                  learning_rate=1e-2, min_count=1, seed=seed, progress=False).fit(LOG)


def test_char_model_learns_the_log_completes_unseen_prefixes_and_is_deterministic(tmp_path):
    torch.set_num_threads(1)
    lm = _tiny_lm()
    top = lm.suggest("red sh", 3)
    assert top[0][0] == "red shoes" and {q for q, _ in top[:2]} == {"red shoes", "red shirt"}
    assert 0 < sum(p for _, p in top) <= 1 + 1e-6  # probabilities of distinct queries given the prefix
    # "wireless sh" never starts a logged query; the model continues the word it has seen after other words.
    assert any(q in ("wireless shoes", "wireless shirt") for q, _ in lm.suggest("wireless sh", 5))
    words = set(" ".join(LOG).split())
    for query, _ in lm.suggest("r", 10) + lm.suggest("wireless ", 10):
        assert set(query.split()) <= words, query  # it spells only the log's words
    # A partial word no logged word starts with is kept as typed, never extended into a new word.
    for query, _ in lm.suggest("red xyzzy", 10):
        assert set(query.split()) <= words | {"xyzzy"}, query
    assert _tiny_lm().suggest("blu", 5) == lm.suggest("blu", 5)  # same seed, same model, same list
    lm.save(tmp_path / "lm.pt")
    assert CharLM.load(tmp_path / "lm.pt").suggest("blu", 5) == lm.suggest("blu", 5)


def test_decoding_prefixes_together_gives_each_prefix_its_own_list():
    torch.set_num_threads(1)
    lm = _tiny_lm()
    # Prompts of one length step together, of several lengths in separate groups; the last one is
    # typed past max_len and cut, so it has no room left to grow.
    prefixes = ["r", "b", "red sh", "blu", "wireless ", "red xyzzy", "", "红", "red", "x" * 40]
    together = lm.complete_many(prefixes, 5, chunk=3)
    for prefix, found in zip(prefixes, together):
        alone = lm.complete(prefix, 5)
        assert [q for q, _ in found] == [q for q, _ in alone], prefix
        # The same arithmetic over more rows at once: BLAS may sum in another order.
        assert np.allclose([p for _, p in found], [p for _, p in alone], rtol=1e-4), prefix
    assert [[q for q, _ in found] for found in lm.suggest_many(prefixes[:2], 3)] == [[q for q, _ in lm.suggest(p, 3)] for p in prefixes[:2]]
    with pytest.raises(ValueError, match="one context per prefix"):
        lm.complete_many(["r"], contexts=["a", "b"])


def test_conditional_model_writes_each_context_its_own_queries_and_never_trains_on_the_context(tmp_path):
    torch.set_num_threads(1)
    contexts = pd.Series(["acme red wool scarf", "zed blue steel kettle", "acme green cotton scarf"] * 40)
    queries = pd.Series(["red scarf", "kettle", "green scarf"] * 40)
    config = CharLMConfig(dim=32, layers=1, heads=2, max_len=16, dropout=0.0, max_context=24)

    def fit():
        return CharLM(config, epochs=40, batch_size=32, learning_rate=1e-2, min_count=1, progress=False).fit(queries, contexts=contexts)

    lm = fit()
    ids, targets = lm._batch(["kettle"], ["zed blue steel kettle"])
    head = len("zed blue steel kettle")
    assert ids[0, head] == 1 and (targets[0, :head] == 0).all() and (targets[0, head:] == ids[0, head + 1:]).all()  # context masked
    assert lm.complete("", 1, context="zed blue steel kettle")[0][0] == "kettle"
    assert lm.complete("", 1, context="acme red wool scarf")[0][0] == "red scarf"
    assert lm.complete("", 1, context="acme green cotton scarf")[0][0] == "green scarf"
    assert lm.complete("gr", 1, context="acme green cotton scarf")[0][0] == "green scarf"  # a typed prefix still continues
    first = lm.complete("", 3, context="acme red wool scarf")
    assert fit().complete("", 3, context="acme red wool scarf") == first  # same seed, same queries
    contexts_now = ["acme red wool scarf", "zed blue steel kettle", "acme green cotton scarf"]
    together = lm.complete_many(["", "", ""], 3, contexts=contexts_now)  # contexts of different lengths: separate groups
    assert [[q for q, _ in found] for found in together] == [[q for q, _ in lm.complete("", 3, context=c)] for c in contexts_now]
    lm.save(tmp_path / "d2q.pt")
    assert CharLM.load(tmp_path / "d2q.pt").complete("", 3, context="acme red wool scarf") == first
    with pytest.raises(ValueError, match="contexts"):
        CharLM(config, progress=False).fit(queries)  # a conditional model without contexts


def test_generated_query_channel_finds_cold_items_by_queries_written_from_their_text():
    from rankpipe.pipeline.schema import cold_items
    from rankpipe.ranking.recall import GeneratedQueryRecall

    torch.set_num_threads(1)
    leaves = ["scarf", "kettle", "lamp", "mug"]
    items = pd.DataFrame({"item_id": [f"i{j}" for j in range(12)], "title": [f"brand{j} {leaves[j % 4]}" for j in range(12)],
                          "category": [f"home>{leaves[j % 4]}" for j in range(12)]})
    warm = items.head(8)  # items 8-11 never clicked: cold
    rows = warm.loc[warm.index.repeat(30)]
    events = pd.DataFrame({"ts": pd.date_range("2026-01-01", periods=len(rows), freq="min"), "user_id": "u", "item_id": rows["item_id"].to_numpy(),
                           "event": "click", "query": rows["title"].str.split(" ").str[1].to_numpy()})
    assert cold_items(events, items)["item_id"].tolist() == ["i8", "i9", "i10", "i11"]
    channel = GeneratedQueryRecall(dim=32, layers=1, epochs=30, progress=False).fit(events, items)
    assert set(channel.generated_["item_id"]) <= {"i8", "i9", "i10", "i11"}
    requests = pd.DataFrame({"request_id": ["r1", "r2", "r3"], "user_id": "u", "ts": pd.Timestamp("2026-02-01"),
                             "query": ["Kettle", None, "unknown words"]})
    found = channel.retrieve(requests, 5, None)
    assert found.loc[found["request_id"] == "r1", "item_id"].iloc[0] == "i9"  # the cold kettle, by its generated query "kettle"
    assert set(found["request_id"]) == {"r1"}  # feed requests and queries nobody would write get nothing


def test_kv_cache_decoding_and_the_numpy_decoder_match_a_full_forward_pass():
    from rankpipe.generative.charlm import NumpyDecoder

    lm = _tiny_lm()
    ids = torch.as_tensor([[1, 5, 6, 7, 8], [1, 9, 4, 5, 6]])
    with torch.no_grad():
        full = lm.model_(ids)  # (2, 5, V), causal mask over the whole sequence
        caches = [[] for _ in lm.model_.blocks]
        lm.model_(ids[:, :3], caches)
        lm.model_(ids[:, 3:4], caches, start=3)
        stepped = lm.model_(ids[:, 4:5], caches, start=4)[:, -1]
    torch.testing.assert_close(stepped, full[:, -1], rtol=1e-5, atol=1e-5)
    decoder, caches = NumpyDecoder(lm.model_), [[] for _ in lm.model_.blocks]
    np.testing.assert_allclose(decoder(ids[:, :3].numpy(), caches, 0), full[:, :3].numpy(), rtol=1e-4, atol=1e-4)
    decoder(ids[:, 3:4].numpy(), caches, 3)
    np.testing.assert_allclose(decoder(ids[:, 4:5].numpy(), caches, 4)[:, -1], full[:, -1].numpy(), rtol=1e-4, atol=1e-4)


def test_blend_sums_weighted_scores_and_keeps_both_sources():
    assert blend_lists([[("a", 0.6), ("b", 0.4)], [("b", 0.9), ("c", 0.1)]], [0.5, 0.5], 3) == [("b", 0.65), ("a", 0.3), ("c", 0.05)]
    completer = PrefixCompleter().fit(LOG)
    blended = BlendedSuggester(completer, completer, 0.5).suggest("red", 5)
    assert blended == completer.suggest("red", 5)  # a suggester blended with itself is itself
    with pytest.raises(ValueError, match="generative_weight"):
        BlendedSuggester(completer, completer, 1.5)


def test_evaluation_pairs_every_prefix_and_scores_ranks():
    pairs = prefix_pairs(pd.Series(["Ab", "红色"]))
    assert pairs["prefix"].tolist() == ["a", "ab", "红", "红色"] and pairs["target"].tolist() == ["ab", "ab", "红色", "红色"]
    lists, ms = run_suggester(lambda p, k: [("x", 1.0), (p, 0.5)], pairs["prefix"])
    ranks = target_ranks(lists, pairs["target"])
    assert ranks.tolist() == [0, 2, 0, 2] and len(ms) == 4
    summary = summarize(ranks, np.array([True, True, False, False]), ms)
    assert summary["mrr_all"] == pytest.approx(0.25) and summary["mrr_seen"] == pytest.approx(0.25)
    assert summary["success_at_1_all"] == 0 and summary["success_at_3_all"] == 0.5 and "p99_ms" in summary


def test_batched_suggestions_are_judged_as_listed_and_timed_on_a_sample_of_single_calls():
    single, batched = [], []

    def suggest(prefix, k):
        single.append(prefix)
        return [("single", 1.0)]

    def suggest_many(prefixes, k):
        batched.append(list(prefixes))
        return [[(p + "!", 1.0)] for p in prefixes]

    prefixes = pd.Series(["a", "ab", "a", "abc", "abcd"])
    lists, ms = run_suggester(suggest, prefixes, answered={}, suggest_many=suggest_many, timed=2)
    assert batched == [["a", "ab", "abc", "abcd"]] and lists[2] == lists[0] == [("a!", 1.0)]  # the batch's lists
    assert len(single) == 2 and np.isfinite(ms).sum() == sum(p in single for p in prefixes)  # two prefixes timed alone
    summary = summarize(np.ones(len(prefixes), dtype=int), np.ones(len(prefixes), dtype=bool), ms)
    assert np.isfinite(summary["p99_ms"]) and summary["p99_ms"] <= np.nanmax(ms)  # the untimed ones are left out


def test_a_prefix_is_answered_once_across_calls_that_share_answers():
    calls = []

    def suggest(prefix, k):
        calls.append(prefix)
        return [(prefix + "!", 1.0)]

    answered: dict = {}
    first, first_ms = run_suggester(suggest, pd.Series(["a", "ab", "a"]), answered=answered)
    second, second_ms = run_suggester(suggest, pd.Series(["ab", "abc"]), answered=answered)
    assert calls == ["a", "ab", "abc"]  # "a" twice in one call and "ab" in both: each decoded once
    assert second[0] == first[1] == [("ab!", 1.0)] and second_ms[0] == first_ms[1]
    assert run_suggester(suggest, pd.Series(["a"]))[0] == [[("a!", 1.0)]] and calls[-1] == "a"  # no shared dict: asked again


# ------------------------------------------------------------------------------ sessions, stage, CLI
def _searches():
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(8)], "user_id": ["u1", "u1", "u2", "u2", "u3", "u3", "u1", "u2"],
        "session_id": ["s1", "s1", "s2", "s2", "s3", "s3", "s4", "s5"],
        "ts": pd.to_datetime(["2026-01-01 10:00", "2026-01-01 10:01", "2026-01-02 09:00", "2026-01-02 09:02",
                              "2026-01-03 08:00", "2026-01-03 08:05", "2026-01-04 12:00", "2026-01-05 12:00"]),
        "query": ["shoes", "red shoes", "shoes", "running shoes", "lamp", "desk lamp", "red shoes", "lamp"]})


def test_next_query_learns_refinements_and_falls_back_to_queries_containing_it():
    from rankpipe.generative.sessions import NextQuerySuggester

    model = NextQuerySuggester().fit(_searches())
    assert {q for q, _ in model.suggest("SHOES", 5)} == {"red shoes", "running shoes"}
    assert [q for q, _ in model.suggest("desk", 5)] == ["desk lamp"]  # never typed first: the logged queries holding it
    assert model.suggest("", 3) == [] and model.suggest("zzz", 3) == []


def test_presearch_personalizes_known_users_and_serves_unknown_ones_the_popular_queries():
    from rankpipe.generative.sessions import PreSearchSuggester

    searches = _searches()
    clicks = pd.DataFrame({"request_id": ["r1", "r5"], "user_id": ["u1", "u3"], "item_id": ["i1", "i2"], "ts": searches["ts"].iloc[[1, 5]].to_numpy()})
    items = pd.DataFrame({"item_id": ["i1", "i2"], "category": ["footwear", "lighting"]})
    model = PreSearchSuggester().fit(searches, clicks, items)
    own = [q for q, _ in model.suggest("u3", 3)]
    assert set(own[:2]) == {"lamp", "desk lamp"}  # her own queries first
    unknown = model.suggest("nobody", 2)
    assert unknown == model.suggest(None, 2) and len(unknown) == 2 and unknown[0][1] <= 1.0


@pytest.mark.slow
def test_suggest_stage_registers_a_suggester_that_the_cli_and_mlflow_serve(tmp_path, capsys, monkeypatch):
    import mlflow
    from worlds import SMALL_WORLD

    from rankpipe.pipeline.cli import main

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = str(tmp_path / "work")
    assert main(["stage", "suggest", "--workdir", work, "--run-id", "s", "--quiet", *[a for s in SMALL_WORLD for a in ("--set", s)]]) == 0
    metrics = json.loads((tmp_path / "work" / "runs" / "s" / "metrics.json").read_text())
    assert set(metrics) >= {"suggest.prefix.mrr_all", "suggest.blended.mrr_all", "suggest.next_query.mrr", "suggest.presearch.mrr"}
    assert not any(k.startswith(("features.", "recall.", "rank.")) for k in metrics)  # the stage needs only prepare
    assert metrics["suggest.prefix.mrr_all"] > 0.5  # the world's searches repeat popular queries
    assert metrics["suggest.presearch.mrr"] > metrics["suggest.presearch_popular.mrr"]  # her history beats the global list
    capsys.readouterr()
    assert main(["suggest", "b", "--workdir", work, "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert 1 <= len(lines) <= 3 and all(line.split("\t")[1].startswith("b") for line in lines[:1])
    assert main(["suggest", "", "--user", "nobody", "--workdir", work, "--k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2
    assert main(["suggest", "b", "--workdir", work, "--k", "0"]) == 2
    capsys.readouterr()
    # A suggestion's score does not depend on how many are asked for; none is shown as 0.0000.
    from rankpipe.generative.suggester import QuerySuggester

    suggester = QuerySuggester.load(tmp_path / "work" / "runs" / "s" / "suggest" / "suggester")
    for prefix in ("b", "bl", "red "):
        three, ten = suggester.explained(prefix, k=3), suggester.explained(prefix, k=10)
        assert three == ten[:3], prefix
        assert all(score >= 1e-3 * ten[0][1] for _, score, _ in ten)
        assert {source for _, _, source in ten} <= {"log", "log endings", "model", "log+model", "log endings+model"}
    # Nothing in the log starts with "xyzzy": no invented word, and the output says where the suggestions come from.
    assert main(["suggest", "xyzzy", "--workdir", work]) == 0
    captured = capsys.readouterr()
    vocabulary = set(suggester.lm.words_)
    for line in captured.out.strip().splitlines():
        score, query, source = line.split("\t")
        assert float(score) > 0 and source == "model" and set(query.split()) <= vocabulary | {"xyzzy"}, line
    # Either the model's words after it (said so), or nothing (said so), depending on the blend weight the run chose.
    said = "no logged query continues 'xyzzy'" if captured.out.strip() else "no suggestions: nothing in the log or its vocabulary continues 'xyzzy'"
    assert said in captured.err
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}")
    from rankpipe.pipeline.config import load_config
    from rankpipe.pipeline.promotion import registered_name

    name = registered_name(load_config(None, SMALL_WORLD), "suggester")
    served = mlflow.pyfunc.load_model(f"models:/{name}@champion").predict(pd.DataFrame({"prefix": ["b", ""]}))
    assert len(served) == 2 and served[0][0]["query"].startswith("b")


@pytest.mark.slow
@pytest.mark.realdata
def test_suggest_stage_on_the_real_query_lists(tmp_path, monkeypatch):
    from rankpipe.pipeline.cli import main
    from rankpipe.pipeline.datasets import shared_data_dir

    data = shared_data_dir()
    if data is None:
        pytest.skip("../shared/data is absent (set RANKPIPE_SHARED_DATA to its location)")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    work = str(tmp_path / "work")
    assert main(["run", "--dataset", "queries", "--path", str(data / "queries"), "--workdir", work, "--run-id", "q", "--quiet",
                 "--set", "suggest.epochs=1", "--set", "suggest.dim=32", "--set", "suggest.layers=1", "--set", "suggest.eval_queries=20"]) == 0
    metrics = json.loads((tmp_path / "work" / "runs" / "q" / "metrics.json").read_text())
    for source in ("wands", "esci", "nq"):
        assert metrics[f"suggest.{source}.prefix.pairs_all"] > 0
    assert metrics["suggest.prefix.pairs_unseen"] > 0  # held-out queries: most of their prefixes were never logged


# ------------------------------------------------------------------------------ tabular augmentation
def test_tabular_vae_keeps_the_columns_kinds_and_follows_the_label():
    from rankpipe.generative.tabular_vae import TabularVAE, TabularVAEConfig

    rng = np.random.default_rng(0)
    n = 3000
    grade = rng.integers(0, 2, n)
    X = pd.DataFrame({"signal": rng.normal(size=n) + 3 * grade,  # shifts with the grade
                      "level": rng.integers(0, 5, n).astype(float) * 10,  # five values: categorical
                      "heavy": rng.lognormal(0, 2, n)})
    X.loc[rng.random(n) < 0.2, "heavy"] = np.nan
    vae = TabularVAE(TabularVAEConfig(latent=4, hidden=64, epochs=40), seed=0, progress=False).fit(X, grade)
    synthetic = vae.sample(np.repeat([0, 1], 1000), seed=1)
    assert list(synthetic.columns) == list(X.columns) and len(synthetic) == 2000
    assert synthetic["signal"][1000:].mean() - synthetic["signal"][:1000].mean() > 2  # conditioned on the grade
    assert 0.1 < synthetic["heavy"].isna().mean() < 0.3  # missing values come back at about their rate
    assert synthetic["heavy"].dropna().between(X["heavy"].min(), X["heavy"].max()).all()  # inside train's range
    assert vae.categorical_ == ["level"] and set(synthetic["level"]) <= set(X["level"])  # only levels train had
    pd.testing.assert_frame_equal(vae.sample(np.repeat([0, 1], 1000), seed=1), synthetic)  # seeded
    with pytest.raises(ValueError, match="not in the training labels"):
        vae.sample(np.array([5]))
