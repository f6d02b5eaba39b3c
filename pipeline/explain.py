"""``rankpipe report RUN_ID [--against champion|RUN_ID]`` and ``rankpipe promote --explain``: the
report of any run against the registry's champion or another run, and why each registered model's
last promotion went as it did."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from rankpipe.pipeline.config import ConfigError, load_config
from rankpipe.pipeline.stages.base import Champion


def _run(workdir: Path, run_id: str):
    """A runner bound to an existing run's directory and config (nothing runs)."""
    from rankpipe.pipeline.runner import Runner, check_run_id

    run_dir = workdir / "runs" / check_run_id(run_id)
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"run {run_id!r}: no {run_dir / 'config.yaml'} (runs there: {sorted(p.name for p in (workdir / 'runs').glob('*'))[:10]})")
    config = load_config(run_dir / "config.yaml")
    runner = Runner(config, workdir, run_id, progress=False, track=False)
    for stage in ("evaluate", "promote"):
        if not (run_dir / stage / "_SUCCESS.json").exists():
            raise ConfigError(f"run {run_id!r} has no finished {stage} stage: finish it first (rankpipe run --run-id {run_id} …)")
    return runner, config


def write_report(args) -> int:
    """Compare run ``args.run_id`` with ``args.against`` (promote's comparison, nothing registered) and write the HTML."""
    from rankpipe.pipeline import promotion as P
    from rankpipe.pipeline import stages
    from rankpipe.pipeline.datasets import get_adapter
    from rankpipe.pipeline.stages.base import train_end
    from rankpipe.pipeline.stages.report import build

    workdir = Path(args.workdir).resolve()
    runner, config = _run(workdir, args.run_id)
    if args.against == "champion":
        from rankpipe.pipeline.tracking import Tracker

        load_champion = Tracker(workdir).load_champion
    else:
        other, other_config = _run(workdir, args.against)
        tags = {"data_fingerprint": P.data_fingerprint(other_config, get_adapter(other_config.dataset.name)),
                "train_end": str(train_end(other.load_table("prepare", "requests")))}
        champion = Champion(other.model_dir("promote", "funnel"), 0, tags)

        def load_champion(name: str) -> Champion:  # the other run stands in for the registry
            return champion
    quiet = replace(config, promote=replace(config.promote, enabled=False))  # judge only: the registry is not touched
    inputs = stages.StageInputs(runner.load_table, runner.model_dir, None, load_champion)
    judged = stages.promote(inputs, quiet)
    tables = {("promote", name): table for name, table in judged.tables.items()}
    overlay = stages.StageInputs(lambda stage, name: tables[(stage, name)] if (stage, name) in tables else runner.load_table(stage, name),
                                 runner.model_dir, None)
    text = build(overlay, config, None)
    out = Path(args.out) if args.out else runner.run_dir / "report" / f"report-vs-{args.against}.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    decision = judged.tables["decision"].iloc[0]
    print(f"{args.run_id} against {args.against} (the gate as configured, nothing registered): {decision['reason']}")
    print(f"report: {out}")
    return 0


def explain(args) -> int:
    """Print, for each registered funnel (of ``args.dataset``), its newest versions' decisions."""
    from rankpipe.pipeline.tracking import Tracker

    tracker = Tracker(Path(args.workdir).resolve())
    # A dataset's funnels and its suggesters (rankpipe-<dataset>-<source>, rankpipe-suggest-<dataset>-<source>); else every model.
    prefixes = (f"rankpipe-{args.dataset}-", f"rankpipe-suggest-{args.dataset}-") if args.dataset else ("",)
    models = [m for m in tracker.client.search_registered_models() if m.name.startswith(prefixes)]
    if not models:
        raise ConfigError(f"no registered model{' of dataset ' + repr(args.dataset) if args.dataset else ''} in {args.workdir}: run `rankpipe run` first")
    for model in sorted(models, key=lambda m: m.name):
        aliases = {alias: int(version) for alias, version in (model.aliases or {}).items()}
        print(f"{model.name}  (aliases: {', '.join(f'{a}=v{v}' for a, v in sorted(aliases.items())) or 'none'})")
        for version in tracker.decisions(model.name, limit=1):
            tags = version.tags
            print(f"  v{version.version}: {tags.get('promotion.decision', 'no decision recorded')} by gate rule: {tags.get('promotion.rule', '–')}")
            print(f"    {tags.get('promotion.reason', '')}")
            for check in json.loads(tags.get("promotion.checks", "[]")):
                mark = "pass" if check["passed"] else "FAIL"
                print(f"    [{mark}] {check['check']}: {check['value']:+.4f} (bound {check['bound']:+.4f}){'  ' + check['note'] if 'note' in check else ''}")
            print(f"    trained on data {tags.get('data_fingerprint', '?')} up to {tags.get('train_end', '?')}")
    return 0


__all__ = ["explain", "write_report"]
