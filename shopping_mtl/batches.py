"""Arrays of raw model inputs -> tensors and tf.data batches, shared by retrieval and ranking."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import tensorflow as tf

from shopping_mtl.training import EpochClock


def as_tensor(values: np.ndarray) -> tf.Tensor:
    """A numpy column as a tensor; object arrays of Python strings become tf.string."""
    return tf.constant(values.astype(str) if values.dtype == object else values)


def _epoch_order(n: int, seed: int, epoch: tf.Variable) -> tf.data.Dataset:
    """Row indices 0..n-1 in an order keyed by (seed, the epoch's value when the first index is
    drawn), so a resumed run's epoch k sees the batches of the uninterrupted run's epoch k."""

    def order(_):
        key = tf.stack([tf.constant(seed, tf.int64), epoch.read_value()])
        return tf.data.Dataset.from_tensor_slices(
            tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=key))

    # A known length: Keras then knows an epoch's steps instead of finding them by running out.
    return tf.data.Dataset.from_tensors(0).flat_map(order).apply(tf.data.experimental.assert_cardinality(n))


def make_dataset(arrays: Mapping[str, np.ndarray], batch_size: int, shuffle: bool, seed: int,
                 drop_remainder: bool = False, id_dropout: float = 0.0,
                 clock: EpochClock | None = None) -> tf.data.Dataset:
    """Batches of raw inputs; with `id_dropout`, a random share of `item_id`s is hidden ("").

    Shuffling permutes row indices and gathers whole batches, which is far cheaper than
    shuffling dicts of string tensors element by element. With a `clock` (a callback of the
    fit), each epoch's order is keyed by its number; without, by how often the dataset was read.
    """
    tensors = {k: as_tensor(v) for k, v in arrays.items()}
    n = len(next(iter(arrays.values())))
    rows = tf.data.Dataset.range(n)
    if shuffle and clock is not None:
        rows = _epoch_order(n, seed, clock.variable)
    elif shuffle:
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
                      seed: int, clock: EpochClock | None = None) -> tf.data.Dataset:
    """Batches made of whole lists (a user's candidates on one day), lists reshuffled each epoch
    (in an order keyed by the epoch's number when a `clock` is given, as in `make_dataset`).

    A batch holds a fixed number of whole lists, as many as make `batch_size` rows on average,
    so a within-list loss always sees every candidate of a list and every epoch has the same
    number of batches (Keras fixes an epoch's steps from the first epoch of an input of unknown
    length: a later epoch with fewer batches would end training, one with more would be cut).
    """
    tensors = {k: as_tensor(v) for k, v in arrays.items()}
    order = np.argsort(list_ids, kind="stable")
    _, starts, sizes = np.unique(list_ids[order], return_index=True, return_counts=True)
    per_batch = max(1, int(round(batch_size / max(float(np.mean(sizes)), 1.0)))) if len(sizes) else 1
    n_batches = -(-len(starts) // per_batch)
    reads = iter(range(1 << 62))

    def batches():
        # Runs when an epoch's first batch is drawn, after the clock's epoch-begin callback.
        epoch = clock.epoch if clock is not None else next(reads)
        lists = np.random.default_rng([seed, epoch]).permutation(len(starts))
        for first in range(0, len(lists), per_batch):
            yield np.concatenate([order[starts[i]:starts[i] + sizes[i]] for i in lists[first:first + per_batch]])

    index = tf.data.Dataset.from_generator(batches, output_signature=tf.TensorSpec([None], tf.int64))
    index = index.apply(tf.data.experimental.assert_cardinality(n_batches))
    return index.map(lambda rows: {k: tf.gather(t, rows) for k, t in tensors.items()},
                     num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
