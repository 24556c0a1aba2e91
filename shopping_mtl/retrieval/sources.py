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

from shopping_mtl.groups import codes_in, positions_in_runs


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
    # On integer codes, one source at a time: at 10^7 events the sources are ~45M rows, and
    # concatenating, sorting and de-duplicating them by their string columns passed 12 GB.
    # Users are coded in sorted order, so the set comes out ordered as a string sort orders it.
    user_ids = pd.Index(pd.unique(np.concatenate([np.asarray(pd.unique(p["user_id"]), dtype=object) for p in parts])),
                        dtype=object).sort_values()
    item_ids = pd.Index(pd.unique(np.concatenate([np.asarray(pd.unique(p["item_id"]), dtype=object) for p in parts])),
                        dtype=object)
    users = np.concatenate([codes_in(user_ids, p["user_id"]) for p in parts]).astype(np.int64)
    items = np.concatenate([codes_in(item_ids, p["item_id"]) for p in parts]).astype(np.int64)
    priority = np.repeat(np.arange(len(parts), dtype=np.int8), [len(p) for p in parts])
    source_rank = np.concatenate([p["rank"].to_numpy(dtype=np.int64) for p in parts])
    score = np.concatenate([p["score"].to_numpy() for p in parts])
    order = np.lexsort((source_rank, priority, users))  # stable: ties keep the sources' order
    first = ~pd.Series(users[order] * max(len(item_ids), 1) + items[order]).duplicated(keep="first").to_numpy()
    keep = order[first]
    del order, first
    kept_users = users[keep]
    rank = positions_in_runs(kept_users) + 1
    return pd.DataFrame({
        "user_id": user_ids.to_numpy()[kept_users], "rank": rank, "item_id": item_ids.to_numpy()[items[keep]],
        "score": score[keep], "source": np.asarray(names, dtype=object)[priority[keep]],
        "source_rank": source_rank[keep]})
