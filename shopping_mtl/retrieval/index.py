"""The candidate index: brute-force top-K over the whole catalogue, and its serving export.

The index (TFRS `BruteForce`: one matmul and `top_k`, stock TensorFlow ops only, so TF Serving
loads it) holds every catalogue item's candidate vector. Items unknown to the training
vocabulary are embedded from their content (their id hidden, as id dropout trained for).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shopping_mtl.batches import as_tensor
from shopping_mtl.export import next_version, save_atomic  # noqa: F401  (the bench uses both from here)
from shopping_mtl.features import FeatureSet

log = logging.getLogger(__name__)


def embed_items(candidate_model: tf.keras.Model, arrays: Mapping[str, np.ndarray],
                batch_size: int = 8192) -> np.ndarray:
    """Candidate vectors of item-tower inputs, in batches: (n_items, dim)."""
    n = len(next(iter(arrays.values())))
    out = []
    for start in range(0, n, batch_size):
        batch = {k: as_tensor(v[start:start + batch_size])
                 for k, v in arrays.items() if k in candidate_model.input_names}
        out.append(candidate_model(batch, training=False).numpy())
    return np.concatenate(out) if out else np.zeros((0, candidate_model.output_shape[-1]), np.float32)


class AppendConstant(tf.keras.layers.Layer):
    """(batch, dim) -> (batch, dim + 1) with `value` in the last column: the query's weight on the
    candidates' popularity column."""

    def __init__(self, value: float, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.value, self.scale = float(value), float(scale)

    def call(self, vectors):
        column = tf.fill([tf.shape(vectors)[0], 1], tf.constant(self.value, vectors.dtype))
        return tf.concat([vectors * self.scale, column], axis=-1)

    def get_config(self):
        return {**super().get_config(), "value": self.value, "scale": self.scale}


def with_popularity_prior(query_model: tf.keras.Model, item_vectors: np.ndarray, item_counts: np.ndarray,
                          weight: float, temperature: float) -> tuple[tf.keras.Model, np.ndarray]:
    """Add `weight * log(1 + count)` to every score, inside the index's one matmul.

    The towers are trained with the logQ correction, which takes popularity out of the scores;
    at retrieval time some of it belongs back in. Scores become
    `query . item / temperature + weight * log(1 + count)`, with an extra query column (`weight`)
    and an extra item column (`log(1 + count)`), so the export stays one matmul plus top_k.
    """
    inputs = {name: tf.keras.Input(shape=t.shape[1:], dtype=t.dtype, name=name)
              for name, t in zip(query_model.input_names, query_model.inputs)}
    augmented = AppendConstant(weight, 1.0 / temperature, name="popularity_prior")(query_model(inputs))
    model = tf.keras.Model(inputs, augmented, name="query_tower_with_prior")
    column = np.log1p(np.asarray(item_counts, dtype=np.float32))[:, None]
    return model, np.concatenate([item_vectors.astype(np.float32), column], axis=1)


def build_index(query_model: tf.keras.Model, item_ids: np.ndarray, item_vectors: np.ndarray,
                k: int) -> tfrs.layers.factorized_top_k.BruteForce:
    """A BruteForce index over the catalogue: query features -> (scores, item ids), top k."""
    index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=min(k, len(item_ids)))
    index.index(tf.constant(item_vectors, tf.float32), tf.constant(np.asarray(item_ids, dtype=str)))
    return index


def _tensors(arrays: Mapping[str, np.ndarray], names) -> dict[str, tf.Tensor]:
    return {k: as_tensor(arrays[k]) for k in names}


# Scores one query batch may hold: 2**26 float32 scores are 256 MB.
MAX_BATCH_SCORES = 2**26


def query_batch_size(n_items: int, max_scores: int | None = None, most: int = 1024) -> int:
    """Queries per index call so that its (batch, n_items) score matrix holds at most
    `max_scores` scores (None: MAX_BATCH_SCORES): 1024 up to 65k items, 126 at 529k (1024 were
    2.2 GB there)."""
    max_scores = MAX_BATCH_SCORES if max_scores is None else max_scores
    return max(1, min(most, max_scores // max(int(n_items), 1)))


def retrieve(index, query_model: tf.keras.Model, users: np.ndarray, arrays: Mapping[str, np.ndarray],
             k: int, batch_size: int | None = None) -> pd.DataFrame:
    """Top-k candidates per query row: `user_id, rank, item_id, score` (k rows per user).

    Args:
        batch_size: queries per index call; None sizes batches by the catalogue
            (`query_batch_size`), since the index scores a batch against every item at once.
    """
    if batch_size is None:
        batch_size = query_batch_size(index._candidates.shape[0])
    frames = []
    n = len(users)
    for start in range(0, n, batch_size):
        batch = {name: value[start:start + batch_size] for name, value in arrays.items()}
        scores, ids = index(_tensors(batch, query_model.input_names), k=k)  # (batch, k) each
        scores, ids = scores.numpy(), ids.numpy().astype(str)
        rows = len(scores)
        frames.append(pd.DataFrame({
            "user_id": np.repeat(users[start:start + rows], ids.shape[1]),
            "rank": np.tile(np.arange(1, ids.shape[1] + 1), rows),
            "item_id": ids.reshape(-1).astype(object),
            "score": scores.reshape(-1).astype(float),
        }))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["user_id", "rank", "item_id", "score"])


class RetrievalServing(tf.Module):
    """What TF Serving loads: raw query features in, `item_ids` and `scores` (top k) out.

    With `exclude_seen`, items in the request's `history_item_ids` are left out (the index
    returns k + history length, the seen ones are masked, the best k kept), as offline.
    """

    def __init__(self, index, features: FeatureSet, input_names, k: int, exclude_seen: bool = False):
        super().__init__()
        self.index = index
        n_items = int(index._candidates.shape[0])
        self.k = min(k, n_items)
        self.exclude_seen = exclude_seen and "history_item_ids" in input_names
        history = features.spec.history_length if self.exclude_seen else 0
        self.depth = min(self.k + history, n_items)
        signature = features.input_signature("user", "history", "context")
        self.signature = {name: signature[name] for name in input_names}
        self.serve = tf.function(self._serve, input_signature=[self.signature])

    def _serve(self, features):
        scores, ids = self.index(features, k=self.depth)  # (batch, depth) each
        if self.exclude_seen:
            history = features["history_item_ids"]  # (batch, history_length)
            seen = tf.reduce_any(tf.equal(ids[:, :, None], history[:, None, :]), axis=-1)
            scores = tf.where(seen, tf.constant(-np.inf, scores.dtype), scores)
            scores, position = tf.math.top_k(scores, k=self.k)
            ids = tf.gather(ids, position, batch_dims=1)
        return {"item_ids": tf.identity(ids, name="item_ids"), "scores": tf.identity(scores, name="scores")}


def export_retrieval(index, query_model: tf.keras.Model, features: FeatureSet, k: int,
                     target: Path, exclude_seen: bool = False) -> Path:
    """Export the retrieval model in TF Serving's layout: `target` is `<base>/retrieval/<version>`."""
    module = RetrievalServing(index, features, query_model.input_names, k, exclude_seen)
    concrete = module.serve.get_concrete_function()
    return save_atomic(module, {"serving_default": concrete}, target)
