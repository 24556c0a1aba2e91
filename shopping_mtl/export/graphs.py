"""Serving graphs for TF Serving: the `ranker` and the `recommend` model.

Both take a user's raw features and raw event history (item ids, event types and unix-second
timestamps, most recent first, "" padding) and compute everything else inside the graph with
stock TensorFlow ops: history categories and item popularity from lookup tables frozen at
export time, the user-item features of `cross.py` (the very function training used), the
ranker's probabilities, Platt calibration per head, and the value score.

- `ranker`: scores candidates the caller brings: per request row, (C,) candidates with their raw
  item features and two-tower score -> `click`, `save`, `purchase`, `score`, each (batch, C).
- `recommend`: retrieval and ranking in one graph. Candidates come from each registered source's
  serving part (`shopping_mtl.candidates`: the two-tower index's top items the user has not
  seen, the user's own history items, items co-visited with the user's recent items, the most
  popular items), merged with the training quotas in the same priority order as the offline
  merge, restricted to the catalogue known at export time; they are ranked by the value score
  and the top N returned as `item_ids`, `scores`, `click`, `save`, `purchase`, each (batch, N).

Differences from the offline candidate set, by design of a request that carries only the user's
recent events: the user's own items and the co-visitation seeds come from the request's history
(offline: the whole log), and co-visitation keeps each seed's top 50 neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.candidates import builtin, registry  # noqa: F401  (builtin: registers the built-in sources)
from shopping_mtl.candidates.registry import ServingContext
from shopping_mtl.candidates.config import BaselineConfig
from shopping_mtl.export.publishing import save_atomic
from shopping_mtl.features import TIMESTAMP, FeatureSet
from shopping_mtl.history import HISTORY_ITEM_IDS, last_items_before, to_unix_seconds
from shopping_mtl.ranking.calibration import EPS, Platt
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.ranking.cross import cross_features, list_features, list_values
from shopping_mtl.retrieval.examples import user_frame
from shopping_mtl.serving_ops import first_occurrence, float_table, pad_columns, string_table, top

HISTORY_EVENTS = "history_events"
HISTORY_TIMESTAMPS = "history_timestamps"
TWO_TOWER_SCORE = "two_tower_score"


@dataclass(frozen=True)
class CatalogueSnapshot:
    """What the ranker graph looks up, frozen at export time from the events before the
    prediction time: every catalogue item's raw features and its event count (popularity)."""

    catalogue: pd.DataFrame  # item_id + the item features' columns (retrieval.examples.item_catalogue)
    event_counts: pd.Series  # item_id -> events before the prediction time

    @classmethod
    def from_events(cls, catalogue: pd.DataFrame, events: pd.DataFrame) -> "CatalogueSnapshot":
        return cls(catalogue, events["item_id"].value_counts())


