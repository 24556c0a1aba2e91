"""Adapting a feature spec to the train data: vocabularies, statistics and bucket boundaries.

Leakage: everything comes from the train events plus the rows of the ``items`` / ``users``
tables whose id occurs in those train events (one row per entity). An item that first appears
in validation or test adds nothing, not even its category or price, although its table row
exists. ``FeatureSet.adapt`` (``shopping_mtl.features.feature_set``) is the usual entry point.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from shopping_mtl.features.spec import FeatureConfig, FeatureSpec
from shopping_mtl.history import PAD, as_str



@dataclasses.dataclass(frozen=True)
class AdaptedFeature:
    """What a feature learned from the train data; ``source`` says where it was read."""

    config: FeatureConfig
    source: str
    vocabulary: tuple[str, ...] = ()
    mean: float = 0.0
    variance: float = 1.0
    boundaries: tuple[float, ...] | None = None


def adapt_features(
    spec: FeatureSpec,
    train_events: pd.DataFrame,
    items: pd.DataFrame | None = None,
    users: pd.DataFrame | None = None,
) -> dict[str, AdaptedFeature]:
    """What every user and item feature of ``spec`` learns from the train data, by name.

    The arguments are those of ``FeatureSet.adapt`` (which documents them); a missing id or
    feature column raises ``ValueError`` naming it.
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
            adapted[feature.name] = adapt_feature(feature, values, source)
    return adapted


def adapt_feature(feature: FeatureConfig, values: pd.Series, source: str) -> AdaptedFeature:
    """One feature adapted to its train ``values`` (read from ``source``).

    ``id`` / ``categorical``: the vocabulary of values counted at least ``min_count`` times, most
    frequent first (ties by value), "" left out; none raises ``ValueError``. ``hashed``: nothing.
    ``numeric``: the train quantiles of the valid transformed values as bucket boundaries
    (bucketed; no valid value raises ``ValueError``), else their mean and variance (0 and 1
    when there is no valid value).
    """
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
