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

The package, one idea a module: ``spec`` (the validated spec), ``adapt`` (learning from the
train data), ``layers`` (the Keras layers) and ``feature_set`` (``FeatureSet``). Every name is
re-exported here, so ``from shopping_mtl.features import FeatureSet`` and the like keep working.
"""

from shopping_mtl.features.adapt import AdaptedFeature
from shopping_mtl.features.feature_set import FeatureSet
from shopping_mtl.features.layers import (
    GroupEncoder,
    HistoryPooling,
    IndexEmbedding,
    NumericPreprocessing,
    TimePart,
    hour_and_weekday,
    masked_mean,
)
from shopping_mtl.features.spec import (
    CONTEXT_SIZES,
    EMBEDDED_TYPES,
    ENTITY_GROUPS,
    FEATURE_TYPES,
    GROUPS,
    TIMESTAMP,
    TRANSFORMS,
    ContextConfig,
    FeatureConfig,
    FeatureSpec,
)

__all__ = [
    "CONTEXT_SIZES",
    "EMBEDDED_TYPES",
    "ENTITY_GROUPS",
    "FEATURE_TYPES",
    "GROUPS",
    "TIMESTAMP",
    "TRANSFORMS",
    "AdaptedFeature",
    "ContextConfig",
    "FeatureConfig",
    "FeatureSet",
    "FeatureSpec",
    "GroupEncoder",
    "HistoryPooling",
    "IndexEmbedding",
    "NumericPreprocessing",
    "TimePart",
    "hour_and_weekday",
    "masked_mean",
]
