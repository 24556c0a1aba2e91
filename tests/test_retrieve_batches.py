"""`retrieve` gives the same lists whatever its query batches, and sizes them by the catalogue."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.retrieval import index as index_lib


def small_index(n_items: int = 300, dim: int = 8, k: int = 20):
    rng = np.random.default_rng(0)
    inputs = tf.keras.Input(shape=(dim,), dtype=tf.float32, name="query")
    query_model = tf.keras.Model(inputs, tf.keras.layers.Dense(dim, name="tower")(inputs))
    vectors = rng.standard_normal((n_items, dim)).astype(np.float32)
    vectors[1::7] = vectors[0]  # identical items: tied scores
    ids = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    return index_lib.build_index(query_model, ids, vectors, k), query_model


def test_lists_equal_across_batch_sizes(monkeypatch):
    index, query_model = small_index()
    rng = np.random.default_rng(1)
    n = 101
    users = np.array([f"u{i}" for i in range(n)], dtype=object)
    arrays = {"query": rng.standard_normal((n, 8)).astype(np.float32)}
    whole = index_lib.retrieve(index, query_model, users, arrays, 20, batch_size=1024)
    assert len(whole) == n * 20 and list(whole.columns) == ["user_id", "rank", "item_id", "score"]
    for batch_size in (1, 7, 64):
        pd.testing.assert_frame_equal(
            index_lib.retrieve(index, query_model, users, arrays, 20, batch_size=batch_size), whole)
    # The default: batches of 2**12 // 300 = 13 queries when a batch may hold 4096 scores.
    monkeypatch.setattr(index_lib, "MAX_BATCH_SCORES", 2**12)
    calls = []
    tensors = index_lib._tensors
    monkeypatch.setattr(index_lib, "_tensors", lambda *args: calls.append(1) or tensors(*args))
    pd.testing.assert_frame_equal(index_lib.retrieve(index, query_model, users, arrays, 20), whole)
    assert len(calls) == -(-n // 13)


def test_query_batch_size_bounds_the_score_matrix():
    # (batch, n_items) float32 scores: at most 2**26 (256 MB), never above 1024 queries, at least 1.
    assert index_lib.query_batch_size(529_000) == 126  # 1024 queries were 2.2 GB there
    assert index_lib.query_batch_size(65_536) == 1024
    assert index_lib.query_batch_size(10**9) == 1
    assert index_lib.query_batch_size(0) == 1024
