"""Command line: ``rankpipe run``, ``rankpipe stage NAME``, ``rankpipe score``, ``rankpipe serve``, ``rankpipe report``, ``rankpipe promote --explain``,
``rankpipe config``, ``rankpipe datasets``, ``rankpipe rankers``, ``rankpipe rerankers``, ``rankpipe suggest``.

Bad input (data contract or config) exits with code 2 and a message naming the table, column or
key; ``--debug`` adds the traceback. Ctrl-C exits 130 (SIGTERM 143) with one line naming the stage it
stopped in and the command that resumes the run; a closed pipe (``rankpipe suggest … | head -3``) ends quietly.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
import signal
import sys
import traceback
from pathlib import Path

from rankpipe.pipeline.config import ConfigError, load_config
from rankpipe.pipeline.schema import ContractError

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C
EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer whose reader went away
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler stopping the job) raised where the run is, so it ends as Ctrl-C
    ends it: the stage's MLflow run marked FAILED, its temporary directory removed, one line to resume."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML config file (keys mirror the config sections: see the README)")
    parser.add_argument("--dataset", help="dataset adapter name (see `rankpipe datasets`); default synthetic")
    parser.add_argument("--path", help="where the dataset's files are (directory or URI)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set rank.lightgbm.learning_rate=0.1 (repeatable)")
    parser.add_argument("--workdir", default="rankpipe-work", help="where runs/ and the MLflow store live (default ./rankpipe-work)")
    parser.add_argument("--run-id", help="run id; re-running an existing id skips what is up to date and resumes the rest")
    _engine_options(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--all-metrics", action="store_true", help="print every metric at the end (default: the headline ones; all are in metrics.json)")
    parser.add_argument("--verbose", action="store_true", help="debug lines, and the libraries' own INFO logs (gensim, faiss, MLflow, Dask)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for bad input")


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=("local", "dask"), help="where the work runs (engine.name): one process (default) or a Dask cluster")
    parser.add_argument("--scheduler", help="a Dask scheduler address (engine.scheduler, e.g. tcp://scheduler:8786); "
                        "default with --engine dask: a LocalCluster sized to this machine")


def _engine_overrides(args) -> list[str]:
    """``--engine`` / ``--scheduler`` as the config overrides they stand for (applied after ``--set``)."""
    out = [f"engine.name={args.engine}"] if args.engine else []
    return out + ([f"engine.scheduler={args.scheduler}"] if args.scheduler else [])


def build_parser() -> argparse.ArgumentParser:
    """The ``rankpipe`` argument parser."""
    parser = argparse.ArgumentParser(prog="rankpipe", description="Offline multi-stage ranking pipeline: prepare → features → recall → rank → rerank → evaluate → promote.")
    parser.add_argument("--version", action="version", version=f"rankpipe {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the whole funnel (default: the embedded synthetic world)")
    _common(run)
    stage = sub.add_parser("stage", help="run one stage and the stages it needs", formatter_class=argparse.RawDescriptionHelpFormatter,
                           add_help=False)
    stage.add_argument("-h", "--help", action=_StageHelp, help="show this help message, with the stages of each dataset, and exit")
    stage.add_argument("name", help="a stage of the dataset's graph (listed below), e.g. rank")
    _common(stage)
    config = sub.add_parser("config", help="print the resolved config as YAML (the defaults, or with --dataset/--config/--set applied)")
    config.add_argument("--config", help="YAML config file to resolve")
    config.add_argument("--dataset", help="dataset adapter name: its defaults (e.g. movielens); default synthetic")
    config.add_argument("--path", help="where the dataset's files are")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    score = sub.add_parser("score", help="rank new requests with the champion funnel (or --model-uri) and write the lists as Parquet")
    source = score.add_mutually_exclusive_group(required=True)
    source.add_argument("--requests", help="a Parquet or CSV file of requests: request_id, user_id, ts[, query]")
    source.add_argument("--users", metavar="active:<N>d", help="a feed request for every user active in the last N days of the log")
    source.add_argument("--queries", metavar="top:<N>", help="a search request for each of the N most frequent queries of the log")
    score.add_argument("--out", required=True, help="the Parquet file to write (with --partition: the dataset directory)")
    score.add_argument("--partition", help="write OUT/<partition>/part-<i>.parquet, replacing that partition whole (e.g. date=2026-12-01)")
    score.add_argument("--k", type=int, help="items per list (default: the funnel's rerank.k)")
    score.add_argument("--model-uri", help="models:/rankpipe-<dataset>@challenger, runs:/…, or a saved funnel directory; "
                       "default: models:/rankpipe-<dataset>@champion")
    score.add_argument("--dataset", default="synthetic", help="whose champion to use when --model-uri is not given (default synthetic)")
    score.add_argument("--cutoff", help="use the log only up to this time (default: its end); features as of then")
    score.add_argument("--allow-past", action="store_true", help="score requests timed before the funnel's cutoff too")
    score.add_argument("--workdir", default="rankpipe-work", help="where the MLflow store lives (default ./rankpipe-work)")
    _engine_options(score)
    score.add_argument("--verbose", action="store_true", help="debug lines, and the libraries' own INFO logs")
    score.add_argument("--debug", action="store_true", help="show tracebacks for bad input")
    report = sub.add_parser("report", help="write the HTML report of a run, against the champion or another run")
    report.add_argument("run_id", help="a run under --workdir/runs whose evaluate stage is done")
    report.add_argument("--against", default="champion", help="'champion' (the registry's, default) or another run id of the same data")
    report.add_argument("--out", help="the HTML file to write (default: <run>/report/report-vs-<against>.html)")
    report.add_argument("--workdir", default="rankpipe-work", help="where runs/ and the MLflow store live (default ./rankpipe-work)")
    promote = sub.add_parser("promote", help="the promotion gate's decisions")
    promote.add_argument("--explain", action="store_true", required=True, help="print why the last decision of each registered model went as it did")
    promote.add_argument("--dataset", help="only the registered models of this dataset")
    promote.add_argument("--workdir", default="rankpipe-work", help="where the MLflow store lives (default ./rankpipe-work)")
    serve = sub.add_parser("serve", help="answer requests with ranked lists over HTTP (mlflow models serve on the champion funnel, or --model-uri)")
    serve.add_argument("--model-uri", help="models:/<name>@<alias>, runs:/…, or a saved funnel directory (default: the dataset's champion)")
    serve.add_argument("--dataset", default="synthetic", help="whose champion to serve when --model-uri is not given (default synthetic)")
    serve.add_argument("--workdir", default="rankpipe-work", help="where the MLflow store lives (default ./rankpipe-work)")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=5001, help="the port to listen on (default 5001)")
    sub.add_parser("datasets", help="list the dataset adapters and the stages each feeds")
    sub.add_parser("rankers", help="list the rankers rank.model can name")
    sub.add_parser("rerankers", help="list the rerankers rerank.chain can name")
    suggest = sub.add_parser("suggest", help="query suggestions from a trained suggester (the suggest stage's model)")
    suggest.add_argument("prefix", help="what the user typed (may be empty: '' with --user gives pre-search suggestions)")
    suggest.add_argument("--user", help="user id: with an empty prefix, her pre-search suggestions")
    suggest.add_argument("--k", type=int, default=10, help="how many suggestions (default 10)")
    suggest.add_argument("--next", action="store_true", help="the queries users typed next after PREFIX (a whole query)")
    suggest.add_argument("--model-uri", help="a registered model (models:/rankpipe-suggest-synthetic@champion) or a saved "
                         "suggester directory; default: the newest run's suggest/suggester under --workdir")
    suggest.add_argument("--workdir", default="rankpipe-work", help="where runs/ and the MLflow store live (default ./rankpipe-work)")
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rankpipe")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "(not installed)"


class _StageHelp(argparse.Action):
    """``rankpipe stage --help``: the usual help, then the stage names of each dataset's graph. Listed
    only when asked for: the adapters import scipy and more, which no other command should wait for."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, nargs=0, default=default, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.epilog = _stage_names()
        parser.print_help()
        parser.exit()


