"""The engine config's errors. (Local against Dask on the small world, up to rank, is in
test_pipeline_e2e.py, beside the local run it is compared with.)"""

from __future__ import annotations

import pytest
from worlds import TINY_WORLD

from rankpipe.pipeline.config import ConfigError, load_config
from rankpipe.pipeline.engine import check_engine_config
from rankpipe.pipeline.runner import Runner

pytest.importorskip("dask.distributed", reason="the dask extra is not installed (pip install -e '.[dask]')")


@pytest.mark.parametrize("override, message", [
    ("engine.name=spark", "engine.name must be one of"),
    ("engine.scheduler=tcp://x:8786", "only used with engine.name=dask"),
    ("engine.workers=0", "config key 'engine.workers': expected a value >= 1"),  # refused at load already
])
def test_engine_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check_engine_config(load_config(None, [override]).engine)


def test_unreachable_scheduler_is_a_config_error(tmp_path):
    import dask

    config = load_config(None, [*TINY_WORLD, "engine.name=dask", "engine.scheduler=tcp://127.0.0.1:9"])
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}), \
            pytest.raises(ConfigError, match="no Dask scheduler answered at 'tcp://127.0.0.1:9'"):
        Runner(config, tmp_path, "r", progress=False, track=False).run(until="features")
    assert not (tmp_path / "runs" / "r" / "features").exists()


def _tables_in_parts(directory, world, parts: int = 4) -> None:
    """``world`` as a ``tables`` directory: events in ``parts`` files written out of time order (the
    last day first), with some clicks logged as ratings (liked and not), so both the sort and the
    ratings' derived rows are exercised."""
    import numpy as np

    from rankpipe.pipeline import schema as S

    directory.mkdir()
    world.items.to_parquet(directory / "items.parquet")
    events = world.events.copy()
    clicks = np.flatnonzero((events[S.EVENT] == "click").to_numpy())[::7]
    events.loc[events.index[clicks], S.EVENT] = "rating"
    events.loc[events.index[clicks], S.VALUE] = np.where(np.arange(len(clicks)) % 2, 5.0, 1.0)
    (directory / "events").mkdir()
    for number, rows in enumerate(np.array_split(np.arange(len(events)), parts)[::-1]):
        events.iloc[rows].to_parquet(directory / "events" / f"part-{number}.parquet")


