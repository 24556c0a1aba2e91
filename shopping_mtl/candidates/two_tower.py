"""The two-tower model's retrieved items: new items found through content and history.

Its lists come from the retrieval stage (the model is fitted once, on the days before the
validation day), so it lists only on the days after that: the validation day and the test day.
Its score is also a ranker feature (`two_tower_score`), 0 for candidates from other sources.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates.registry import ServingCandidates, ServingContext, Source, SourceDay, register
from shopping_mtl.history import HISTORY_ITEM_IDS
from shopping_mtl.serving_ops import pad_columns, top


class TwoTowerServing(tf.Module):
    """The exported index's top items the request's user has not engaged with."""

    def __init__(self, context: ServingContext, quota: int):
        super().__init__()
        if context.retrieval is None:
            raise ValueError("the two_tower source's serving part needs the retrieval model's index")
        self.index = context.retrieval.index
        self.input_names = list(context.retrieval.input_names)
        self.history_length = int(context.retrieval.history_length)
        self.item_tables = dict(context.item_tables)
        self.category_table = context.category_table
        self.quota = int(quota)
        # Deep enough that `quota` unseen items remain after the request's own items are removed.
        n_items = int(self.index._candidates.shape[0])  # the index's item count (TFRS keeps no public one)
        self.depth = min(self.quota + int(context.history_length), n_items)

    def __call__(self, request) -> ServingCandidates:
        history = pad_columns(request[HISTORY_ITEM_IDS], self.history_length, "")
        query = {name: request[name] for name in self.input_names if not name.startswith("history_")}
        query[HISTORY_ITEM_IDS] = history
        for name in self.input_names:
            if name.startswith("history_") and name != HISTORY_ITEM_IDS:
                table = self.item_tables.get(name[len("history_"):], self.category_table)
                query[name] = table.lookup(history)
        scores, ids = self.index(query, k=self.depth)
        seen_items = request[HISTORY_ITEM_IDS]
        seen = tf.reduce_any(tf.equal(ids[:, :, None], seen_items[:, None, :]), axis=-1)
        scores = tf.where(seen, tf.constant(-np.inf, scores.dtype), scores)
        scores, ids = top(scores, self.quota, ids)
        found = tf.math.is_finite(scores)
        scores = tf.where(found, scores, 0.0)
        return ServingCandidates(ids, found, scores, scores=scores)


def _lists(day: SourceDay, k: int) -> pd.DataFrame | None:
    # Already the day's users' lists, as deep as the quota (the retrieval stage's).
    return day.two_tower


SOURCE = register(Source("two_tower", _lists, TwoTowerServing, baseline=False))