def _stage_names() -> str:
    """The stage names of each dataset's graph, for ``rankpipe stage --help``."""
    from rankpipe.pipeline.datasets import registry

    graphs: dict[tuple[str, ...], list[str]] = {}
    for name, adapter in registry().items():
        graphs.setdefault(tuple(adapter.stages), []).append(name)
    lines = ["stages (each runs the stages it needs first):"]
    lines += [f"  {', '.join(stages)}\n      (dataset {', '.join(datasets)})" for stages, datasets in graphs.items()]
    return "\n".join(lines)


def first_sentence(doc: str | None) -> str:
    """The first sentence of a docstring as plain text: its first paragraph joined, cut after the
    first full stop, reST markup (````code````, ``:class:`~a.B```) reduced to the words."""
    paragraph = " ".join((doc or "").strip().split("\n\n")[0].split())
    paragraph = re.sub(r":\w+:`~?(?:[\w.]+\.)?([^`]+)`", r"\1", paragraph)  # :class:`~pkg.Name` -> Name
    paragraph = paragraph.replace("``", "").replace("`", "")
    match = re.search(r"^(.+?(?<!e\.g)(?<!i\.e)(?<!etc)[.!?])(\s|$)", paragraph)  # "e.g." does not end a sentence
    return match.group(1) if match else paragraph


