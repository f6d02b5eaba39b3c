"""Which recall channels found a (request, item) pair, as ranker features (``recall.ranker_snapshots``)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankpipe.features.pit import shared_codes
from rankpipe.pipeline import schema as S


def channel_rank_features(channel_lists: pd.DataFrame, pairs: pd.DataFrame, quotas: dict[str, int],
                          covered: pd.Index | None = None) -> pd.DataFrame:
    """The recall channels that found each (request_id, item_id) pair, as ranker features.

    Args:
        channel_lists: stacked channel lists: request_id, item_id, rank, channel.
        pairs: (request_id, item_id) rows to describe, in the order of the output.
        quotas: channel name → its quota; a channel's list is cut there, as the merge cuts it.
        covered: the requests the lists speak for (default: all of ``pairs``); the others get NaN
            everywhere, which the ranker reads as "unknown" rather than "not found".

    Returns:
        One row per pair: ``recall_<channel>_rank`` (its rank there; ``quota + 1`` when that
        channel did not find it) per channel in ``quotas``, and ``recall_channels`` (how many did).
    """
    # One integer code per (request, item) shared by the lists and the pairs: no string is hashed once per channel.
    listed, asked, size = shared_codes([channel_lists[S.REQUEST_ID], channel_lists[S.ITEM_ID]], [pairs[S.REQUEST_ID], pairs[S.ITEM_ID]])
    channel, names = pd.factorize(channel_lists[S.CHANNEL])  # integer codes: comparing a million strings per channel costs seconds
    code_of = {str(name): code for code, name in enumerate(names)}
    rank = channel_lists[S.RANK].to_numpy(dtype=np.float32)
    out = {}
    for name, quota in quotas.items():
        mine = (channel == code_of.get(name, -2)) & (rank <= quota) & (listed >= 0)  # -2: a channel that listed nothing
        mine = np.flatnonzero(mine)[::-1]  # reversed: the first row of a pair is written last, and wins
        rank_of = np.full(size, np.nan, dtype=np.float32)
        rank_of[listed[mine]] = rank[mine]
        found = np.where(asked >= 0, rank_of[np.maximum(asked, 0)], np.nan)
        out[f"recall_{name}_rank"] = np.where(np.isnan(found), np.float32(quota + 1), found).astype(np.float32)
    frame = pd.DataFrame(out)
    frame["recall_channels"] = sum((frame[f"recall_{n}_rank"] <= q) for n, q in quotas.items()).astype(np.float32)
    if covered is not None:
        frame.loc[~pairs[S.REQUEST_ID].isin(covered).to_numpy(), :] = np.nan
    return frame
