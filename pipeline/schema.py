"""The data contract: canonical tables, their column names and Arrow types, the columns of the
tables the stages pass each other, event types and splits, the two error types and the bounds of
config keys (:class:`Bound`); and the component contract every fitted part follows (hyperparameters from the ``__init__`` signature,
:func:`check_fitted`, saved state as plain files: Parquet, ``.npy`` without pickle, JSON).

This is the bottom layer: it imports nothing of rankpipe's, and every other package (``features``,
``ranking``, ``generative``, ``pipeline``) may import it. It lives in ``pipeline/`` because the
design puts the data contract there and the package's ``__init__`` is empty, so importing it pulls
in no orchestration.

The dataset adapters check their tables against :data:`SCHEMAS` with
:func:`~rankpipe.pipeline.datasets.validate.validate_table` (only they read tables, so the checks
live beside them). A violation raises :class:`ContractError`, which names the table, the column, what
was expected, what was found and up to five offending rows. The one rule for timestamps and the one
for ids, which requests at scoring time follow too, are here: :func:`parse_timestamps` (ISO-8601, or a
declared format) and :func:`id_strings` (text, or whole numbers as their decimal text).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

# Table names.
EVENTS = "events"
ITEMS = "items"
USERS = "users"
JUDGMENTS = "judgments"
QUERIES = "queries"

# Column names, used as keyword defaults across the code base so a rename happens in one place.
TS = "ts"
USER_ID = "user_id"
SESSION_ID = "session_id"
ITEM_ID = "item_id"
EVENT = "event"
VALUE = "value"
REQUEST_ID = "request_id"
QUERY = "query"
POSITION = "position"
TITLE = "title"
CATEGORY = "category"
BRAND = "brand"
PRICE = "price"
CREATED_AT = "created_at"
GRADE = "grade"
SOURCE = "source"

# Columns of the intermediate tables (prepare.requests / labels, recall.candidates, rank.*, rerank.lists).
SPLIT = "split"  # train / valid / test, by time, a whole request on one side
SCORE = "score"  # a channel's or the ranker's score (higher first)
RANK = "rank"  # 1-based rank in a channel's or the merged list
CHANNEL = "channel"  # the recall channel that found a candidate
MERGE_SCORE = "merge_score"  # the merge's P(positive) for a candidate (NaN for an interleave)
PROBABILITY = "probability"  # the calibrated P(grade > 0)
METRIC = "metric"

# Splits, in time order.
TRAIN, VALID, TEST = "train", "valid", "test"
SPLITS = (TRAIN, VALID, TEST)

# Event types, in increasing order of intent; the graded label of a (request, item) pair is the index
# of the strongest event seen for it (impression 0 < click 1 < cart 2 < purchase 3).
EVENT_TYPES = ("impression", "click", "cart", "purchase", "rating")
LABEL_GRADES = {"impression": 0, "click": 1, "cart": 2, "purchase": 3}
# The events that say a user wanted an item: recall's positives, behaviour sequences, cold items.
POSITIVE_EVENTS = ("click", "cart", "purchase")

# Timestamps outside these ranges are almost always unit mistakes (seconds read as nanoseconds land
# on 1970-01-01). An item can be older than any log (a film from 1902), an event cannot.
MAX_TS = pd.Timestamp("2100-01-01")
MIN_TS = {TS: pd.Timestamp("1971-01-01"), CREATED_AT: pd.Timestamp("1800-01-01")}

SCHEMAS: dict[str, pa.Schema] = {
    ITEMS: pa.schema(
        [
            pa.field(ITEM_ID, pa.string(), nullable=False),
            pa.field(TITLE, pa.string(), nullable=False),
            pa.field(CATEGORY, pa.string(), nullable=False),
            pa.field(BRAND, pa.string()),
            pa.field(PRICE, pa.float64()),
            pa.field(CREATED_AT, pa.timestamp("us")),
        ]
    ),
    USERS: pa.schema([pa.field(USER_ID, pa.string(), nullable=False)]),
    EVENTS: pa.schema(
        [
            pa.field(TS, pa.timestamp("us"), nullable=False),
            pa.field(USER_ID, pa.string(), nullable=False),
            pa.field(SESSION_ID, pa.string(), nullable=False),
            pa.field(ITEM_ID, pa.string(), nullable=False),
            pa.field(EVENT, pa.string(), nullable=False),
            pa.field(VALUE, pa.float64()),
            pa.field(REQUEST_ID, pa.string()),
            pa.field(QUERY, pa.string()),
            pa.field(POSITION, pa.int32()),
        ]
    ),
    JUDGMENTS: pa.schema(
        [
            pa.field(QUERY, pa.string(), nullable=False),
            pa.field(ITEM_ID, pa.string(), nullable=False),
            pa.field(GRADE, pa.int32(), nullable=False),
        ]
    ),
    # A query log for suggestion: one row per issued query (ts/user when the source has them).
    QUERIES: pa.schema(
        [
            pa.field(QUERY, pa.string(), nullable=False),
            pa.field(TS, pa.timestamp("us")),
            pa.field(USER_ID, pa.string()),
            pa.field(SOURCE, pa.string()),
        ]
    ),
}

# Columns a table may omit (filled with nulls); every other contract column is required.
OPTIONAL_COLUMNS = {
    ITEMS: {BRAND, PRICE, CREATED_AT},
    EVENTS: {VALUE, REQUEST_ID, QUERY, POSITION},
    QUERIES: {TS, USER_ID, SOURCE},
}


class ConfigError(ValueError):
    """A config file, override or component parameter is invalid; the message names the key, what was
    expected and what came. Defined here, under every component, so a component can refuse its own
    config section in the words the CLI reports (exit 2)."""


@dataclass(frozen=True)
class Bound:
    """The values a numeric config key may take: ``low`` / ``high`` (None: unbounded), each end closed
    unless ``*_open``. On a tuple or mapping it bounds every element; ``nonempty`` also refuses an empty
    one. Each config dataclass lists its keys' bounds in a ``BOUNDS`` class attribute, beside the keys,
    and the config loader checks them all before a run writes anything."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nonempty: bool = False

    def describe(self) -> str:
        """The allowed range in words: ``>= 1``, ``> 0``, ``in [0, 1]``, ``in (0, 1)``."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}" if self.high is not None else "any value"

    def problem(self, value: Any) -> str | None:
        """Why the number ``value`` is out of bounds (the expected part of the message), or None when it is
        fine; None itself passes (an optional key left unset: its default applies), NaN never does."""
        if value is None:
            return None
        low_ok = self.low is None or (value > self.low if self.low_open else value >= self.low)
        high_ok = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return None if low_ok and high_ok and not math.isnan(value) else f"a value {self.describe()}"


AT_LEAST_ONE = Bound(1)
NON_NEGATIVE = Bound(0)
POSITIVE = Bound(0, low_open=True)
UNIT_INTERVAL = Bound(0, 1)  # probabilities, shares, weights in [0, 1]
# Spans of time: pandas' Timedelta ends near 292 years (a larger window overflows mid-run), and no log spans a century.
DAYS = Bound(1, 36_500)  # whole days, at least one
DAY_SPAN = Bound(0, 36_500, low_open=True)  # positive days (half-lives, freshness)
MINUTE_SPAN = Bound(0, 36_500 * 1440, low_open=True)


def check_bounds(section: Any, prefix: str = "") -> None:
    """Raise :class:`ConfigError` naming the first key of the config dataclass ``section`` (and of its
    nested sections) that its class's ``BOUNDS`` refuse; ``prefix`` is the section's dotted key. A bound
    on a tuple or mapping applies to each element, named by its index or key."""
    bounds = getattr(type(section), "BOUNDS", {})
    for field in dataclasses.fields(section):
        value, key = getattr(section, field.name), prefix + field.name
        if dataclasses.is_dataclass(value):
            check_bounds(value, key + ".")
        elif field.name in bounds:
            elements = ([(f"{key}.{k}", v) for k, v in value.items()] if isinstance(value, Mapping) else
                        [(f"{key}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, (tuple, list)) else [(key, value)])
            if bounds[field.name].nonempty and not elements:
                raise ConfigError(f"config key '{key}': expected at least one value. Got {value!r} instead.")
            for name, element in elements:
                if (expected := bounds[field.name].problem(element)) is not None:
                    raise ConfigError(f"config key '{name}': expected {expected}. Got {element!r} instead.")


def check_fitted(model: object, attribute: str, method: str) -> None:
    """Raise a clear error when ``method`` is called on an estimator whose learned ``attribute`` is
    missing (the estimator contract every fitted component follows)."""
    if not hasattr(model, attribute):
        raise RuntimeError(f"{type(model).__name__} is not fitted yet; call fit(...) before {method}(...)")


def init_param_names(cls: type) -> tuple[str, ...]:
    """A component's hyperparameters: the parameters of ``cls.__init__``, in order (as scikit-learn's
    ``get_params`` reads them). ``*args`` / ``**kwargs`` are refused: the signature is the whole list."""
    names = []
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise TypeError(f"{cls.__name__}.__init__ takes *{parameter.name}; a component lists its hyperparameters explicitly")
        names.append(parameter.name)
    return tuple(names)


def get_params(component: object) -> dict[str, Any]:
    """A component's hyperparameters as passed to ``__init__`` (each stored untouched under its own name)."""
    return {name: getattr(component, name) for name in init_param_names(type(component))}


