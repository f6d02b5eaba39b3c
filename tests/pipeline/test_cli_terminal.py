"""What the terminal shows: ``rankpipe`` driven in a pseudo-terminal and through pipes, as a user
runs it: the progress lines with elapsed time and ETA, Ctrl-C (exit 130, the stage it stopped in,
the command that resumes), a reader that closes the pipe early, ``--version``, ``config``,
``stage --help`` and the end-of-run table."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import yaml
from worlds import TINY_WORLD

from rankpipe.pipeline.cli import first_sentence, main, print_summary
from rankpipe.pipeline.config import load_config, to_dict
from rankpipe.pipeline.runner import RunSummary

RANKPIPE = [sys.executable, "-m", "rankpipe.pipeline.cli"]
TINY = [a for o in TINY_WORLD for a in ("--set", o)]


def _in_pty(args: list[str], cwd: Path, until: str | None = None, timeout: float = 300) -> tuple[int, str]:
    """Run ``rankpipe ARGS`` with a pseudo-terminal as stdout and stderr; with ``until``, send SIGINT
    once that text has appeared. Returns (exit code, everything it wrote)."""
    leader, follower = pty.openpty()
    # A fresh pseudo-terminal is 0 columns wide, and tqdm draws nothing in 0 columns: give it a size.
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = {**os.environ, "COLUMNS": "160"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the work directory's own store
    proc = subprocess.Popen([*RANKPIPE, *args], cwd=cwd, stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    out, sent, deadline = b"", False, time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed its end: it has exited
                break
            if not chunk:
                break
            out += chunk
        if until is not None and not sent and until.encode() in out:
            proc.send_signal(signal.SIGINT)
            sent = True
        if proc.poll() is not None and not ready:
            break
    else:
        proc.kill()
        raise AssertionError(f"rankpipe {' '.join(args)} did not finish in {timeout}s:\n{out.decode(errors='replace')[-3000:]}")
    os.close(leader)
    return proc.wait(timeout=30), out.decode(errors="replace").replace("\r", "\n")


@pytest.mark.slow
def test_progress_lines_show_each_stage_with_elapsed_time_then_an_eta_from_the_last_run(tmp_path):
    first_code, first = _in_pty(["stage", "features", "--run-id", "a", *TINY], tmp_path)
    assert first_code == 0, first[-3000:]
    # The live line on the terminal (redrawn in place, so after a carriage return), with nothing to estimate from yet.
    assert re.search(r"\n\[stage 1/2 prepare, elapsed \d+:\d\d, no ETA", first), first[-3000:]
    assert re.search(r"features +done in [\d.]+s \(elapsed \d+:\d\d(, ETA 0:00)?\)", first), first[-3000:]
    second_code, second = _in_pty(["stage", "features", "--run-id", "b", *TINY], tmp_path)
    assert second_code == 0, second[-3000:]
    # The same data in the same work directory: now the ETA comes from the first run's stage times.
    assert re.search(r"\[stage 2/2 features, elapsed \d+:\d\d, ETA \d+:\d\d\]", second), second[-3000:]
    assert "Traceback" not in first + second


@pytest.mark.slow
def test_ctrl_c_exits_130_naming_the_stage_and_the_command_that_resumes(tmp_path):
    code, out = _in_pty(["stage", "rank", "--run-id", "stopped", *TINY], tmp_path, until="[stage 3/4 recall")
    assert code == 130, out[-3000:]
    assert "Traceback" not in out
    assert "rankpipe: interrupted in stage recall" in out
    resume = re.search(r"resume with: (rankpipe .*)", out)
    assert resume and "--run-id stopped" in resume.group(1) and resume.group(1).startswith("rankpipe stage rank")
    run = tmp_path / "rankpipe-work" / "runs" / "stopped"
    assert (run / "features" / "_SUCCESS.json").exists()  # the stages before it are kept ...
    assert not (run / "recall").exists()  # ... and the one it stopped in left nothing taken as complete


def test_a_reader_that_closes_the_pipe_early_ends_the_command_quietly():
    proc = subprocess.Popen([*RANKPIPE, "config"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # `rankpipe config | head -0`: gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_version_config_and_stage_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and re.match(r"rankpipe \S+", capsys.readouterr().out)
    assert main(["config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == to_dict(load_config(None, []))
    assert main(["config", "--dataset", "movielens", "--set", "rank.model=xgb_ndcg"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["dataset"]["name"] == "movielens" and printed["rank"]["model"] == "xgb_ndcg"
    assert main(["config", "--set", "rank.bogus=1"]) == 2
    assert "rank.bogus" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["stage", "--help"])
    help_text = capsys.readouterr().out
    for stage in ("prepare", "features", "recall", "rank", "rerank", "evaluate", "promote", "suggest", "report"):
        assert re.search(rf"\b{stage}\b", help_text.split("stages (each")[1]), stage


def test_rankers_print_whole_first_sentences_without_markup(capsys):
    assert main(["rankers"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert all(line.rstrip().endswith((".", ")")) for line in lines), lines
    assert not any("``" in line or ":class:" in line for line in lines)


@pytest.mark.parametrize("doc, sentence", [
    ("One line.", "One line."),
    ("Spans\n    two lines. Then more.\n\nNext paragraph.", "Spans two lines."),
    ("Uses ``code`` and :class:`~rankpipe.x.Thing` here. Rest.", "Uses code and Thing here."),
    ("No full stop", "No full stop"),
    ("Channels, e.g. item2vec, merged. Then.", "Channels, e.g. item2vec, merged."),
    (None, ""),
])
def test_first_sentence(doc, sentence):
    assert first_sentence(doc) == sentence


def test_the_run_summary_leads_with_the_headline_and_prints_everything_on_request(tmp_path, capsys):
    metrics = {"rank.ndcg_at_10": 0.69704, "recall.recall_at_100": 0.7854, "prepare.n_events": 1052139.0, "rank.trees": 620.0}
    summary = RunSummary("r", tmp_path, metrics, executed=["rank"])
    print_summary(summary)
    short = capsys.readouterr().out
    assert "rank.ndcg_at_10" in short and "0.6970" in short and "prepare.n_events" not in short
    assert "2 more in metrics.json; --all-metrics prints them" in short
    print_summary(summary, all_metrics=True)
    full = capsys.readouterr().out
    assert "1,052,139" in full and "1052139.0000" not in full  # a count reads as a count