def test_prepare_on_dask_writes_the_local_tables_and_refuses_a_bad_file_before_writing(tmp_path):
    """`tables` events in part files out of time order, with ratings: prepare on Dask (the files read
    and validated on 2 workers, sorted, labelled there, written as partitioned Parquet) gives the
    local stage's requests, labels and events, value for value and in order. A bad file is a
    ContractError naming it, raised before the run writes anything."""
    import pandas as pd

    from rankpipe.pipeline import schema as S
    from rankpipe.pipeline.datasets.config import SyntheticConfig
    from rankpipe.pipeline.datasets.synthetic import generate

    world = generate(SyntheticConfig(n_users=300, n_items=150, n_sessions=600, days=6), seed=3)
    _tables_in_parts(tmp_path / "logs", world)
    common = ["engine.workers=2", "engine.partitions=3", "dataset.rating_threshold=4"]
    local = Runner(load_config(None, common, dataset="tables", data_path=str(tmp_path / "logs")), tmp_path / "w", "local",
                   progress=False, track=False)
    local.run(until="prepare")
    config = load_config(None, [*common, "engine.name=dask"], dataset="tables", data_path=str(tmp_path / "logs"))
    on_dask = Runner(config, tmp_path / "w", "dask", progress=False, track=False)
    on_dask.run(until="prepare")
    assert (on_dask.run_dir / "prepare" / "events.parquet").is_dir()  # written by the workers, a file per partition
    for table in ("requests", "labels", "events"):
        got, want = (pd.read_parquet(r.run_dir / "prepare" / f"{table}.parquet") for r in (on_dask, local))
        assert len(want) > 100
        pd.testing.assert_frame_equal(got, want, check_exact=True, obj=table)
    assert (pd.read_parquet(local.run_dir / "prepare" / "labels.parquet")[S.GRADE] >= 1).any()

    bad = pd.read_parquet(tmp_path / "logs" / "events" / "part-2.parquet").assign(**{S.EVENT: "hover"})
    bad.to_parquet(tmp_path / "logs" / "events" / "part-2.parquet")
    with pytest.raises(S.ContractError, match=r"table 'events \(events/part-2.parquet\)', column 'event'"):
        Runner(config, tmp_path / "w", "bad", progress=False, track=False).run(until="prepare")
    assert not (tmp_path / "w" / "runs" / "bad").exists()

    # A log with nothing to learn from (no click, cart or purchase; no rating liked) gets the local stage's sentence.
    for part in (tmp_path / "logs" / "events").iterdir():
        frame = pd.read_parquet(part).assign(**{S.EVENT: lambda f: f[S.EVENT].where(~f[S.EVENT].isin(S.POSITIVE_EVENTS + ("hover",)), "impression")})
        frame.to_parquet(part)
    idle = load_config(None, ["engine.workers=2", "engine.partitions=3", "dataset.rating_threshold=99", "engine.name=dask"], dataset="tables",
                       data_path=str(tmp_path / "logs"))
    with pytest.raises(S.ContractError, match="positive events .* in the training period"):
        Runner(idle, tmp_path / "w", "idle", progress=False, track=False).run(until="prepare")
    assert not (tmp_path / "w" / "runs" / "idle").exists()


def test_xgboost_on_dask_stops_early_and_ranks_as_well_as_here():
    """An XGBoost ranker trained by xgboost.dask on 2 workers (lists whole within a partition, early
    stopping on the validation lists) ranks held-out lists within 0.02 NDCG@10 of the same ranker
    trained here. (Distributed XGBoost merges the workers' quantile sketches, so trees differ a little.)"""
    import numpy as np
    import pandas as pd

    from rankpipe.pipeline.engine import open_engine, xgboost_trainer
    from rankpipe.ranking import metrics as M
    from rankpipe.ranking.rankers import XGBoostRanker

    def lists(n_lists: int, seed: int):
        rng = np.random.default_rng(seed)
        X = pd.DataFrame(rng.normal(size=(n_lists * 20, 4)), columns=["a", "b", "c", "d"])
        grade = np.digitize(1.5 * X["a"] + X["b"] - 0.5 * X["c"] + rng.normal(size=len(X)), [1.0, 2.0, 3.0])
        return X, grade, np.repeat(np.arange(n_lists), 20).astype(str)

    train, valid, test = lists(300, 1), lists(80, 2), lists(150, 3)
    settings = {"n_estimators": 200, "early_stopping_rounds": 20, "learning_rate": 0.1, "progress": False}
    here = XGBoostRanker(**settings).fit(*train, *valid)
    with open_engine(load_config(None, ["engine.name=dask", "engine.workers=2"]).engine) as engine:
        there = XGBoostRanker(**settings).train_with(xgboost_trainer(engine)).fit(*train, *valid)
    assert 1 < there.best_iteration_ < 200  # stopped early, then refit on train + valid
    ndcg = {name: M.ndcg_at_k(pd.Series(test[2]), ranker.predict(test[0]), test[1], 10) for name, ranker in (("here", here), ("dask", there))}
    assert ndcg["here"] > 0.8 and abs(ndcg["dask"] - ndcg["here"]) <= 0.02, ndcg