class RankerGraph(tf.Module):
    """The ranker with its feature computation and calibration, as functions of raw tensors."""

    def __init__(self, scorer: tf.keras.Model, features: FeatureSet, snapshot: CatalogueSnapshot,
                 platt: Mapping[str, Platt], value_weights: Mapping[str, float], history_length: int,
                 use_list_features: bool, ordered: bool = False):
        super().__init__()
        self.scorer = scorer
        self.features = features
        self.history_length = int(history_length)
        self.use_list_features = bool(use_list_features)
        self.ordered = bool(ordered)  # ESMM: calibrated save and purchase capped at click
        self.platt = {t: (float(platt[t].a), float(platt[t].b)) for t in TASKS}
        self.value_weights = {t: float(value_weights.get(t, 0.0)) for t in TASKS}
        catalogue = snapshot.catalogue
        ids = catalogue["item_id"].to_numpy(dtype=object)
        category = catalogue["category"] if "category" in catalogue else pd.Series("", index=catalogue.index)
        self.category_table = string_table(ids, category.to_numpy(dtype=object))
        counts = snapshot.event_counts
        self.popularity_table = float_table(counts.index.to_numpy(dtype=object),
                                             np.log1p(counts.to_numpy(dtype=float)), 0.0)
        self.user_names = [f.name for f in features.spec.user]
        self.item_names = [f.name for f in features.spec.item]

    def history(self, request: Mapping[str, tf.Tensor]):
        """The request's last `history_length` events: items, categories, events, ages in days."""
        items = pad_columns(request[HISTORY_ITEM_IDS], self.history_length, "")
        events = pad_columns(request[HISTORY_EVENTS], self.history_length, "")
        stamps = pad_columns(request[HISTORY_TIMESTAMPS], self.history_length, tf.constant(0, tf.int64))
        ages = tf.cast(request[TIMESTAMP][:, None] - stamps, tf.float32) / 86400.0
        ages = tf.where(tf.not_equal(items, ""), ages, 0.0)
        return items, self.category_table.lookup(items), events, ages

    def score(self, request: Mapping[str, tf.Tensor], candidates: Mapping[str, tf.Tensor],
              two_tower_score: tf.Tensor, valid: tf.Tensor) -> dict[str, tf.Tensor]:
        """Calibrated probabilities and value score of (batch, C) candidates for each request row.

        `candidates` holds the item features, each (batch, C); `valid` (batch, C) marks real
        candidates (others score -inf)."""
        items = candidates["item_id"]
        shape = tf.shape(items)
        categories = candidates["category"] if "category" in candidates else self.category_table.lookup(items)
        h_items, h_categories, h_events, h_ages = self.history(request)
        cross = cross_features(h_items, h_categories, h_events, h_ages, items, categories)  # (b, C, F)
        item_popularity = self.popularity_table.lookup(items)
        rows = {}
        for name in self.user_names:
            rows[name] = tf.reshape(tf.repeat(request[name][:, None], shape[1], axis=1), [-1])
        for name in self.item_names:
            rows[name] = tf.reshape(candidates[name], [-1])
        rows["cross"] = tf.reshape(cross, [-1, cross.shape[-1]])
        rows["item_popularity"] = tf.reshape(item_popularity, [-1])
        rows[TWO_TOWER_SCORE] = tf.reshape(tf.cast(two_tower_score, tf.float32), [-1])
        if self.use_list_features:
            relative = list_features(list_values(cross, item_popularity, two_tower_score), valid)
            rows["list"] = tf.reshape(relative, [-1, relative.shape[-1]])
        raw = self.scorer({k: rows[k] for k in self.scorer.input_names}, training=False)
        out = {}
        for task in TASKS:
            p = tf.clip_by_value(tf.reshape(raw[task], shape), EPS, 1 - EPS)
            a, b = self.platt[task]
            calibrated = tf.sigmoid(a * (tf.math.log(p) - tf.math.log1p(-p)) + b)
            if self.ordered and task != "click":
                calibrated = tf.minimum(calibrated, out["click"])
            out[task] = tf.where(valid, calibrated, 0.0)
        value = tf.add_n([self.value_weights[t] * out[t] for t in TASKS])
        out["score"] = tf.where(valid, value, -np.inf)
        return out


def _user_signature(features: FeatureSet) -> dict[str, tf.TensorSpec]:
    return {name: spec for name, spec in features.input_signature("user").items()}


def _request_signature(features: FeatureSet) -> dict[str, tf.TensorSpec]:
    return {
        **_user_signature(features),
        HISTORY_ITEM_IDS: tf.TensorSpec([None, None], tf.string, HISTORY_ITEM_IDS),
        HISTORY_EVENTS: tf.TensorSpec([None, None], tf.string, HISTORY_EVENTS),
        HISTORY_TIMESTAMPS: tf.TensorSpec([None, None], tf.int64, HISTORY_TIMESTAMPS),
        TIMESTAMP: tf.TensorSpec([None], tf.int64, TIMESTAMP),
    }


class RankerServing(tf.Module):
    """`serving_default`: a user's raw features and history plus (batch, C) raw candidate item
    features and two-tower scores -> `click`, `save`, `purchase` (calibrated) and `score`."""

    def __init__(self, graph: RankerGraph):
        super().__init__()
        self.graph = graph
        signature = _request_signature(graph.features)
        for name, spec in graph.features.input_signature("item").items():
            signature[name] = tf.TensorSpec([None, None], spec.dtype, name)
        signature[TWO_TOWER_SCORE] = tf.TensorSpec([None, None], tf.float32, TWO_TOWER_SCORE)
        self.signature = signature
        self.serve = tf.function(self._serve, input_signature=[signature])

    def _serve(self, request):
        candidates = {name: request[name] for name in self.graph.item_names}
        valid = tf.not_equal(request["item_id"], "")
        out = self.graph.score(request, candidates, request[TWO_TOWER_SCORE], valid)
        return {name: tf.identity(out[name], name=name) for name in (*TASKS, "score")}


