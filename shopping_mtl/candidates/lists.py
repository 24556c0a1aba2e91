"""Ranked lists as frames: `user_id, rank, item_id, score`, users in id order, each user's
list by rank. The shape every source, baseline and model list shares."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

LIST_COLUMNS = ["user_id", "rank", "item_id", "score"]


def event_weights(events: pd.DataFrame, weights: Mapping[str, float]) -> np.ndarray:
    """(n_events,) each event's engagement weight by its type (0 for unknown types)."""
    return events["event"].map(dict(weights)).fillna(0.0).to_numpy(dtype=float)


def top_k(scored: pd.DataFrame, k: int) -> pd.DataFrame:
    """(user_id, item_id, score) -> best k per user; ties by item id so runs are reproducible."""
    ordered = scored.sort_values(["user_id", "score", "item_id"], ascending=[True, False, True],
                                 kind="stable")
    ordered = ordered.groupby("user_id", sort=False).head(k)
    ordered = ordered.assign(rank=ordered.groupby("user_id", sort=False).cumcount() + 1)
    return ordered[LIST_COLUMNS].reset_index(drop=True)


def empty_lists() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in
                         [("user_id", object), ("rank", "int64"), ("item_id", object), ("score", float)]})


def fill_from(lists: pd.DataFrame, fallback: pd.DataFrame, k: int) -> pd.DataFrame:
    """Extend each user's list with `fallback`'s items (not already listed) up to k rows.

    The filled rows keep their fallback score below the list's own, so the list stays ordered
    by rank; a user missing from `lists` gets the fallback list whole.
    """
    merged = pd.concat([lists.assign(_source=0), fallback.assign(_source=1)], ignore_index=True)
    merged = merged.drop_duplicates(["user_id", "item_id"], keep="first")
    merged = merged.sort_values(["user_id", "_source", "rank"], kind="stable")
    merged = merged.groupby("user_id", sort=False).head(k)
    merged["rank"] = merged.groupby("user_id", sort=False).cumcount() + 1
    return merged[LIST_COLUMNS].reset_index(drop=True)
