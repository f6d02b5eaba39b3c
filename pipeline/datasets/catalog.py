"""The ``catalog`` adapter: a product catalogue with free text, as in the clothing review set.

PATH is a Parquet (or CSV) file with one row per review: ``Clothing ID``, ``Title``, ``Review Text``,
``Rating``, ``Division Name``, ``Department Name``, ``Class Name`` (``Age``, ``Recommended IND``,
``Positive Feedback Count`` optional). Items get the category path ``Division>Department>Class``,
a title from their class and id (the file has no product names), and a ``description`` of their
first reviews' titles and texts; each review becomes a ``rating`` event by an anonymous reviewer.
The file has no time: every event carries the same timestamp, so nothing downstream may split
these events by time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table
from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.datasets.files import files_fingerprint, numeric, read_delimited
from rankpipe.pipeline.graphs import TABLES_ONLY, names
from rankpipe.pipeline.schema import ConfigError

COLUMNS = ["Clothing ID", "Title", "Review Text", "Rating", "Division Name", "Department Name", "Class Name"]
NO_TIME = pd.Timestamp("2019-01-01")  # the dataset's publication year; the reviews carry no time
DESCRIPTION_CHARS = 2000


def _file(config: DatasetConfig) -> Path:
    if not config.path:
        raise ConfigError("dataset 'catalog' needs --path: the reviews file (Parquet or CSV), or a directory holding reviews.parquet")
    path = Path(config.path)
    return path / "reviews.parquet" if path.is_dir() else path


def read_reviews(path: Path, encoding: str = "utf-8") -> pd.DataFrame:
    """The review file as strings with a ``_line`` column (row number, 1-based after the header)."""
    if not path.exists():
        raise S.ContractError(path.name, None, f"a reviews file at {path}", "no such file")
    if path.suffix == ".csv":
        return read_delimited(path, COLUMNS, encoding=encoding)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise S.ContractError(path.name, None, "a readable Parquet file", f"{type(exc).__name__}: {exc}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise S.ContractError(path.name, missing[0], f"columns {COLUMNS}", f"no column {missing[0]!r} (columns: {list(frame.columns)})")
    frame = frame.reset_index(drop=True)
    frame["_line"] = np.arange(len(frame)) + 1
    return frame


class CatalogAdapter:
    """Clothing-store style catalogue: items with a category hierarchy and review text, reviews as rating events."""

    name = "catalog"
    description = "product catalogue with review text (Division>Department>Class), reviews as rating events"
    graph = TABLES_ONLY
    stages = names(TABLES_ONLY)

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        return files_fingerprint([_file(config)])

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        path = _file(config)
        reviews = read_reviews(path, config.encoding)
        rating = numeric(reviews.astype({"Rating": "str"}), "Rating", path.name)
        if not rating.between(1, 5).all():
            bad = ~rating.between(1, 5)
            raise S.ContractError(path.name, "Rating", "ratings from 1 to 5", f"{int(bad.sum())} others, first at row {reviews.loc[bad, '_line'].iloc[0]}", reviews.loc[bad, ["_line", "Rating"]])
        item_id = S.id_strings(reviews["Clothing ID"], path.name, "Clothing ID")
        path_parts = [reviews[c].fillna("unknown").astype("str") for c in ("Division Name", "Department Name", "Class Name")]
        reviews = reviews.assign(item_id=item_id, category=path_parts[0] + ">" + path_parts[1] + ">" + path_parts[2],
                                 text=(reviews["Title"].fillna("") + ". " + reviews["Review Text"].fillna("")).str.strip(". "))
        grouped = reviews.groupby("item_id", sort=False)
        items = pd.DataFrame({
            S.ITEM_ID: grouped["item_id"].first().to_numpy(),
            S.CATEGORY: grouped["category"].agg(lambda c: c.mode().iat[0]).to_numpy(),  # once per item
            "description": grouped["text"].agg(" ".join).str.slice(0, DESCRIPTION_CHARS).to_numpy(),
            "n_reviews": grouped.size().to_numpy(),
        })
        items[S.TITLE] = items[S.CATEGORY].str.rsplit(">", n=1).str[-1] + " #" + items[S.ITEM_ID]
        reviewer = "reviewer-" + reviews["_line"].astype("str")
        events = pd.DataFrame({S.TS: NO_TIME, S.USER_ID: reviewer, S.SESSION_ID: reviewer, S.ITEM_ID: item_id,
                               S.EVENT: "rating", S.VALUE: rating.to_numpy()})
        events[S.TS] = events[S.TS].astype("datetime64[us]")
        users = pd.DataFrame({S.USER_ID: reviewer})
        if "Age" in reviews:
            users["age"] = pd.to_numeric(reviews["Age"], errors="coerce").to_numpy()
        return Dataset(self.name, {S.ITEMS: validate_table(S.ITEMS, items), S.EVENTS: validate_table(S.EVENTS, events),
                                   S.USERS: validate_table(S.USERS, users)})