class RecommendServing(tf.Module):
    """`serving_default`: a user's raw features and history -> the top `list_size` items with
    `scores` and the calibrated `click`, `save`, `purchase`, retrieval and ranking in one graph.

    Args:
        graph: the ranker graph that scores the candidates.
        snapshot: the catalogue known at export time (only its items are recommended).
        events: the events before the prediction time, which the sources' parts freeze.
        settings: the sources' settings.
        quotas: source -> quota, in merge priority order (`candidates.quotas`).
        list_size: items returned per request row.
        retrieval: the two-tower index (`candidates.registry.QueryIndex`), or None.
    """

    def __init__(self, graph: RankerGraph, snapshot: CatalogueSnapshot, events: pd.DataFrame,
                 settings: BaselineConfig, quotas: Mapping[str, int], list_size: int, retrieval=None):
        super().__init__()
        self.graph = graph
        self.list_size = int(list_size)
        features = graph.features
        catalogue = snapshot.catalogue
        ids = catalogue["item_id"].to_numpy(dtype=object)
        self.item_tables = {}
        for feature in features.spec.item:
            if feature.name == "item_id":
                continue
            if feature.type == "numeric":
                values = pd.to_numeric(catalogue[feature.name], errors="coerce").to_numpy(np.float32)
                self.item_tables[feature.name] = float_table(ids, values, np.nan)
            else:
                self.item_tables[feature.name] = string_table(ids, catalogue[feature.name].to_numpy(dtype=object))
        self.in_catalogue = float_table(ids, np.ones(len(ids), np.float32), 0.0)
        context = ServingContext(events, catalogue, settings, graph.history_length, self.item_tables,
                                 graph.category_table, retrieval)
        # In merge priority order; a tf.Module list, so their tables are saved with the graph.
        self.sources = [registry.get(name).serving(context, quota) for name, quota in quotas.items() if quota > 0]
        self.signature = _request_signature(features)
        self.serve = tf.function(self._serve, input_signature=[self.signature])

    def _serve(self, request):
        parts = [source(request) for source in self.sources]
        items = tf.concat([p.items for p in parts], axis=1)
        two_tower_score = tf.concat([p.two_tower_score if p.two_tower_score is not None
                                     else tf.zeros_like(p.items, tf.float32) for p in parts], axis=1)
        valid = tf.concat([p.valid for p in parts], axis=1)
        # Only catalogue items are recommended: an id the export never saw (say, in a request's
        # history) has no features to rank it by.
        valid &= tf.equal(self.in_catalogue.lookup(items), 1.0)
        items = tf.where(valid, items, "")
        valid = first_occurrence(items)
        items = tf.where(valid, items, "")
        candidates = {"item_id": items}
        for name, table in self.item_tables.items():
            candidates[name] = table.lookup(items)
        out = self.graph.score(request, candidates, tf.where(valid, two_tower_score, 0.0), valid)
        scores, ids, *probabilities = top(out["score"], self.list_size, items, *(out[t] for t in TASKS))
        found = tf.math.is_finite(scores)
        result = {"item_ids": tf.where(found, ids, ""), "scores": tf.where(found, scores, 0.0)}
        for task, p in zip(TASKS, probabilities):
            result[task] = tf.where(found, p, 0.0)
        return {name: tf.identity(value, name=name) for name, value in result.items()}


def export(module: tf.Module, target: Path) -> Path:
    """Save `module.serve` as `serving_default` atomically at `target` (`<base>/<model>/<version>`)."""
    return save_atomic(module, {"serving_default": module.serve.get_concrete_function()}, target)


def requests_for(user_ids, history_events: pd.DataFrame, at: pd.Timestamp, users: pd.DataFrame | None,
                 features: FeatureSet, length: int) -> dict[str, np.ndarray]:
    """The serving request of each user at time `at`: raw user features and the last `length`
    events before `at` (most recent first, "" / 0 padding), as the `recommend` signature takes."""
    frame = user_frame(user_ids, users, features)
    request = features.to_inputs(frame, ["user"]) if features.spec.user else {}
    events = history_events.assign(seconds=to_unix_seconds(history_events["timestamp"]))
    queries = pd.DataFrame({"user_id": frame["user_id"], "timestamp": at})
    found = last_items_before(events, queries, length, ["event", "seconds"])
    request[HISTORY_ITEM_IDS] = found[HISTORY_ITEM_IDS].astype(str)
    request[HISTORY_EVENTS] = found["history_event"].astype(str)
    seconds = pd.to_numeric(pd.Series(found["history_seconds"].reshape(-1)), errors="coerce")
    request[HISTORY_TIMESTAMPS] = seconds.fillna(0).to_numpy(np.int64).reshape(len(frame), length)
    request[TIMESTAMP] = np.full(len(frame), int(at.timestamp()), np.int64)
    return {k: v.astype(str) if v.dtype == object else v for k, v in request.items()}
