"""Keras layers of the in-model preprocessing (stock TensorFlow ops only, so exports load in a
plain TF Serving).

Weight-free index layers turn raw values into indices or floats: ``TimePart`` (unix seconds ->
hour / weekday), ``NumericPreprocessing`` (clean, transform, normalise or bucket). Layers with
embeddings wrap an index layer: ``IndexEmbedding`` for one value a row, ``HistoryPooling`` for
the masked mean over a history, and ``GroupEncoder`` for every feature of a group.
``shopping_mtl.features.feature_set.FeatureSet`` builds and wires them.
"""

from __future__ import annotations

import tensorflow as tf

from shopping_mtl.features.spec import CONTEXT_SIZES, _unknown
from shopping_mtl.history import PAD

_SECONDS_PER_DAY = 86_400
_SECONDS_PER_HOUR = 3_600


def hour_and_weekday(timestamp: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Hour of day (0-23) and weekday (Monday = 0) in UTC of int64 unix seconds.

    Floor division and modulo (not truncation) keep times before 1970 in range.
    1970-01-01 (day 0) was a Thursday, weekday 3, hence the ``+ 3``.
    """
    ts = tf.cast(timestamp, tf.int64)
    hour = tf.math.floordiv(tf.math.floormod(ts, _SECONDS_PER_DAY), _SECONDS_PER_HOUR)
    weekday = tf.math.floormod(tf.math.floordiv(ts, _SECONDS_PER_DAY) + 3, 7)
    return hour, weekday


class TimePart(tf.keras.layers.Layer):
    """Raw ``timestamp`` (batch,) int64 unix seconds -> (batch,) int64 hour or weekday."""

    def __init__(self, part: str, **kwargs):
        super().__init__(**kwargs)
        if part not in CONTEXT_SIZES:
            raise _unknown("TimePart", "part", part, CONTEXT_SIZES)
        self.part = part

    def call(self, timestamp):
        hour, weekday = hour_and_weekday(timestamp)
        return hour if self.part == "hour" else weekday

    def get_config(self):
        return {**super().get_config(), "part": self.part}


class NumericPreprocessing(tf.keras.layers.Layer):
    """Raw float (batch,) -> cleaned, transformed, then normalised (batch, 1) float32, or
    bucketed (batch,) int64 when ``boundaries`` is given.

    Missing values (NaN, +-inf, negatives under log1p) become 0.0 when normalised (the train
    mean) and bucket 0 when bucketed; real values use buckets 1..len(boundaries)+1.
    """

    def __init__(self, transform=None, mean=0.0, variance=1.0, boundaries=None, **kwargs):
        super().__init__(**kwargs)
        self.transform = transform
        self.mean, self.variance = float(mean), float(variance)
        self.boundaries = None if boundaries is None else [float(b) for b in boundaries]
        if self.boundaries is None:
            self._normalize = tf.keras.layers.Normalization(
                mean=[self.mean], variance=[self.variance]
            )
        else:
            self._discretize = tf.keras.layers.Discretization(bin_boundaries=list(self.boundaries))

    @property
    def num_indices(self) -> int:
        """Embedding rows needed when bucketed: missing + one per bucket."""
        return len(self.boundaries) + 2

    def call(self, values):
        x = tf.cast(values, tf.float32)  # (batch,)
        valid = tf.math.is_finite(x)
        if self.transform == "log1p":
            valid = tf.logical_and(valid, x >= 0.0)
        x = tf.where(valid, x, tf.zeros_like(x))  # no NaN enters log1p or the statistics
        if self.transform == "log1p":
            x = tf.math.log1p(x)
        if self.boundaries is None:
            z = self._normalize(x[:, None])  # (batch, 1)
            return tf.where(valid[:, None], z, tf.zeros_like(z))
        bucket = tf.cast(self._discretize(x), tf.int64) + 1  # (batch,)
        return tf.where(valid, bucket, tf.zeros_like(bucket))

    def get_config(self):
        return {
            **super().get_config(),
            "transform": self.transform,
            "mean": self.mean,
            "variance": self.variance,
            "boundaries": self.boundaries,
        }


def masked_mean(vectors: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean over axis 1 of ``vectors`` (batch, L, d) where ``mask`` (batch, L) is true.

    Rows with no true slot give the zero vector (not NaN).
    """
    weights = tf.cast(mask, vectors.dtype)[..., None]  # (batch, L, 1)
    total = tf.reduce_sum(vectors * weights, axis=1)  # (batch, d)
    count = tf.reduce_sum(weights, axis=1)  # (batch, 1)
    return tf.math.divide_no_nan(total, count)


class IndexEmbedding(tf.keras.layers.Layer):
    """Raw value (batch,) -> index layer -> embedding (batch, dim)."""

    def __init__(self, indexer, embedding, **kwargs):
        super().__init__(**kwargs)
        self.indexer, self.embedding = indexer, embedding

    def call(self, values):
        return self.embedding(self.indexer(values))


class HistoryPooling(tf.keras.layers.Layer):
    """Raw history strings (batch, L) -> masked mean of their embeddings (batch, dim).

    Slots equal to "" are padding and do not count; pass the item tower's lookup and embedding
    to share them.
    """

    def __init__(self, indexer, embedding, **kwargs):
        super().__init__(**kwargs)
        self.indexer, self.embedding = indexer, embedding

    def call(self, values):
        vectors = self.embedding(self.indexer(values))  # (batch, L, dim)
        return masked_mean(vectors, tf.not_equal(values, PAD))


class GroupEncoder(tf.keras.layers.Layer):
    """Raw inputs of one feature group -> one tensor per feature, or their concatenation.

    ``call(features, concat=True)`` takes a dict of raw tensors keyed by input name (extra keys
    are ignored) and returns (batch, output_dim), or with ``concat=False`` a dict
    ``{feature: (batch, width)}`` keyed by feature name (``hour``, ``price``; history outputs by
    their input name, ``history_item_ids``). Made by ``FeatureSet.encoder``.
    """

    def __init__(
        self, group, output_keys, input_names, feature_layers, widths, embeddings, **kwargs
    ):
        super().__init__(**kwargs)
        self.group = group
        self.output_keys = tuple(output_keys)
        self.input_names = tuple(input_names)
        self.feature_layers = list(feature_layers)
        self.widths = tuple(widths)
        self.embeddings = dict(embeddings)  # feature name -> tf.keras.layers.Embedding

    @property
    def output_dim(self) -> int:
        return sum(self.widths)

    def call(self, features, concat=True):
        outputs = {
            key: layer(features[name])
            for key, name, layer in zip(self.output_keys, self.input_names, self.feature_layers)
        }
        if not concat:
            return outputs
        return tf.concat([tf.cast(v, tf.float32) for v in outputs.values()], axis=-1)
