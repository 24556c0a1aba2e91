"""Keras preprocessing built from a dataset's feature spec, living inside the models.

Exported models take raw values (string ids, float prices, int64 unix-second timestamps), so
TF Serving needs no second copy of this code. The flow::

    spec = FeatureSpec.from_dict(config["features"])           # validates, names the bad key
    fs = FeatureSet.adapt(spec, train_events, items=items, users=users)
    inputs = fs.inputs("user") | fs.inputs("history") | fs.inputs("context")   # keras.Input
    item_encoder = fs.encoder("item")                            # fresh trainable embeddings
    history_encoder = fs.encoder("history", share_with=item_encoder)
    vector = tf.concat([fs.encoder("user")(inputs), history_encoder(inputs), ...], -1)
    per_feature = item_encoder(item_inputs, concat=False)        # {"item_id": (batch, dim), ...}

``FeatureSet`` owns the adapted, weight-free preprocessing layers (lookups, hashing, numeric
cleaning/normalisation/bucketing, time parts); each ``encoder()`` call makes a
``GroupEncoder`` layer with its own embedding tables, so a retrieval model and a ranker built
from one ``FeatureSet`` do not share trainable weights unless asked to (``share_with``).

Values the model may meet, and where they go (the same in training and serving):

* string features: "" (and missing values, which ``to_inputs`` turns into "") map to index 0,
  a reserved "missing" row with its own embedding; values not in the train vocabulary map to
  the OOV rows ``1..num_oov_indices`` (hashed, so several unknown ids spread over buckets);
  vocabulary entries follow, most frequent first (ties by value), so indices are stable.
* ``hashed``: "" -> 0, anything else -> ``1..bins``.
* ``numeric``: NaN, +-inf and, with ``transform: log1p``, negative values are *missing*.
  Normalised: missing -> 0.0, i.e. the train mean. Bucketed: missing -> bucket 0, values ->
  ``1..n_buckets`` (bucket boundaries are the train quantiles of the transformed values; a value
  equal to a boundary falls in the upper bucket).
* history slots equal to "" are padding and are left out of the pooled mean; an all-padding
  history pools to the zero vector.

Leakage: every vocabulary, mean/variance and bucket boundary comes from the train events passed
to ``FeatureSet.adapt`` plus the rows of the ``items`` / ``users`` tables whose id occurs in
those train events (one row per entity). An item that first appears in validation or test adds
nothing, not even its category or price, although its table row exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.history import PAD, as_str, history_input_name, to_unix_seconds

FEATURE_TYPES = ("categorical", "hashed", "id", "numeric")
GROUPS = ("user", "item", "history", "context")
ENTITY_GROUPS = ("user", "item")
TIMESTAMP = "timestamp"
CONTEXT_SIZES = {"hour": 24, "weekday": 7}  # number of values of each time part
TRANSFORMS = ("log1p",)
EMBEDDED_TYPES = ("categorical", "hashed", "id")  # types a history may pool

_SPEC_KEYS = (
    "context",
    "embedding_dim",
    "history_features",
    "history_length",
    "item",
    "num_oov_indices",
    "user",
)
_TYPE_KEYS = {
    "id": ("dim", "min_count", "num_oov_indices", "type"),
    "categorical": ("dim", "min_count", "type"),
    "hashed": ("bins", "dim", "type"),
    "numeric": ("buckets", "dim", "transform", "type"),
}
_CONTEXT_KEYS = ("dim",)
_SECONDS_PER_DAY = 86_400
_SECONDS_PER_HOUR = 3_600


# --------------------------------------------------------------------------------------------
# The spec


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """One user or item column and how it enters the model.

    ``num_oov_indices`` is the number of OOV rows of a string lookup (``id``: the spec's
    default, ``categorical``: 1, others: 0). ``dim`` is the embedding width (0 for a normalised
    numeric, which enters as one float).
    """

    name: str
    group: str
    type: str
    dim: int
    num_oov_indices: int = 0
    min_count: int = 1
    bins: int | None = None
    transform: str | None = None
    buckets: int | None = None

    @property
    def embedded(self) -> bool:
        """Whether the feature is looked up in an embedding table (else: one float)."""
        return self.type != "numeric" or self.buckets is not None


@dataclasses.dataclass(frozen=True)
class ContextConfig:
    """A part of the prediction timestamp (``hour`` or ``weekday``, UTC) and its embedding."""

    name: str
    dim: int


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """The ``features:`` section of a dataset's YAML file, validated.

    ``history_features`` names the item features pooled over the history (default:
    ``item_id`` when ``history_length`` > 0).
    """

    user: tuple[FeatureConfig, ...] = ()
    item: tuple[FeatureConfig, ...] = ()
    context: tuple[ContextConfig, ...] = ()
    history_length: int = 0
    history_features: tuple[str, ...] = ()
    embedding_dim: int = 32
    num_oov_indices: int = 8

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureSpec:
        """Builds and validates a spec; a bad key or value raises ``ValueError`` naming it."""
        if not isinstance(d, Mapping):
            raise ValueError(f"features must be a mapping, got {type(d).__name__}")
        _check_keys("features", d, _SPEC_KEYS)

        def get(key, default, minimum=1):
            return _int(f"features.{key}", d.get(key, default), minimum)

        embedding_dim = get("embedding_dim", cls.embedding_dim)
        default_oov = get("num_oov_indices", cls.num_oov_indices)
        history_length = get("history_length", cls.history_length, 0)

        groups: dict[str, tuple[FeatureConfig, ...]] = {}
        for group in ENTITY_GROUPS:
            columns = d.get(group) or {}
            if not isinstance(columns, Mapping):
                raise ValueError(f"features.{group} must map column names to settings")
            groups[group] = tuple(
                _feature_config(group, str(name), settings, embedding_dim, default_oov)
                for name, settings in columns.items()
            )
        names = [f.name for g in groups.values() for f in g]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"feature {name!r} is in both features.user and features.item")
            if name == TIMESTAMP or name.startswith("history_"):
                raise ValueError(f"feature name {name!r} is reserved for the model's inputs")

        embedded_items = [f.name for f in groups["item"] if f.type in EMBEDDED_TYPES]
        if "history_features" in d:
            raw = d["history_features"] or ()
            if isinstance(raw, str) or not isinstance(raw, Iterable):
                raise ValueError("features.history_features must be a list of item feature names")
            history_features = tuple(str(n) for n in raw)
        else:
            by_default = history_length and "item_id" in embedded_items
            history_features = ("item_id",) if by_default else ()
        for name in history_features:
            if name not in embedded_items:
                raise _unknown("features.history_features", "key", name, embedded_items)
        if history_length and not history_features:
            raise ValueError("features.history_length > 0 needs an item_id or history_features")
        if history_features and not history_length:
            raise ValueError("features.history_features needs features.history_length > 0")

        return cls(
            user=groups["user"],
            item=groups["item"],
            context=_context_configs(d.get("context") or (), embedding_dim),
            history_length=history_length,
            history_features=history_features,
            embedding_dim=embedding_dim,
            num_oov_indices=default_oov,
        )

    def group(self, group: str) -> tuple[FeatureConfig, ...]:
        """The user or item features."""
        if group not in ENTITY_GROUPS:
            raise _unknown("feature group", "name", group, ENTITY_GROUPS)
        return getattr(self, group)

    def feature(self, name: str) -> FeatureConfig:
        """A user or item feature by column name."""
        for f in self.user + self.item:
            if f.name == name:
                return f
        raise _unknown("features", "feature", name, [f.name for f in self.user + self.item])


def _unknown(where: str, what: str, value: Any, known: Iterable[str]) -> ValueError:
    return ValueError(f"{where} has unknown {what} {value!r}; known: {', '.join(known) or 'none'}")


def _check_keys(where: str, given: Any, known: Sequence[str]) -> None:
    if not isinstance(given, Mapping):
        raise ValueError(f"{where} must be a mapping, got {given!r}")
    for key in given:
        if key not in known:
            raise _unknown(where, "key", key, known)


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{where} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _feature_config(
    group: str, name: str, settings: Any, embedding_dim: int, default_oov: int
) -> FeatureConfig:
    where = f"features.{group}.{name}"
    if not isinstance(settings, Mapping):
        raise ValueError(f"{where} must be a mapping like {{type: categorical}}, got {settings!r}")
    kind = settings.get("type")
    if kind not in _TYPE_KEYS:
        raise _unknown(f"{where}.type", "value", kind, FEATURE_TYPES)
    _check_keys(where, settings, _TYPE_KEYS[kind])

    def get(key, default, minimum=1):
        return _int(f"{where}.{key}", settings.get(key, default), minimum)

    dim = get("dim", embedding_dim)
    if kind == "id":
        oov = get("num_oov_indices", default_oov)
        return FeatureConfig(name, group, kind, dim, oov, min_count=get("min_count", 1))
    if kind == "categorical":
        return FeatureConfig(name, group, kind, dim, 1, min_count=get("min_count", 1))
    if kind == "hashed":
        if "bins" not in settings:
            raise ValueError(f"{where} of type hashed needs 'bins'")
        return FeatureConfig(name, group, kind, dim, bins=get("bins", None))
    transform = settings.get("transform")
    if transform is not None and transform not in TRANSFORMS:
        raise _unknown(f"{where}.transform", "value", transform, TRANSFORMS)
    if "buckets" not in settings:
        if "dim" in settings:
            raise ValueError(f"{where}.dim needs buckets (a normalised numeric is one float)")
        return FeatureConfig(name, group, kind, 0, transform=transform)
    buckets = get("buckets", None, 2)
    return FeatureConfig(name, group, kind, dim, transform=transform, buckets=buckets)


def _context_configs(raw: Any, embedding_dim: int) -> tuple[ContextConfig, ...]:
    if isinstance(raw, str) or not isinstance(raw, (Mapping, Sequence)):
        raise ValueError("features.context must be a list of time parts or a mapping of them")
    items = raw.items() if isinstance(raw, Mapping) else ((name, None) for name in raw)
    configs = []
    for name, settings in items:
        if name not in CONTEXT_SIZES:
            raise _unknown("features.context", "key", name, CONTEXT_SIZES)
        settings = settings or {}
        _check_keys(f"features.context.{name}", settings, _CONTEXT_KEYS)
        dim = _int(f"features.context.{name}.dim", settings.get("dim", embedding_dim), 1)
        configs.append(ContextConfig(name, dim))
    return tuple(configs)


# --------------------------------------------------------------------------------------------
# Layers (stock TensorFlow ops only, so exports load in a plain TF Serving)


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


# --------------------------------------------------------------------------------------------
# Adapting to the train data


@dataclasses.dataclass(frozen=True)
class AdaptedFeature:
    """What a feature learned from the train data; ``source`` says where it was read."""

    config: FeatureConfig
    source: str
    vocabulary: tuple[str, ...] = ()
    mean: float = 0.0
    variance: float = 1.0
    boundaries: tuple[float, ...] | None = None


class FeatureSet:
    """A spec plus its adapted preprocessing layers; makes inputs and group encoders.

    Build it with ``FeatureSet.adapt``. Its index layers have no trainable weights and are
    shared by every encoder it makes; embeddings belong to each ``encoder()``.
    """

    def __init__(self, spec: FeatureSpec, adapted: Mapping[str, AdaptedFeature]):
        self.spec = spec
        self.adapted = dict(adapted)
        self._indexers: dict[str, tf.keras.layers.Layer] = {}
        self._num_indices: dict[str, int] = {}
        for feature in spec.user + spec.item:
            a = self.adapted[feature.name]
            if feature.type in ("id", "categorical"):
                layer = tf.keras.layers.StringLookup(
                    # An array, not a list: Keras tracks a list attribute and walks every entry
                    # whenever it gathers a model's weights (model.summary took 46 s at 1.9M ids).
                    vocabulary=np.asarray(a.vocabulary, dtype=object),
                    mask_token=PAD,
                    num_oov_indices=feature.num_oov_indices,
                    name=f"{feature.name}_lookup",
                )
                size = 1 + feature.num_oov_indices + len(a.vocabulary)
            elif feature.type == "hashed":
                layer = tf.keras.layers.Hashing(
                    num_bins=feature.bins + 1, mask_value=PAD, name=f"{feature.name}_hashing"
                )
                size = feature.bins + 1
            else:
                layer = NumericPreprocessing(
                    feature.transform,
                    a.mean,
                    a.variance,
                    a.boundaries,
                    name=f"{feature.name}_numeric",
                )
                size = layer.num_indices if feature.embedded else 0
            self._indexers[feature.name] = layer
            self._num_indices[feature.name] = size
        for part in spec.context:
            self._indexers[part.name] = TimePart(part.name, name=f"{part.name}_of_timestamp")
            self._num_indices[part.name] = CONTEXT_SIZES[part.name]

    @classmethod
    def adapt(
        cls,
        spec: FeatureSpec,
        train_events: pd.DataFrame,
        items: pd.DataFrame | None = None,
        users: pd.DataFrame | None = None,
    ) -> FeatureSet:
        """Learns vocabularies, statistics and bucket boundaries from the train data only.

        Args:
          spec: the validated feature spec.
          train_events: the TRAIN split's events (never validation or test: the caller splits).
            ``user_id`` / ``item_id`` vocabularies count events here; ``min_count`` applies to
            those counts.
          items, users: entity tables (``item_id`` / ``user_id`` plus attributes), or None.
            Only rows whose id occurs in ``train_events`` are used, one row per id. An attribute
            is read from the table when the table has that column, else from ``train_events``
            (Taobao events carry ``category``); table attributes count each entity once, so
            numeric statistics describe the train catalogue / user base, not event traffic.
        """
        adapted: dict[str, AdaptedFeature] = {}
        for group, table in (("user", users), ("item", items)):
            features = spec.group(group)
            if not features:
                continue
            key = f"{group}_id"
            if key not in train_events.columns:
                raise ValueError(f"train_events lack column {key!r} needed by features.{group}")
            if table is not None:
                if key not in table.columns:
                    raise ValueError(f"the {group}s table lacks its id column {key!r}")
                seen = pd.unique(as_str(train_events[key]))
                table = table[pd.Index(as_str(table[key])).isin(seen)].drop_duplicates(key)
            for feature in features:
                if feature.name != key and table is not None and feature.name in table.columns:
                    values, source = table[feature.name], f"{group}s table (train ids)"
                elif feature.name in train_events.columns:
                    values, source = train_events[feature.name], "train events"
                else:
                    raise ValueError(
                        f"feature {group}.{feature.name} has no column in the train events"
                        + ("" if table is None else f" or the {group}s table")
                    )
                adapted[feature.name] = _adapt(feature, values, source)
        return cls(spec, adapted)

    # ---- inputs

    def input_signature(self, *groups: str) -> dict[str, tf.TensorSpec]:
        """Raw input specs of the groups (batch dimension first), keyed by input name; for a
        ``tf.function`` serving signature."""
        specs: dict[str, tf.TensorSpec] = {}
        for group in groups:
            specs |= self._group_signature(group)
        return specs

    def _group_signature(self, group: str) -> dict[str, tf.TensorSpec]:
        if group in ENTITY_GROUPS:
            return {
                f.name: tf.TensorSpec(
                    [None], tf.float32 if f.type == "numeric" else tf.string, name=f.name
                )
                for f in self.spec.group(group)
            }
        if group == "history":
            length = self.spec.history_length
            return {
                name: tf.TensorSpec([None, length], tf.string, name=name)
                for name in map(history_input_name, self.spec.history_features)
            }
        if group == "context":
            if not self.spec.context:
                return {}
            return {TIMESTAMP: tf.TensorSpec([None], tf.int64, name=TIMESTAMP)}
        raise _unknown("FeatureSet", "group", group, GROUPS)

    def inputs(self, *groups: str) -> dict[str, tf.keras.Input]:
        """Fresh named Keras inputs of the groups: string ids / float numerics of shape (), the
        int64 ``timestamp`` for context, (history_length,) strings for history."""
        return {
            name: tf.keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name=name)
            for name, spec in self.input_signature(*groups).items()
        }

    def to_inputs(
        self,
        frame: pd.DataFrame | Mapping[str, Any],
        groups: Sequence[str] = ("user", "item", "context"),
    ) -> dict[str, np.ndarray]:
        """Columns of ``frame`` as the raw arrays the model's inputs take (dtype casts only).

        Strings become str with missing as ""; numerics float32 with missing as NaN (the model
        handles it); ``timestamp`` int64 unix seconds. History arrays come from
        ``shopping_mtl.history.last_items_before`` and pass through.
        """
        arrays: dict[str, np.ndarray] = {}
        for group in groups:
            for name, spec in self._group_signature(group).items():
                if name not in frame:
                    raise ValueError(f"input {name!r} of group {group!r} is not in the frame")
                column = frame[name]
                if group == "history":
                    arrays[name] = np.array(list(column), dtype=object)  # rows -> 2-D
                    if arrays[name].shape[1:] != (self.spec.history_length,):
                        raise ValueError(
                            f"input {name!r} has shape {arrays[name].shape}; "
                            f"want (n, {self.spec.history_length})"
                        )
                elif spec.dtype == tf.string:
                    arrays[name] = as_str(column)
                elif spec.dtype == tf.float32:
                    numbers = pd.to_numeric(pd.Series(column), errors="coerce")
                    arrays[name] = numbers.to_numpy(np.float32)
                else:
                    arrays[name] = to_unix_seconds(column)
        return arrays

    # ---- layers

    def indexer(self, name: str) -> tf.keras.layers.Layer:
        """The adapted index layer of a feature or time part: raw value -> int index (or, for
        a normalised numeric, -> (batch, 1) float)."""
        if name not in self._indexers:
            raise _unknown("FeatureSet", "feature", name, self._indexers)
        return self._indexers[name]

    def num_indices(self, name: str) -> int:
        """Rows of the feature's embedding table (0 for a normalised numeric)."""
        self.indexer(name)
        return self._num_indices[name]

    def encoder(
        self,
        group: str,
        share_with: GroupEncoder | None = None,
        embeddings_initializer: Any = "uniform",
        name: str | None = None,
    ) -> GroupEncoder:
        """A new ``GroupEncoder`` for ``group`` (user / item / history / context).

        Args:
          share_with: another encoder whose embedding tables are reused for features of the
            same name: ``encoder("history", share_with=item_encoder)`` pools history items with
            the item tower's ``item_id`` (and e.g. ``category``) embeddings.
          embeddings_initializer: for the new embedding tables.
        """
        if group in ENTITY_GROUPS:
            entries = [(f.name, f.name, f.name, f.dim) for f in self.spec.group(group)]
        elif group == "history":
            entries = [
                (history_input_name(n), history_input_name(n), n, self.spec.feature(n).dim)
                for n in self.spec.history_features
            ]
        elif group == "context":
            entries = [(c.name, TIMESTAMP, c.name, c.dim) for c in self.spec.context]
        else:
            raise _unknown("FeatureSet", "group", group, GROUPS)
        if not entries:
            raise ValueError(f"features.{group} is empty; no encoder to build")

        shared = share_with.embeddings if share_with is not None else {}
        keys, input_names, layers, widths, embeddings = [], [], [], [], {}
        for key, input_name, feature, dim in entries:
            indexer = self.indexer(feature)
            if self._num_indices[feature] == 0:  # normalised numeric: one float
                layers.append(indexer)
                widths.append(1)
            else:
                embedding = shared.get(feature)
                if embedding is None:
                    embedding = tf.keras.layers.Embedding(
                        self._num_indices[feature],
                        dim,
                        embeddings_initializer=embeddings_initializer,
                        name=f"{feature}_embedding",
                    )
                if embedding.input_dim != self._num_indices[feature] or embedding.output_dim != dim:
                    raise ValueError(f"shared embedding of {feature!r} has another shape")
                embeddings[feature] = embedding
                if group == "history":
                    layers.append(HistoryPooling(indexer, embedding, name=f"{key}_pooled"))
                else:
                    layers.append(IndexEmbedding(indexer, embedding, name=f"{key}_embedded"))
                widths.append(dim)
            keys.append(key)
            input_names.append(input_name)
        return GroupEncoder(group, keys, input_names, layers, widths, embeddings, name=name)


