"""``FeatureSet``: a feature spec plus its adapted, weight-free preprocessing layers.

It makes the model's raw inputs (``inputs``, ``input_signature``), turns frames into the arrays
they take (``to_inputs``), and builds group encoders with fresh (or shared) embedding tables
(``encoder``). The value-handling contract is in the ``shopping_mtl.features`` docstring.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.features.adapt import AdaptedFeature, adapt_features
from shopping_mtl.features.layers import (
    GroupEncoder,
    HistoryPooling,
    IndexEmbedding,
    NumericPreprocessing,
    TimePart,
)
from shopping_mtl.features.spec import (
    CONTEXT_SIZES,
    ENTITY_GROUPS,
    GROUPS,
    TIMESTAMP,
    FeatureSpec,
    _unknown,
)
from shopping_mtl.history import PAD, as_str, history_input_name, to_unix_seconds


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
        return cls(spec, adapt_features(spec, train_events, items=items, users=users))

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
