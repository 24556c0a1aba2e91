"""Co-visitation: items that co-occur with the user's recent items in other users' sessions
(same user and `session_id` where the events carry one, the spec's session role; else same user,
same calendar day), weighted towards the most recent items.

The serving graph freezes the pairs of the export's events (sessions as offline) and seeds them
with the request's recent items, as the offline lists seed them with the user's: a session
column changes the pairs, never the seeds, so the two still agree."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates.lists import empty_lists
from shopping_mtl.candidates.registry import (ServingCandidates, ServingContext, Source, SourceDay, best_first,
                                              register)
from shopping_mtl.history import HISTORY_ITEM_IDS, as_str
from shopping_mtl.scale.covisit_table import best_items, build_table, pair_counts
from shopping_mtl.serving_ops import first_occurrence, float_table, row_unique, top


def covisitation_counts(events: pd.DataFrame, max_session_items: int = 50) -> pd.DataFrame:
    """Item-to-item co-visitation: in how many sessions two distinct items co-occur, a session
    being (user, `session_id`) where `events` has that column, else (user, calendar day).

    Returns:
        frame `source, target, count` (both directions, source != target), pairs in the order
        they first co-occur in the log.
    """
    table = build_table(events, max_session_items, ordered=True)
    source, target, count = pair_counts(table)
    return pd.DataFrame({"source": table.items[source].astype(object),
                         "target": table.items[target].astype(object), "count": count})


def covisit(events: pd.DataFrame, users: Sequence[str], k: int, recent_items: int = 20,
            decay: float = 0.9, max_session_items: int = 50) -> pd.DataFrame:
    """Items co-visited with the user's recent items: score = sum_n decay**n * count(seed_n, item),
    seed_0 the user's most recent distinct item, over their `recent_items` most recent ones."""
    table = build_table(events, max_session_items)
    user, item, score, rank = best_items(table, users, k, recent_items, decay)
    if not len(user):
        return empty_lists()
    return pd.DataFrame({
        "user_id": pd.array(table.users[user], dtype=events["user_id"].dtype),
        "rank": rank.astype(np.int64),
        "item_id": table.items[item].astype(object),
        "score": score.astype(float),
    })


class CovisitServing(tf.Module):
    """Co-visitation from the request's own recent items: each seed's top `neighbours` items,
    frozen at export as rows of a (n_sources + 1, neighbours) matrix (the last row, all
    padding, answers unknown items). Seeds come from the request's history (offline: the
    whole log), so the lists can differ from the offline source's for long histories."""

    def __init__(self, context: ServingContext, quota: int, neighbours: int = 50):
        super().__init__()
        settings = context.settings
        self.quota = int(quota)
        self.recent_items, self.decay = int(settings.covisit_recent_items), float(settings.covisit_decay)
        pairs = covisitation_counts(context.events, settings.covisit_max_session_items)
        pairs = pairs.sort_values(["source", "count", "target"], ascending=[True, False, True], kind="stable")
        pairs = pairs.groupby("source", sort=False).head(neighbours)
        sources = pd.Index(pd.unique(pairs["source"].to_numpy(dtype=object)))
        row = sources.get_indexer(pairs["source"].to_numpy(dtype=object))
        slot = pairs.groupby("source", sort=False).cumcount().to_numpy()
        width = max(int(slot.max()) + 1 if len(slot) else 1, 1)
        targets = np.full((len(sources) + 1, width), "", dtype=object)
        counts = np.zeros((len(sources) + 1, width), np.float32)
        targets[row, slot] = as_str(pairs["target"])
        counts[row, slot] = pairs["count"].to_numpy(np.float32)
        self.row = float_table(sources.to_numpy(dtype=object), np.arange(len(sources), dtype=np.float32),
                               float(len(sources)))
        self.targets = tf.constant(targets.astype(str))
        self.counts = tf.constant(counts)
        self.item_order = context.item_order

    def __call__(self, request) -> ServingCandidates:
        items = request[HISTORY_ITEM_IDS]
        first = first_occurrence(items)
        rank = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1
        order = tf.where(first & (rank < self.recent_items), -tf.cast(rank, tf.float32), -np.inf)
        order, seeds = top(order, self.recent_items, items)
        # decay ** rank, in float64 as the offline sums (ties by item id then fall alike)
        order = tf.cast(order, tf.float64)
        weight = tf.where(tf.math.is_finite(order), tf.pow(tf.constant(self.decay, tf.float64), -order), 0.0)
        row = tf.cast(self.row.lookup(seeds), tf.int32)
        targets = tf.gather(self.targets, row)  # (b, seeds, M)
        scores = tf.cast(tf.gather(self.counts, row), tf.float64) * weight[:, :, None]
        batch = tf.shape(targets)[0]
        targets, scores = tf.reshape(targets, [batch, -1]), tf.reshape(scores, [batch, -1])
        keys, idx = row_unique(targets)
        total = tf.math.unsorted_segment_sum(tf.reshape(scores, [-1]), idx, tf.size(keys))
        total = tf.reshape(tf.gather(total, idx), tf.shape(targets))
        first = first_occurrence(targets) & (total > 0)
        total, targets, keep = best_first(tf.where(first, total, -np.inf), self.quota, targets, self.item_order, first)
        return ServingCandidates(targets, keep, scores=tf.where(keep, tf.cast(total, tf.float32), 0.0))


def _lists(day: SourceDay, k: int) -> pd.DataFrame:
    settings = day.settings
    return covisit(day.events, day.users, k, settings.covisit_recent_items, settings.covisit_decay,
                   settings.covisit_max_session_items)


SOURCE = register(Source("covisit", _lists, CovisitServing))
