"""The merge of candidate sources with per-source quotas.

Each source gives up to its quota of items not already taken by an earlier source, so the set
has a few hundred distinct items per user, each tagged with the source that brought it and
that source's rank and score. In plain pandas (the reference of `tests/test_sources.py`): the
sources' top-quota rows, sorted by (user, source priority, source rank), the first row of each
(user, item) kept, ranked within the user.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from shopping_mtl.scale.groups import codes_in, positions_in_runs, strings_at
from shopping_mtl.scale.merge_codes import first_of_each_pair, priority_order


def merge_sources(sources: Mapping[str, pd.DataFrame], quotas: Mapping[str, int]) -> pd.DataFrame:
    """Merge ranked lists into one candidate set per user.

    Args:
        sources: source name -> list frame (`user_id, rank, item_id, score`), in priority order.
        quotas: source name -> the most items that source contributes per user.

    Returns:
        `user_id, rank, item_id, score, source, source_rank`: `rank` runs over the merged set
        (sources in priority order, each in its own order); `score` is the source's score.
    """
    columns = ["user_id", "rank", "item_id", "score", "source", "source_rank"]
    names, frames, taken = [], [], []
    for name, frame in sources.items():
        quota = int(quotas.get(name, 0))
        rows = np.flatnonzero(frame["rank"].to_numpy() <= quota) if quota > 0 and not frame.empty else []
        if len(rows):
            names.append(name)
            frames.append(frame)
            taken.append(rows)
    if not frames:
        return pd.DataFrame(columns=columns)
    # On integer codes, one source at a time, and never a copy of a source's rows: at 10^7
    # events the sources are ~45M rows. Users are coded in sorted order, so the set comes out
    # ordered as a string sort orders it.
    def ids_of(column):
        return pd.Index(pd.unique(np.concatenate([np.asarray(pd.unique(f[column]), dtype=object) for f in frames])),
                        dtype=object)
    user_ids, item_ids = ids_of("user_id").sort_values(), ids_of("item_id")
    offsets = np.cumsum([0] + [len(t) for t in taken])
    # Each source's codes written into int32 columns in place: one source's int64 codes exist
    # at a time, never all of them before a concatenation (~0.9 GB each column at 45M rows).
    users, items, source_rank = (np.empty(offsets[-1], np.int32) for _ in range(3))
    for frame, rows, start, end in zip(frames, taken, offsets[:-1], offsets[1:]):
        users[start:end] = codes_in(user_ids, frame["user_id"])[rows]
        items[start:end] = codes_in(item_ids, frame["item_id"])[rows]
        source_rank[start:end] = frame["rank"].to_numpy()[rows]
    order = priority_order(users, source_rank, offsets)
    keep = first_of_each_pair(order, users, items)
    del order
    # The kept rows' codes, and every row's freed before the id columns are gathered.
    kept_users, kept_items, kept_rank = users[keep], items[keep], source_rank[keep].astype(np.int64)
    del users, items, source_rank
    part = np.searchsorted(offsets, keep, side="right") - 1  # the source of each kept row
    score = np.empty(len(keep), np.concatenate([f["score"].to_numpy()[:0] for f in frames]).dtype)
    for number, frame in enumerate(frames):
        here = part == number
        score[here] = frame["score"].to_numpy()[taken[number][keep[here] - offsets[number]]]
    del keep
    return pd.DataFrame({
        "user_id": strings_at(user_ids, kept_users), "rank": positions_in_runs(kept_users) + 1,
        "item_id": strings_at(item_ids, kept_items), "score": score,
        "source": strings_at(names, part), "source_rank": kept_rank})