def _format(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.4f}"  # counts as counts, not 1052139.0000
    return str(value)


def print_summary(summary, all_metrics: bool = False) -> None:
    """The headline metrics (every metric with ``all_metrics``), the promotion decision and the paths."""
    from rankpipe.pipeline.stages.report import HEADLINE  # the numbers the report leads with (imported once a run has loaded the stages)

    headline = (*HEADLINE, "offpolicy.funnel.snips", "suggest.blended.mrr_all")  # and the final lists' clicks, the suggester's MRR
    keys = sorted(summary.metrics) if all_metrics else [k for k in headline if k in summary.metrics]
    width = max((len(k) for k in keys), default=10)
    if keys:
        print(f"{'metric':<{width}}  value")
    for key in keys:
        print(f"{key:<{width}}  {_format(summary.metrics[key])}")
    if not all_metrics and len(summary.metrics) > len(keys):
        print(f"({len(summary.metrics) - len(keys)} more in metrics.json; --all-metrics prints them)")
    decision = summary.run_dir / "promote" / "decision.parquet"
    if decision.exists() and "promote" in summary.executed:
        import pandas as pd

        row = pd.read_parquet(decision).iloc[0]
        print(f"\npromotion ({row['model_name']}, gate {row['gate']}): {row['reason']}")
    print(f"\nrun directory: {summary.run_dir}")
    print(f"metrics:       {summary.run_dir / 'metrics.json'}")
    if summary.report is not None:
        print(f"report:        {summary.report}")
    if summary.html_report is not None:
        print(f"HTML report:   {summary.html_report}")
    if summary.mlflow_run_id:
        print(f"MLflow run:    {summary.mlflow_run_id}" + (f" ({summary.tracking_uri})" if summary.tracking_uri else ""))
    if summary.skipped and not summary.executed:
        print("every stage was up to date: nothing ran")


def _suggester_dir(args) -> Path:
    """The suggester directory ``--model-uri`` names (downloading a registered model), or the newest run's."""
    workdir = Path(args.workdir)
    if args.model_uri and args.model_uri.startswith("models:/"):
        import os

        import mlflow

        store = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{workdir.resolve() / 'mlflow.db'}"
        mlflow.set_tracking_uri(store)
        mlflow.set_registry_uri(store)
        local = Path(mlflow.artifacts.download_artifacts(args.model_uri))
        return local / mlflow.models.Model.load(str(local)).flavors["python_function"]["data"]
    if args.model_uri:
        return Path(args.model_uri)
    saved = sorted(workdir.glob("runs/*/suggest/suggester/suggester.json"), key=lambda p: p.stat().st_mtime)
    if not saved:
        raise ConfigError(f"no trained suggester under {workdir}/runs: run `rankpipe run` first, or pass --model-uri")
    return saved[-1].parent


