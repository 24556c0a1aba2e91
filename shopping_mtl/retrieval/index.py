"""The candidate index: brute-force top-K over the whole catalogue, and its serving export.

The index (TFRS `BruteForce`: one matmul and `top_k`, stock TensorFlow ops only, so TF Serving
loads it) holds every catalogue item's candidate vector. Items unknown to the training
vocabulary are embedded from their content (their id hidden, as id dropout trained for).
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from shopping_mtl.features import FeatureSet

log = logging.getLogger(__name__)


def embed_items(candidate_model: tf.keras.Model, arrays: Mapping[str, np.ndarray],
                batch_size: int = 8192) -> np.ndarray:
    """Candidate vectors of item-tower inputs, in batches: (n_items, dim)."""
    n = len(next(iter(arrays.values())))
    out = []
    for start in range(0, n, batch_size):
        batch = {k: tf.constant(v[start:start + batch_size].astype(str) if v.dtype == object
                                else v[start:start + batch_size])
                 for k, v in arrays.items() if k in candidate_model.input_names}
        out.append(candidate_model(batch, training=False).numpy())
    return np.concatenate(out) if out else np.zeros((0, candidate_model.output_shape[-1]), np.float32)


def build_index(query_model: tf.keras.Model, item_ids: np.ndarray, item_vectors: np.ndarray,
                k: int) -> tfrs.layers.factorized_top_k.BruteForce:
    """A BruteForce index over the catalogue: query features -> (scores, item ids), top k."""
    index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=min(k, len(item_ids)))
    index.index(tf.constant(item_vectors, tf.float32), tf.constant(np.asarray(item_ids, dtype=str)))
    return index


def _tensors(arrays: Mapping[str, np.ndarray], names) -> dict[str, tf.Tensor]:
    return {k: tf.constant(arrays[k].astype(str) if arrays[k].dtype == object else arrays[k])
            for k in names}


def retrieve(index, query_model: tf.keras.Model, users: np.ndarray, arrays: Mapping[str, np.ndarray],
             k: int, batch_size: int = 1024) -> pd.DataFrame:
    """Top-k candidates per query row: `user_id, rank, item_id, score` (k rows per user)."""
    frames = []
    n = len(users)
    for start in range(0, n, batch_size):
        batch = {name: value[start:start + batch_size] for name, value in arrays.items()}
        scores, ids = index(_tensors(batch, query_model.input_names), k=k)
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
    """What TF Serving loads: raw query features in, `item_ids` and `scores` (top k) out."""

    def __init__(self, index, features: FeatureSet, input_names, k: int):
        super().__init__()
        self.index = index
        self.k = k
        signature = features.input_signature("user", "history", "context")
        self.signature = {name: signature[name] for name in input_names}
        self.serve = tf.function(self._serve, input_signature=[self.signature])

    def _serve(self, features):
        scores, ids = self.index(features, k=self.k)  # (batch, k) each
        return {"item_ids": tf.identity(ids, name="item_ids"), "scores": tf.identity(scores, name="scores")}


def save_atomic(module: tf.Module, signatures: Mapping[str, tf.types.experimental.ConcreteFunction],
                target: Path) -> Path:
    """Save a SavedModel into a hidden sibling folder, then rename it into place.

    A server polling the parent folder never sees a half-written version; an interrupted save
    leaves only the hidden folder, which the next save ignores.
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} exists; an export version is never overwritten")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        tf.saved_model.save(module, str(tmp), signatures=dict(signatures))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def export_retrieval(index, query_model: tf.keras.Model, features: FeatureSet, k: int,
                     target: Path) -> Path:
    """Export the retrieval model in TF Serving's layout: `target` is `<base>/retrieval/<version>`."""
    module = RetrievalServing(index, features, query_model.input_names, k)
    concrete = module.serve.get_concrete_function()
    return save_atomic(module, {"serving_default": concrete}, target)
