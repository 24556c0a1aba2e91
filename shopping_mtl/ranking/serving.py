"""Serving graphs for TF Serving: the `ranker` and the `recommend` model.

Both take a user's raw features and raw event history (item ids, event types and unix-second
timestamps, most recent first, "" padding) and compute everything else inside the graph with
stock TensorFlow ops: history categories and item popularity from lookup tables frozen at
export time, the user-item features of `cross.py` (the very function training used), the
ranker's probabilities, Platt calibration per head, and the value score.

- `ranker`: scores candidates the caller brings: per request row, (C,) candidates with their raw
  item features and two-tower score -> `click`, `save`, `purchase`, `score`, each (batch, C).
- `recommend`: retrieval and ranking in one graph. Candidates are the two-tower index's top
  items the user has not seen, the user's own history items, items co-visited with the user's
  recent items and the most popular items, merged with the training quotas in the same priority
  order as `retrieval.sources.merge_sources`, restricted to the catalogue known at export time;
  they are ranked by the value score and the top N returned as `item_ids`, `scores`, `click`, `save`, `purchase`, each (batch, N).

Differences from the offline candidate set, by design of a request that carries only the user's
recent events: the user's own items and the co-visitation seeds come from the request's history
(offline: the whole log), and co-visitation keeps each seed's top `covisit_neighbours` items.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import tensorflow as tf

from shopping_mtl.baselines import covisitation_counts, popularity
from shopping_mtl.features import TIMESTAMP, FeatureSet
from shopping_mtl.history import HISTORY_ITEM_IDS, as_str
from shopping_mtl.ranking.config import TASKS
from shopping_mtl.ranking.cross import cross_features, list_features, list_values
from shopping_mtl.ranking.calibration import EPS, Platt
from shopping_mtl.export import save_atomic

HISTORY_EVENTS = "history_events"
HISTORY_TIMESTAMPS = "history_timestamps"
TWO_TOWER_SCORE = "two_tower_score"


@dataclass(frozen=True)
class CatalogueSnapshot:
    """What the serving graphs look up, frozen at export time from the events before the test
    period: every catalogue item's raw features, popularity (`log1p` event count), the
    co-visitation neighbours and the popular-item list."""

    catalogue: pd.DataFrame  # item_id + the item features' columns (retrieval.examples.item_catalogue)
    event_counts: pd.Series  # item_id -> events before the prediction time
    covisit: pd.DataFrame  # source, target, count
    popular: np.ndarray  # item ids, most popular first

    @classmethod
    def from_events(cls, catalogue: pd.DataFrame, events: pd.DataFrame, event_weights: Mapping[str, float],
                    max_session_items: int, n_popular: int) -> "CatalogueSnapshot":
        popular = popularity(events, ["_"], max(n_popular, 1), event_weights)["item_id"].to_numpy(dtype=object)
        return cls(catalogue, events["item_id"].value_counts(), covisitation_counts(events, max_session_items),
                   popular[:n_popular])


def _string_table(keys: np.ndarray, values: np.ndarray) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(as_str(keys).astype(str)),
                                            tf.constant(as_str(values).astype(str))), default_value="")


def _float_table(keys: np.ndarray, values: np.ndarray, default: float) -> tf.lookup.StaticHashTable:
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(as_str(keys).astype(str)),
                                            tf.constant(np.asarray(values, np.float32))), default_value=default)


def _row_unique(values: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(batch, n) strings -> (the row-prefixed keys flattened, (batch * n,), and `tf.unique`'s
    index of each): equal values in one row share an index, in different rows they do not."""
    rows = tf.strings.as_string(tf.range(tf.shape(values)[0]))[:, None]
    flat = tf.reshape(tf.strings.join([tf.broadcast_to(rows, tf.shape(values)), values], separator="\x1f"), [-1])
    return flat, tf.unique(flat)[1]


def _first_occurrence(keys: tf.Tensor) -> tf.Tensor:
    """(batch, n) strings -> (batch, n) bool: True where a value is not "" and appears in its
    row for the first time."""
    flat, idx = _row_unique(keys)
    position = tf.range(tf.size(flat))
    first = tf.math.unsorted_segment_min(position, idx, tf.size(flat))
    is_first = tf.reshape(tf.equal(tf.gather(first, idx), position), tf.shape(keys))
    return is_first & tf.not_equal(keys, "")


