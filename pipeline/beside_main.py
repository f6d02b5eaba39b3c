"""The second process of :mod:`rankpipe.pipeline.beside`: ``python -m rankpipe.pipeline.beside_main
WORKDIR RUN_ID STAGE FINGERPRINT TRACK`` runs ``STAGE`` (and nothing after it) of the run, quietly,
with the run's saved ``config.yaml``. Exit status 3: that config gives the stage another fingerprint
than the run expects (``FINGERPRINT``), so it computes nothing and leaves the stage to the run."""

from __future__ import annotations

import sys
from pathlib import Path

from rankpipe.pipeline.config import load_config
from rankpipe.pipeline.logs import get_logger, setup
from rankpipe.pipeline.runner import Runner

log = get_logger(__name__)


def main(argv: list[str]) -> int:
    """Run ``stage`` of run ``run_id`` in ``workdir`` (``argv``: WORKDIR RUN_ID STAGE FINGERPRINT TRACK); the exit status."""
    workdir, run_id, stage, fingerprint, track = argv
    setup()
    runner = Runner(load_config(Path(workdir) / "runs" / run_id / "config.yaml"), workdir, run_id, progress=False, track=track == "1")
    ours = runner.fingerprints()[stage]
    if ours != fingerprint:  # the saved config read back differently: computing would write a stage the run does not expect
        log.error(f"{stage}: the run expects fingerprint {fingerprint}, its config.yaml gives {ours}; leaving the stage to the run")
        return 3
    runner.run(until=stage)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
