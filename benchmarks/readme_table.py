"""The README's table of benchmark results, regenerated from each benchmark's own JSON line.

Every benchmark prints one JSON object as its LAST line. ``record`` runs a benchmark in full and
keeps that line in ``benchmarks/results/<name>.json`` with the command and the date; the table in
README.md (between the ``benchmark-results`` markers) is then written from those files only, so
it can only say what a run printed. A benchmark not recorded yet says so, with the command.

Usage:
    python benchmarks/readme_table.py                       # rewrite the README table from benchmarks/results/
    python benchmarks/readme_table.py record bench_features  # run it in full (extra arguments follow), keep its JSON, rewrite
    python benchmarks/readme_table.py --check                # exit 1 when the README table is not what the files give
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rankpipe.pipeline.cli import first_sentence  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
README = BENCHMARKS.parent / "README.md"
START, END = "<!-- benchmark-results:start -->", "<!-- benchmark-results:end -->"


def benchmark_names() -> list[str]:
    """Every ``benchmarks/bench_*.py``, by name."""
    return sorted(p.stem for p in BENCHMARKS.glob("bench_*.py"))


def _docstring(name: str) -> str:
    import ast

    return ast.get_docstring(ast.parse((BENCHMARKS / f"{name}.py").read_text(encoding="utf-8"))) or ""


def _value(value) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value) if not isinstance(value, str) else value


def table() -> str:
    """The Markdown table: one row per benchmark, its recorded JSON line's keys and values."""
    rows = ["| benchmark | measures | last full run (its JSON line) | recorded |", "| --- | --- | --- | --- |"]
    for name in benchmark_names():
        path = RESULTS / f"{name}.json"
        if path.exists():
            record = json.loads(path.read_text(encoding="utf-8"))
            result = "<br>".join(f"`{k}` {_value(v)}" for k, v in record["result"].items())
            when = f"{record['date']}, `{record['command']}`"
        else:
            result, when = "not recorded yet", f"`python benchmarks/readme_table.py record {name}`"
        rows.append(f"| `{name}` | {first_sentence(_docstring(name)).rstrip('.')} | {result} | {when} |")
    return "\n".join(rows)


def with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by :func:`table`."""
    if START not in readme or END not in readme:
        raise SystemExit(f"README.md lacks the markers {START} … {END}")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def record(name: str, extra: list[str]) -> dict:
    """Run ``benchmarks/<name>.py`` in full and keep its last line in ``benchmarks/results/<name>.json``."""
    if name not in benchmark_names():
        raise SystemExit(f"no benchmark {name!r}; known: {', '.join(benchmark_names())}")
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), *extra]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)  # stderr: the user's terminal
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}); nothing recorded")
    sys.stdout.write(done.stdout)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    entry = {"result": result, "command": " ".join(["python", f"benchmarks/{name}.py", *extra]),
             "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {platform.python_version()}"}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(entry, indent=1) + "\n", encoding="utf-8")
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", nargs="?", choices=["record"], help="record: run BENCHMARK in full and keep its JSON line")
    parser.add_argument("benchmark", nargs="?", help="e.g. bench_features")
    parser.add_argument("--check", action="store_true", help="only check that the README table is what the files give")
    args, extra = parser.parse_known_args()
    if args.action == "record":
        if not args.benchmark:
            parser.error("record needs a benchmark name")
        record(args.benchmark, extra)
    current = README.read_text(encoding="utf-8")
    wanted = with_table(current)
    if args.check:
        if wanted != current:
            raise SystemExit("the README's benchmark table is out of date: run python benchmarks/readme_table.py")
        return
    README.write_text(wanted, encoding="utf-8")


if __name__ == "__main__":
    main()
