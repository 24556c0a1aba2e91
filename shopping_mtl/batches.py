"""Arrays of raw model inputs -> tensors and tf.data batches, shared by retrieval and ranking."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf


def as_tensor(values: np.ndarray) -> tf.Tensor:
    """A numpy column as a tensor; object arrays of Python strings become tf.string."""
    return tf.constant(values.astype(str) if values.dtype == object else values)


def make_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, shuffle: bool, seed: int,
                 drop_remainder: bool = False, id_dropout: float = 0.0) -> tf.data.Dataset:
    """Batches of raw inputs; with `id_dropout`, a random share of `item_id`s is hidden ("").

    Shuffling permutes row indices and gathers whole batches, which is far cheaper than
    shuffling dicts of string tensors element by element.
    """
    tensors = {k: as_tensor(v) for k, v in arrays.items()}
    n = len(next(iter(arrays.values())))
    rows = tf.data.Dataset.range(n)
    if shuffle:
        rows = rows.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    rows = rows.batch(batch_size, drop_remainder=drop_remainder).enumerate()

    def gather(number, index):
        batch = {k: tf.gather(t, index) for k, t in tensors.items()}
        if id_dropout > 0:
            # Stateless: the mask depends on (seed, batch number) only, so batches can be
            # prepared in parallel and a rerun hides the same ids.
            draw = tf.random.stateless_uniform(tf.shape(batch["item_id"]), seed=[seed, number])
            batch["item_id"] = tf.where(draw < id_dropout, tf.constant(""), batch["item_id"])
        return batch

    return rows.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(
        tf.data.AUTOTUNE)
