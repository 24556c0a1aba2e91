"""The candidate set the ranker scores: several sources merged with per-source quotas.

Two-tower retrieval finds new items through content and history; the user's own items keep the
repeats that dominate shopping logs; co-visitation adds items bought together; popularity fills
in for users with little history. Each source gives up to its quota of items not already taken
by an earlier source, so the set has a few hundred distinct items per user, each tagged with the
source that brought it and that source's rank and score.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

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
    names, parts = [], []
    for name, frame in sources.items():
        quota = int(quotas.get(name, 0))
        if quota <= 0 or frame.empty:
            continue
        parts.append(frame.loc[frame["rank"] <= quota, ["user_id", "item_id", "score", "rank"]])
        names.append(name)
    if not parts:
        return pd.DataFrame(columns=columns)
    # On integer codes: at 10^7 events the sources are ~45M rows, and sorting and de-duplicating
    # them by their string columns passed 12 GB. Users coded in sorted order, so the set comes
    # out ordered by user id as a string sort would order it.
    merged = pd.concat(parts, ignore_index=True)
    priority = np.repeat(np.arange(len(parts), dtype=np.int64), [len(p) for p in parts])
    del parts
    users = pd.factorize(merged["user_id"], sort=True)[0].astype(np.int64)
    items, item_ids = pd.factorize(merged["item_id"])
    source_rank = merged["rank"].to_numpy(dtype=np.int64)
    order = np.lexsort((source_rank, priority, users))  # stable: ties keep the sources' order
    first = ~pd.Series(users[order] * max(len(item_ids), 1) + items[order]).duplicated(keep="first").to_numpy()
    keep = order[first]
    kept_users = users[keep]
    starts = np.flatnonzero(np.r_[True, kept_users[1:] != kept_users[:-1]])
    rank = np.arange(len(keep)) - np.repeat(starts, np.diff(np.r_[starts, len(keep)])) + 1
    out = merged[["user_id", "item_id", "score"]].take(keep).reset_index(drop=True)
    out.insert(1, "rank", rank)
    out["source"] = np.asarray(names, dtype=object)[priority[keep]]
    out["source_rank"] = source_rank[keep]
    return out[columns]
