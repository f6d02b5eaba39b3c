"""The README's two set-up commands are the ones CI runs and the ones that exist; its benchmark table is the recorded results."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    setup = REPO.joinpath("README.md").read_text().split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup)


def test_readme_names_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    assert commands[0].startswith("pip install torch==2.13.0") and commands[0].endswith("rankpipe run")
    assert commands[1].startswith("pip install torch==2.13.0") and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    ci = REPO.joinpath(".ci", "run").read_text().splitlines()
    assert _readme_commands()[1] in ci


def test_the_benchmark_table_is_what_the_recorded_json_lines_say():
    # benchmarks/readme_table.py writes the table from benchmarks/results/*.json; nothing typed by hand.
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "readme_table.py"), "--check"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr + done.stdout
    for path in sorted((REPO / "benchmarks" / "results").glob("*.json")):
        entry = json.loads(path.read_text(encoding="utf-8"))
        assert (REPO / "benchmarks" / f"{path.stem}.py").exists(), path
        assert entry["result"] and entry["command"].startswith(f"python benchmarks/{path.stem}.py"), path
