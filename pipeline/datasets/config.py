"""The dataset section of the config (``dataset.*``): which adapter, from where, and the synthetic world's shape.

Apart from ``pipeline/config.py`` so the adapters can read their section without importing the
config composition (which imports the adapters' registry for their defaults).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from rankpipe.pipeline.schema import AT_LEAST_ONE, DAYS, MINUTE_SPAN, NON_NEGATIVE, UNIT_INTERVAL, Bound


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of the embedded synthetic world (see ``pipeline.datasets.synthetic``)."""

    n_users: int = 20_000
    n_items: int = 10_000
    n_sessions: int = 40_000
    days: int = 60
    search_share: float = 0.4
    list_size: int = 10
    start: str = "2026-01-01"
    # The world's own seed: the data stays the same when the run's ``seed`` (the models') changes.
    seed: int = 42
    # Drift (all three 0: a stationary world). Share of items launched inside the window (never
    # shown before launch); share of items with one hidden trend bump in appeal (a few days wide);
    # logit weight of novelty, decaying with item age.
    launch_share: float = 0.15
    trend_share: float = 0.2
    freshness: float = 1.0
    # List context (both 0: every slot's click is drawn on its own, a position-based model, and the
    # world is the one before these knobs existed). satiation: logit an item loses for each item above
    # it in the list of the same leaf category, and again for each of the same brand (the user has
    # already seen one of those). cascade_stop: probability that the user stops scanning after a click.
    satiation: float = 0.0
    cascade_stop: float = 0.0

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"n_users": AT_LEAST_ONE, "n_items": AT_LEAST_ONE, "n_sessions": AT_LEAST_ONE, "days": DAYS,
                                             "search_share": UNIT_INTERVAL, "list_size": AT_LEAST_ONE, "launch_share": UNIT_INTERVAL,
                                             "trend_share": UNIT_INTERVAL, "freshness": NON_NEGATIVE, "satiation": NON_NEGATIVE,
                                             "cascade_stop": UNIT_INTERVAL}


@dataclass(frozen=True)
class DatasetConfig:
    """Which dataset adapter feeds the run, and from where."""

    name: str = "synthetic"
    path: str | None = None
    rating_threshold: float = 4.0  # a rating event at or above this counts as a positive (a click)
    # The text encoding of delimited files (MovieLens, a catalogue CSV, WANDS query.csv), e.g. latin-1
    # for MovieLens 100k's u.item. JSON files are UTF-8, as JSON is.
    encoding: str = "utf-8"
    # String timestamps are ISO-8601 (2026-03-05, 2026-03-05T10:00:00+02:00; offsets become UTC) unless
    # this strftime format says how else they are written (e.g. %d/%m/%Y %H:%M): nothing is guessed.
    ts_format: str | None = None
    # How a ``tables`` event log becomes requests (the lists the ranker learns from): ``logged`` (each
    # event names its request_id), ``sessions`` (an interaction log without request lists: a user's
    # events split into sessions at gaps over session_gap_minutes, or by its session_id column when it
    # has one, and each session is one request, as MovieLens ratings are), or ``auto`` (``sessions``
    # when no event has a request_id; the run's log says which it chose).
    requests: str = "auto"
    session_gap_minutes: float = 30.0
    # A session-built log with neither impressions nor ratings (clicks, carts, purchases only) has no
    # negatives to rank against: this many items per request, drawn (seeded) in proportion to their
    # positive events before the request among those it did not touch, are logged as impressions. 0: none.
    sampled_impressions: int = 20
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)

    BOUNDS: ClassVar[Mapping[str, Bound]] = {"session_gap_minutes": MINUTE_SPAN, "sampled_impressions": NON_NEGATIVE}
