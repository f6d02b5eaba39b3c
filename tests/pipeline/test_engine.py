"""The Dask engine gives the local engine's results: the same feature table, bit for bit, from the
same kernel run per key partition on a LocalCluster of two worker processes."""

from __future__ import annotations

import pandas as pd
import pytest
from worlds import TINY_WORLD

from rankpipe.pipeline.config import ConfigError, load_config
from rankpipe.pipeline.engine import check_engine_config
from rankpipe.pipeline.runner import Runner

pytest.importorskip("dask.distributed", reason="the dask extra is not installed (pip install -e '.[dask]')")


@pytest.mark.parametrize("override, message", [
    ("engine.name=spark", "engine.name must be one of"),
    ("engine.scheduler=tcp://x:8786", "only used with engine.name=dask"),
    ("engine.workers=0", "engine.workers must be at least 1"),
])
def test_engine_config_errors_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check_engine_config(load_config(None, [override]).engine)


def test_unreachable_scheduler_is_a_config_error(tmp_path):
    config = load_config(None, [*TINY_WORLD, "engine.name=dask", "engine.scheduler=tcp://127.0.0.1:9"])
    with pytest.raises(ConfigError, match="no Dask scheduler answered at 'tcp://127.0.0.1:9'"):
        Runner(config, tmp_path, "r", progress=False, track=False).run(until="features")


@pytest.mark.slow
def test_dask_features_equal_local_features(tmp_path):
    """Local and Dask (2 workers, 6 key partitions) runs of prepare and features: identical tables."""
    tables = {}
    for engine in ("local", "dask"):
        config = load_config(None, [*TINY_WORLD, f"engine.name={engine}", "engine.workers=2", "engine.partitions=6"])
        runner = Runner(config, tmp_path / engine, "r", progress=False, track=False)
        runner.run(until="features")
        tables[engine] = pd.read_parquet(runner.run_dir / "features" / "logged.parquet")
    local, dask = tables["local"], tables["dask"]
    assert len(local) > 1000 and local.filter(like="_n").notna().any().all()
    pd.testing.assert_frame_equal(dask, local, check_exact=True)
