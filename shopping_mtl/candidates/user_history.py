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
from shopping_mtl.candidates.registry import (ServingCandidates, ServingContext, Source, SourceDay, best_first,
                                              register)
from shopping_mtl.features import TIMESTAMP
from shopping_mtl.history import HISTORY_ITEM_IDS
from shopping_mtl.serving_ops import first_occurrence, pad_columns, row_unique

# The request's event types and unix-second times, newest first (`export.graphs`' signature).
HISTORY_EVENTS, HISTORY_TIMESTAMPS = "history_events", "history_timestamps"


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
    """The request's distinct items among its last `history_length` events by the offline
    source's score, the recency-weighted engagement (`user_history`: event weights, half-life
    `history_half_life_days`, ages from the request's `timestamp`), ties by item id. A request
    carries only its recent events, so a long history's older events are not counted."""

    def __init__(self, context: ServingContext, quota: int):
        super().__init__()
        settings = context.settings
        self.history_length = int(context.history_length)
        self.quota = int(quota)
        self.half_life = float(settings.history_half_life_days)
        self.weights = {event: float(w) for event, w in dict(settings.event_weights).items()}
        self.item_order = context.item_order

    def __call__(self, request) -> ServingCandidates:
        items = request[HISTORY_ITEM_IDS][:, :self.history_length]
        width = tf.shape(items)[1]
        events = pad_columns(request[HISTORY_EVENTS], width, "")
        stamps = pad_columns(request[HISTORY_TIMESTAMPS], width, tf.constant(0, tf.int64))
        ages = tf.cast(request[TIMESTAMP][:, None] - stamps, tf.float64) / 86400.0
        weight = tf.zeros_like(ages)
        for event, w in self.weights.items():
            weight += w * tf.cast(tf.equal(events, event), tf.float64)
        decay = tf.pow(tf.constant(0.5, tf.float64), tf.maximum(ages, 0.0) / self.half_life)
        decayed = tf.where(tf.not_equal(items, ""), weight * decay, 0.0)
        keys, idx = row_unique(items)
        total = tf.math.unsorted_segment_sum(tf.reshape(decayed, [-1]), idx, tf.size(keys))
        total = tf.reshape(tf.gather(total, idx), tf.shape(items))
        first = first_occurrence(items)
        scores, items, keep = best_first(tf.where(first, total, -np.inf), self.quota, items, self.item_order, first)
        return ServingCandidates(items, keep, scores=tf.where(keep, tf.cast(scores, tf.float32), 0.0))


def _lists(day: SourceDay, k: int) -> pd.DataFrame:
    settings = day.settings
    return user_history(day.events, day.users, k, settings.event_weights, settings.history_half_life_days,
                        day.now)


SOURCE = register(Source("user_history", _lists, UserHistoryServing))