def _log_and_requests(seed: int = 0, n_events: int = 6000, n_requests: int = 1500):
    """An enriched history (time order, ties in time, null queries and positions, items missing from
    the catalogue) and requests over the same keys, some never seen in the log."""
    import numpy as np
    import pandas as pd

    from rankpipe.features.stats import _attach_item_keys, enrich_history, item_keys
    from rankpipe.pipeline import schema as S

    rng = np.random.default_rng(seed)
    items = pd.DataFrame({S.ITEM_ID: [f"i{j}" for j in range(60)], S.CATEGORY: [f"c{j % 4}>s{j % 7}" for j in range(60)]})
    start = pd.Timestamp("2026-01-01")
    ts = start + pd.to_timedelta(np.sort(rng.integers(0, 20 * 86_400, n_events)) // 600 * 600, unit="s")  # ten-minute ties
    queries = np.array(["shoes", "red dress", None, None], dtype=object)
    events = pd.DataFrame({S.TS: ts.astype("datetime64[us]"), S.USER_ID: [f"u{j}" for j in rng.integers(0, 80, n_events)],
                           S.ITEM_ID: [f"i{j}" for j in rng.integers(0, 70, n_events)],  # i60..i69 are in no catalogue
                           S.EVENT: rng.choice(["impression", "impression", "click", "cart", "purchase"], n_events),
                           S.QUERY: queries[rng.integers(0, 4, n_events)],
                           S.POSITION: pd.array(np.where(rng.random(n_events) < 0.8, rng.integers(1, 30, n_events), None), dtype="Int32")})
    history = enrich_history(events, items)
    requests = pd.DataFrame({S.TS: (start + pd.to_timedelta(rng.integers(0, 21 * 86_400, n_requests), unit="s")).astype("datetime64[us]"),
                             S.USER_ID: [f"u{j}" for j in rng.integers(0, 90, n_requests)],
                             S.ITEM_ID: [f"i{j}" for j in rng.integers(0, 75, n_requests)],
                             S.QUERY: queries[rng.integers(0, 4, n_requests)]})
    _attach_item_keys(requests, item_keys(items))
    return history, requests


def test_count_statistics_on_dask_are_the_local_ones_bit_for_bit(tmp_path):
    """The count statistics computed on 2 workers (events and requests shuffled by key, each partition
    put back in time order) equal the local kernel's, value for value (NaN where a key is null), from
    a history held here and from one the workers read from a partitioned directory; a history whose
    partitions go back in time is refused."""
    import dask.dataframe as dd
    import numpy as np

    from rankpipe.features.stats import count_features, fit_position_ctr, fit_priors
    from rankpipe.pipeline import schema as S
    from rankpipe.pipeline.engine import count_features_on_dask, open_engine

    history, requests = _log_and_requests()
    position_ctr = fit_position_ctr(history, history[S.TS].quantile(0.7))
    local = count_features(history, requests, (1, 7), half_lives_days=(3,), position_ctr=position_ctr)
    assert np.isnan(local["query_click_n"]).any() and (local["item_click_n"] > 0).any()
    S.write_frame(dd.from_pandas(history, npartitions=5, sort=False), tmp_path / "history.parquet")
    with open_engine(load_config(None, ["engine.name=dask", "engine.workers=2"]).engine) as engine:
        on_workers = dd.read_parquet(tmp_path / "history.parquet")
        assert on_workers.npartitions == 5
        for name, source in (("pandas", history), ("dask", on_workers)):
            got = count_features_on_dask(engine, source, requests, (1, 7), half_lives_days=(3,), position_ctr=position_ctr)
            assert list(got) == list(local), name
            for column, values in local.items():
                np.testing.assert_array_equal(got[column], values, err_msg=f"{name}: {column}")
        # The priors and position CTRs counted on the workers are the local ones too.
        cutoff = history[S.TS].quantile(0.7)
        assert fit_priors(on_workers, cutoff, 5).equals(fit_priors(history, cutoff, 5))
        assert fit_position_ctr(on_workers, cutoff).equals(position_ctr)
        backwards = dd.concat([on_workers.partitions[3], on_workers.partitions[0]])
        with pytest.raises(ValueError, match="must be in time order"):
            count_features_on_dask(engine, backwards, requests, (7,))
