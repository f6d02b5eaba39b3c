"""Promotion by a rule you can state: which registered model a run competes in, how a challenger is
compared with the champion on the same test requests, and the gate.

- **The registered name identifies comparable data**: ``rankpipe-<dataset>-<source>``, where
  ``<source>`` hashes what the data is (the synthetic world's shape and seed; a file dataset's
  location), so a smoke run on a small world never competes with the full world's champion.
  ``promote.model_name`` overrides it. Each version carries the exact data fingerprint and its
  training cut-off as tags; a champion whose training period reaches into this run's test period
  (it was trained on later data) is never scored on this run's test requests as if it had not seen them.
- **Comparison** (:func:`compare`): per-request metrics of both on the same requests, the paired
  bootstrap 95% CI of each difference, overall and in every slice big enough to judge.
- **Gate** (:func:`decide`): ``better`` (the primary metric's mean is higher by more than
  ``promote.min_improvement``), ``significant`` (its CI's lower bound is above
  ``min_improvement``) or ``not_worse`` (its CI's lower bound is above ``-promote.tolerance``), and
  with every gate the guardrails ``promote.guardrails`` (metric or ``slice.<name>`` → the largest
  drop allowed: a per-request metric by its CI's lower bound, ``coverage`` and ``ece`` by value).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rankpipe.pipeline.schema import ConfigError

GATES = ("better", "significant", "not_worse")
# Per-request metrics (higher is better), the lists' set metrics and which way each is better.
REQUEST_METRICS = ("ndcg_at_10", "mrr", "oracle_ndcg_at_10", "list_ndcg_at_10", "expected_clicks")
SET_METRICS = {"coverage": 1, "ece": -1}
PRIMARY_METRICS = ("ndcg_at_10", "mrr", "list_ndcg_at_10")


def check_promote_config(promote) -> None:
    """ConfigError for a gate, metric, model name or guardrail the promote stage cannot judge (its
    numbers are PromoteConfig.BOUNDS, checked with the whole config by ``stages.check_config``, the one caller)."""
    if promote.gate not in GATES:
        raise ConfigError(f"promote.gate must be one of {list(GATES)}. Got {promote.gate!r} instead.")
    if promote.metric not in PRIMARY_METRICS:
        raise ConfigError(f"promote.metric must be one of {list(PRIMARY_METRICS)}. Got {promote.metric!r} instead.")
    if promote.model_name is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._ -]{0,199}", promote.model_name):
        # The registry refuses '/' and ':' only when it registers, after the whole run; a name is also a lock file's name.
        raise ConfigError("promote.model_name must be 1-200 letters, digits, '.', '_', '-' or spaces, starting with a letter, digit "
                          f"or '_'. Got {promote.model_name!r} instead.")
    for name in promote.guardrails:
        if not (name in REQUEST_METRICS or name in SET_METRICS or name.startswith("slice.")):
            raise ConfigError(f"promote.guardrails: unknown metric {name!r}; known: {list(REQUEST_METRICS) + list(SET_METRICS)} or slice.<name>")


def _hash(payload) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:8]


def source_fingerprint(config) -> str:
    """What the data is, not which snapshot: the synthetic world's shape and seed, else the dataset's
    location (a log that grows every day stays one source)."""
    dataset = config.dataset
    if dataset.name == "synthetic":
        from dataclasses import asdict

        return _hash(asdict(dataset.synthetic))
    return _hash({"path": str(dataset.path or "")})


def data_fingerprint(config, adapter) -> str:
    """The exact data a run's test requests come from: the adapter's fingerprint of its files (or
    world) and every setting that shapes the split and the requests."""
    dataset = config.dataset
    return _hash({"data": adapter.fingerprint(dataset, config.seed), "split": [config.split.valid_fraction, config.split.test_fraction],
                  "requests": [dataset.requests, dataset.session_gap_minutes, dataset.sampled_impressions, dataset.rating_threshold],
                  "protocol": config.evaluate.protocol, "seed": config.seed if getattr(adapter, "seed_shapes_data", True) else None})


def registered_name(config, kind: str = "funnel") -> str:
    """``rankpipe-<dataset>-<source>`` (``rankpipe-suggest-…`` for the suggester), or ``promote.model_name``."""
    if config.promote.model_name:
        return config.promote.model_name + ("-suggest" if kind == "suggester" else "")
    prefix = "rankpipe-suggest" if kind == "suggester" else "rankpipe"
    return f"{prefix}-{config.dataset.name}-{source_fingerprint(config)}"


def comparable(champion_tags: dict[str, str], data: str, test_start: pd.Timestamp) -> tuple[bool, str]:
    """Whether a champion (its version's tags) may be scored on this run's test requests: the same
    data, or data whose training period ended before this run's test period began."""
    if champion_tags.get("data_fingerprint") == data:
        return True, "same data and split"
    cutoff = champion_tags.get("train_end")
    if not cutoff:
        return False, "the champion records no training cut-off (registered before promotion rules had one)"
    if pd.Timestamp(cutoff) <= test_start:
        return True, f"the champion's training ended {cutoff}, before this run's test requests ({test_start})"
    return False, f"the champion was trained on data up to {cutoff}, after this run's test requests begin ({test_start}): it may have seen them"


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, int]:
    """Mean of ``a - b`` over the pairs where both are finite, its bootstrap percentile CI, and the pair count."""
    from rankpipe.ranking.metrics import paired_bootstrap_ci

    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = int(np.isfinite(diff).sum())
    return (*paired_bootstrap_ci(a, b, n_resamples, level, seed), n)


