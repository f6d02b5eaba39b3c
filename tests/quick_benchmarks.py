"""A benchmark's ``--quick`` mode run as its test runs it (``from quick_benchmarks import quick_json``):
in a fresh interpreter, as a user would, failing with the tail of its stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def quick_lines(script: str, timeout: int = 900) -> list[str]:
    """The stdout lines of ``benchmarks/<script> --quick``; an assertion error with its stderr when it fails."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick"], capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def quick_json(script: str, timeout: int = 900) -> dict:
    """The JSON object on the last line of ``benchmarks/<script> --quick``."""
    return json.loads(quick_lines(script, timeout)[-1])
