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


def make_list_dataset(arrays: Mapping[str, np.ndarray], list_ids: np.ndarray, batch_size: int,
                      seed: int) -> tf.data.Dataset:
    """Batches made of whole lists (a user's candidates on one day), lists reshuffled each epoch.

    A batch takes lists until adding the next would pass `batch_size` rows (a longer list is a
    batch of its own), so a within-list loss always sees every candidate of a list.
    """
    tensors = {k: as_tensor(v) for k, v in arrays.items()}
    order = np.argsort(list_ids, kind="stable")
    _, starts, sizes = np.unique(list_ids[order], return_index=True, return_counts=True)
    rng = np.random.default_rng(seed)

    def batches():
        batch, rows = [], 0
        for i in rng.permutation(len(starts)):
            if batch and rows + sizes[i] > batch_size:
                yield np.concatenate(batch)
                batch, rows = [], 0
            batch.append(order[starts[i]:starts[i] + sizes[i]])
            rows += sizes[i]
        if batch:
            yield np.concatenate(batch)

    index = tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec([None], tf.int64))
    return index.map(lambda rows: {k: tf.gather(t, rows) for k, t in tensors.items()},
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
