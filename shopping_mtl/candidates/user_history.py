"""The user's own items by recency-weighted engagement.

Repeat engagement dominates shopping logs, so this source keeps the repeats in the candidate
set, and its list is the strongest baseline."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates.config import DEFAULT_EVENT_WEIGHTS
from shopping_mtl.candidates.lists import event_weights, top_k
from shopping_mtl.candidates.registry import ServingCandidates, ServingContext, Source, SourceDay, register
from shopping_mtl.history import HISTORY_ITEM_IDS
from shopping_mtl.serving_ops import first_occurrence, top


def user_history(events: pd.DataFrame, users: Sequence[str], k: int,
                 weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS,
                 half_life_days: float = 1.0, now: pd.Timestamp | None = None) -> pd.DataFrame:
    """The user's own items by recency-weighted engagement.

    score(item) = sum over the user's events on it of weight(event) * 0.5 ** (age_days /
    half_life_days), with ages measured from `now` (the start of the scored period; default:
    the last event). Recency alone ranks poorly on second-resolution logs, where the last click
    is often not the item the user comes back to; engagement alone ignores that interest fades
    within days.
    """
    mine = events[events["user_id"].isin(set(users))]
    now = events["timestamp"].max() if now is None else now
    age_days = (now - mine["timestamp"]).dt.total_seconds().to_numpy() / 86400.0
    frame = pd.DataFrame({
        "user_id": mine["user_id"].to_numpy(dtype=object),
        "item_id": mine["item_id"].to_numpy(dtype=object),
        "score": event_weights(mine, weights) * 0.5 ** (np.maximum(age_days, 0) / half_life_days),
    })
    scored = frame.groupby(["user_id", "item_id"], sort=False)["score"].sum().reset_index()
    return top_k(scored, k)


class UserHistoryServing(tf.Module):
    """The request's distinct items among its last `history_length` events, most recent first
    (a request carries only recent events, so recency stands in for the weighted engagement)."""

    def __init__(self, context: ServingContext, quota: int):
        super().__init__()
        self.history_length = int(context.history_length)
        self.quota = int(quota)

    def __call__(self, request) -> ServingCandidates:
        items = request[HISTORY_ITEM_IDS][:, :self.history_length]
        first = first_occurrence(items)
        rank = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1
        keep = first & (rank < self.quota)
        order = tf.where(keep, -tf.cast(tf.range(tf.shape(items)[1])[None, :], tf.float32), -np.inf)
        _, items, keep = top(order, self.quota, items, keep)
        return ServingCandidates(items, keep)


def _lists(day: SourceDay, k: int) -> pd.DataFrame:
    settings = day.settings
    return user_history(day.events, day.users, k, settings.event_weights, settings.history_half_life_days,
                        day.now)


SOURCE = register(Source("user_history", _lists, UserHistoryServing))
