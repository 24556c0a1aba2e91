"""The candidate set the ranker scores: several sources merged with per-source quotas.

Two-tower retrieval finds new items through content and history; the user's own items keep the
repeats that dominate shopping logs; co-visitation adds items bought together; popularity fills
in for users with little history. Each source gives up to its quota of items not already taken
by an earlier source, so the set has a few hundred distinct items per user, each tagged with the
source that brought it and that source's rank and score.
"""

from __future__ import annotations

from typing import Mapping

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
    parts = []
    for priority, (name, frame) in enumerate(sources.items()):
        quota = int(quotas.get(name, 0))
        if quota <= 0 or frame.empty:
            continue
        top = frame[frame["rank"] <= quota]
        parts.append(top.assign(source=name, source_rank=top["rank"], _priority=priority))
    if not parts:
        return pd.DataFrame(columns=["user_id", "rank", "item_id", "score", "source", "source_rank"])
    merged = pd.concat(parts, ignore_index=True)
    merged = merged.sort_values(["user_id", "_priority", "source_rank"], kind="stable")
    merged = merged.drop_duplicates(["user_id", "item_id"], keep="first")
    merged["rank"] = merged.groupby("user_id", sort=False).cumcount() + 1
    columns = ["user_id", "rank", "item_id", "score", "source", "source_rank"]
    return merged[columns].reset_index(drop=True)
