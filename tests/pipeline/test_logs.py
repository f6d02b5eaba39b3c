"""One rankpipe logger: its lines reach stderr at the level asked for; the libraries' chatter does not."""

from __future__ import annotations

import logging

from rankpipe.pipeline import logs


def test_setup_levels_and_library_noise(capsys):
    try:
        logs.setup()
        logs.get_logger("rankpipe.pipeline.runner").info("stage done")
        logging.getLogger("gensim.models.word2vec").info("EPOCH 1 - PROGRESS")
        logging.getLogger("faiss.loader").info("Could not load library with AVX512 support")
        assert capsys.readouterr().err == "stage done\n"
        assert logging.getLogger("distributed.shuffle").getEffectiveLevel() == logging.ERROR

        logs.setup(quiet=True)
        logs.get_logger("rankpipe.x").info("hidden")
        logs.get_logger("rankpipe.x").warning("shown")
        assert capsys.readouterr().err == "shown\n"

        logs.setup(verbose=True)
        assert logging.getLogger("gensim").getEffectiveLevel() == logging.INFO  # the library's own INFO lines pass again
        assert len([h for h in logging.getLogger("rankpipe").handlers if h.get_name() == "rankpipe-stderr"]) == 1  # set up thrice, one handler

        logs.setup(handler=False)  # a host (Airflow) collects the records through the root logger
        assert logging.getLogger("rankpipe").propagate
        assert not [h for h in logging.getLogger("rankpipe").handlers if h.get_name() == "rankpipe-stderr"]
    finally:
        logs.setup()
