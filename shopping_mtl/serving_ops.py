"""Stock TensorFlow ops the serving graphs share: lookup tables from frozen frames, per-row
de-duplication of string ids, padding and top-k. Only ops TF Serving ships are used."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from shopping_mtl.history import as_str


def string_table(keys: np.ndarray, values: np.ndarray) -> tf.lookup.StaticHashTable:
    """A frozen string -> string table; unknown keys give ""."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(as_str(keys).astype(str)),
                                            tf.constant(as_str(values).astype(str))), default_value="")


def float_table(keys: np.ndarray, values: np.ndarray, default: float) -> tf.lookup.StaticHashTable:
    """A frozen string -> float32 table; unknown keys give `default`."""
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(as_str(keys).astype(str)),
                                            tf.constant(np.asarray(values, np.float32))), default_value=default)


def row_unique(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(batch, n) strings -> (the row-prefixed keys flattened, (batch * n,), and `tf.unique`'s
    index of each): equal values in one row share an index, in different rows they do not."""
    rows = tf.strings.as_string(tf.range(tf.shape(values)[0]))[:, None]
    flat = tf.reshape(tf.strings.join([tf.broadcast_to(rows, tf.shape(values)), values], separator="\x1f"), [-1])
    return flat, tf.unique(flat)[1]


def first_occurrence(keys: tf.Tensor) -> tf.Tensor:
    """(batch, n) strings -> (batch, n) bool: True where a value is not "" and appears in its
    row for the first time."""
    flat, idx = row_unique(keys)
    position = tf.range(tf.size(flat))
    first = tf.math.unsorted_segment_min(position, idx, tf.size(flat))
    is_first = tf.reshape(tf.equal(tf.gather(first, idx), position), tf.shape(keys))
    return is_first & tf.not_equal(keys, "")


def pad_columns(values: tf.Tensor, width: int, fill) -> tf.Tensor:
    """(batch, n) -> (batch, width): cut or padded with `fill` on the right."""
    missing = tf.maximum(width - tf.shape(values)[1], 0)
    return tf.pad(values, [[0, 0], [0, missing]], constant_values=fill)[:, :width]


def top(scores: tf.Tensor, k: int, *values: tf.Tensor):
    """The top min(k, n) entries per row of `scores`, and the same entries of `values`."""
    k = tf.minimum(k, tf.shape(scores)[1])
    best, position = tf.math.top_k(scores, k=k)
    return (best, *[tf.gather(v, position, batch_dims=1) for v in values])
