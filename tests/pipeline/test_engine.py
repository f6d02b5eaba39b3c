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
    ("engine.workers=0", "engine.workers must be at least 1"),
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
