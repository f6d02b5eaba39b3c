"""The ``otto`` adapter: OTTO session files (jsonl: ``{"session", "events": [{"aid", "ts", "type"}]}``).

Each session is one anonymous user; ``clicks``/``carts``/``orders`` become click/cart/purchase
events (ts in milliseconds). OTTO ships no item metadata, so items carry only their id (title
``aid <id>``, category ``unknown``). The files are parsed by pyarrow's C++ JSON reader and
flattened without a Python loop over events.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from rankpipe.pipeline import schema as S
from rankpipe.pipeline.datasets.validate import validate_table
from rankpipe.pipeline.datasets.base import Dataset
from rankpipe.pipeline.datasets.config import DatasetConfig
from rankpipe.pipeline.datasets.files import files_fingerprint, read_jsonl
from rankpipe.pipeline.graphs import TABLES_ONLY, names
from rankpipe.pipeline.schema import ConfigError

EVENT_TYPES = {"clicks": "click", "carts": "cart", "orders": "purchase"}


def _files(config: DatasetConfig) -> list[Path]:
    if not config.path:
        raise ConfigError("dataset 'otto' needs --path: a .jsonl file or a directory of them")
    root = Path(config.path)
    files = sorted(root.glob("*.jsonl")) if root.is_dir() else [root]
    if not files or not files[0].exists():
        raise S.ContractError(str(root), None, "OTTO .jsonl session files", "none")
    return files


def read_sessions(path: Path) -> pd.DataFrame:
    """One OTTO jsonl file → contract events; ContractError naming the file and line of a bad record."""
    try:
        table = pajson.read_json(path)
        sessions, events = table.column("session"), table.column("events")
        flat = pc.list_flatten(events)
        parent = pc.list_parent_indices(events)
        aid, ts, kind = (flat.combine_chunks().field(name) for name in ("aid", "ts", "type"))
    except (pa.ArrowInvalid, KeyError, ValueError) as exc:
        records = read_jsonl(path)  # names the first line that is not JSON
        for number, record in enumerate(records, 1):
            if not {"session", "events"} <= set(record) or not isinstance(record["events"], list):
                raise S.ContractError(path.name, None, "records with 'session' and a list of 'events'", f"keys {sorted(record)} in record {number}") from None
        raise S.ContractError(path.name, None, "events with aid, ts and type", str(exc).splitlines()[0]) from None
    if sessions.null_count or events.null_count:
        first = int(np.flatnonzero(np.asarray(sessions.is_null()) | np.asarray(events.is_null()))[0]) + 1
        raise S.ContractError(path.name, None, "records with 'session' and a list of 'events'", f"a record without them: record {first}")
    frame = pd.DataFrame({"session": np.asarray(sessions.take(parent)), "aid": aid.to_numpy(zero_copy_only=False),
                          "ts": ts.to_numpy(zero_copy_only=False), "type": kind.to_numpy(zero_copy_only=False)})
    frame["_record"] = np.asarray(parent) + 1
    unknown = ~frame["type"].isin(list(EVENT_TYPES))
    if unknown.any():
        raise S.ContractError(path.name, "type", f"one of {sorted(EVENT_TYPES)}", f"{int(unknown.sum())} other types, first {frame.loc[unknown, 'type'].iloc[0]!r} in record {frame.loc[unknown, '_record'].iloc[0]}",
                              frame.loc[unknown, ["_record", "session", "type"]])
    missing = frame[["aid", "ts"]].isna().any(axis=1)
    if missing.any():
        raise S.ContractError(path.name, None, "aid and ts on every event", f"{int(missing.sum())} events without them, first in record {frame.loc[missing, '_record'].iloc[0]}")
    session = S.id_strings(frame["session"], path.name, "session")
    return pd.DataFrame({
        S.TS: pd.to_datetime(frame["ts"].astype(np.int64), unit="ms").astype("datetime64[us]"),
        S.USER_ID: session, S.SESSION_ID: session, S.ITEM_ID: S.id_strings(frame["aid"], path.name, "aid"),
        S.EVENT: frame["type"].map(EVENT_TYPES).astype("str"),
    })


class OttoAdapter:
    """OTTO sessions (clicks, carts, orders) as events; items are bare ids."""

    name = "otto"
    description = "OTTO session jsonl (clicks, carts, orders) as events; validated and stored"
    graph = TABLES_ONLY
    stages = names(TABLES_ONLY)

    def fingerprint(self, config: DatasetConfig, seed: int) -> str:
        return files_fingerprint(_files(config))

    def load(self, config: DatasetConfig, seed: int) -> Dataset:
        events = pd.concat([read_sessions(p) for p in _files(config)], ignore_index=True).sort_values(S.TS, kind="stable")
        ids = events[S.ITEM_ID].unique()
        items = pd.DataFrame({S.ITEM_ID: ids, S.TITLE: "aid " + pd.Series(ids, dtype="str"), S.CATEGORY: "unknown"})
        return Dataset(self.name, {S.EVENTS: validate_table(S.EVENTS, events), S.ITEMS: validate_table(S.ITEMS, items)})