# Saved state: plain files only (no pickle), so a saved component can be read by anyone and loaded safely.
PART_NAME = "part-{:05d}.parquet"  # zero-padded, so path order (how readers list a directory) is partition order


def write_frame(frame, path: str | Path) -> None:
    """``frame`` as Parquet (index dropped: keep what matters in columns): a pandas frame as one file,
    a Dask DataFrame as a directory of one file per partition, written by the workers (``path`` must
    then be one they can reach: a shared or object-store path, or local with a LocalCluster). Both
    read back with :func:`read_frame`, partitions in order."""
    if isinstance(frame, pd.DataFrame):
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(path))
    else:
        frame.to_parquet(str(path), write_index=False, name_function=PART_NAME.format, write_metadata_file=False)


def read_frame(path: str | Path) -> pd.DataFrame:
    """A frame written by :func:`write_frame` (a file, or a directory of them), whole, in this process."""
    return pq.read_table(str(path)).to_pandas()


def write_array(array: np.ndarray, path: str | Path) -> None:
    """A numeric array as ``.npy`` (object arrays are refused: they would need pickle)."""
    np.save(str(path), np.asarray(array), allow_pickle=False)


def read_array(path: str | Path) -> np.ndarray:
    """An array written by :func:`write_array`, loaded without pickle."""
    return np.load(str(path), allow_pickle=False)


