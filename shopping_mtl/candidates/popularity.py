"""Popularity: the same list for everyone, items ranked by engagement weighted by event type.

It fills in for users with little history, and it is the fallback that fills the baselines'
lists to full length."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates.config import DEFAULT_EVENT_WEIGHTS
from shopping_mtl.candidates.lists import event_weights
from shopping_mtl.candidates.registry import ServingCandidates, ServingContext, Source, SourceDay, register
from shopping_mtl.history import as_str
from shopping_mtl.features import TIMESTAMP


def popularity(events: pd.DataFrame, users: Sequence[str], k: int,
               weights: Mapping[str, float] = DEFAULT_EVENT_WEIGHTS) -> pd.DataFrame:
    """The k most engaged items overall, the same list for every user (users in id order)."""
    counts = (
        pd.DataFrame({"item_id": events["item_id"], "score": event_weights(events, weights)})
        .groupby("item_id", sort=False)["score"].sum().reset_index()
        .sort_values(["score", "item_id"], ascending=[False, True], kind="stable")
        .head(k)
    )
    n = len(counts)
    users = np.asarray(sorted(users), dtype=object)
    return pd.DataFrame({
        "user_id": np.repeat(users, n),
        "rank": np.tile(np.arange(1, n + 1), len(users)),
        "item_id": np.tile(counts["item_id"].to_numpy(dtype=object), len(users)),
        "score": np.tile(counts["score"].to_numpy(dtype=float), len(users)),
    })


def most_popular(events: pd.DataFrame, n: int, weights: Mapping[str, float]) -> np.ndarray:
    """The ids of the n most engaged items, most popular first."""
    popular = popularity(events, ["_"], max(n, 1), weights)["item_id"].to_numpy(dtype=object)
    return popular[:n]


class PopularityServing(tf.Module):
    """The list frozen at export time, the same for every request."""

    def __init__(self, context: ServingContext, quota: int):
        super().__init__()
        listed = popularity(context.events, ["_"], max(quota, 1), context.settings.event_weights).head(quota)
        self.popular = tf.constant(as_str(listed["item_id"]).astype(str).reshape(1, -1))
        self.scores = tf.constant(listed["score"].to_numpy(np.float32).reshape(1, -1))
        self.quota = int(quota)

    def __call__(self, request) -> ServingCandidates:
        batch = tf.shape(request[TIMESTAMP])[0]
        items = tf.tile(self.popular[:, :self.quota], [batch, 1])
        scores = tf.tile(self.scores[:, :self.quota], [batch, 1])
        return ServingCandidates(items, tf.not_equal(items, ""), scores=scores)


def _lists(day: SourceDay, k: int) -> pd.DataFrame:
    return popularity(day.events, day.users, k, day.settings.event_weights)


SOURCE = register(Source("popularity", _lists, PopularityServing))