def compare(challenger: pd.DataFrame, champion: pd.DataFrame | None, slices: pd.DataFrame, min_size: int, seed: int) -> pd.DataFrame:
    """Per slice and metric: requests judged, both means, the difference and its paired 95% CI.

    Args:
        challenger / champion: per-request metrics indexed by request id (same index; champion None
            when there is none yet: only the challenger's means).
        slices: per request, a boolean column per slice (``all``, ``surface:search``, ``items:tail``, …).
            An item slice's metric columns are ``<metric>|<slice>`` (the metric counting only that
            slice's items); a request slice reads the plain columns of its requests.
        min_size: a slice judged on fewer requests is left out.
    """
    rows = []
    for name in slices.columns:
        mask = slices[name].to_numpy()
        for metric in REQUEST_METRICS:
            column = f"{metric}|{name}" if f"{metric}|{name}" in challenger else metric
            if column not in challenger or (column == metric and name.startswith("items:")):
                continue
            a = challenger[column].to_numpy(dtype=np.float64)[mask]
            if np.isfinite(a).sum() < min_size:
                continue
            row = {"slice": name, "metric": metric, "requests": int(np.isfinite(a).sum()), "challenger": float(np.nanmean(a))}
            if champion is not None:
                b = champion[column].to_numpy(dtype=np.float64)[mask]
                delta, low, high, n = paired_bootstrap(a, b, seed=seed)
                row.update(requests=n, champion=float(np.nanmean(b)), delta=delta, ci_low=low, ci_high=high)
            rows.append(row)
    table = pd.DataFrame(rows)
    if champion is not None and len(table):
        table["worse"] = table["ci_high"] < 0  # the challenger is worse here, beyond noise
    return table


@dataclass
class Decision:
    """The gate's verdict, the rule it applied and every check behind it."""

    promoted: bool
    rule: str
    reason: str
    checks: list[dict] = field(default_factory=list)

    def tags(self) -> dict[str, str]:
        """The decision as registry tags (MLflow tag values are strings)."""
        return {"promotion.decision": "promoted" if self.promoted else "refused", "promotion.rule": self.rule,
                "promotion.reason": self.reason[:4000], "promotion.checks": json.dumps(self.checks, default=float)[:4000]}