def _pad_columns(values: tf.Tensor, width: int, fill) -> tf.Tensor:
    """(batch, n) -> (batch, width): cut or padded with `fill` on the right."""
    missing = tf.maximum(width - tf.shape(values)[1], 0)
    return tf.pad(values, [[0, 0], [0, missing]], constant_values=fill)[:, :width]


def _top(scores: tf.Tensor, k: int, *values: tf.Tensor):
    """The top min(k, n) entries per row of `scores`, and the same entries of `values`."""
    k = tf.minimum(k, tf.shape(scores)[1])
    best, position = tf.math.top_k(scores, k=k)
    return (best, *[tf.gather(v, position, batch_dims=1) for v in values])


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
        self.category_table = _string_table(ids, category.to_numpy(dtype=object))
        counts = snapshot.event_counts
        self.popularity_table = _float_table(counts.index.to_numpy(dtype=object),
                                             np.log1p(counts.to_numpy(dtype=float)), 0.0)
        self.user_names = [f.name for f in features.spec.user]
        self.item_names = [f.name for f in features.spec.item]

    def history(self, request: Mapping[str, tf.Tensor]):
        """The request's last `history_length` events: items, categories, events, ages in days."""
        items = _pad_columns(request[HISTORY_ITEM_IDS], self.history_length, "")
        events = _pad_columns(request[HISTORY_EVENTS], self.history_length, "")
        stamps = _pad_columns(request[HISTORY_TIMESTAMPS], self.history_length, tf.constant(0, tf.int64))
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
    `scores` and the calibrated `click`, `save`, `purchase`, retrieval and ranking in one graph."""

    def __init__(self, graph: RankerGraph, index, retrieval_inputs, snapshot: CatalogueSnapshot,
                 quotas: Mapping[str, int], list_size: int, covisit_recent_items: int,
                 covisit_decay: float, covisit_neighbours: int = 50):
        super().__init__()
        self.graph = graph
        self.index = index
        features = graph.features
        self.retrieval_inputs = list(retrieval_inputs)
        self.retrieval_history = features.spec.history_length
        self.quotas = {name: int(quotas.get(name, 0)) for name in ("two_tower", "user_history", "covisit", "popularity")}
        self.list_size = int(list_size)
        self.recent_items, self.decay = int(covisit_recent_items), float(covisit_decay)
        n_items = int(index._candidates.shape[0])
        self.depth = min(self.quotas["two_tower"] + graph.history_length, n_items)

        catalogue = snapshot.catalogue
        ids = catalogue["item_id"].to_numpy(dtype=object)
        self.item_tables = {}
        for feature in features.spec.item:
            if feature.name == "item_id":
                continue
            if feature.type == "numeric":
                values = pd.to_numeric(catalogue[feature.name], errors="coerce").to_numpy(np.float32)
                self.item_tables[feature.name] = _float_table(ids, values, np.nan)
            else:
                self.item_tables[feature.name] = _string_table(ids, catalogue[feature.name].to_numpy(dtype=object))

        # Co-visitation: each item's top neighbours, as rows of a (n_sources + 1, M) matrix (the
        # last row, all padding, answers unknown items).
        pairs = snapshot.covisit.sort_values(["source", "count", "target"], ascending=[True, False, True], kind="stable")
        pairs = pairs.groupby("source", sort=False).head(covisit_neighbours)
        sources = pd.Index(pd.unique(pairs["source"].to_numpy(dtype=object)))
        row = sources.get_indexer(pairs["source"].to_numpy(dtype=object))
        slot = pairs.groupby("source", sort=False).cumcount().to_numpy()
        width = max(int(slot.max()) + 1 if len(slot) else 1, 1)
        targets = np.full((len(sources) + 1, width), "", dtype=object)
        counts = np.zeros((len(sources) + 1, width), np.float32)
        targets[row, slot] = as_str(pairs["target"])
        counts[row, slot] = pairs["count"].to_numpy(np.float32)
        self.in_catalogue = _float_table(ids, np.ones(len(ids), np.float32), 0.0)
        self.covisit_row = _float_table(sources.to_numpy(dtype=object), np.arange(len(sources), dtype=np.float32),
                                        float(len(sources)))
        self.covisit_targets = tf.constant(targets.astype(str))
        self.covisit_counts = tf.constant(counts)
        self.popular = tf.constant(as_str(snapshot.popular).astype(str).reshape(1, -1))

        self.signature = _request_signature(features)
        self.serve = tf.function(self._serve, input_signature=[self.signature])

    def _two_tower(self, request):
        history = _pad_columns(request[HISTORY_ITEM_IDS], self.retrieval_history, "")
        query = {name: request[name] for name in self.retrieval_inputs
                 if not name.startswith("history_")}
        query[HISTORY_ITEM_IDS] = history
        for name in self.retrieval_inputs:
            if name.startswith("history_") and name != HISTORY_ITEM_IDS:
                table = self.item_tables.get(name[len("history_"):], self.graph.category_table)
                query[name] = table.lookup(history)
        scores, ids = self.index(query, k=self.depth)
        seen_items = request[HISTORY_ITEM_IDS]
        seen = tf.reduce_any(tf.equal(ids[:, :, None], seen_items[:, None, :]), axis=-1)
        scores = tf.where(seen, tf.constant(-np.inf, scores.dtype), scores)
        scores, ids = _top(scores, self.quotas["two_tower"], ids)
        return ids, tf.where(tf.math.is_finite(scores), scores, 0.0), tf.math.is_finite(scores)

    def _own_items(self, request):
        items = request[HISTORY_ITEM_IDS][:, :self.graph.history_length]
        first = _first_occurrence(items)
        # Distinct items, most recent first: the first `quota` of them.
        rank = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1
        keep = first & (rank < self.quotas["user_history"])
        order = tf.where(keep, -tf.cast(tf.range(tf.shape(items)[1])[None, :], tf.float32), -np.inf)
        _, items, keep = _top(order, self.quotas["user_history"], items, keep)
        return items, keep

    def _covisited(self, request):
        items = request[HISTORY_ITEM_IDS]
        first = _first_occurrence(items)
        rank = tf.cumsum(tf.cast(first, tf.int32), axis=1) - 1
        order = tf.where(first & (rank < self.recent_items), -tf.cast(rank, tf.float32), -np.inf)
        order, seeds = _top(order, self.recent_items, items)
        weight = tf.where(tf.math.is_finite(order), tf.pow(self.decay, -order), 0.0)  # decay ** rank
        row = tf.cast(self.covisit_row.lookup(seeds), tf.int32)
        targets = tf.gather(self.covisit_targets, row)  # (b, seeds, M)
        scores = tf.gather(self.covisit_counts, row) * weight[:, :, None]
        batch = tf.shape(targets)[0]
        targets, scores = tf.reshape(targets, [batch, -1]), tf.reshape(scores, [batch, -1])
        keys, idx = _row_unique(targets)
        total = tf.math.unsorted_segment_sum(tf.reshape(scores, [-1]), idx, tf.size(keys))
        total = tf.reshape(tf.gather(total, idx), tf.shape(targets))
        first = _first_occurrence(targets) & (total > 0)
        total, targets, keep = _top(tf.where(first, total, -np.inf), self.quotas["covisit"], targets, first)
        return targets, keep

    def _serve(self, request):
        batch = tf.shape(request[TIMESTAMP])[0]
        parts = []  # (items, two-tower score, valid), in merge priority order
        if self.quotas["two_tower"] > 0:
            ids, scores, valid = self._two_tower(request)
            parts.append((ids, scores, valid))
        if self.quotas["user_history"] > 0:
            items, keep = self._own_items(request)
            parts.append((items, tf.zeros_like(items, tf.float32), keep))
        if self.quotas["covisit"] > 0:
            items, keep = self._covisited(request)
            parts.append((items, tf.zeros_like(items, tf.float32), keep))
        if self.quotas["popularity"] > 0:
            items = tf.tile(self.popular[:, :self.quotas["popularity"]], [batch, 1])
            parts.append((items, tf.zeros_like(items, tf.float32), tf.not_equal(items, "")))
        items = tf.concat([p[0] for p in parts], axis=1)
        two_tower_score = tf.concat([p[1] for p in parts], axis=1)
        valid = tf.concat([p[2] for p in parts], axis=1)
        # Only catalogue items are recommended: an id the export never saw (say, in a request's
        # history) has no features to rank it by.
        valid &= tf.equal(self.in_catalogue.lookup(items), 1.0)
        items = tf.where(valid, items, "")
        valid = _first_occurrence(items)
        items = tf.where(valid, items, "")
        candidates = {"item_id": items}
        for name, table in self.item_tables.items():
            candidates[name] = table.lookup(items)
        out = self.graph.score(request, candidates, tf.where(valid, two_tower_score, 0.0), valid)
        scores, ids, *probabilities = _top(out["score"], self.list_size, items, *(out[t] for t in TASKS))
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
    from shopping_mtl.history import last_items_before, to_unix_seconds
    from shopping_mtl.retrieval.examples import user_frame

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