def _adapt(feature: FeatureConfig, values: pd.Series, source: str) -> AdaptedFeature:
    where = f"{feature.group}.{feature.name}"
    if feature.type in ("id", "categorical"):
        strings = as_str(values)
        counts = pd.Series(strings[strings != PAD]).value_counts()
        counts = counts[counts >= feature.min_count]
        if counts.empty:
            raise ValueError(
                f"feature {where} has no value in the train data (min_count={feature.min_count})"
            )
        table = pd.DataFrame({"value": counts.index.astype(object), "count": counts.to_numpy()})
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        return AdaptedFeature(feature, source, vocabulary=tuple(table["value"]))
    if feature.type == "hashed":
        return AdaptedFeature(feature, source)
    x = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(np.float64)
    valid = np.isfinite(x)
    if feature.transform == "log1p":
        valid &= x >= 0
        x = np.log1p(np.where(valid, x, 0.0))
    x = x[valid]
    if feature.buckets is not None:
        if len(x) == 0:
            raise ValueError(f"feature {where} has no valid value in the train data")
        quantiles = np.linspace(0.0, 1.0, feature.buckets + 1)[1:-1]
        boundaries = tuple(float(b) for b in np.unique(np.quantile(x, quantiles)))
        return AdaptedFeature(feature, source, boundaries=boundaries)
    if len(x) == 0:
        return AdaptedFeature(feature, source)  # mean 0, variance 1: values pass unchanged
    return AdaptedFeature(feature, source, mean=float(x.mean()), variance=float(x.var()))