def decide(promote, comparison: pd.DataFrame, challenger_set: dict[str, float], champion_set: dict[str, float],
           metric: str | None = None, unit: str = "requests") -> Decision:
    """Apply ``promote.gate`` and ``promote.guardrails`` to a :func:`compare` table with a champion;
    ``metric``: the primary metric when not ``promote.metric`` (the suggester's is ``mrr``); ``unit``: what one paired value is."""
    overall = comparison[comparison["slice"] == "all"].set_index("metric")
    metric, gate = metric or promote.metric, promote.gate
    if metric not in overall.index:
        return Decision(False, gate, f"the primary metric {metric} could not be judged on these requests", [])
    row = overall.loc[metric]
    rule = {"better": f"mean {metric} difference > {promote.min_improvement}",
            "significant": f"95% CI lower bound of the {metric} difference > {promote.min_improvement}",
            "not_worse": f"95% CI lower bound of the {metric} difference > -{promote.tolerance}"}[gate]
    value = {"better": row["delta"], "significant": row["ci_low"], "not_worse": row["ci_low"]}[gate]
    bound = -promote.tolerance if gate == "not_worse" else promote.min_improvement
    checks = [{"check": f"gate {gate}: {metric}", "value": float(value), "bound": float(bound), "passed": bool(value > bound)}]
    for name, drop in dict(promote.guardrails).items():
        if name in SET_METRICS:
            change = SET_METRICS[name] * (challenger_set.get(name, np.nan) - champion_set.get(name, np.nan))
            if not np.isfinite(change):
                checks.append({"check": f"guardrail {name}", "value": float("nan"), "bound": -float(drop), "passed": True,
                               "note": "not measured for both funnels: not applied"})
                continue
            checks.append({"check": f"guardrail {name} (change, better is positive)", "value": float(change), "bound": -float(drop),
                           "passed": bool(change >= -drop)})
            continue
        slice_name, metric_name = (name[len("slice."):], metric) if name.startswith("slice.") else ("all", name)
        found = comparison[(comparison["slice"] == slice_name) & (comparison["metric"] == metric_name)]
        if found.empty:
            checks.append({"check": f"guardrail {name}", "value": float("nan"), "bound": -float(drop), "passed": True,
                           "note": "too few requests to judge: not applied"})
            continue
        low = float(found["ci_low"].iloc[0])
        checks.append({"check": f"guardrail {name} (95% CI lower bound of the difference)", "value": low, "bound": -float(drop), "passed": low >= -drop})
    failed = [c for c in checks if not c["passed"]]
    summary = "; ".join(f"{c['check']} = {c['value']:+.4f} (bound {c['bound']:+.4f})" for c in (failed or checks[:1]))
    reason = ("refused: " if failed else "promoted: ") + summary + f" [{metric}: challenger {row['challenger']:.4f}, champion {row['champion']:.4f}, " \
        f"difference {row['delta']:+.4f}, 95% CI [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}], {int(row['requests'])} {unit}]"
    return Decision(not failed, rule, reason, checks)


def verdict(promote, champion, comparable_: tuple[bool, str], comparison: pd.DataFrame, challenger_set: dict[str, float],
            champion_set: dict[str, float], metric: str | None = None, unit: str = "requests") -> Decision:
    """The decision for a challenger: promoted when there is no champion, refused when the champion
    is not comparable, else :func:`decide`; never promoted when ``promote.enabled`` is false."""
    if champion is None:
        decision = Decision(True, promote.gate, "promoted: no champion yet")
    elif not comparable_[0]:
        decision = Decision(False, promote.gate, f"refused: champion v{champion.version} not comparable: {comparable_[1]}")
    else:
        decision = decide(promote, comparison, challenger_set, champion_set, metric, unit)
    if not promote.enabled:
        decision = Decision(False, decision.rule, f"promote.enabled is false: judged ({decision.reason}), nothing registered", decision.checks)
    return decision