def write_json(value: Any, path: str | Path) -> None:
    """``value`` as UTF-8 JSON."""
    Path(path).write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")


def part_path(directory: str | Path, *names: str, what: str = "a saved model") -> Path:
    """``directory/names…`` for a part named in a saved model's own files: ContractError unless each
    name is one plain folder or file name and the path, links resolved, stays inside ``directory``
    (a ``funnel.json`` naming ``../x``, or a link out, would load parts from elsewhere)."""
    directory = Path(directory)
    for name in names:
        if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise ContractError(what, None, "parts named by plain names inside its directory", f"the name {str(name)[:80]!r}")
    path = directory.joinpath(*names)
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ContractError(what, None, f"parts inside its directory {directory}", f"{path} leads to {path.resolve()} (a link out)")
    return path


def refuse_links_out(directory: str | Path, what: str = "a saved model") -> None:
    """ContractError when any file or folder under ``directory`` is a link that leads outside it."""
    root = Path(directory).resolve()
    for path in Path(directory).rglob("*"):  # rglob lists a link without following it into a folder
        if path.is_symlink() and not path.resolve().is_relative_to(root):
            raise ContractError(what, None, f"files inside its directory {directory}", f"{path} is a link to {path.resolve()}")


def read_json(path: str | Path) -> Any:
    """JSON written by :func:`write_json`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


class ContractError(ValueError):
    """A table broke the data contract.

    Attributes name what broke so callers (the CLI) can report it without a traceback.
    """

    def __init__(self, table: str, column: str | None, expected: str, found: str, rows: pd.DataFrame | None = None):
        self.table, self.column, self.expected, self.found = table, column, expected, found
        if rows is not None and column in rows.columns and len(rows.columns) > 3:
            # Ids say which rows; the offending column says why. Wide text columns would drown both.
            rows = rows[[c for c in rows.columns if c.endswith("_id") and c != column][:2] + [column]]
        self.rows = rows.head(5) if rows is not None else None
        where = f"table '{table}'" + (f", column '{column}'" if column else "")
        message = f"{where}: expected {expected}; found {found}"
        if self.rows is not None and len(self.rows):
            with pd.option_context("display.width", 200, "display.max_columns", 12):
                message += f"\noffending rows (first {len(self.rows)}):\n{self.rows.to_string()}"
        super().__init__(message)

    def __reduce__(self):
        # Raised on a Dask worker, it travels back pickled; the default rebuilds from the message alone.
        return (type(self), (self.table, self.column, self.expected, self.found, self.rows))


def parse_timestamps(raw: pd.Series, table: str, column: str, ts_format: str | None = None, rows: pd.DataFrame | None = None) -> pd.Series:
    """``raw`` as naive UTC ``datetime64[us]`` (nulls stay NaT), by one rule for every reader.

    Timestamps pass as they are, an offset normalised to UTC. Strings must be ISO-8601
    (``2026-03-05``, ``2026-03-05T10:00:00+02:00``), or follow ``ts_format`` (a strftime format, the
    ``dataset.ts_format`` a user declared): nothing is guessed, so ``05/03/2026`` is never read
    month-first by luck. ContractError (``table``, ``column``, the first values, ``rows`` of ``raw``'s
    index) for anything else.
    """
    if pd.api.types.is_datetime64_any_dtype(raw):
        parsed = raw.dt.tz_convert(None) if getattr(raw.dt, "tz", None) is not None else raw
        return parsed.astype("datetime64[us]")
    try:
        arrow_type = pa.array(raw, from_pandas=True).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        arrow_type = pa.binary()  # mixed Python objects
    if pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type) or pa.types.is_null(arrow_type):  # dates are not ambiguous
        return pd.to_datetime(raw, utc=True).dt.tz_convert(None).astype("datetime64[us]")
    if not (pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)):
        raise ContractError(table, column, "timestamps or ISO-8601 strings", f"values of type {arrow_type}", (raw.to_frame() if rows is None else rows).head(5))
    expected = f"timestamps in the format {ts_format!r} (dataset.ts_format)" if ts_format else \
        "ISO-8601 timestamps (2026-03-05 or 2026-03-05T10:00:00+02:00; another format: declare it, e.g. --set 'dataset.ts_format=\"%d/%m/%Y\"')"
    try:
        parsed = pd.to_datetime(raw, format=ts_format or "ISO8601", errors="coerce", utc=True).dt.tz_convert(None)
    except ValueError as error:  # a format pandas cannot use at all
        raise ConfigError(f"dataset.ts_format must be a strftime format such as %d/%m/%Y %H:%M. Got {ts_format!r} instead ({error}).") from None
    unparsable = parsed.isna() & raw.notna()
    if unparsable.any():
        first = str(raw[unparsable].iloc[0])[:80]
        raise ContractError(table, column, expected, f"{int(unparsable.sum())} unparsable values, first {first!r}",
                            (raw.to_frame() if rows is None else rows)[unparsable])
    return parsed.astype("datetime64[us]")


def id_strings(values: pd.Series, table: str, column: str) -> pd.Series:
    """Ids as text, as they were written, by one rule for every reader (tables, JSON, requests): strings
    pass and whole-number columns (a JSON or Parquet integer) become their decimal text; nulls stay null. A float column, or a mix of types, is refused by name: 1078.0
    would become the id '1078.0' (another item than '1078'), and a cast to an integer would cut 1.5 to 1."""
    try:
        kind = pa.array(values, from_pandas=True).type
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        kind = None
    if kind is not None and (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_integer(kind) or pa.types.is_null(kind)):
        return values.astype("str").where(values.notna())
    found = f"values of type {kind}" if kind is not None else "a mix of types"
    raise ContractError(table, column, "string ids (ids written as strings or whole numbers)", f"{found}, such as {values.dropna().iloc[0]!r}" if values.notna().any()
                        else found, values.to_frame().head(5))


def label_grades(events: pd.Series) -> np.ndarray:
    """Map event type names to graded labels (impression 0 … purchase 3; others -1)."""
    return events.map(LABEL_GRADES).fillna(-1).astype(np.int8).to_numpy()


def positive_history(events: pd.DataFrame) -> pd.DataFrame:
    """The positive events (:data:`POSITIVE_EVENTS`) as (user_id, item_id, ts): the history recall
    channels and sequence features read, each row usable only after its ``ts``."""
    return events.loc[events[EVENT].isin(POSITIVE_EVENTS), [USER_ID, ITEM_ID, TS]]


def cold_items(train_events: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The catalogue rows with no positive event (click, cart, purchase) in ``train_events``."""
    seen = train_events.loc[train_events[EVENT].isin(POSITIVE_EVENTS), ITEM_ID].unique()
    return items[~items[ITEM_ID].isin(seen)]