def _suggest(args) -> int:
    """``rankpipe suggest``: print ``score<TAB>query`` lines."""
    from rankpipe.generative.suggester import QuerySuggester

    try:
        if args.k < 1:
            raise ConfigError(f"--k must be at least 1. Got {args.k} instead.")
        suggester = QuerySuggester.load(_suggester_dir(args))
    except (ConfigError, FileNotFoundError) as exc:
        print(f"rankpipe: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.next:
        items = [(q, s, "next") for q, s in suggester.next_queries(args.prefix, args.k)]
    else:
        items = suggester.explained(args.prefix, args.user, args.k)
    # Four significant digits, not four decimals: a model probability of 2e-05 is small, not 0.0000.
    for query, score, source in items:
        print(f"{score:.4g}\t{query}\t{source}")
    if not items:
        print(f"(no suggestions: nothing in the log or its vocabulary continues {args.prefix!r})", file=sys.stderr)
    elif not args.next and not any(source.startswith("log") or source == "pre-search" for _, _, source in items):
        print(f"(no logged query continues {args.prefix!r}: these come from the character model alone)", file=sys.stderr)
    return 0


def _resume_command(argv: list[str], run_id: str) -> str:
    """The command line that resumes an interrupted run: the same arguments, with ``--run-id``."""
    has_id = any(a == "--run-id" or a.startswith("--run-id=") for a in argv)
    return shlex.join(["rankpipe", *argv, *(() if has_id else ("--run-id", run_id))])


def _score(args) -> int:
    """``rankpipe score``: requests → the funnel → Parquet lists; bad input exits 2 naming what was wrong."""
    import time

    import pandas as pd

    from rankpipe.pipeline import scoring
    from rankpipe.pipeline.engine import open_engine

    try:
        if args.k is not None and args.k < 1:
            raise ConfigError(f"--k must be at least 1. Got {args.k} instead.")
        scoring.check_output(args.out, args.partition)  # before the scoring, not after it
        directory = scoring.funnel_directory(args.model_uri, args.workdir, args.dataset)
        funnel = scoring.Funnel.load(directory)
        cutoff = None
        if args.cutoff:
            try:
                cutoff = pd.Timestamp(args.cutoff)
            except ValueError:
                raise ConfigError(f"--cutoff expects a time like 2026-03-01 or 2026-03-01T12:00. Got {args.cutoff!r} instead.") from None
            funnel = funnel.until(cutoff)
        if args.requests:
            requests = scoring.read_requests(args.requests)
        elif args.users:
            requests = scoring.feed_requests(funnel, args.users)
        else:
            requests = scoring.search_requests(funnel, args.queries)
        engine_config = load_config(None, _engine_overrides(args)).engine
        with open_engine(engine_config) as engine:
            started = time.perf_counter()
            try:  # written a chunk at a time: memory holds one chunk, however many requests
                path, rows, served = scoring.score_to(engine, funnel, directory, requests, args.out, args.partition, args.allow_past, args.k,
                                                      cutoff)
            except OSError as exc:  # the disk filled, the folder went away: checked before the work, but not owned by us
                raise ConfigError(f"--out {args.out}: cannot write ({exc.strerror or exc})") from None
            seconds = time.perf_counter() - started
    except (ContractError, ConfigError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rankpipe: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"scored {len(requests)} requests in {seconds:.1f}s ({len(requests) / max(seconds, 1e-9):,.0f}/s); "
          f"{served} got a list, {rows} rows written to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``rankpipe`` console script; returns the exit code.

    A reader that closes the pipe early (``| head``) ends the command quietly (141, as a shell
    reports it), and Ctrl-C outside a run exits 130 without a traceback.
    """
    try:
        code = _main(sys.argv[1:] if argv is None else argv)
        sys.stdout.flush()  # a closed pipe shows here, not later at interpreter exit
        return code
    except BrokenPipeError:
        # Python would report the failed flush at exit: point stdout at nothing first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_CLOSED_PIPE
    except KeyboardInterrupt:
        print("\nrankpipe: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command in ("run", "stage", "score"):
        from rankpipe.pipeline import logs

        logs.setup(verbose=args.verbose, quiet=getattr(args, "quiet", False))
    if args.command == "datasets":
        from rankpipe.pipeline.datasets import registry

        for name, adapter in registry().items():
            print(f"{name:<10} {adapter.description}\n{'':<10} stages: {', '.join(adapter.stages)}")
        return 0
    if args.command == "rankers":
        from rankpipe.ranking.rankers import RANKERS

        width = max(map(len, RANKERS))
        for name, cls in RANKERS.items():
            print(f"{name:<{width}}  {first_sentence(cls.__doc__)}")
        return 0
    if args.command == "rerankers":
        from rankpipe.ranking.rerank import RERANKERS

        width = max(map(len, RERANKERS))
        for name, cls in RERANKERS.items():
            print(f"{name:<{width}}  {first_sentence(cls.__doc__)}")
        return 0
    if args.command == "config":
        import yaml

        from rankpipe.pipeline.config import to_dict

        try:
            config = load_config(args.config, args.overrides, dataset=args.dataset, data_path=args.path)
        except ConfigError as exc:
            print(f"rankpipe: bad input: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
        return 0
    if args.command == "suggest":
        return _suggest(args)
    if args.command in ("report", "promote"):
        from rankpipe.pipeline import explain

        try:
            return explain.write_report(args) if args.command == "report" else explain.explain(args)
        except (ContractError, ConfigError) as exc:
            print(f"rankpipe: bad input: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.command == "serve":
        from rankpipe.pipeline.serving import serve

        try:
            return serve(args.model_uri, args.workdir, args.dataset, args.host, args.port)
        except (ContractError, ConfigError) as exc:
            print(f"rankpipe: bad input: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.command == "score":
        previous_handler = signal.signal(signal.SIGTERM, _terminate)  # a stop unwinds the write: no temporary file stays
        try:
            return _score(args)
        except KeyboardInterrupt as stop:
            print(f"\nrankpipe: score {'stopped by SIGTERM' if isinstance(stop, Terminated) else 'interrupted'}; nothing was written to {args.out}",
                  file=sys.stderr)
            return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
        finally:
            signal.signal(signal.SIGTERM, previous_handler)
    runner = None
    previous_handler = signal.signal(signal.SIGTERM, _terminate)
    try:
        from rankpipe.pipeline.runner import Runner

        config = load_config(args.config, [*args.overrides, *_engine_overrides(args)], dataset=args.dataset, data_path=args.path)
        runner = Runner(config, args.workdir, args.run_id, progress=not args.quiet)
        summary = runner.run(until=args.name if args.command == "stage" else None)
    except (ContractError, ConfigError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rankpipe: bad input: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as stop:
        if args.debug:
            traceback.print_exc()
        where = f"in stage {runner.current_stage}" if runner is not None and runner.current_stage else "before the first stage"
        kept = "; the stages before it are complete and kept" if runner is not None and runner.current_stage else ""
        resume = f"\nresume with: {_resume_command(argv, runner.run_id)}" if runner is not None else ""
        how = "stopped by SIGTERM" if isinstance(stop, Terminated) else "interrupted"
        print(f"\nrankpipe: {how} {where}{kept}{resume}", file=sys.stderr)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous_handler)  # main() may be called in a process that has its own
    print_summary(summary, args.all_metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
